"""Tenancy, staff, API keys, audit and the periodic schedule."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Workspace(models.Model):
    """One brand (tenant). Every domain row carries a workspace foreign key."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    default_timezone = models.CharField(max_length=64, default="Asia/Shanghai")
    default_country = models.CharField(max_length=2, default="CN", help_text="Region used to read local phone numbers")
    settings = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class Role(models.TextChoices):
    OWNER = "owner", _("Owner")
    OPERATOR = "operator", _("Operator")
    AGENT = "agent", _("Service agent")
    CLERK = "clerk", _("Shop clerk")


class StaffMembership(models.Model):
    """A staff user's role in one workspace; a person may belong to several workspaces."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="staff")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="uniq_staff_per_workspace")]

    def __str__(self) -> str:
        return f"{self.user} @ {self.workspace.slug} ({self.role})"


class ApiKey(models.Model):
    """A workspace API key. Only a SHA-256 hash of the secret is stored; the key is shown once."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.OPERATOR)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AuditEntry(models.Model):
    """Who did what to which object, for operations people must be able to trace and undo."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="audit")
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=200, help_text="user:<id>, apikey:<prefix>, system, task:<name>")
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "object_type", "object_id"])]


class PeriodicSchedule(models.Model):
    """A periodic task. Any number of workers run the scheduler loop; a conditional UPDATE on
    ``next_run_at`` lets exactly one of them claim each due run."""

    name = models.CharField(max_length=100, unique=True)
    task_path = models.CharField(max_length=200)
    interval_seconds = models.PositiveIntegerField()
    next_run_at = models.DateTimeField()
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_task_id = models.CharField(max_length=64, blank=True)
    enabled = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.name
