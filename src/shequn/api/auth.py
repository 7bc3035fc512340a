"""Who is calling, for which workspace, with which role.

Two ways in:

* ``Authorization: Bearer sq_…`` — a workspace API key (``core.services.authenticate_api_key``); the
  key fixes the workspace and the role.
* the staff console's Django session — the workspace is named by the ``X-Shequn-Workspace`` header
  and the role is the user's ``StaffMembership`` there. Writes made this way must pass Django's CSRF
  check (the console sends the ``X-CSRFToken`` header), exactly as ninja's ``django_auth`` does.

Either way the request gets an ``ApiContext`` as ``request.auth`` and is counted by the rate limit.
Each operation states the roles it admits with ``@allow(...)``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from django.utils.translation import gettext as _
from ninja.security import HttpBearer
from ninja.security.session import SessionAuth
from ninja.utils import check_csrf

from shequn.core import services as core
from shequn.core.errors import PermissionDenied
from shequn.core.models import ApiKey, Role, Workspace

from . import ratelimit
from .errors import BadRequest

WORKSPACE_HEADER = "X-Shequn-Workspace"

EVERYONE: tuple[str, ...] = (Role.OWNER, Role.OPERATOR, Role.AGENT, Role.CLERK)
READERS: tuple[str, ...] = (Role.OWNER, Role.OPERATOR, Role.AGENT)
MANAGERS: tuple[str, ...] = (Role.OWNER, Role.OPERATOR)
OWNERS: tuple[str, ...] = (Role.OWNER,)


@dataclass(frozen=True)
class ApiContext:
    workspace: Workspace
    role: str
    actor: str  # written to the audit trail: apikey:<prefix> or user:<id>
    api_key: ApiKey | None = None
    user: AbstractBaseUser | None = None


class ApiKeyAuth(HttpBearer):
    """``Authorization: Bearer sq_…``: a wrong or revoked key is a 401 with its own code."""

    def authenticate(self, request: HttpRequest, token: str) -> ApiContext:
        key = core.authenticate_api_key(token.strip())
        ctx = ApiContext(workspace=key.workspace, role=key.role, actor=f"apikey:{key.prefix}", api_key=key)
        ratelimit.hit(request, ctx.actor)
        return ctx


class StaffSessionAuth(SessionAuth):
    """A logged-in staff user of the console. Only a request that carries a session is checked for
    CSRF, so an API client without cookies gets a plain 401 rather than a CSRF error."""

    def __call__(self, request: HttpRequest) -> ApiContext | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        if self.csrf and not getattr(request, "_ninja_csrf_exempt", False) and check_csrf(request) is not None:
            raise PermissionDenied(_("CSRF check failed: send the X-CSRFToken header with the console's token."),
                                   code="csrf_failed")
        slug = request.headers.get(WORKSPACE_HEADER, "").strip()
        if not slug:
            raise BadRequest(_("Name the workspace in the %(header)s header.") % {"header": WORKSPACE_HEADER},
                             code="workspace_required")
        membership = core.membership(user, slug)
        ctx = ApiContext(workspace=membership.workspace, role=membership.role, actor=f"user:{user.pk}", user=user)
        ratelimit.hit(request, ctx.actor)
        return ctx

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:  # pragma: no cover - __call__ decides
        return None


api_key_auth = ApiKeyAuth()
session_auth = StaffSessionAuth(csrf=True)

F = TypeVar("F", bound=Callable[..., Any])


def context(request: HttpRequest) -> ApiContext:
    ctx = getattr(request, "auth", None)
    assert isinstance(ctx, ApiContext)
    return ctx


def allow(*roles: str) -> Callable[[F], F]:
    """Admit only callers whose role is in ``roles`` (403 ``forbidden`` otherwise). The roles are
    appended to the operation's description, so the OpenAPI document states them too."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            ctx = context(request)
            if ctx.role not in roles:
                raise PermissionDenied(
                    _("The role %(role)s may not do this.") % {"role": ctx.role},
                    code="forbidden", details={"role": ctx.role, "allowed_roles": list(roles)})
            return view(request, *args, **kwargs)

        # The operation's parameters are read from this signature; resolving the annotations here
        # (in the view's module) keeps string annotations of that module working.
        wrapper.__signature__ = inspect.signature(view, eval_str=True)  # type: ignore[attr-defined]
        wrapper.__doc__ = f"{(view.__doc__ or '').strip()}\n\nRoles: {', '.join(roles)}."
        wrapper._shequn_roles = roles  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
