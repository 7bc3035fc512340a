"""Every write of the channels domain: connecting WeChat Official Accounts, their reply settings, and
recording what they receive (through ``interactions.services.ingest_batch``, the one write path of
interactions)."""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from shequn.core import audit, clock
from shequn.core import cache as settings_cache
from shequn.core.errors import ValidationError
from shequn.core.models import Workspace
from shequn.core.tenancy import get_scoped

from . import code_services, queries
from .models import InboundMessage, WeChatAccount, WeChatMode
from .replies import Reply, compute_reply
from .wechat import WeChatMessage, aes_key_problem

logger = logging.getLogger("shequn.channels.wechat")

_APP_ID_RE = re.compile(r"^wx[0-9A-Za-z]{10,30}$")
_SECRET_RE = re.compile(r"^[0-9A-Za-z]{16,64}$")
_TOKEN_RE = re.compile(r"^[0-9A-Za-z]{3,32}$")
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_REPLY_BYTES = 2048
MAX_TOLERANCE = 24 * 3600
QR_SCENE_PREFIX = "qrscene_"
QR_SOURCE_CHANNEL = "wechat_qr"
MAX_SCENE = 64


def _field_error(field: str, message: str) -> ValidationError:
    return ValidationError(message, code="invalid_field", details={"field": field})


def _clean_account_fields(app_id: str, app_secret: str, token: str, aes_key: str, mode: str) -> tuple[str, ...]:
    app_id, app_secret, token, aes_key, mode = (str(v or "").strip() for v in (app_id, app_secret, token, aes_key, mode))
    if not _APP_ID_RE.match(app_id):
        raise _field_error("app_id", _("the AppID starts with 'wx' followed by letters and digits (开发 › 基本配置)"))
    if not _SECRET_RE.match(app_secret):
        raise _field_error("app_secret", _("the AppSecret is 16–64 letters and digits"))
    if not _TOKEN_RE.match(token):
        raise _field_error("token", _("the Token must be 3–32 letters or digits, the same as in the WeChat console"))
    if mode not in WeChatMode.values:
        raise _field_error("mode", _("mode must be one of: %(modes)s") % {"modes": ", ".join(WeChatMode.values)})
    if aes_key or mode != WeChatMode.PLAINTEXT:
        if not aes_key:
            raise _field_error("encoding_aes_key", _("compatible and safe mode need the EncodingAESKey"))
        problem = aes_key_problem(aes_key)
        if problem:
            raise _field_error("encoding_aes_key", problem)
    return app_id, app_secret, token, aes_key, mode


def _clean_tolerance(value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOLERANCE:
        raise _field_error("timestamp_tolerance",
                           _("timestamp tolerance must be 0 (off) to %(max)s seconds") % {"max": MAX_TOLERANCE})
    return value


def _new_endpoint_key() -> str:
    return secrets.token_urlsafe(24)  # 192 random bits, 32 URL-safe characters


@transaction.atomic
def connect_account(workspace: Workspace, app_id: str, app_secret: str, token: str, aes_key: str, mode: str,
                    actor: str, *, timestamp_tolerance: int | None = None) -> tuple[WeChatAccount, str]:
    """Connect an Official Account to ``workspace`` (or update the connection of the same AppID) and
    return it with the path of its server URL. Reconnecting keeps the URL and the reply settings."""
    app_id, app_secret, token, aes_key, mode = _clean_account_fields(app_id, app_secret, token, aes_key, mode)
    tolerance = _clean_tolerance(timestamp_tolerance)
    values: dict[str, Any] = {"app_secret": app_secret, "token": token, "encoding_aes_key": aes_key, "mode": mode}
    if tolerance is not None:
        values["timestamp_tolerance"] = tolerance
    account, created = WeChatAccount.objects.select_for_update().update_or_create(  # backed by uniq_wechat_app_per_workspace
        workspace=workspace, app_id=app_id, defaults=values,
        create_defaults={**values, "endpoint_key": _new_endpoint_key()})
    audit.record(workspace, actor, "wechat.connect" if created else "wechat.reconnect", account,
                 {"app_id": app_id, "mode": mode})
    return account, queries.server_path(account)


def _clean_reply_text(field: str, text: str | None) -> str | None:
    if text is None:
        return None
    value = str(text).strip()
    if _CONTROL_RE.search(value):
        raise _field_error(field, _("the reply text contains control characters"))
    if len(value.encode("utf-8")) > MAX_REPLY_BYTES:
        raise _field_error(field, _("the reply text is longer than %(n)s bytes, WeChat's limit") % {"n": MAX_REPLY_BYTES})
    return value


@transaction.atomic
def set_auto_replies(workspace: Workspace, account_id: int, *, welcome_text: str | None = None,
                     reply_text: str | None = None, actor: str) -> WeChatAccount:
    """Set the welcome text (reply to a new follower) and the default auto-reply text; ``None`` leaves a
    value unchanged, an empty string turns it off."""
    account = get_scoped(WeChatAccount, workspace, account_id, for_update=True)
    changed: list[str] = []
    for field, value in (("welcome_text", _clean_reply_text("welcome_text", welcome_text)),
                         ("reply_text", _clean_reply_text("reply_text", reply_text))):
        if value is not None and getattr(account, field) != value:
            setattr(account, field, value)
            changed.append(field)
    if changed:
        account.save(update_fields=[*changed, "updated_at"])
        audit.record(workspace, actor, "wechat.auto_replies", account, {"fields": changed})
    return account


# ---------------------------------------------------------------------------------------------
# inbound messages


@dataclass(frozen=True)
class Processed:
    """The outcome of one pushed message: the reply to send (None: answer ``success``), the record,
    and whether it was a retry of a message processed before."""

    reply: Reply | None
    record: InboundMessage
    replayed: bool


_EVENT_TYPES = {"subscribe": "follow", "unsubscribe": "unfollow", "scan": "scan"}


def interaction_for(account: WeChatAccount, message: WeChatMessage, reply: Reply | None = None) -> dict[str, Any]:
    """The interaction event (as ``ingest_batch`` takes it) that records ``message``; when a keyword
    rule chose the ``reply``, the rule's id is kept in the properties (``auto_reply_rule``), and when
    the bot read the message, its outcome (``bot_outcome``: "answered" or "handoff") and what answered
    (``bot_source``, ``incident``, ``menu``, ``menu_node``)."""
    props = message.properties()
    if reply is not None and reply.rule_id is not None:
        props["auto_reply_rule"] = reply.rule_id
    if reply is not None and reply.bot_outcome is not None:
        props["bot_outcome"] = reply.bot_outcome
        props.update(reply.props)
    profile: dict[str, str] = {}
    if message.is_event:
        itype = _EVENT_TYPES.get(message.event_lower, "custom")
        key = message.event_key
        if message.event_lower == "subscribe" and key.startswith(QR_SCENE_PREFIX):
            scene = key[len(QR_SCENE_PREFIX):][:MAX_SCENE]
            props["scene"] = scene
            if scene:
                profile = {"source_channel": QR_SOURCE_CHANNEL, "source_code": scene}
        elif message.event_lower == "scan" and key:
            props["scene"] = key[:MAX_SCENE]
        code = queries.code_for_scene(account, message.qr_scene)
        if code is not None:
            props["channel_code"] = code.id
    else:
        itype = "message"
    props["account"] = account.app_id
    event: dict[str, Any] = {
        "identities": [{"kind": "wechat_openid", "namespace": account.app_id, "value": message.from_user}],
        "type": itype,
        "channel": "wechat",
        "direction": "in",
        "occurred_at": dt.datetime.fromtimestamp(message.create_time, tz=dt.UTC),
        "source": account.source,
        "external_id": message.dedup_key,
        "properties": props,
    }
    if profile:
        event["profile"] = profile
    return event


def _record_code_scan(account: WeChatAccount, message: WeChatMessage, result: Any) -> None:
    """A scan of one of the account's channel codes counts in the code's stats and tags a new
    follower (``code_services.record_scan``), in the transaction that recorded the scan."""
    code = queries.code_for_scene(account, message.qr_scene)
    if code is None or result.status != "created" or result.member_id is None:
        return  # not a code of ours, or a redelivery already counted
    code_services.record_scan(account.workspace, code, result.member_id,
                              new_follower=message.event_lower == "subscribe",
                              at=dt.datetime.fromtimestamp(message.create_time, tz=dt.UTC), actor=account.source)


def _replay(record: InboundMessage) -> Processed:
    reply = Reply(kind=record.reply_type, content=record.reply_content) if record.reply_type else None
    return Processed(reply=reply, record=record, replayed=True)


def _reply_meta(reply: Reply | None) -> dict[str, Any]:
    if reply is None:
        return {}
    meta: dict[str, Any] = {}
    if reply.rule_id is not None:
        meta["rule_id"] = reply.rule_id
    if reply.bot_outcome is not None:
        meta["bot_outcome"] = reply.bot_outcome
    if reply.props:
        meta["props"] = dict(reply.props)
    return meta


def _stored_reply(record: InboundMessage) -> Reply | None:
    """The reply stored with ``record``, with what answered it (for the interaction's properties)."""
    meta = record.reply_meta or {}
    if not record.reply_type and not meta:
        return None
    return Reply(kind=record.reply_type, content=record.reply_content, rule_id=meta.get("rule_id"),
                 bot_outcome=meta.get("bot_outcome"), props=tuple(dict(meta.get("props") or {}).items()))


def receive_message(account: WeChatAccount, message: WeChatMessage) -> Processed:
    """Decide the passive reply to one message or event pushed to ``account`` — once — and have it
    recorded (ADR 0005).

    The fast path is one transaction: the reply (``compute_reply``: reads, plus the sender's menu
    session) and one ``InboundMessage`` insert holding the reply and the parsed message, with no read
    before it (a new message, the common case, costs no lookup). On PostgreSQL, when the reply wrote
    nothing (a keyword or default reply: the rules are cached), the insert — one statement with its
    task there — runs on its own, atomic by itself, without the ``BEGIN`` and ``COMMIT`` round trips
    (``core.tasks.single_statement_suffices``). A retry — arriving while the first
    delivery is still being processed, or after — waits on the unique index (PostgreSQL) or the write
    lock (SQLite), fails to insert, rolls back whatever its own reply computation wrote, and answers
    with the stored reply.

    Recording the message as an interaction (member upsert, counters, stages, inbox routing, loyalty
    and channel-code effects) is the slow part and is not on this path: the ``channels.record_inbound``
    task does it once the row has committed (:func:`record_inbound`; on the database queue the task
    row is written in the same transaction), and the ``channels.record_pending`` sweep catches any
    message whose task was lost (:func:`record_pending`)."""
    from shequn.core.tasks import insert_with_task, single_statement_suffices

    from . import tasks

    workspace = account.workspace
    key = message.dedup_key
    for attempt in range(3):
        if attempt:  # the insert below conflicted: the message is stored (or being stored) already
            stored = queries.find_inbound(account, key)
            if stored is not None:
                return _replay(stored)
        try:
            with settings_cache.scope():
                with transaction.atomic():
                    reply = compute_reply(account, message)
                    record = InboundMessage(
                        workspace_id=workspace.pk, account_id=account.pk, dedup_key=key, msg_type=message.msg_type,
                        event=message.event, from_user=message.from_user, to_user=message.to_user,
                        reply_type=reply.kind if reply is not None else "",
                        reply_content=reply.content if reply is not None else "",
                        reply_meta=_reply_meta(reply), payload=message.to_payload())
                    alone = single_statement_suffices()
                    if not alone:
                        insert_with_task(record, tasks.record_inbound)
                if alone:  # the reply wrote nothing: the one insert statement is its own transaction
                    insert_with_task(record, tasks.record_inbound)
                return Processed(reply=reply, record=record, replayed=False)
        except IntegrityError:
            # A concurrent delivery of the same message committed first: the next pass finds it.
            continue
    stored = queries.find_inbound(account, key)
    if stored is None:
        raise ValidationError(_("the message could not be recorded"), code="inbound_conflict")
    return _replay(stored)


RECORDED, ALREADY, REFUSED, MISSING = "recorded", "already", "refused", "missing"


def record_inbound(record_id: int) -> str:
    """Record the stored message ``record_id`` as an interaction on the member found or created from
    its openid, with its channel-code effects; idempotent (a second run, or a run for a message
    recorded meanwhile, changes nothing). Returns ``recorded``, ``already``, ``refused`` (the
    interaction log refused the event: the reason is kept in ``record_error``) or ``missing``."""
    from shequn.interactions import services as interactions

    with settings_cache.scope(), transaction.atomic():
        record = (InboundMessage.objects.select_for_update(of=("self",))
                  .select_related("account", "account__workspace").filter(pk=record_id).first())
        if record is None:
            return MISSING
        if record.recorded_at is not None or record.record_error:
            return ALREADY
        account = record.account
        message = WeChatMessage.from_payload(record.payload)
        [result] = interactions.ingest_batch(account.workspace, [interaction_for(account, message, _stored_reply(record))],
                                             actor=account.source)
        if result.status == "error":
            error = result.error or {}
            record.record_error = f"{error.get('code', 'invalid_event')}: {error.get('message', '')}"[:2000]
            record.save(update_fields=["record_error"])
            logger.warning("wechat %s: message %s not recorded: %s", account.app_id, record.dedup_key, record.record_error)
            return REFUSED
        _record_code_scan(account, message, result)
        record.interaction_id = result.id
        record.recorded_at = clock.now()
        record.save(update_fields=["interaction", "recorded_at"])
        return RECORDED


RECORD_GRACE = dt.timedelta(minutes=1)
"""How long a message may wait for its ``record_inbound`` task before the sweep records it."""


def record_pending(*, older_than: dt.timedelta = RECORD_GRACE, limit: int = 1000) -> dict[str, int]:
    """Record the messages received more than ``older_than`` ago that are still unrecorded (their
    task was lost: a broker outage at enqueue time, a worker killed mid-task), oldest first, at most
    ``limit``. Counts by outcome."""
    cutoff = clock.now() - older_than
    ids = list(InboundMessage.objects.filter(recorded_at__isnull=True, record_error="", received_at__lte=cutoff)
               .order_by("received_at").values_list("pk", flat=True)[:limit])
    counts: dict[str, int] = {}
    for pk in ids:
        outcome = record_inbound(pk)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts
