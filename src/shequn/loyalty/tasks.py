"""Background work of the loyalty domain."""

from __future__ import annotations

from django_tasks import task

from shequn.core.tasks import register_periodic


@task()
def expire_due_all() -> dict[str, int]:
    """Expire lots past their expiry and release pending points that have waited long enough, in
    every workspace that has something due. Idempotent: what is done is no longer due."""
    from shequn.core import clock
    from shequn.core.models import Workspace

    from .models import PointBalance
    from .services import expire_due

    now = clock.now()
    due = PointBalance.objects.filter(next_change_at__lte=now).values_list("workspace_id", flat=True).distinct()
    totals = {"workspaces": 0, "balances": 0, "expired": 0, "released": 0}
    for workspace in Workspace.objects.filter(pk__in=list(due)).order_by("pk"):
        run = expire_due(workspace, now)
        totals["workspaces"] += 1
        totals["balances"] += run.balances
        totals["expired"] += run.expired
        totals["released"] += run.released
    return totals


# Every 15 minutes: month and year ends are local midnights, so expiry lands at most 15 minutes late
# in what balances show; a spend never waits for it (it settles its own balance first).
register_periodic("loyalty.expire_due", "shequn.loyalty.tasks.expire_due_all", 15 * 60)
