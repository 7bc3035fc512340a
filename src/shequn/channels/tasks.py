"""Background work of the channels domain: recording what WeChat pushed (off the reply's fast path)
and the sweep that records any message whose task was lost. Both are idempotent."""

from __future__ import annotations

from django_tasks import task

from shequn.core.tasks import register_periodic

from . import services


@task()
def record_inbound(record_id: int) -> str:
    return services.record_inbound(record_id)


@task()
def record_pending() -> dict[str, int]:
    return services.record_pending()


register_periodic("channels.record_pending", "shequn.channels.tasks.record_pending", 60)
