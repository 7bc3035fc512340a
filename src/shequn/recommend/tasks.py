"""Background work of the recommend domain: the periodic refresh of item statistics and neighbours."""

from __future__ import annotations

from django_tasks import task

from shequn.core.tasks import enqueue_on_commit, register_periodic

REFRESH_SECONDS = 6 * 3600


@task()
def refresh_affinity(workspace_id: int) -> dict[str, int]:
    """Recompute one workspace's item statistics (idempotent: replaces them atomically)."""
    from shequn.core.models import Workspace

    from .services import refresh_affinity as refresh

    workspace = Workspace.objects.filter(pk=workspace_id).first()
    if workspace is None:
        return {"members": 0, "items": 0, "links": 0}
    return refresh(workspace)


@task()
def refresh_affinity_all() -> int:
    """Enqueue one refresh per workspace with purchases (one small task each, so a restart loses little)."""
    from django.db.models import Exists, OuterRef

    from shequn.core.models import Workspace
    from shequn.interactions.models import Interaction, InteractionType

    purchases = Interaction.objects.filter(workspace=OuterRef("pk"), type=InteractionType.PURCHASE)
    ws_ids = list(Workspace.objects.filter(Exists(purchases)).order_by("pk").values_list("pk", flat=True))
    for workspace_id in ws_ids:
        enqueue_on_commit(refresh_affinity, workspace_id)
    return len(ws_ids)


register_periodic("recommend.refresh_affinity", "shequn.recommend.tasks.refresh_affinity_all", REFRESH_SECONDS)
