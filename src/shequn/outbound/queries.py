"""Reads of the outbound domain (no writes)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from shequn.channels.models import WeChatAccount
from shequn.core import cache as settings_cache
from shequn.core.models import Workspace
from shequn.core.tenancy import scoped
from shequn.members.models import Identity, IdentityKind

from .models import (
    DeliveryAttempt,
    MessageAttempt,
    OutboundMessage,
    SmtpSettings,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSubscription,
)


def wechat_recipient(workspace: Workspace, member_id: int) -> tuple[WeChatAccount, str] | None:
    """The (account, openid) to message a member on WeChat: their oldest openid identity whose
    namespace is the AppID of an account connected to the workspace."""
    accounts = {a.app_id: a for a in scoped(WeChatAccount, workspace)}
    if not accounts:
        return None
    for namespace, value in scoped(Identity, workspace).filter(
            member_id=member_id, kind=IdentityKind.WECHAT_OPENID, namespace__in=list(accounts)
    ).order_by("pk").values_list("namespace", "value"):
        return accounts[namespace], value
    return None


def email_recipient(workspace: Workspace, member_id: int) -> str | None:
    return scoped(Identity, workspace).filter(member_id=member_id, kind=IdentityKind.EMAIL) \
        .order_by("-verified", "pk").values_list("value", flat=True).first()


def smtp_settings(workspace: Workspace | int) -> SmtpSettings | None:
    return scoped(SmtpSettings, workspace).first()


def endpoint_by_key(key: str) -> WebhookEndpoint | None:
    if not key or len(key) > 64:
        return None
    return WebhookEndpoint.objects.select_related("workspace").filter(key=key).first()


SUBSCRIPTIONS_SOURCE = "outbound.subscriptions"
_active_subscriptions: settings_cache.VersionedCache[tuple[WebhookSubscription, ...]] = \
    settings_cache.VersionedCache(SUBSCRIPTIONS_SOURCE)


def subscribers(workspace: Workspace, event: str) -> list[WebhookSubscription]:
    """Active subscriptions of ``workspace`` that want ``event``: from this process's cache while the
    subscriptions' version is unchanged (ADR 0015), else one indexed query. Treat them as read-only."""
    active = _active_subscriptions.get(
        workspace.pk, lambda: tuple(scoped(WebhookSubscription, workspace).filter(active=True)))
    return [s for s in active if event in (s.events or []) or "*" in (s.events or [])]


@dataclass
class OutboxFilter:
    status: str = ""
    purpose: str = ""
    channel: str = ""
    member_id: int | None = None


def outbox(workspace: Workspace, f: OutboxFilter | None = None) -> QuerySet[OutboundMessage]:
    f = f or OutboxFilter()
    qs = scoped(OutboundMessage, workspace).select_related("member")
    if f.status:
        qs = qs.filter(status=f.status)
    if f.purpose:
        qs = qs.filter(purpose=f.purpose)
    if f.channel:
        qs = qs.filter(channel=f.channel)
    if f.member_id:
        qs = qs.filter(member_id=f.member_id)
    return qs.order_by("-id")


def page(qs: QuerySet, *, before: int | None = None, limit: int = 50) -> tuple[list, int | None]:
    """Keyset page of a ``-id`` ordered queryset: rows with id < ``before``; returns (rows, next cursor)."""
    if before:
        qs = qs.filter(pk__lt=before)
    rows = list(qs[: limit + 1])
    nxt = rows[limit - 1].pk if len(rows) > limit else None
    return rows[:limit], nxt


def purposes(workspace: Workspace) -> list[str]:
    return list(scoped(OutboundMessage, workspace).order_by("purpose").values_list("purpose", flat=True).distinct())


def message_attempts(message: OutboundMessage) -> list[MessageAttempt]:
    return list(MessageAttempt.objects.filter(message=message).order_by("at", "id"))


def endpoints(workspace: Workspace) -> list[WebhookEndpoint]:
    return list(scoped(WebhookEndpoint, workspace).order_by("name"))


def subscriptions(workspace: Workspace) -> list[WebhookSubscription]:
    return list(scoped(WebhookSubscription, workspace).order_by("name"))


def deliveries(workspace: Workspace, *, status: str = "", subscription_id: int | None = None) -> QuerySet[WebhookDelivery]:
    qs = scoped(WebhookDelivery, workspace).select_related("subscription")
    if status:
        qs = qs.filter(status=status)
    if subscription_id:
        qs = qs.filter(subscription_id=subscription_id)
    return qs.order_by("-id")


def delivery_attempts(delivery: WebhookDelivery) -> list[DeliveryAttempt]:
    return list(DeliveryAttempt.objects.filter(delivery=delivery).order_by("at", "id"))
