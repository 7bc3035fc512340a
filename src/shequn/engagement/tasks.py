"""Background work of engagement: the scheduled tier review, and placing members on tiers after the
tiers were changed. Both are idempotent."""

from __future__ import annotations

from django_tasks import task

from shequn.core.tasks import register_periodic


@task()
def review_tiers_all() -> dict[str, int]:
    """Review the tiers of every member whose review date has come, in every workspace that has one
    due (found through the partial index on ``review_at``; nothing is scanned when nothing is due)."""
    from shequn.core import clock
    from shequn.core.models import Workspace

    from .models import MemberStatus
    from .services import review_due

    now = clock.now()
    due = MemberStatus.objects.filter(review_at__lte=now).values_list("workspace_id", flat=True).distinct()
    totals = {"workspaces": 0, "reviewed": 0, "kept": 0, "grace": 0, "downgraded": 0}
    for workspace in Workspace.objects.filter(pk__in=list(due)).order_by("pk"):
        run = review_due(workspace, now)
        totals["workspaces"] += 1
        totals["reviewed"] += run.reviewed
        totals["kept"] += run.kept
        totals["grace"] += run.grace
        totals["downgraded"] += run.downgraded
    return totals


@task()
def place_members(workspace_id: int) -> int:
    """After tiers were created or changed: upgrade every member who now qualifies (never downgrades)."""
    from shequn.core.models import Workspace

    from .services import evaluate_all

    workspace = Workspace.objects.filter(pk=workspace_id).first()
    return evaluate_all(workspace) if workspace is not None else 0


# Hourly: a review date is a moment, so a downgrade lands at most an hour after it is due.
register_periodic("engagement.review_tiers", "shequn.engagement.tasks.review_tiers_all", 60 * 60)
