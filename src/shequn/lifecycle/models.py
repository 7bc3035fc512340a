"""Pipeline stages (消费者管道), the rules that move members along them, and the history."""

from __future__ import annotations

from django.db import models

from shequn.core.models import Workspace


class Stage(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="stages")
    key = models.SlugField(max_length=32)
    name = models.CharField(max_length=64)
    position = models.PositiveSmallIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "key"], name="uniq_stage_key")]
        ordering = ["position"]

    def __str__(self) -> str:
        return self.name


class LifecycleVersion(models.Model):
    """The version of a workspace's stages and stage rules: a new random value in the transaction of
    every change of them, so each process knows when its cached copy is stale (ADR 0015)."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, primary_key=True, related_name="+")
    version = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.workspace_id} v{self.version}"


class StageRule(models.Model):
    """When an interaction of ``interaction_type`` (optionally on ``channel``/``touchpoint``, with at
    least ``min_amount``, being at least the member's ``min_count``-th such event) arrives, move the
    member to ``target_stage`` — forward only unless ``allow_backward``."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="stage_rules")
    name = models.CharField(max_length=100)
    interaction_type = models.CharField(max_length=24)
    direction = models.CharField(max_length=3, blank=True, help_text="in / out; empty = either")
    channel = models.CharField(max_length=64, blank=True)
    touchpoint = models.ForeignKey("interactions.Touchpoint", null=True, blank=True, on_delete=models.CASCADE)
    min_amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    min_count = models.PositiveIntegerField(default=1)
    target_stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="rules")
    allow_backward = models.BooleanField(default=False)
    priority = models.IntegerField(default=100, help_text="lower runs first")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return self.name


class StageChange(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="stage_changes")
    from_stage = models.ForeignKey(Stage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    to_stage = models.ForeignKey(Stage, null=True, on_delete=models.SET_NULL, related_name="+")
    at = models.DateTimeField()
    cause = models.CharField(max_length=16, help_text="rule / manual / import / merge / unmerge")
    rule = models.ForeignKey(StageRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    interaction_id = models.BigIntegerField(null=True, blank=True)
    actor = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["member", "-at"], name="stagechange_member_at"),
            models.Index(fields=["workspace", "-at"], name="stagechange_ws_at"),
        ]
