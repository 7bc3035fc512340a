"""Every write of the outbound domain: the outbox (customer-service, template and email messages to
members), their delivery, SMTP settings, inbound webhook endpoints and outbound webhook subscriptions
with their deliveries.

Delivery guarantees (ADR 0010): a message or webhook delivery is written first (in the caller's
transaction) and delivered by a task enqueued after commit — at least once, retried with backoff. A
caller-supplied ``key`` (unique per workspace) makes sending idempotent; webhook subscribers de-duplicate
on the ``X-Shequn-Event-Id`` header.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils.translation import gettext as _

from shequn.channels.models import WeChatAccount
from shequn.core import audit, clock
from shequn.core import cache as settings_cache
from shequn.core.errors import NotFound, ShequnError, ValidationError
from shequn.core.models import Workspace
from shequn.core.tasks import enqueue_on_commit
from shequn.core.tenancy import get_scoped, scoped
from shequn.members.models import Member, MemberStatus

from . import mail, queries, signing
from .models import (
    Channel,
    DeliveryAttempt,
    DeliveryStatus,
    MessageAttempt,
    MessageKind,
    MessageStatus,
    OutboundMessage,
    SmtpSecurity,
    SmtpSettings,
    SubscriptionsVersion,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSubscription,
)
from .wechat_api import WeChatApiError, client_for

logger = logging.getLogger("shequn.outbound")

MAX_TEXT = 2000
MAX_ATTEMPTS = 5
RETRY_DELAYS = (30, 120, 600, 1800, 3600)
"""Seconds before the 2nd, 3rd … attempt of a message or webhook delivery (plus jitter)."""
SENDING_TIMEOUT = dt.timedelta(minutes=10)
"""A row left in ``sending`` this long (its worker died) may be claimed again."""
SENSITIVE_PURPOSES = frozenset({"otp"})
"""Purposes whose text is not copied into the member's interaction log (one-time codes)."""
WEBHOOK_MAX_ATTEMPTS = 6
WEBHOOK_TIMEOUT = 10.0
RESPONSE_EXCERPT = 500
_PURPOSE_RE = re.compile(r"^[a-z0-9_.-]{1,32}$")
_EVENT_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
KNOWN_EVENTS = ("interaction.created", "message.sent", "message.failed", "webhook.test")

# Tests and the demo may replace how API clients and HTTP posts are made (e.g. a fast sleep).
CLIENT_OPTIONS: dict[str, Any] = {}


def _field_error(field: str, message: str) -> ValidationError:
    return ValidationError(message, code="invalid_field", details={"field": field})


def _clean_purpose(purpose: str) -> str:
    value = str(purpose or "").strip().lower()
    if not _PURPOSE_RE.match(value):
        raise _field_error("purpose", _("purpose must be 1–32 lower-case letters, digits, '_', '.' or '-'"))
    return value


def _clean_key(key: str | None) -> str | None:
    if key is None or key == "":
        return None
    value = str(key).strip()
    if not value or len(value) > 128:
        raise _field_error("key", _("key must be 1–128 characters"))
    return value


# ---------------------------------------------------------------------------------------------
# outbox: enqueue


def _member(workspace: Workspace, member_id: int) -> Member:
    member = get_scoped(Member, workspace, member_id)
    if member.status == MemberStatus.MERGED and member.merged_into_id:
        return get_scoped(Member, workspace, member.merged_into_id)
    return member


def _route(workspace: Workspace, member: Member, channel: str | None, kind: str) -> tuple[str, WeChatAccount | None, str, str]:
    """(channel, account, recipient, reason-if-undeliverable) for a message of ``kind``."""
    wechat_ok = kind != MessageKind.EMAIL
    email_ok = kind in (MessageKind.TEXT, MessageKind.NEWS, MessageKind.LINK, MessageKind.EMAIL)
    if channel not in (None, "", Channel.WECHAT, Channel.EMAIL):
        raise _field_error("channel", _("channel must be 'wechat' or 'email'"))
    want_wechat = wechat_ok and channel in (None, "", Channel.WECHAT)
    want_email = email_ok and channel in (None, "", Channel.EMAIL)
    if want_wechat:
        found = queries.wechat_recipient(workspace, member.pk)
        if found is not None:
            return Channel.WECHAT, found[0], found[1], ""
    if want_email:
        address = queries.email_recipient(workspace, member.pk)
        if address and queries.smtp_settings(workspace) is not None:
            return Channel.EMAIL, None, address, ""
        if address and channel == Channel.EMAIL:
            return Channel.NONE, None, address, _("no SMTP server is configured for this workspace")
    if channel == Channel.WECHAT or not want_email:
        reason = _("the member has no WeChat openid of a connected Official Account")
    else:
        reason = _("the member has no WeChat openid of a connected account and no email address")
    return Channel.NONE, None, "", reason


def _enqueue(workspace: Workspace, member_id: int, kind: str, payload: dict[str, Any], *, purpose: str, actor: str,
             channel: str | None, key: str | None) -> OutboundMessage:
    purpose = _clean_purpose(purpose)
    key = _clean_key(key)
    if key is not None:
        existing = scoped(OutboundMessage, workspace).filter(key=key).first()
        if existing is not None:
            return existing
    member = _member(workspace, member_id)
    route, account, recipient, reason = _route(workspace, member, channel, kind)
    status = MessageStatus.QUEUED if route != Channel.NONE else MessageStatus.UNDELIVERABLE
    try:
        with transaction.atomic():
            message = OutboundMessage.objects.create(
                workspace=workspace, member=member, channel=route, account=account, recipient=recipient, kind=kind,
                purpose=purpose, payload=payload, status=status, last_error=reason, key=key, actor=actor[:200])
            if status == MessageStatus.QUEUED:
                from .tasks import deliver_message

                enqueue_on_commit(deliver_message, message.pk)
    except IntegrityError:
        if key is None:
            raise
        existing = scoped(OutboundMessage, workspace).filter(key=key).first()
        if existing is None:
            raise
        return existing
    return message


def send_text(workspace: Workspace, member_id: int, text: str, *, purpose: str, actor: str,
              channel: str | None = None, key: str | None = None) -> OutboundMessage:
    """Queue a text to a member: a WeChat customer-service message when the member has an openid of a
    connected account, else an email when they have an address and SMTP is set up, else an
    ``undeliverable`` row (still shown in the outbox). Delivered after commit; ``key`` makes it
    idempotent (the same key returns the row stored first)."""
    value = str(text or "").strip()
    if not value:
        raise _field_error("text", _("the text is empty"))
    if len(value) > MAX_TEXT:
        raise _field_error("text", _("the text is longer than %(n)s characters") % {"n": MAX_TEXT})
    return _enqueue(workspace, member_id, MessageKind.TEXT, {"text": value}, purpose=purpose, actor=actor,
                    channel=channel, key=key)


def _clean_url(field: str, value: Any, *, required: bool = False) -> str:
    url = str(value or "").strip()
    if not url:
        if required:
            raise _field_error(field, _("%(field)s is required") % {"field": field})
        return ""
    if not url.startswith(("https://", "http://")) or len(url) > 1000:
        raise _field_error(field, _("%(field)s must be an http(s) URL") % {"field": field})
    return url


def send_news(workspace: Workspace, member_id: int, articles: Sequence[Mapping[str, Any]], *, purpose: str,
              actor: str, channel: str | None = None, key: str | None = None) -> OutboundMessage:
    """Queue an article card (图文消息): one article ``{title, description, url, picurl}`` (WeChat shows
    one per customer-service message). By email it becomes a short message with the link."""
    if not articles or len(articles) != 1 or not isinstance(articles[0], Mapping):
        raise _field_error("articles", _("a news message has exactly one article"))
    a = articles[0]
    title = str(a.get("title") or "").strip()
    if not title or len(title) > 64:
        raise _field_error("title", _("the article title must be 1–64 characters"))
    article = {"title": title, "description": str(a.get("description") or "").strip()[:120],
               "url": _clean_url("url", a.get("url"), required=True), "picurl": _clean_url("picurl", a.get("picurl"))}
    return _enqueue(workspace, member_id, MessageKind.NEWS, {"articles": [article]}, purpose=purpose, actor=actor,
                    channel=channel, key=key)


def send_image(workspace: Workspace, member_id: int, media_id: str, *, purpose: str, actor: str,
               key: str | None = None) -> OutboundMessage:
    """Queue an image (a ``media_id`` uploaded to WeChat) — WeChat only."""
    media_id = str(media_id or "").strip()
    if not media_id or len(media_id) > 128:
        raise _field_error("media_id", _("media_id is required"))
    return _enqueue(workspace, member_id, MessageKind.IMAGE, {"media_id": media_id}, purpose=purpose, actor=actor,
                    channel=Channel.WECHAT, key=key)


def send_template(workspace: Workspace, member_id: int, template_id: str, data: Mapping[str, Any], *, purpose: str,
                  actor: str, url: str | None = None, key: str | None = None) -> OutboundMessage:
    """Queue a template message (模板消息) — WeChat only; ``data`` maps keys to values or ``{"value"}``."""
    template_id = str(template_id or "").strip()
    if not template_id or len(template_id) > 128:
        raise _field_error("template_id", _("template_id is required"))
    if not isinstance(data, Mapping) or not data:
        raise _field_error("data", _("template data must be a non-empty object"))
    clean = {str(k): ({"value": str(v.get("value", ""))} if isinstance(v, Mapping) else {"value": str(v)})
             for k, v in data.items()}
    payload: dict[str, Any] = {"template_id": template_id, "data": clean}
    if url:
        payload["url"] = _clean_url("url", url)
    return _enqueue(workspace, member_id, MessageKind.TEMPLATE, payload, purpose=purpose, actor=actor,
                    channel=Channel.WECHAT, key=key)


def send_email(workspace: Workspace, member_id: int, subject: str, body: str, *, purpose: str, actor: str,
               html: str | None = None, key: str | None = None) -> OutboundMessage:
    """Queue an email to the member's address through the workspace's SMTP server."""
    subject = str(subject or "").strip()
    if not subject or len(subject) > 200 or "\n" in subject or "\r" in subject:
        raise _field_error("subject", _("the subject must be one line of 1–200 characters"))
    body = str(body or "")
    if not body.strip():
        raise _field_error("body", _("the body is empty"))
    payload: dict[str, Any] = {"subject": subject, "body": body}
    if html:
        payload["html"] = str(html)
    return _enqueue(workspace, member_id, MessageKind.EMAIL, payload, purpose=purpose, actor=actor,
                    channel=Channel.EMAIL, key=key)


@transaction.atomic
def record_external(workspace: Workspace, member_id: int, *, kind: str, payload: dict[str, Any], purpose: str,
                    actor: str, channel: str, recipient: str, status: str, at: dt.datetime,
                    error: str = "", key: str | None = None) -> OutboundMessage:
    """Record a message another system already sent (history imports, the demo): an outbox row in its
    final state with one attempt; nothing is delivered and no interaction is added (the importer
    records those through the interaction write path)."""
    if kind not in MessageKind.values:
        raise _field_error("kind", _("unknown message kind"))
    if channel not in Channel.values:
        raise _field_error("channel", _("channel must be 'wechat' or 'email'"))
    if status not in (MessageStatus.SENT, MessageStatus.FAILED, MessageStatus.UNDELIVERABLE):
        raise _field_error("status", _("a recorded message is sent, failed or undeliverable"))
    member = _member(workspace, member_id)
    key = _clean_key(key)
    if key is not None:
        existing = scoped(OutboundMessage, workspace).filter(key=key).first()
        if existing is not None:
            return existing
    message = OutboundMessage.objects.create(
        workspace=workspace, member=member, channel=channel, recipient=recipient[:255], kind=kind,
        purpose=_clean_purpose(purpose), payload=payload, status=status, last_error=error, key=key,
        actor=actor[:200], attempts=0 if status == MessageStatus.UNDELIVERABLE else 1,
        sent_at=at if status == MessageStatus.SENT else None)
    OutboundMessage.objects.filter(pk=message.pk).update(created_at=at, updated_at=at)
    if status != MessageStatus.UNDELIVERABLE:
        MessageAttempt.objects.create(workspace=workspace, message=message, at=at, ok=status == MessageStatus.SENT,
                                      error=error)
    message.refresh_from_db()
    return message


@transaction.atomic
def retry_message(workspace: Workspace, message_id: int, *, actor: str) -> OutboundMessage:
    """Queue a failed message again (an operator's decision, audited)."""
    message = get_scoped(OutboundMessage, workspace, message_id)
    changed = scoped(OutboundMessage, workspace).filter(pk=message.pk, status=MessageStatus.FAILED).update(
        status=MessageStatus.QUEUED, next_attempt_at=None, updated_at=clock.now())
    if not changed:
        raise ValidationError(_("only a failed message can be retried"), code="not_failed")
    from .tasks import deliver_message

    enqueue_on_commit(deliver_message, message.pk)
    audit.record(workspace, actor, "outbound.retry", message)
    message.refresh_from_db()
    return message


# ---------------------------------------------------------------------------------------------
# outbox: delivery (the task body)


def _wechat_payload(message: OutboundMessage) -> dict[str, Any]:
    p = message.payload
    if message.kind == MessageKind.TEXT:
        return {"msgtype": "text", "text": {"content": p["text"]}}
    if message.kind == MessageKind.IMAGE:
        return {"msgtype": "image", "image": {"media_id": p["media_id"]}}
    if message.kind == MessageKind.NEWS:
        return {"msgtype": "news", "news": {"articles": p["articles"]}}
    if message.kind == MessageKind.LINK:
        return {"msgtype": "link", "link": p["link"]}
    raise ValidationError(_("this message kind cannot be sent as a customer-service message"), code="invalid_kind")


def _email_content(message: OutboundMessage) -> tuple[str, str, str | None]:
    p = message.payload
    name = message.workspace.name
    if message.kind == MessageKind.EMAIL:
        return p["subject"], p["body"], p.get("html")
    if message.kind == MessageKind.TEXT:
        return _("Message from %(name)s") % {"name": name}, p["text"], None
    if message.kind == MessageKind.NEWS:
        a = p["articles"][0]
        return a["title"], "\n\n".join(x for x in (a.get("description", ""), a["url"]) if x), None
    raise ValidationError(_("this message kind cannot be sent by email"), code="invalid_kind")


def _send(message: OutboundMessage, client_options: Mapping[str, Any]) -> dict[str, Any]:
    if message.channel == Channel.WECHAT:
        if message.account is None:
            raise WeChatApiError(_("the Official Account was disconnected"), code="account_missing")
        with client_for(message.account, **client_options) as client:
            if message.kind == MessageKind.TEMPLATE:
                p = message.payload
                return client.send_template(message.recipient, p["template_id"], p["data"], url=p.get("url"))
            return client.send_custom(message.recipient, _wechat_payload(message))
    if message.channel == Channel.EMAIL:
        smtp = queries.smtp_settings(message.workspace)
        if smtp is None:
            raise ValidationError(_("no SMTP server is configured for this workspace"), code="smtp_missing")
        subject, body, html = _email_content(message)
        message_id = mail.send(smtp, message.recipient, subject, body, html=html,
                               message_id=f"<outbox-{message.pk}.{message.workspace.slug}@shequn>")
        return {"message_id": message_id}
    raise ValidationError(_("the message has no channel"), code="undeliverable")


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, WeChatApiError):
        return exc.retryable
    if isinstance(exc, ShequnError):
        return False
    return mail.is_transient(exc)


def _retry_delay(attempt: int, delays: Sequence[int] = RETRY_DELAYS) -> dt.timedelta:
    base = delays[min(attempt - 1, len(delays) - 1)]
    return dt.timedelta(seconds=base + secrets.randbelow(max(1, base // 5) + 1))


def _schedule(task: Any, *args: Any, run_after: dt.datetime) -> None:
    """Enqueue a retry for ``run_after`` when the backend supports delays; otherwise the periodic sweep
    (``outbound.sweep``) picks the row up when it is due."""
    if task.get_backend().supports_defer:
        enqueue_on_commit(task, *args, run_after=run_after)


def _record_interaction(message: OutboundMessage, at: dt.datetime) -> int | None:
    from shequn.interactions import services as interactions

    props: dict[str, Any] = {"msg_type": message.kind, "purpose": message.purpose, "outbox_id": message.pk}
    if message.purpose not in SENSITIVE_PURPOSES:
        summary = message.payload.get("text") or message.summary
        if summary:
            props["text"] = str(summary)[:500]
    [result] = interactions.ingest_batch(message.workspace, [{
        "member_id": message.member_id, "type": "message", "channel": message.channel, "direction": "out",
        "occurred_at": at, "source": "outbound", "external_id": f"outbox:{message.pk}", "properties": props,
    }], actor=message.actor)
    if result.status == "error":
        logger.warning("Outbound message %s: interaction not recorded: %s", message.pk, result.error)
        return None
    return result.id


def deliver(message_id: int, *, client_options: Mapping[str, Any] | None = None) -> str:
    """Deliver one queued message (the body of the ``deliver_message`` task); return its status.

    Idempotent: the row is claimed with a conditional UPDATE (``queued`` and due → ``sending``), so a
    duplicate task finds nothing to do; a row stuck in ``sending`` for :data:`SENDING_TIMEOUT` (a dead
    worker) may be claimed again — which can send twice, the at-least-once case of ADR 0010."""
    now = clock.now()
    claimed = OutboundMessage.objects.filter(pk=message_id).filter(
        (Q(status=MessageStatus.QUEUED) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)))
        | Q(status=MessageStatus.SENDING, updated_at__lt=now - SENDING_TIMEOUT)
    ).update(status=MessageStatus.SENDING, attempts=F("attempts") + 1, updated_at=now)
    message = OutboundMessage.objects.select_related("workspace", "account").filter(pk=message_id).first()
    if message is None:
        return "missing"
    if not claimed:
        return str(message.status)
    options = {**CLIENT_OPTIONS, **(client_options or {})}
    started = time.monotonic()
    try:
        response = _send(message, options)
    except Exception as exc:  # noqa: BLE001 — every failure is recorded on the row
        duration = int((time.monotonic() - started) * 1000)
        transient = _is_transient(exc)
        text = exc.message if isinstance(exc, ShequnError) else f"{type(exc).__name__}: {exc}"
        details = exc.details if isinstance(exc, ShequnError) and isinstance(exc.details, dict) else {}
        retry = transient and message.attempts < MAX_ATTEMPTS
        with transaction.atomic():
            MessageAttempt.objects.create(workspace_id=message.workspace_id, message=message, at=now, ok=False,
                                          error=text[:2000], duration_ms=duration, response=details)
            if retry:
                run_after = clock.now() + _retry_delay(message.attempts)
                OutboundMessage.objects.filter(pk=message.pk, status=MessageStatus.SENDING).update(
                    status=MessageStatus.QUEUED, last_error=text[:2000], next_attempt_at=run_after,
                    updated_at=clock.now())
                from .tasks import deliver_message

                _schedule(deliver_message, message.pk, run_after=run_after)
                status = MessageStatus.QUEUED
            else:
                OutboundMessage.objects.filter(pk=message.pk, status=MessageStatus.SENDING).update(
                    status=MessageStatus.FAILED, last_error=text[:2000], next_attempt_at=None, updated_at=clock.now())
                status = MessageStatus.FAILED
                message.status = status
                publish(message.workspace, "message.failed", _message_event(message, error=text))
        logger.info("Outbound message %s attempt %s failed (%s): %s", message.pk, message.attempts,
                    "retry" if retry else "final", text)
        return str(status)
    duration = int((time.monotonic() - started) * 1000)
    sent_at = clock.now()
    # The fact that it was sent is committed first, on its own: whatever happens next (a failing
    # interaction handler, a crash), the message is never sent again.
    with transaction.atomic():
        OutboundMessage.objects.filter(pk=message.pk).update(
            status=MessageStatus.SENT, sent_at=sent_at, last_error="", next_attempt_at=None, updated_at=sent_at)
        MessageAttempt.objects.create(workspace_id=message.workspace_id, message=message, at=now, ok=True,
                                      duration_ms=duration, response=_json_safe(response))
    message.status = MessageStatus.SENT
    try:
        with transaction.atomic():
            interaction_id = _record_interaction(message, sent_at)
            if interaction_id is not None:
                OutboundMessage.objects.filter(pk=message.pk).update(interaction_id=interaction_id)
            publish(message.workspace, "message.sent", _message_event(message))
    except Exception:  # noqa: BLE001 — the message is sent; its record on the timeline is best effort
        logger.exception("Outbound message %s was sent but its interaction could not be recorded", message.pk)
    return str(MessageStatus.SENT)


def _json_safe(value: Any) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(value, default=str)) if isinstance(value, dict) else {"value": str(value)}
    except (TypeError, ValueError):
        return {}


def _message_event(message: OutboundMessage, *, error: str = "") -> dict[str, Any]:
    data: dict[str, Any] = {"id": message.pk, "member_id": message.member_id, "channel": message.channel,
                            "kind": message.kind, "purpose": message.purpose, "status": message.status,
                            "attempts": message.attempts}
    if error:
        data["error"] = error
    return data


# ---------------------------------------------------------------------------------------------
# SMTP settings


@transaction.atomic
def save_smtp_settings(workspace: Workspace, *, host: str, port: int, from_address: str, actor: str,
                       username: str = "", password: str | None = None, security: str = SmtpSecurity.STARTTLS,
                       from_name: str = "", timeout: int = 15) -> SmtpSettings:
    """Create or change the workspace's SMTP server. ``password=None`` keeps the stored password."""

    host = str(host or "").strip()
    if not host or len(host) > 255 or any(c.isspace() for c in host):
        raise _field_error("host", _("the SMTP host is required"))
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise _field_error("port", _("the port must be a number from 1 to 65535")) from None
    if not 1 <= port <= 65535:
        raise _field_error("port", _("the port must be a number from 1 to 65535"))
    if security not in SmtpSecurity.values:
        raise _field_error("security", _("security must be one of: %(values)s") % {"values": ", ".join(SmtpSecurity.values)})
    from_address = str(from_address or "").strip()
    try:
        validate_email(from_address)
    except DjangoValidationError:
        raise _field_error("from_address", _("the sender address is not a valid email address")) from None
    from_name = str(from_name or "").strip()
    if len(from_name) > 100 or "\n" in from_name or "\r" in from_name:
        raise _field_error("from_name", _("the sender name must be one line of at most 100 characters"))
    timeout = int(timeout or 15)
    if not 1 <= timeout <= 120:
        raise _field_error("timeout", _("the timeout must be 1–120 seconds"))
    values: dict[str, Any] = {"host": host, "port": port, "username": str(username or "").strip()[:255],
                              "security": security, "from_address": from_address, "from_name": from_name,
                              "timeout": timeout}
    if password is not None:
        values["password"] = str(password)[:255]
    smtp, created = SmtpSettings.objects.update_or_create(workspace=workspace, defaults=values)  # unique workspace
    audit.record(workspace, actor, "outbound.smtp.create" if created else "outbound.smtp.update", smtp,
                 {"host": host, "port": port, "security": security})
    return smtp


@transaction.atomic
def delete_smtp_settings(workspace: Workspace, *, actor: str) -> bool:
    smtp = queries.smtp_settings(workspace)
    if smtp is None:
        return False
    audit.record(workspace, actor, "outbound.smtp.delete", smtp)
    smtp.delete()
    return True


# ---------------------------------------------------------------------------------------------
# inbound webhooks


def _clean_name(name: str) -> str:
    value = str(name or "").strip()
    if not value or len(value) > 100:
        raise _field_error("name", _("the name must be 1–100 characters"))
    return value


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


@transaction.atomic
def create_endpoint(workspace: Workspace, name: str, *, actor: str, source: str = "",
                    tolerance: int = 300) -> WebhookEndpoint:
    """A new inbound webhook endpoint with a random URL key and secret (shown to the operator)."""
    name = _clean_name(name)
    source = str(source or "").strip() or f"webhook:{re.sub(r'[^a-z0-9_-]+', '-', name.lower()).strip('-')[:40]}"
    if len(source) > 64:
        raise _field_error("source", _("the source is at most 64 characters"))
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or not 30 <= tolerance <= 3600:
        raise _field_error("tolerance", _("the tolerance must be 30–3600 seconds"))
    try:
        with transaction.atomic():
            endpoint = WebhookEndpoint.objects.create(workspace=workspace, name=name, key=secrets.token_urlsafe(24),
                                                      secret=_new_secret(), source=source, tolerance=tolerance)
    except IntegrityError:
        raise ValidationError(_("an endpoint with this name exists already"), code="duplicate_name",
                              details={"field": "name"}) from None
    audit.record(workspace, actor, "outbound.endpoint.create", endpoint, {"name": name, "source": source})
    return endpoint


@transaction.atomic
def rotate_endpoint_secret(workspace: Workspace, endpoint_id: int, *, actor: str) -> WebhookEndpoint:
    endpoint = get_scoped(WebhookEndpoint, workspace, endpoint_id, for_update=True)
    endpoint.secret = _new_secret()
    endpoint.save(update_fields=["secret"])
    audit.record(workspace, actor, "outbound.endpoint.rotate", endpoint)
    return endpoint


@transaction.atomic
def set_endpoint_active(workspace: Workspace, endpoint_id: int, active: bool, *, actor: str) -> WebhookEndpoint:
    endpoint = get_scoped(WebhookEndpoint, workspace, endpoint_id, for_update=True)
    if endpoint.active != active:
        endpoint.active = active
        endpoint.save(update_fields=["active"])
        audit.record(workspace, actor, "outbound.endpoint.activate" if active else "outbound.endpoint.deactivate",
                     endpoint)
    return endpoint


@transaction.atomic
def delete_endpoint(workspace: Workspace, endpoint_id: int, *, actor: str) -> None:
    endpoint = get_scoped(WebhookEndpoint, workspace, endpoint_id, for_update=True)
    audit.record(workspace, actor, "outbound.endpoint.delete", endpoint, {"name": endpoint.name})
    endpoint.delete()


MAX_WEBHOOK_BODY = 1024 * 1024
MAX_WEBHOOK_EVENTS = 1000


class MalformedWebhook(ValidationError):
    code = "malformed_body"
    status = 400


def receive_webhook(key: str, signature: str, body: bytes, *, now: float | None = None) -> list[dict[str, Any]]:
    """Verify and record one inbound webhook call; return the per-event results of ``ingest_batch``.

    Raises NotFound (unknown or inactive key), SignatureError (401: bad, missing or expired signature;
    nothing is recorded) or MalformedWebhook (400). The body is ``{"events": [...]}``, a list of events
    or one event, each as the interaction API takes it with a required ``external_id``; ``source`` is
    always the endpoint's, so events are idempotent per endpoint."""
    from shequn.interactions import services as interactions

    endpoint = queries.endpoint_by_key(key)
    if endpoint is None or not endpoint.active:
        raise NotFound(_("unknown webhook endpoint"))
    signing.verify(endpoint.secret, signature, body, now=time.time() if now is None else now,
                   tolerance=endpoint.tolerance)
    if len(body) > MAX_WEBHOOK_BODY:
        raise MalformedWebhook(_("the body is larger than 1 MiB"), code="body_too_large")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedWebhook(_("the body is not valid JSON")) from None
    if isinstance(data, Mapping) and "events" in data:
        events = data["events"]
    elif isinstance(data, Mapping):
        events = [data]
    else:
        events = data
    if not isinstance(events, list) or not events:
        raise MalformedWebhook(_("the body must be an event object, a list of events or {\"events\": [...]}"))
    if len(events) > MAX_WEBHOOK_EVENTS:
        raise MalformedWebhook(_("at most %(n)s events per call") % {"n": MAX_WEBHOOK_EVENTS}, code="too_many_events")
    results: list[dict[str, Any]] = [{} for _e in events]
    todo: list[tuple[int, dict[str, Any]]] = []
    for index, event in enumerate(events):
        if not isinstance(event, Mapping):
            results[index] = {"index": index, "status": "error",
                              "error": {"code": "invalid_event", "message": _("each event must be an object")}}
        elif event.get("external_id") in (None, ""):
            results[index] = {"index": index, "status": "error",
                              "error": {"code": "missing_external_id",
                                        "message": _("external_id is required for webhook events")}}
        else:
            todo.append((index, {**event, "source": endpoint.source}))
    if todo:
        stored = interactions.ingest_batch(endpoint.workspace, [e for _i, e in todo], actor=f"webhook:{endpoint.pk}")
        for (index, _e), r in zip(todo, stored, strict=True):
            row: dict[str, Any] = {"index": index, "status": r.status, "id": r.id, "member_id": r.member_id}
            if r.error:
                row["error"] = r.error
            results[index] = row
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(received_count=F("received_count") + 1,
                                                          last_received_at=clock.now())
    return results


# ---------------------------------------------------------------------------------------------
# outbound webhooks: subscriptions


def _clean_events(events: Sequence[str]) -> list[str]:
    if isinstance(events, str) or not isinstance(events, Sequence):
        raise _field_error("events", _("events must be a list of event names"))
    out: list[str] = []
    for e in events:
        name = str(e or "").strip()
        if name != "*" and (not _EVENT_RE.match(name) or len(name) > 64):
            raise _field_error("events", _("%(name)s is not an event name (like interaction.created)") % {"name": name})
        if name not in out:
            out.append(name)
    if not out:
        raise _field_error("events", _("choose at least one event"))
    return out


def _clean_hook_url(url: str) -> str:
    value = str(url or "").strip()
    if not value.startswith(("https://", "http://")) or len(value) > 500 or any(c.isspace() for c in value):
        raise _field_error("url", _("the URL must be an http(s) URL of at most 500 characters"))
    return value


def _bump_subscriptions(workspace: Workspace) -> None:
    """Mark the workspace's subscriptions changed, in the transaction of every write of them, so
    every process reloads its cached list (``queries.subscribers``, ADR 0015)."""
    settings_cache.bump(SubscriptionsVersion, workspace.pk)


@transaction.atomic
def create_subscription(workspace: Workspace, name: str, url: str, events: Sequence[str], *, actor: str,
                        secret: str | None = None) -> WebhookSubscription:
    name, url, clean_events = _clean_name(name), _clean_hook_url(url), _clean_events(events)
    _bump_subscriptions(workspace)
    try:
        with transaction.atomic():
            sub = WebhookSubscription.objects.create(workspace=workspace, name=name, url=url, events=clean_events,
                                                     secret=secret or _new_secret())
    except IntegrityError:
        raise ValidationError(_("a subscription with this name exists already"), code="duplicate_name",
                              details={"field": "name"}) from None
    audit.record(workspace, actor, "outbound.subscription.create", sub, {"url": url, "events": clean_events})
    return sub


@transaction.atomic
def update_subscription(workspace: Workspace, subscription_id: int, *, actor: str, name: str | None = None,
                        url: str | None = None, events: Sequence[str] | None = None,
                        active: bool | None = None, rotate_secret: bool = False) -> WebhookSubscription:
    sub = get_scoped(WebhookSubscription, workspace, subscription_id, for_update=True)
    changed: list[str] = []
    if name is not None and _clean_name(name) != sub.name:
        sub.name = _clean_name(name)
        changed.append("name")
    if url is not None and _clean_hook_url(url) != sub.url:
        sub.url = _clean_hook_url(url)
        changed.append("url")
    if events is not None and _clean_events(events) != sub.events:
        sub.events = _clean_events(events)
        changed.append("events")
    if active is not None and bool(active) != sub.active:
        sub.active = bool(active)
        changed.append("active")
    if rotate_secret:
        sub.secret = _new_secret()
        changed.append("secret")
    if changed:
        _bump_subscriptions(workspace)
        try:
            with transaction.atomic():
                sub.save(update_fields=[*changed, "updated_at"])
        except IntegrityError:
            raise ValidationError(_("a subscription with this name exists already"), code="duplicate_name",
                                  details={"field": "name"}) from None
        audit.record(workspace, actor, "outbound.subscription.update", sub, {"fields": changed})
    return sub


@transaction.atomic
def delete_subscription(workspace: Workspace, subscription_id: int, *, actor: str) -> None:
    sub = get_scoped(WebhookSubscription, workspace, subscription_id, for_update=True)
    audit.record(workspace, actor, "outbound.subscription.delete", sub, {"name": sub.name, "url": sub.url})
    _bump_subscriptions(workspace)
    sub.delete()


# ---------------------------------------------------------------------------------------------
# outbound webhooks: publish and deliver


def _envelope(workspace: Workspace, event: str, event_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": event_id, "event": event, "workspace": workspace.slug,
            "created_at": clock.now().isoformat(), "data": dict(payload)}


def _queue_deliveries(deliveries: list[WebhookDelivery]) -> None:
    from .tasks import deliver_webhooks

    ids = [d.pk for d in deliveries if d.pk]
    for start in range(0, len(ids), 100):
        enqueue_on_commit(deliver_webhooks, ids[start:start + 100])


def publish(workspace: Workspace, event: str, payload: Mapping[str, Any], *, event_id: str | None = None,
            subscriptions: Sequence[WebhookSubscription] | None = None) -> list[WebhookDelivery]:
    """Create one delivery of ``event`` per active subscriber and deliver them after commit. Costs one
    query when nobody subscribes. ``event_id`` (default: random) is unique per subscriber: publishing
    the same id again creates nothing."""
    if not _EVENT_RE.match(event):
        raise _field_error("event", _("%(name)s is not an event name (like interaction.created)") % {"name": event})
    subs = list(subscriptions) if subscriptions is not None else queries.subscribers(workspace, event)
    if not subs:
        return []
    event_id = event_id or uuid.uuid4().hex
    with transaction.atomic():
        seen = set(WebhookDelivery.objects.filter(subscription__in=subs, event_id=event_id)
                   .values_list("subscription_id", flat=True))
        subs = [s for s in subs if s.pk not in seen]
        if not subs:
            return []
        body = json.loads(json.dumps(_envelope(workspace, event, event_id, payload), default=str))
        WebhookDelivery.objects.bulk_create(
            [WebhookDelivery(workspace=workspace, subscription=s, event=event, event_id=event_id, payload=body)
             for s in subs], ignore_conflicts=True)  # a concurrent publish of the same id wins quietly
        fresh = list(WebhookDelivery.objects.filter(subscription__in=subs, event_id=event_id).order_by("pk"))
        _queue_deliveries(fresh)
    return fresh


def on_interactions(workspace: Workspace, rows: list[Any]) -> None:
    """INTERACTION_HANDLERS hook: publish ``interaction.created`` to subscribers (one query if none)."""
    subs = queries.subscribers(workspace, "interaction.created")
    if not subs:
        return
    deliveries: list[WebhookDelivery] = []
    for row in rows:
        data = {"id": row.pk, "member_id": row.member_id, "type": row.type, "channel": row.channel,
                "direction": row.direction, "occurred_at": row.occurred_at.isoformat(), "source": row.source,
                "external_id": row.external_id, "amount": None if row.amount is None else str(row.amount),
                "currency": row.currency, "properties": row.properties}
        event_id = f"interaction.created:{row.pk}"
        body = json.loads(json.dumps(_envelope(workspace, "interaction.created", event_id, data), default=str))
        deliveries.extend(WebhookDelivery(workspace=workspace, subscription=s, event="interaction.created",
                                          event_id=event_id, payload=body) for s in subs)
    created = WebhookDelivery.objects.bulk_create(deliveries, batch_size=500)
    _queue_deliveries(created)


def body_of(delivery: WebhookDelivery) -> bytes:
    """The exact bytes POSTed for a delivery (the same on every attempt)."""
    return json.dumps(delivery.payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _private_target(url: str) -> str | None:
    """The reason ``url`` may not be called (a private, loopback or link-local address), or None.
    Set ``SHEQUN_WEBHOOK_ALLOW_PRIVATE=1`` (environment) or the setting of that name to allow
    subscribers on the local network. The check resolves the host before the POST; it does not stop
    a DNS answer that changes between the check and the connection."""
    if getattr(settings, "SHEQUN_WEBHOOK_ALLOW_PRIVATE", os.environ.get("SHEQUN_WEBHOOK_ALLOW_PRIVATE") == "1"):
        return None
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None  # unresolvable: the POST fails and is retried like any network error
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            return _("the subscriber's address %(address)s is not a public address") % {"address": address}
    return None


def deliver_webhook(delivery_id: int, *, http: httpx.Client | None = None,
                    now_ts: Callable[[], float] = time.time) -> str:
    """POST one pending delivery (the body of the ``deliver_webhooks`` task); return its status.

    Claimed with a conditional UPDATE, so a duplicate task does nothing; 2xx marks it delivered,
    anything else is retried after :data:`RETRY_DELAYS` up to :data:`WEBHOOK_MAX_ATTEMPTS` attempts."""
    now = clock.now()
    delivery = WebhookDelivery.objects.select_related("subscription", "workspace").filter(pk=delivery_id).first()
    if delivery is None:
        return "missing"
    claim = WebhookDelivery.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING, attempts=delivery.attempts) \
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    if not claim.update(attempts=F("attempts") + 1, updated_at=now):
        return str(delivery.status)
    attempt_no = delivery.attempts + 1
    sub = delivery.subscription
    body = body_of(delivery)
    ts = int(now_ts())
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "shequn-webhooks",
               "X-Shequn-Event": delivery.event, "X-Shequn-Event-Id": delivery.event_id,
               "X-Shequn-Delivery": str(delivery.pk), signing.SIGNATURE_HEADER: signing.header_value(sub.secret, ts, body)}
    replay_actor = delivery.replay_actor
    started = time.monotonic()
    code: int | None = None
    excerpt = error = ""
    blocked = _private_target(sub.url)
    client = http or httpx.Client(timeout=WEBHOOK_TIMEOUT, follow_redirects=False)
    try:
        if blocked:
            error = blocked
        else:
            response = client.post(sub.url, content=body, headers=headers)
            code = response.status_code
            excerpt = response.text[:RESPONSE_EXCERPT]
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        if http is None:
            client.close()
    duration = int((time.monotonic() - started) * 1000)
    ok = code is not None and 200 <= code < 300
    if not ok and not error:
        error = _("the subscriber answered HTTP %(status)s") % {"status": code}
    with transaction.atomic():
        DeliveryAttempt.objects.create(workspace_id=delivery.workspace_id, delivery=delivery, at=now, ok=ok,
                                       status_code=code, response_excerpt=excerpt, error=error, duration_ms=duration,
                                       replay=bool(replay_actor), actor=replay_actor)
        if replay_actor:
            WebhookDelivery.objects.filter(pk=delivery.pk).update(replay_actor="")
        if ok:
            WebhookDelivery.objects.filter(pk=delivery.pk).update(
                status=DeliveryStatus.DELIVERED, delivered_at=clock.now(), last_status_code=code, last_error="",
                next_attempt_at=None, updated_at=clock.now())
            return str(DeliveryStatus.DELIVERED)
        if attempt_no < WEBHOOK_MAX_ATTEMPTS and not blocked:
            run_after = clock.now() + _retry_delay(attempt_no)
            WebhookDelivery.objects.filter(pk=delivery.pk).update(
                last_status_code=code, last_error=error, next_attempt_at=run_after, updated_at=clock.now())
            from .tasks import deliver_webhooks

            _schedule(deliver_webhooks, [delivery.pk], run_after=run_after)
            return str(DeliveryStatus.PENDING)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=DeliveryStatus.FAILED, last_status_code=code, last_error=error, next_attempt_at=None,
            updated_at=clock.now())
        return str(DeliveryStatus.FAILED)


@transaction.atomic
def replay_delivery(workspace: Workspace, delivery_id: int, *, actor: str) -> WebhookDelivery:
    """Send a delivery again (delivered or failed ones included), with a fresh set of attempts. The
    subscriber receives the same ``X-Shequn-Event-Id`` and body, so it can de-duplicate."""
    delivery = get_scoped(WebhookDelivery, workspace, delivery_id, for_update=True)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.PENDING, attempts=0,
                                                          next_attempt_at=None, replay_actor=actor[:200],
                                                          updated_at=clock.now())
    audit.record(workspace, actor, "outbound.delivery.replay", delivery, {"event": delivery.event})
    _queue_deliveries([delivery])
    delivery.refresh_from_db()
    return delivery


def send_test_event(workspace: Workspace, subscription_id: int, *, actor: str) -> WebhookDelivery:
    """Publish a ``webhook.test`` event to one subscription (whatever events it chose)."""
    sub = get_scoped(WebhookSubscription, workspace, subscription_id)
    with transaction.atomic():
        [delivery] = publish(workspace, "webhook.test", {"subscription": sub.name, "actor": actor},
                             subscriptions=[sub])
    return delivery


def sweep(now: dt.datetime | None = None, *, limit: int = 500) -> dict[str, int]:
    """Re-enqueue due retries and rows whose worker died (the ``outbound.sweep`` periodic task): queued
    messages past ``next_attempt_at``, messages stuck in ``sending``, pending deliveries that are due.
    Idempotent: the delivery functions claim each row, so extra tasks do nothing."""
    from .tasks import deliver_message, deliver_webhooks

    now = now or clock.now()
    messages = list(OutboundMessage.objects.filter(
        Q(status=MessageStatus.QUEUED, next_attempt_at__lte=now)
        | Q(status=MessageStatus.QUEUED, next_attempt_at__isnull=True, updated_at__lt=now - SENDING_TIMEOUT)
        | Q(status=MessageStatus.SENDING, updated_at__lt=now - SENDING_TIMEOUT)
    ).order_by("pk").values_list("pk", flat=True)[:limit])
    for pk in messages:
        enqueue_on_commit(deliver_message, pk)
    deliveries = list(WebhookDelivery.objects.filter(
        Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        | Q(status=DeliveryStatus.PENDING, next_attempt_at__isnull=True, updated_at__lt=now - SENDING_TIMEOUT)
    ).order_by("pk").values_list("pk", flat=True)[:limit])
    for start in range(0, len(deliveries), 100):
        enqueue_on_commit(deliver_webhooks, deliveries[start:start + 100])
    return {"messages": len(messages), "deliveries": len(deliveries)}
