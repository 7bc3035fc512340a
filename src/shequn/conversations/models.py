"""Conversations: keyword auto-reply rules and the per-workspace version of the rule set."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from shequn.core.models import Workspace


class MatchType(models.TextChoices):
    EXACT = "exact", _("Exact (全匹配)")
    CONTAINS = "contains", _("Contains (包含)")
    STARTS_WITH = "starts_with", _("Starts with (开头是)")
    REGEX = "regex", _("Regular expression (正则)")


class ReplyType(models.TextChoices):
    """The kind of answer a rule gives. The payload of each kind lives in ``AutoReplyRule.reply``
    (text: ``{"content": "…"}``); further kinds (image, news) add a value here and a payload shape in
    ``services.clean_reply``."""

    TEXT = "text", _("Text")


class AutoReplyRule(models.Model):
    """One keyword auto-reply rule (关键词自动回复) of a workspace.

    ``patterns`` are the keywords (or regular expressions) as the operator typed them; the engine
    normalises them (``matching.normalize``) when it compiles the rule set. ``priority``: lower numbers
    win; ties go to the older rule (lower id). ``channels`` empty means every channel. ``windows`` is a
    list of ``{"days": [1…7], "start": "HH:MM", "end": "HH:MM"}`` in the workspace's time zone (ISO
    weekdays, Monday = 1; ``end`` before ``start`` runs past midnight); with ``outside_windows`` the
    rule answers only outside them. No window: always."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="auto_reply_rules")
    name = models.CharField(max_length=100)
    match_type = models.CharField(max_length=16, choices=MatchType.choices)
    patterns = models.JSONField(default=list)
    reply_type = models.CharField(max_length=16, choices=ReplyType.choices, default=ReplyType.TEXT)
    reply = models.JSONField(default=dict)
    priority = models.PositiveIntegerField(default=100, help_text="lower answers first")
    channels = models.JSONField(default=list, blank=True, help_text="empty: every channel")
    windows = models.JSONField(default=list, blank=True)
    outside_windows = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    tag = models.CharField(max_length=64, blank=True, help_text="tag applied to the member a rule answers")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="uniq_autoreply_rule_name")]
        indexes = [models.Index(fields=["workspace", "priority", "id"], name="autoreply_ws_priority")]
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return self.name


class RuleSetVersion(models.Model):
    """The version of a workspace's rule set, bumped (``F() + 1``) in the transaction of every rule
    change. Each process caches the compiled rule set per workspace and reads this one row per message
    to know whether its copy is current. ``generation`` is drawn at random when the row is created, so
    a workspace re-created with the same id never meets a cache entry of its predecessor."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, primary_key=True,
                                     related_name="auto_reply_version")
    version = models.PositiveBigIntegerField(default=0)
    generation = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.workspace_id} v{self.version}"


# ---------------------------------------------------------------------------------------------
# IVR menus (docs/menus.md, ADR 0014)


class NodeAction(models.TextChoices):
    """What choosing a menu option does."""

    SUBMENU = "submenu", _("Open a submenu")
    TEXT = "text", _("Answer with a text")
    LIVE = "live", _("Answer with live data")
    HANDOFF = "handoff", _("Hand over to a person")


class LiveData(models.TextChoices):
    """The live answers a menu option can give, read from other domains when the member asks."""

    POINTS = "points", _("Points balance")
    COUPONS = "coupons", _("Coupons")
    LATEST_PURCHASE = "latest_purchase", _("Latest purchase")
    BOOKING = "booking", _("Upcoming event booking")


class Menu(models.Model):
    """An interactive menu (像电话语音导航的菜单) of a workspace: a tree of numbered options.

    A member opens it by sending one of ``triggers`` (exact match after normalisation, e.g. 菜单);
    while the member's session is open (``timeout_seconds`` since their last menu input) digits choose
    options, ``*`` goes back one level and ``#`` returns to the top (docs/menus.md)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="menus")
    name = models.CharField(max_length=100)
    triggers = models.JSONField(default=list, help_text="texts that open the menu at its top level")
    prompt = models.TextField(blank=True, help_text="text above the options of the top level")
    handoff_text = models.TextField(blank=True, help_text="reply when the member is handed over to a person")
    timeout_seconds = models.PositiveIntegerField(default=300)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="uniq_menu_name")]
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class MenuNode(models.Model):
    """One option of a menu: the member sends ``key`` (digits) to choose it. ``parent`` None: an
    option of the top level. ``text`` is the answer of a text option, the header of a submenu, or the
    reply of a handoff option (the menu's ``handoff_text`` when empty); ``live`` names the live data
    of a live option."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    menu = models.ForeignKey(Menu, on_delete=models.CASCADE, related_name="nodes")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    key = models.CharField(max_length=2)
    label = models.CharField(max_length=60)
    action = models.CharField(max_length=16, choices=NodeAction.choices)
    text = models.TextField(blank=True)
    live = models.CharField(max_length=24, choices=LiveData.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["menu", "parent", "key"], name="uniq_menu_node_key"),
            models.UniqueConstraint(fields=["menu", "key"], condition=models.Q(parent__isnull=True),
                                    name="uniq_menu_top_key"),
        ]
        ordering = ["menu", "parent_id", "key"]

    def __str__(self) -> str:
        return f"{self.key}. {self.label}"


class MenuSession(models.Model):
    """Where one member (``subject``: the channel identity, e.g. ``wechat_openid:wx…:o…``) is in a
    menu, until ``expires_at``. ``node`` None: the top level. Written in the transaction that records
    the member's message, so a retried message sees the state its first delivery left (ADR 0014)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    subject = models.CharField(max_length=200)
    menu = models.ForeignKey(Menu, on_delete=models.CASCADE, related_name="+")
    node = models.ForeignKey(MenuNode, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    expires_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "subject"], name="uniq_menu_session_subject")]

    def __str__(self) -> str:
        return f"{self.subject} @ {self.menu_id}/{self.node_id or '-'}"


# ---------------------------------------------------------------------------------------------
# incidents (outage notices, docs/incidents.md)


class IncidentStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    ENDED = "ended", _("Ended")


class Incident(models.Model):
    """An outage notice (故障通知): while active (declared, ``starts_at`` passed, not ended, before
    ``ends_at`` when set), an inbound message containing one of ``keywords`` (every message when there
    are none) is answered with ``reply`` before any menu or keyword rule."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="incidents")
    title = models.CharField(max_length=200)
    keywords = models.JSONField(default=list, blank=True)
    reply = models.TextField()
    status = models.CharField(max_length=10, choices=IncidentStatus.choices, default=IncidentStatus.ACTIVE)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True, help_text="planned end; empty: until ended")
    ended_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "status", "-starts_at"], name="incident_ws_status")]
        ordering = ["-starts_at", "-id"]

    def __str__(self) -> str:
        return self.title


class NotificationStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Sending")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")


class IncidentNotification(models.Model):
    """One proactive notification of an incident to affected members: a segment (``target``
    ``{"filter": {…}}``, a member filter) or a list (``{"member_ids": […]}``). Sent in the background
    in member-id order; ``cursor`` is the last member handled and ``processed`` the progress counter.
    Each message is sent with the key ``incident:<incident id>:<member id>``, so a member is told
    once per incident however often the incident is notified."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="notifications")
    target = models.JSONField(default=dict)
    text = models.TextField()
    status = models.CharField(max_length=10, choices=NotificationStatus.choices, default=NotificationStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    cursor = models.BigIntegerField(default=0)
    error = models.TextField(blank=True)
    created_by = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.incident_id}: {self.processed}/{self.total}"
