"""Background work of the channels domain: recording what WeChat pushed, off the reply's fast path.

A stored message is its own queue entry: every worker's drain thread records the waiting messages as
they arrive (``channels.record_inbound``), and the minute sweep records any a drain did not get to
(every worker started with ``--no-drains``, a message held back after a failure). Both are idempotent."""

from __future__ import annotations

from django_tasks import task

from shequn.core.tasks import register_drain, register_periodic

from . import services


@task()
def record_pending() -> dict[str, int]:
    return services.record_pending()


register_drain("channels.record_inbound", "shequn.channels.services.record_waiting")
register_periodic("channels.record_pending", "shequn.channels.tasks.record_pending", 60)
