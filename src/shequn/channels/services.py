"""Every write of the channels domain: connecting WeChat Official Accounts, their reply settings, and
recording what they receive (through ``interactions.services.ingest_batch``, the one write path of
interactions)."""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
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
    made: Any = None
    """What ``receive_message``'s ``meanwhile`` made of the reply while the record was stored (None
    when it was not called: a replayed message)."""


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


class Unconfirmed(Exception):  # noqa: N818 - a condition, not an error: the caller answers again
    """The account a message was answered from (``receive_message``'s ``confirm``) was not current any
    more, or the message was stored already: nothing was written; answer it again from a fresh read."""


def receive_message(account: WeChatAccount, message: WeChatMessage, *, confirm: list | None = None,
                    meanwhile: Callable[[Reply | None, InboundMessage], Any] | None = None) -> Processed:
    """Decide the passive reply to one message or event pushed to ``account`` — once — and store it
    to be recorded (ADR 0005).

    The fast path is one transaction: the reply (``compute_reply``: reads, plus the sender's menu
    session) and one ``InboundMessage`` insert holding the reply and the parsed message, with no read
    before it (a new message, the common case, costs no lookup) and nothing else written: the stored
    row is itself the recording's queue entry. On PostgreSQL, when the reply wrote nothing (a keyword
    or default reply: the rules are cached), the insert runs on its own, atomic by itself, without the
    ``BEGIN`` and ``COMMIT`` round trips (``core.inserts.single_statement_suffices``). A retry —
    arriving while the first delivery is still being processed, or after — waits on the unique index
    (PostgreSQL) or the write lock (SQLite), fails to insert, rolls back whatever its own reply
    computation wrote, and answers with the stored reply.

    Recording the message as an interaction (member upsert, counters, stages, inbox routing, loyalty
    and channel-code effects) is the slow part and is not on this path: every worker's drain thread
    records the waiting rows as they commit (:func:`record_waiting`, ``core.tasks.register_drain``),
    and the ``channels.record_pending`` sweep catches any a drain did not get to.

    ``confirm``: ``account`` is what this process remembered (``queries.remembered_account``), not a
    fresh read; the insert is made only if the account is unchanged (``queries.unchanged``, these
    parameters) and :class:`Unconfirmed` is raised, with nothing written, when it is not or when the
    message is stored already.

    ``meanwhile``: work on the reply that needs nothing from the database (rendering and encrypting
    it), done while the server stores the record (``core.inserts.insert_new``); what it returns is
    the result's ``made``."""
    from shequn.core.inserts import insert_new, insert_new_where, single_statement_suffices

    made: list[Any] = []

    def store(record: InboundMessage, reply: Reply | None) -> None:
        during = None if meanwhile is None else (lambda: made.append(meanwhile(reply, record)))
        if confirm is None:
            insert_new(record, meanwhile=during)
        elif not insert_new_where(record, queries.unchanged(), confirm, meanwhile=during):
            raise Unconfirmed

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
                        store(record, reply)  # Unconfirmed rolls back what the reply wrote
                if alone:  # the reply wrote nothing: the one insert statement is its own transaction
                    store(record, reply)
                return Processed(reply=reply, record=record, replayed=False, made=made[-1] if made else None)
        except IntegrityError:
            # A concurrent delivery of the same message committed first: the next pass finds it (a
            # remembered account is confirmed by a fresh read first).
            if confirm is not None:
                raise Unconfirmed from None
            continue
    stored = queries.find_inbound(account, key)
    if stored is None:
        raise ValidationError(_("the message could not be recorded"), code="inbound_conflict")
    return _replay(stored)


RECORDED, ALREADY, REFUSED, MISSING, BUSY = "recorded", "already", "refused", "missing", "busy"


def record_inbound(record_id: int, *, skip_locked: bool = False) -> str:
    """Record the stored message ``record_id`` as an interaction on the member found or created from
    its openid, with its channel-code effects; idempotent (a second run, or a run for a message
    recorded meanwhile, changes nothing). Returns ``recorded``, ``already``, ``refused`` (the
    interaction log refused the event: the reason is kept in ``record_error``), ``missing``, or —
    ``skip_locked``, PostgreSQL — ``busy`` when another worker holds the row (it is recording it)."""
    from shequn.interactions import services as interactions

    with settings_cache.scope(), transaction.atomic():
        record = (InboundMessage.objects.select_for_update(of=("self",), skip_locked=skip_locked)
                  .select_related("account", "account__workspace").filter(pk=record_id).first())
        if record is None:
            return BUSY if skip_locked and InboundMessage.objects.filter(pk=record_id).exists() else MISSING
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


HOLD_FIRST = dt.timedelta(seconds=5)
HOLD_MAX = dt.timedelta(minutes=10)
"""A message whose recording raised is held back from the drains for 5 s, doubling up to 10 minutes,
so one broken message never spins a worker (the error is logged each time)."""

_held: dict[int, tuple[float, int]] = {}
"""Messages held back in this process: id → (monotonic time it may be tried again, failures so far)."""
_held_lock = threading.Lock()


def _held_ids() -> list[int]:
    """The ids held back now (expired holds are kept, with their count, until the next try)."""
    at = time.monotonic()
    with _held_lock:
        return [pk for pk, (until, _failures) in _held.items() if until > at]


def _hold(pk: int) -> None:
    with _held_lock:
        failures = _held.get(pk, (0.0, 0))[1] + 1
        if len(_held) >= 10_000:  # a bound on the bookkeeping; a forgotten hold is only tried sooner
            _held.clear()
        wait = min(HOLD_FIRST.total_seconds() * 2 ** (failures - 1), HOLD_MAX.total_seconds())
        _held[pk] = (time.monotonic() + wait, failures)


def _release(pk: int) -> None:
    with _held_lock:
        _held.pop(pk, None)


RECORD_GRACE = dt.timedelta(minutes=1)
"""How long a message may wait for a drain before the sweep records it."""

FAILED = "failed"


def record_pending(*, older_than: dt.timedelta = RECORD_GRACE, limit: int = 1000) -> dict[str, int]:
    """Record the messages received more than ``older_than`` ago that are still unrecorded, oldest
    first, at most ``limit`` (``wx_inbound_unrecorded`` is a partial index on exactly those rows).
    Counts by outcome (:func:`record_inbound`'s, and ``failed``).

    Safe to run in any number of workers at once: a message another worker is recording is skipped
    (``busy``, PostgreSQL; SQLite's one writer makes the second run find it ``already`` recorded). A
    message whose recording raises is logged and held back from this process's next runs for a while
    (:data:`HOLD_FIRST`, doubling to :data:`HOLD_MAX`); the others go on."""
    query = InboundMessage.objects.filter(recorded_at__isnull=True, record_error="")
    if older_than > dt.timedelta(0):
        query = query.filter(received_at__lte=clock.now() - older_than)
    held = _held_ids()
    if held:
        query = query.exclude(pk__in=held)
    ids = list(query.order_by("received_at").values_list("pk", flat=True)[:limit])
    counts: dict[str, int] = {}
    for pk in ids:
        try:
            outcome = record_inbound(pk, skip_locked=True)
        except Exception:
            logger.exception("wechat: recording message %s failed; it is tried again later", pk)
            _hold(pk)
            outcome = FAILED
        else:
            _release(pk)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def record_waiting(limit: int = 100) -> int:
    """The drain of stored messages (``core.tasks.register_drain``): record up to ``limit`` waiting
    messages, however recent; the number this call settled (recorded, refused, found recorded
    already, failed — not those another worker holds)."""
    counts = record_pending(older_than=dt.timedelta(0), limit=limit)
    return sum(n for outcome, n in counts.items() if outcome != BUSY)
