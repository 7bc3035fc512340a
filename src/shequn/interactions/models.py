"""The append-only interaction log and the touchpoint registry."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from shequn.core.models import Workspace


class InteractionType(models.TextChoices):
    MESSAGE = "message", _("Message")
    SCAN = "scan", _("Scan")
    FOLLOW = "follow", _("Follow")
    UNFOLLOW = "unfollow", _("Unfollow")
    PURCHASE = "purchase", _("Purchase")
    REFUND = "refund", _("Refund")
    VISIT = "visit", _("Visit")
    EVENT_ATTENDANCE = "event_attendance", _("Event attendance")
    SHARE = "share", _("Share")
    REFERRAL = "referral", _("Referral")
    REVIEW = "review", _("Review")
    SUPPORT_CONTACT = "support_contact", _("Support contact")
    SATISFACTION = "satisfaction", _("Satisfaction answer")
    CUSTOM = "custom", _("Custom")


class Direction(models.TextChoices):
    INBOUND = "in", _("Inbound (member → brand)")
    OUTBOUND = "out", _("Outbound (brand → member)")


class TouchpointsVersion(models.Model):
    """The version of a workspace's touchpoint codes: a new random value in the transaction that
    creates (or, in the admin, recodes or deletes) a touchpoint, so each process knows when its cached
    code → id map is stale (ADR 0015)."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, primary_key=True, related_name="+")
    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.workspace_id} v{self.version}"


class Touchpoint(models.Model):
    """A place where the brand and its members meet (接触点), with the seed's four dimensions.

    ``importance``, ``complexity`` and ``consistency`` are set by operators (1–5); conversation volume
    and trust are computed from the interactions that pass through it (``TouchpointDay``)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="touchpoints")
    code = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    channel = models.CharField(max_length=64, help_text="渠道: wechat, store, web, phone, email …")
    function = models.CharField(max_length=64, blank=True, help_text="功能: marketing, sales, service …")
    segment = models.CharField(max_length=64, blank=True, help_text="客群")
    lifecycle_stage = models.CharField(max_length=32, blank=True, help_text="生命周期 stage key")
    importance = models.PositiveSmallIntegerField(default=3)
    complexity = models.PositiveSmallIntegerField(default=3)
    consistency = models.PositiveSmallIntegerField(default=3)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "code"], name="uniq_touchpoint_code"),
            models.CheckConstraint(condition=models.Q(importance__gte=1, importance__lte=5), name="tp_importance_1_5"),
            models.CheckConstraint(condition=models.Q(complexity__gte=1, complexity__lte=5), name="tp_complexity_1_5"),
            models.CheckConstraint(condition=models.Q(consistency__gte=1, consistency__lte=5), name="tp_consistency_1_5"),
        ]
        ordering = ["code"]

    def __str__(self) -> str:
        return self.name


class TouchpointDay(models.Model):
    """Daily roll-up per touchpoint, changed with F() as interactions arrive (never rebuilt)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    touchpoint = models.ForeignKey(Touchpoint, on_delete=models.CASCADE, related_name="days")
    day = models.DateField()
    conversations = models.PositiveIntegerField(default=0)
    inbound = models.PositiveIntegerField(default=0)
    positive = models.PositiveIntegerField(default=0)
    negative = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["touchpoint", "day"], name="uniq_touchpoint_day")]
        indexes = [models.Index(fields=["workspace", "day"], name="tpday_ws_day")]


class Interaction(models.Model):
    """One append-only event. ``(workspace, source, external_id)`` makes ingestion idempotent.

    ``member`` is the member the event belongs to now (a merge re-points it); ``origin_member_id``
    is the member it was first recorded on and never changes, so a merge can be undone exactly."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="interactions")
    origin_member_id = models.BigIntegerField()
    type = models.CharField(max_length=24, choices=InteractionType.choices)
    channel = models.CharField(max_length=64)
    direction = models.CharField(max_length=3, choices=Direction.choices, default=Direction.INBOUND)
    touchpoint = models.ForeignKey(Touchpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=64, default="api")
    external_id = models.CharField(max_length=128, null=True, blank=True)
    amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    properties = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "source", "external_id"],
                condition=models.Q(external_id__isnull=False),
                name="uniq_interaction_source_key",
            ),
        ]
        indexes = [
            models.Index(fields=["member", "-occurred_at"], name="ix_member_time"),
            models.Index(fields=["workspace", "-occurred_at"], name="ix_ws_time"),
            models.Index(fields=["workspace", "type", "-occurred_at"], name="ix_ws_type_time"),
            models.Index(fields=["origin_member_id"], name="ix_origin_member"),
        ]

    def __str__(self) -> str:
        return f"{self.type}/{self.direction} #{self.pk}"
