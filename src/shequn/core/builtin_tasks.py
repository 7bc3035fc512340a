"""Built-in tasks that belong to the task framework itself."""

from __future__ import annotations

from django_tasks import task


@task()
def ping(token: str) -> str:
    """Return ``token`` unchanged and touch nothing.

    Used by ``shequn worker --check`` (and the tests) to prove end to end that a task enqueued here is
    picked up and run by a worker of the configured backend. Trivially idempotent.
    """
    return token
