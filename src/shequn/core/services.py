"""Writes of the core domain: workspaces, staff memberships, API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils.text import slugify

from . import audit
from .clock import now
from .errors import Conflict, NotFound, Unauthorized, ValidationError
from .models import ApiKey, Role, StaffMembership, Workspace
from .tenancy import get_scoped

# Domains that need rows in every new workspace (e.g. the default pipeline) register here from
# their AppConfig.ready(); create_workspace calls them in the same transaction.
WORKSPACE_INITIALIZERS: list[Callable[[Workspace], None]] = []

API_KEY_PREFIX = "sq_"


@transaction.atomic
def create_workspace(slug: str, name: str, *, timezone: str = "Asia/Shanghai", country: str = "CN",
                     actor: str = "system") -> Workspace:
    if not slug or slugify(slug) != slug:
        raise ValidationError("slug must contain only a-z, 0-9, - and _", code="invalid_slug", details={"field": "slug"})
    if Workspace.objects.filter(slug=slug).exists():
        raise Conflict(f"workspace {slug!r} already exists", code="workspace_exists")
    ws = Workspace.objects.create(slug=slug, name=name or slug, default_timezone=timezone, default_country=country)
    for init in WORKSPACE_INITIALIZERS:
        init(ws)
    audit.record(ws, actor, "workspace.create", ws)
    return ws


@transaction.atomic
def delete_workspace(workspace: Workspace, *, actor: str = "system") -> None:
    """Remove a workspace and everything in it. Irreversible; the CLI uses it for ``demo --reset``."""
    import logging

    logging.getLogger("shequn.audit").warning("workspace %s deleted by %s", workspace.slug, actor)
    Workspace.objects.filter(pk=workspace.pk).delete()


@transaction.atomic
def add_staff(workspace: Workspace, user: AbstractBaseUser, role: str, *, actor: str = "system") -> StaffMembership:
    if role not in Role.values:
        raise ValidationError(f"role must be one of {', '.join(Role.values)}", code="invalid_role")
    membership, _ = StaffMembership.objects.update_or_create(workspace=workspace, user=user, defaults={"role": role})
    audit.record(workspace, actor, "staff.set_role", membership, {"user": user.pk, "role": role})
    return membership


def ensure_user(username: str, password: str | None = None, *, email: str = "") -> AbstractBaseUser:
    User = get_user_model()  # noqa: N806
    user, created = User.objects.get_or_create(username=username, defaults={"email": email})
    if password is not None and (created or not user.has_usable_password()):
        user.set_password(password)
        user.save()
    return user


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def create_api_key(workspace: Workspace, name: str, *, role: str = Role.OPERATOR, created_by: AbstractBaseUser | None = None,
                   actor: str = "system") -> tuple[ApiKey, str]:
    """Create a key and return it with its secret. The secret is shown once and only its hash is kept."""
    if role not in Role.values:
        raise ValidationError(f"role must be one of {', '.join(Role.values)}", code="invalid_role")
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError("a key needs a name (1–100 characters)", code="invalid_field", details={"field": "name"})
    prefix = secrets.token_hex(6)
    secret = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(workspace=workspace, name=name, prefix=prefix, key_hash=_hash(secret), role=role,
                                created_by=created_by)
    audit.record(workspace, actor, "apikey.create", key, {"name": name, "role": role})
    return key, secret


@transaction.atomic
def revoke_api_key(workspace: Workspace, key_id: int, *, actor: str) -> ApiKey:
    key = get_scoped(ApiKey, workspace, key_id, for_update=True)
    if key.revoked_at is None:
        key.revoked_at = now()
        key.save(update_fields=["revoked_at"])
        audit.record(workspace, actor, "apikey.revoke", key)
    return key


def authenticate_api_key(secret: str) -> ApiKey:
    """Return the live key for ``secret`` (constant-time hash comparison) and stamp its last use."""
    if not secret.startswith(API_KEY_PREFIX) or secret.count("_") < 2:
        raise Unauthorized("invalid API key", code="invalid_api_key")
    prefix = secret[len(API_KEY_PREFIX):].split("_", 1)[0]
    key = ApiKey.objects.select_related("workspace").filter(prefix=prefix).first()
    if key is None or not hmac.compare_digest(key.key_hash, _hash(secret)):
        raise Unauthorized("invalid API key", code="invalid_api_key")
    if key.revoked_at is not None:
        raise Unauthorized("this API key was revoked", code="revoked_api_key")
    stamp = now()
    if key.last_used_at is None or (stamp - key.last_used_at).total_seconds() > 60:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=stamp)  # at most once a minute per key
        key.last_used_at = stamp
    return key


def membership(user: AbstractBaseUser, workspace_slug: str) -> StaffMembership:
    row = StaffMembership.objects.select_related("workspace").filter(user=user, workspace__slug=workspace_slug).first()
    if row is None:
        raise NotFound(f"workspace {workspace_slug!r} not found")
    return row
