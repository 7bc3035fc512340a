"""Background work of the lifecycle domain."""

from __future__ import annotations

from django_tasks import task

from shequn.core.tasks import register_periodic


@task()
def refresh_strength_all() -> int:
    """Relationship strength decays with time even when nothing happens (see strength.py): re-evaluate
    every engaged member once a day. Idempotent: it writes only levels that changed."""
    from .services import refresh_strength

    return refresh_strength()


register_periodic("lifecycle.refresh_strength", "shequn.lifecycle.tasks.refresh_strength_all", 24 * 3600)
