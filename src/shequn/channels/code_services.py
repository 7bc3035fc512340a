"""Every write of channel QR codes (渠道活码): creating a code (with its permanent QR from WeChat),
editing and deactivating it, recording a scan, and keeping each code's stats as unfollows and
purchases arrive. The stats are facts per (code, member) plus daily counters changed with
conditional UPDATEs and F() — never rebuilt (docs/adr/0012-channel-code-stats.md)."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Greatest, Least
from django.utils.translation import gettext as _

from shequn.core import audit, hooks
from shequn.core.errors import Conflict, ShequnError, ValidationError
from shequn.core.models import Workspace
from shequn.core.tenancy import get_scoped, scoped
from shequn.interactions.models import Interaction, InteractionType

from . import queries
from .models import ChannelCode, ChannelCodeDay, ChannelCodeMember, CodeKind, WeChatAccount
from .queries import CodeInfo
from .wechat import MAX_SCENE

SCENE_RE = re.compile(rf"^[A-Za-z0-9_.-]{{1,{MAX_SCENE}}}$")
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_NAME = 100
MAX_TAGS = 10
MAX_WELCOME_BYTES = 2048  # WeChat's limit for a text reply
UNFOLLOW_WINDOW = dt.timedelta(days=7)


class WeChatApiFailed(ShequnError):
    """WeChat did not give the QR code (network, credentials, quota): nothing was stored."""

    code = "wechat_api_error"
    status = 502


def _field_error(field: str, message: str) -> ValidationError:
    return ValidationError(message, code="invalid_field", details={"field": field})


# ---------------------------------------------------------------------------------------------
# the one call to WeChat


@dataclass(frozen=True)
class QrTicket:
    """What WeChat answers for a QR code: the ticket, and the URL the QR image encodes."""

    ticket: str
    url: str


QrIssuer = Callable[[WeChatAccount, str], QrTicket]


def request_qr(account: WeChatAccount, scene: str) -> QrTicket:
    """Ask WeChat for the permanent string-scene QR code (``QR_LIMIT_STR_SCENE``) of ``scene``.

    The only call to WeChat's API in this module, through the outbound domain's client
    (``shequn.outbound.wechat_api``; base URL from ``SHEQUN_WECHAT_API_BASE``). WeChat returns the
    same ticket when asked again for the same scene, so a retry after a failure is harmless."""
    try:
        from shequn.outbound import wechat_api
    except ImportError:  # pragma: no cover - the outbound client ships with the outbound domain
        raise WeChatApiFailed(_("this server has no WeChat API client"), code="wechat_api_unavailable") from None
    try:
        with wechat_api.client_for(account) as client:
            answer: Any = client.create_qr_scene(scene, permanent=True)
    except ShequnError as exc:
        raise WeChatApiFailed(_("WeChat refused the QR code: %(reason)s") % {"reason": exc.message},
                              details={"cause": exc.code}) from None
    except Exception as exc:  # noqa: BLE001 - any transport failure is the same answer to the operator
        raise WeChatApiFailed(_("WeChat could not be reached: %(reason)s") % {"reason": exc.__class__.__name__}) from None
    ticket = str((answer or {}).get("ticket") or "")
    url = str((answer or {}).get("url") or "")
    if not ticket or not url or len(ticket) > 255 or len(url) > 255:
        raise WeChatApiFailed(_("WeChat's answer has no usable ticket and URL"))
    return QrTicket(ticket=ticket, url=url)


# ---------------------------------------------------------------------------------------------
# validation


def clean_scene(scene: Any) -> str:
    value = str(scene or "").strip()
    if not SCENE_RE.match(value):
        raise _field_error("scene", _("the scene is 1–%(n)s letters, digits, “-”, “_” or “.”") % {"n": MAX_SCENE})
    return value


def _clean_name(name: Any) -> str:
    value = str(name or "").strip()
    if not value or len(value) > MAX_NAME or _CONTROL_RE.search(value):
        raise _field_error("name", _("the name is 1–%(n)s characters") % {"n": MAX_NAME})
    return value


def _clean_kind(kind: Any) -> str:
    value = str(kind or "").strip()
    if value not in CodeKind.values:
        raise _field_error("kind", _("kind must be one of: %(kinds)s") % {"kinds": ", ".join(CodeKind.values)})
    return value


def _clean_welcome(text: Any) -> str:
    value = str(text or "").strip()
    if _CONTROL_RE.search(value):
        raise _field_error("welcome_text", _("the reply text contains control characters"))
    if len(value.encode("utf-8")) > MAX_WELCOME_BYTES:
        raise _field_error("welcome_text",
                           _("the reply text is longer than %(n)s bytes, WeChat's limit") % {"n": MAX_WELCOME_BYTES})
    return value


def _clean_tags(tags: Iterable[Any] | None) -> list[str]:
    from shequn.members import services as members

    out: list[str] = []
    for raw in tags or ():
        try:
            name = members.clean_name(str(raw), "tag")
        except ValidationError:
            raise _field_error("tags", _("a tag name is 1–64 characters without “/”: %(name)s") % {"name": raw}) from None
        if name not in out:
            out.append(name)
    if len(out) > MAX_TAGS:
        raise _field_error("tags", _("at most %(n)s tags per code") % {"n": MAX_TAGS})
    return out


def _bump(account_id: int) -> None:
    """Invalidate every cached lookup of the account's codes (``queries.code_for_scene``)."""
    WeChatAccount.objects.filter(pk=account_id).update(codes_version=secrets.token_hex(8))
    queries.forget_accounts()  # an update in this transaction keeps the row's xmin: forget it here


# ---------------------------------------------------------------------------------------------
# create, edit, deactivate


def create_code(workspace: Workspace, account_id: int, *, kind: str, name: str, scene: str, welcome_text: str = "",
                tags: Iterable[str] | None = None, actor: str, issue_qr: QrIssuer | None = None) -> ChannelCode:
    """Create a channel code: ask WeChat for its permanent QR code, then store it.

    ``issue_qr`` replaces the call to WeChat (the demo data uses one that makes a demo-only URL).
    The call to WeChat happens outside any transaction of ours; the scene's uniqueness per account is
    decided by the database (a concurrent creation of the same scene gets ``scene_taken``)."""
    account = get_scoped(WeChatAccount, workspace, account_id)
    fields = {"kind": _clean_kind(kind), "name": _clean_name(name), "scene": clean_scene(scene),
              "welcome_text": _clean_welcome(welcome_text), "tags": _clean_tags(tags)}
    taken = _("the scene %(scene)s is already used by another code of this account") % {"scene": fields["scene"]}
    if scoped(ChannelCode, workspace).filter(account=account, scene=fields["scene"]).exists():
        # Only a quick answer before calling WeChat; the unique constraint below decides.
        raise Conflict(taken, code="scene_taken", details={"field": "scene"})
    qr = (issue_qr or request_qr)(account, fields["scene"])
    try:
        with transaction.atomic():
            row = ChannelCode.objects.create(workspace=workspace, account=account, ticket=qr.ticket, url=qr.url,
                                             created_by=actor[:200], **fields)
            _bump(account.pk)
            audit.record(workspace, actor, "channel_code.create", row,
                         {"scene": row.scene, "kind": row.kind, "account": account.app_id})
    except IntegrityError:
        raise Conflict(taken, code="scene_taken", details={"field": "scene"}) from None
    return row


@transaction.atomic
def update_code(workspace: Workspace, code_id: int, *, kind: str | None = None, name: str | None = None,
                welcome_text: str | None = None, tags: Iterable[str] | None = None, active: bool | None = None,
                actor: str) -> ChannelCode:
    """Change what a code does; ``None`` leaves a field as it is. The scene, ticket and URL never
    change (they are printed). ``active=False`` deactivates the code: its scans are still recorded and
    counted, but a new follower gets the account's own welcome and no tags."""
    row = get_scoped(ChannelCode, workspace, code_id, for_update=True)
    new: dict[str, Any] = {}
    if kind is not None:
        new["kind"] = _clean_kind(kind)
    if name is not None:
        new["name"] = _clean_name(name)
    if welcome_text is not None:
        new["welcome_text"] = _clean_welcome(welcome_text)
    if tags is not None:
        new["tags"] = _clean_tags(tags)
    if active is not None:
        if not isinstance(active, bool):
            raise _field_error("active", _("active is true or false"))
        new["active"] = active
    changed = [f for f, v in new.items() if getattr(row, f) != v]
    if changed:
        for f in changed:
            setattr(row, f, new[f])
        row.save(update_fields=[*changed, "updated_at"])
        _bump(row.account_id)
        action = "channel_code.update"
        if changed == ["active"]:
            action = "channel_code.activate" if row.active else "channel_code.deactivate"
        audit.record(workspace, actor, action, row, {"fields": changed})
    return row


# ---------------------------------------------------------------------------------------------
# scans


def _add(workspace: Workspace, code_id: int, day: dt.date, **deltas: int) -> None:
    deltas = {k: v for k, v in deltas.items() if v}
    if not deltas:
        return
    ChannelCodeDay.objects.bulk_create([ChannelCodeDay(workspace=workspace, code_id=code_id, day=day)],
                                       ignore_conflicts=True)
    ChannelCodeDay.objects.filter(code_id=code_id, day=day).update(**{k: F(k) + v for k, v in deltas.items()})


def record_scan(workspace: Workspace, code: CodeInfo, member_id: int, *, new_follower: bool, at: dt.datetime,
                actor: str) -> None:
    """Count a scan of ``code`` by ``member_id`` at ``at`` (inside the transaction that recorded it).

    A new follower (a subscribe through the code) is counted as the code's follower the first time,
    and gets the code's tags when the code is active. Emits ``hooks.CHANNEL_CODE_SCANNED``."""
    from shequn.members import services as members
    from shequn.members.models import Member

    day = queries.local_day(workspace, at)
    first = False
    try:
        with transaction.atomic():
            bought = (scoped(Member, workspace).filter(pk=member_id).values_list("purchase_count", flat=True)
                      .first()) or 0
            link = ChannelCodeMember.objects.create(workspace=workspace, code_id=code.id, member_id=member_id,
                                                    first_scan_at=at, last_scan_at=at, scans=1,
                                                    customer_before=bought > 0)
            first = True
    except IntegrityError:
        link = ChannelCodeMember.objects.get(member_id=member_id, code_id=code.id)
        ChannelCodeMember.objects.filter(pk=link.pk).update(
            scans=F("scans") + 1, first_scan_at=Least(F("first_scan_at"), at), last_scan_at=Greatest(F("last_scan_at"), at))
    follows = 0
    if new_follower:
        follows = ChannelCodeMember.objects.filter(pk=link.pk, followed_at__isnull=True).update(followed_at=at)
    _add(workspace, code.id, day, scans=1, scanners=int(first), follows=follows)
    if new_follower and code.active and code.tags:
        members.add_tags(workspace, member_id, code.tags, actor=actor)
    hooks.emit(hooks.CHANNEL_CODE_SCANNED, workspace=workspace, member_id=member_id, code_id=code.id,
               scene=code.scene, new_follower=new_follower, at=at)


# ---------------------------------------------------------------------------------------------
# unfollows and purchases (interactions.services.INTERACTION_HANDLERS)


def on_interactions(workspace: Workspace, rows: Sequence[Interaction]) -> None:
    """Count early unfollows and first purchases of members who scanned a code. At most one query
    per kind per batch when nothing matches; batches without unfollows or purchases cost nothing."""
    unfollows = [r for r in rows if r.type == InteractionType.UNFOLLOW]
    purchases = [r for r in rows if r.type == InteractionType.PURCHASE]
    if unfollows:
        _count_unfollows(workspace, unfollows)
    if purchases:
        _count_conversions(workspace, purchases)


def _count_unfollows(workspace: Workspace, rows: list[Interaction]) -> None:
    by_member: dict[int, list[Interaction]] = defaultdict(list)
    for r in rows:
        by_member[r.member_id].append(r)
    links = (scoped(ChannelCodeMember, workspace)
             .filter(member_id__in=list(by_member), followed_at__isnull=False, unfollowed_at__isnull=True)
             .values_list("pk", "code_id", "member_id", "followed_at", "code__account__app_id"))
    for pk, code_id, member_id, followed_at, app_id in links:
        for r in sorted(by_member[member_id], key=lambda x: x.occurred_at):
            if r.source.startswith("wechat:") and r.source != f"wechat:{app_id}":
                continue  # an unfollow of another Official Account
            if followed_at <= r.occurred_at <= followed_at + UNFOLLOW_WINDOW:
                if ChannelCodeMember.objects.filter(pk=pk, unfollowed_at__isnull=True).update(unfollowed_at=r.occurred_at):
                    _add(workspace, code_id, queries.local_day(workspace, r.occurred_at), unfollows=1)
                break


def _count_conversions(workspace: Workspace, rows: list[Interaction]) -> None:
    by_member: dict[int, list[dt.datetime]] = defaultdict(list)
    for r in rows:
        by_member[r.member_id].append(r.occurred_at)
    links = (scoped(ChannelCodeMember, workspace)
             .filter(member_id__in=list(by_member), converted_at__isnull=True, customer_before=False)
             .values_list("pk", "code_id", "member_id", "first_scan_at"))
    for pk, code_id, member_id, first_scan_at in links:
        times = sorted(by_member[member_id])
        if times[0] < first_scan_at:
            # A purchase from before the scan arrived late: the member was a customer already.
            ChannelCodeMember.objects.filter(pk=pk, converted_at__isnull=True).update(customer_before=True)
            continue
        if ChannelCodeMember.objects.filter(pk=pk, converted_at__isnull=True, customer_before=False) \
                .update(converted_at=times[0]):
            _add(workspace, code_id, queries.local_day(workspace, times[0]), conversions=1)
