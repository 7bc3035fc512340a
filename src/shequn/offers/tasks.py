"""Background work of the offers domain."""

from __future__ import annotations

from django_tasks import task

from shequn.core.tasks import register_periodic


@task()
def issue_birthday_coupons_all() -> dict[str, int]:
    """Issue birthday offers in every workspace that has one. Runs hourly so that each member is
    reached on their birthday in their own time zone; idempotent (one coupon per member, offer and year)."""
    from shequn.core import clock
    from shequn.core.models import Workspace

    from .models import Offer, Trigger
    from .services import issue_birthday_coupons

    now = clock.now()
    ws_ids = Offer.objects.filter(active=True, trigger=Trigger.BIRTHDAY).values_list("workspace_id", flat=True).distinct()
    totals = {"workspaces": 0, "issued": 0}
    for workspace in Workspace.objects.filter(pk__in=list(ws_ids)).order_by("pk"):
        totals["workspaces"] += 1
        totals["issued"] += issue_birthday_coupons(workspace, now)
    return totals


register_periodic("offers.birthday_coupons", "shequn.offers.tasks.issue_birthday_coupons_all", 3600)
