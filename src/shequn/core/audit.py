"""Audit trail writes (called by services, inside their transaction)."""

from __future__ import annotations

from typing import Any

from django.db import models

from .models import AuditEntry, Workspace


def record(workspace: Workspace, actor: str, action: str, obj: models.Model, data: dict[str, Any] | None = None) -> None:
    AuditEntry.objects.create(workspace=workspace, actor=actor[:200], action=action,
                              object_type=obj._meta.model_name or "", object_id=str(obj.pk), data=data or {})
