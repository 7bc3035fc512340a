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
