"""Background work of the outbound domain: delivering outbox messages and webhook deliveries, and the
sweep that re-enqueues due retries. Task bodies claim their rows with conditional UPDATEs, so running
one twice does nothing the second time."""

from __future__ import annotations

from django_tasks import task

from shequn.core.tasks import register_periodic

from . import services


@task()
def deliver_message(message_id: int) -> str:
    return services.deliver(message_id)


@task()
def deliver_webhooks(delivery_ids: list[int]) -> dict[str, str]:
    return {str(pk): services.deliver_webhook(pk) for pk in delivery_ids}


@task()
def sweep() -> dict[str, int]:
    return services.sweep()


register_periodic("outbound.sweep", "shequn.outbound.tasks.sweep", 60)
