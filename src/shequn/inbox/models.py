"""The service inbox: conversations across channels, their thread, teams, canned replies, tickets with
an SLA clock, satisfaction surveys, and the per-workspace change counter clients poll."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from shequn.core.models import Workspace


class Team(models.Model):
    """A group of agents (客服组, 门店组 …). Overdue tickets of a team move to its escalation team."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(_("name"), max_length=100)
    escalation_team = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                        verbose_name=_("escalation team"))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("team")
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="uniq_inbox_team_name")]
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name


class TeamMember(models.Model):
    """An agent (a staff user of the workspace) in a team."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="uniq_inbox_team_member")]
        indexes = [models.Index(fields=["workspace", "user"], name="ix_inbox_tm_user")]


class Priority(models.TextChoices):
    URGENT = "urgent", _("Urgent")
    HIGH = "high", _("High")
    NORMAL = "normal", _("Normal")
    LOW = "low", _("Low")


class SlaPolicy(models.Model):
    """Minutes to the first response and to resolution for one priority, for one team (or, with no
    team, the workspace default). Missing rows fall back to ``services.DEFAULT_SLA``."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="sla")
    priority = models.CharField(max_length=8, choices=Priority.choices)
    first_response_minutes = models.PositiveIntegerField()
    resolution_minutes = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "team", "priority"], condition=models.Q(team__isnull=False),
                                    name="uniq_inbox_sla_team"),
            models.UniqueConstraint(fields=["workspace", "priority"], condition=models.Q(team__isnull=True),
                                    name="uniq_inbox_sla_default"),
            models.CheckConstraint(condition=models.Q(first_response_minutes__gte=1, resolution_minutes__gte=1),
                                   name="inbox_sla_positive"),
        ]


class CannedReply(models.Model):
    """A prepared answer agents insert into a reply by its shortcut (``/refund``)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    shortcut = models.SlugField(_("shortcut"), max_length=32)
    title = models.CharField(_("title"), max_length=100)
    text = models.TextField(_("text"))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("canned reply")
        constraints = [models.UniqueConstraint(fields=["workspace", "shortcut"], name="uniq_inbox_canned_shortcut")]
        ordering = ["shortcut"]


class Status(models.TextChoices):
    OPEN = "open", _("Open")
    PENDING = "pending", _("Pending (waiting on the member)")
    RESOLVED = "resolved", _("Resolved")


LIVE_STATUSES = (Status.OPEN, Status.PENDING)


class Conversation(models.Model):
    """A member's exchange with the brand across channels. A member has at most one open (or pending)
    conversation; inbound messages join it, or open a new one after it was resolved."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=64)
    touchpoint = models.ForeignKey("interactions.Touchpoint", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    needs_human = models.BooleanField(default=False)
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    preview = models.CharField(max_length=200, blank=True)
    opened_at = models.DateTimeField()
    last_message_at = models.DateTimeField()
    last_inbound_at = models.DateTimeField(null=True, blank=True)
    last_reply_at = models.DateTimeField(null=True, blank=True)
    first_response_at = models.DateTimeField(null=True, blank=True)
    assigned_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("conversation")
        constraints = [
            models.UniqueConstraint(fields=["workspace", "member"], condition=models.Q(status__in=["open", "pending"]),
                                    name="uniq_inbox_live_conversation"),
        ]
        indexes = [
            models.Index(fields=["workspace", "-last_message_at", "-id"], name="ix_inbox_conv_all"),
            models.Index(fields=["workspace", "status", "-last_message_at", "-id"], name="ix_inbox_conv_status"),
            models.Index(fields=["workspace", "assignee", "status", "-last_message_at", "-id"], name="ix_inbox_conv_mine"),
            models.Index(fields=["workspace", "team", "status", "-last_message_at", "-id"], name="ix_inbox_conv_team"),
            models.Index(fields=["workspace", "status", "needs_human", "-last_message_at", "-id"],
                         condition=models.Q(assignee__isnull=True), name="ix_inbox_conv_unassigned"),
            models.Index(fields=["workspace", "opened_at"], name="ix_inbox_conv_opened"),
            models.Index(fields=["member", "-opened_at"], name="ix_inbox_conv_member"),
        ]

    def __str__(self) -> str:
        return f"conversation #{self.pk}"

    @property
    def waiting(self) -> bool:
        """The member wrote last and no agent has answered since."""
        return self.last_inbound_at is not None and (self.last_reply_at is None or self.last_reply_at < self.last_inbound_at)


class EntryKind(models.TextChoices):
    INBOUND = "in", _("Message from the member")
    REPLY = "reply", _("Agent reply")
    NOTE = "note", _("Internal note")
    EVENT = "event", _("Event")
    CSAT = "csat", _("Satisfaction answer")


class Entry(models.Model):
    """One line of a conversation's thread. An inbound message is stored once per interaction
    (``interaction_id`` unique), so a replayed batch cannot repeat it."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="entries")
    kind = models.CharField(max_length=8, choices=EntryKind.choices)
    at = models.DateTimeField()
    text = models.TextField(blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")
    actor = models.CharField(max_length=200, blank=True)
    interaction_id = models.BigIntegerField(null=True, blank=True)
    outbound_id = models.BigIntegerField(null=True, blank=True)
    channel = models.CharField(max_length=64, blank=True)
    bot_outcome = models.CharField(max_length=16, blank=True)
    key = models.CharField(max_length=64, blank=True, help_text="idempotency key of an agent reply")
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "interaction_id"], condition=models.Q(interaction_id__isnull=False),
                                    name="uniq_inbox_entry_interaction"),
            models.UniqueConstraint(fields=["conversation", "key"], condition=~models.Q(key=""),
                                    name="uniq_inbox_entry_key"),
        ]
        indexes = [models.Index(fields=["conversation", "at", "id"], name="ix_inbox_entry_thread")]


class Ticket(models.Model):
    """A piece of work with a priority and an SLA clock, from a conversation or on its own.

    The due times already include the time spent pending (the clock stops while the ticket waits on
    the member). ``breached_at`` is set once, by the first SLA miss, together with the escalation."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    title = models.CharField(_("title"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    conversation = models.ForeignKey(Conversation, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="tickets")
    member = models.ForeignKey("members.Member", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    priority = models.CharField(_("priority"), max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField()
    first_response_minutes = models.PositiveIntegerField()
    resolution_minutes = models.PositiveIntegerField()
    paused_seconds = models.PositiveIntegerField(default=0)
    paused_at = models.DateTimeField(null=True, blank=True)
    first_response_due = models.DateTimeField()
    resolution_due = models.DateTimeField()
    first_responded_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    breached_at = models.DateTimeField(null=True, blank=True)
    breach = models.CharField(max_length=16, blank=True, help_text="first_response or resolution")
    escalated_from = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("ticket")
        indexes = [
            models.Index(fields=["workspace", "status", "-id"], name="ix_inbox_ticket_status"),
            models.Index(fields=["workspace", "team", "status", "-id"], name="ix_inbox_ticket_team"),
            models.Index(fields=["workspace", "assignee", "status", "-id"], name="ix_inbox_ticket_mine"),
            models.Index(fields=["status", "resolution_due"], condition=models.Q(breached_at__isnull=True),
                         name="ix_inbox_ticket_due"),
            models.Index(fields=["workspace", "breached_at"], name="ix_inbox_ticket_breached"),
        ]

    def __str__(self) -> str:
        return f"ticket #{self.pk}"


class CsatSurvey(models.Model):
    """The satisfaction question asked after a conversation was resolved, and the member's answer."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    conversation = models.OneToOneField(Conversation, on_delete=models.CASCADE, related_name="csat")
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+")
    touchpoint = models.ForeignKey("interactions.Touchpoint", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    channel = models.CharField(max_length=64)
    asked_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    score = models.PositiveSmallIntegerField(null=True, blank=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    interaction_id = models.BigIntegerField(null=True, blank=True)
    outbound_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(score__isnull=True) | models.Q(score__gte=1, score__lte=5),
                                              name="inbox_csat_score_1_5")]
        indexes = [
            models.Index(fields=["workspace", "member", "-asked_at"], condition=models.Q(score__isnull=True),
                         name="ix_inbox_csat_pending"),
            models.Index(fields=["workspace", "answered_at"], name="ix_inbox_csat_answered"),
        ]


class InboxState(models.Model):
    """The workspace's inbox change counter: every change to a conversation or ticket adds one, in
    the same transaction. Clients poll it with ``If-None-Match`` and refetch lists only when it moved."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="+", primary_key=True)
    version = models.BigIntegerField(default=0)
