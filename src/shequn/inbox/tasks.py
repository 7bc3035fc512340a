"""Background work of the inbox: the SLA sweep (escalation of overdue tickets) and closing idle
conversations only the bot took part in. Both are idempotent: conditional UPDATEs decide."""

from __future__ import annotations

from django_tasks import task

from shequn.core.tasks import register_periodic

from . import services

SWEEP_SECONDS = 60


@task()
def sla_sweep() -> dict[str, int]:
    escalated = services.escalate_overdue()
    closed = services.close_idle_bot_conversations()
    return {"escalated": len(escalated), "closed": closed}


register_periodic("inbox.sla_sweep", "shequn.inbox.tasks.sla_sweep", SWEEP_SECONDS)
