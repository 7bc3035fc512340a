"""The one place that reads the time, so tests and replays can move it."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.utils import timezone


def now() -> datetime:
    return timezone.now()


def local_time_after(tz_name: str, *, days: int = 0, at: time, after: datetime | None = None) -> datetime:
    """The aware instant that is ``at`` o'clock in time zone ``tz_name``, ``days`` local days after
    ``after`` (default now) — e.g. "in 3 days, at 10:00 member time" for ``run_after`` of a task.
    Wall-clock times that do not exist or repeat around DST changes resolve the way ``zoneinfo``
    resolves ``fold=0``."""
    zone = ZoneInfo(tz_name)
    base = (after or now()).astimezone(zone)
    target_day = (base + timedelta(days=days)).date()
    return datetime.combine(target_day, at, tzinfo=zone)
