"""Tenant scoping by construction: objects are fetched by id only through these helpers."""

from __future__ import annotations

from typing import TypeVar

from django.db import models

from .errors import NotFound
from .models import Workspace

M = TypeVar("M", bound=models.Model)


def scoped(model: type[M], workspace: Workspace | int) -> models.QuerySet[M]:
    ws_id = workspace if isinstance(workspace, int) else workspace.pk
    return model._default_manager.filter(workspace_id=ws_id)  # type: ignore[attr-defined]


def get_scoped(model: type[M], workspace: Workspace | int, pk: object, *, for_update: bool = False) -> M:
    """Fetch one row of ``model`` by primary key inside ``workspace``. A row of another workspace is
    reported exactly like a missing one, so ids cannot be probed across tenants."""
    qs = scoped(model, workspace)
    if for_update:
        qs = qs.select_for_update()
    try:
        return qs.get(pk=pk)
    except (model.DoesNotExist, ValueError, TypeError):  # type: ignore[attr-defined]
        raise NotFound(f"{model._meta.verbose_name} {pk} not found") from None
