"""Outbound messages (the outbox), WeChat access tokens, per-workspace SMTP settings, and webhooks in
both directions (inbound endpoints, outbound subscriptions with their delivery log)."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from shequn.core.models import Workspace


class AccessToken(models.Model):
    """The cached access token of one WeChat Official Account (see ADR 0010).

    ``lease_until`` is the refresh lease: a worker that wants a new token first claims the lease with a
    conditional UPDATE; only the winner calls WeChat's token API. Others keep using the current token
    while it is still valid and wait for the new one otherwise, so an expired token is never used."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    account = models.OneToOneField("channels.WeChatAccount", on_delete=models.CASCADE, related_name="+")
    token = models.CharField(max_length=512, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    refresh_count = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("access token")

    def __str__(self) -> str:
        return f"token of account {self.account_id}"


class Channel(models.TextChoices):
    WECHAT = "wechat", _("WeChat")
    EMAIL = "email", _("Email")
    NONE = "none", _("None")


class MessageKind(models.TextChoices):
    TEXT = "text", _("Text")
    IMAGE = "image", _("Image")
    NEWS = "news", _("News (article card)")
    LINK = "link", _("Link")
    TEMPLATE = "template", _("Template message")
    EMAIL = "email", _("Email")


class MessageStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    FAILED = "failed", _("Failed")
    UNDELIVERABLE = "undeliverable", _("Undeliverable")


class OutboundMessage(models.Model):
    """One message to one member: the outbox row operators see. ``key`` (unique per workspace when
    given) makes sending idempotent: sending again with the same key returns this row."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    account = models.ForeignKey("channels.WeChatAccount", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="+")
    recipient = models.CharField(max_length=255, blank=True, help_text="openid or email address")
    kind = models.CharField(max_length=10, choices=MessageKind.choices)
    purpose = models.CharField(max_length=32)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=14, choices=MessageStatus.choices, default=MessageStatus.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    key = models.CharField(max_length=128, null=True, blank=True)
    actor = models.CharField(max_length=200)
    interaction_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("outbound message")
        constraints = [
            models.UniqueConstraint(fields=["workspace", "key"], condition=models.Q(key__isnull=False),
                                    name="uniq_outbound_key"),
        ]
        indexes = [
            models.Index(fields=["workspace", "-id"], name="outbox_ws_id"),
            models.Index(fields=["workspace", "status", "-id"], name="outbox_ws_status_id"),
            models.Index(fields=["workspace", "purpose", "-id"], name="outbox_ws_purpose_id"),
            models.Index(fields=["member", "-id"], name="outbox_member_id"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}/{self.purpose} #{self.pk} ({self.status})"

    @property
    def summary(self) -> str:
        """A one-line human view of the payload (text, title or subject)."""
        p = self.payload or {}
        for field in ("text", "subject", "title", "template_id", "media_id"):
            if p.get(field):
                return str(p[field])
        articles = p.get("articles") or []
        if articles and isinstance(articles[0], dict):
            return str(articles[0].get("title", ""))
        return ""


class MessageAttempt(models.Model):
    """One try to deliver an outbound message (kept for the delivery log)."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    message = models.ForeignKey(OutboundMessage, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField()
    ok = models.BooleanField()
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    response = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["message", "at"], name="outbox_attempt_msg")]


class SmtpSecurity(models.TextChoices):
    NONE = "none", _("None (plain SMTP)")
    STARTTLS = "starttls", _("STARTTLS")
    SSL = "ssl", _("SSL/TLS")


class SmtpSettings(models.Model):
    """The workspace's mail server. ``password`` is a secret (never shown back in the console)."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="+")
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=587)
    username = models.CharField(max_length=255, blank=True)
    password = models.CharField(max_length=255, blank=True)
    security = models.CharField(max_length=8, choices=SmtpSecurity.choices, default=SmtpSecurity.STARTTLS)
    from_address = models.EmailField()
    from_name = models.CharField(max_length=100, blank=True)
    timeout = models.PositiveIntegerField(default=15)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("SMTP settings")

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class WebhookEndpoint(models.Model):
    """An inbound webhook: ``POST /hooks/in/<key>/`` with a body signed by ``secret`` records
    interaction events under ``source``."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    key = models.CharField(max_length=64, unique=True)
    secret = models.CharField(max_length=128)
    source = models.CharField(max_length=64)
    tolerance = models.PositiveIntegerField(default=300, help_text="seconds a signature timestamp may be off")
    active = models.BooleanField(default=True)
    received_count = models.PositiveIntegerField(default=0)
    last_received_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("webhook endpoint")
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="uniq_hook_endpoint_name")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SubscriptionsVersion(models.Model):
    """The version of a workspace's webhook subscriptions: a new random value in the transaction of
    every change of them, so each process knows when its cached list is stale (ADR 0015)."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, primary_key=True, related_name="+")
    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.workspace_id} v{self.version}"


class WebhookSubscription(models.Model):
    """An outbound webhook: events of the workspace are POSTed, signed with ``secret``, to ``url``."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=128)
    events = models.JSONField(default=list, blank=True, help_text="event names; empty = none")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("webhook subscription")
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="uniq_hook_sub_name")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    DELIVERED = "delivered", _("Delivered")
    FAILED = "failed", _("Failed")


class WebhookDelivery(models.Model):
    """One event for one subscriber. ``(subscription, event_id)`` is unique, and subscribers receive
    ``event_id`` in the ``X-Shequn-Event-Id`` header to de-duplicate (at-least-once delivery)."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=64)
    event_id = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    replay_actor = models.CharField(max_length=200, blank=True, help_text="who asked for the pending replay")

    class Meta:
        verbose_name = _("webhook delivery")
        constraints = [
            models.UniqueConstraint(fields=["subscription", "event_id"], name="uniq_hook_delivery_event"),
        ]
        indexes = [
            models.Index(fields=["workspace", "-id"], name="hook_delivery_ws_id"),
            models.Index(fields=["workspace", "status", "-id"], name="hook_delivery_ws_status"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.subscription_id} ({self.status})"


class DeliveryAttempt(models.Model):
    """One POST of a webhook delivery: what the subscriber answered and how long it took."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField()
    ok = models.BooleanField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    response_excerpt = models.TextField(blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    replay = models.BooleanField(default=False)
    actor = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["delivery", "at"], name="hook_attempt_delivery")]
