"""Calendar arithmetic of the ledger, in the workspace time zone: when a lot expires, and which cap
period an interaction falls into. Pure functions, no database."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .models import CapPeriod, ExpiryPolicy, PointType


def zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name or "Asia/Shanghai")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Shanghai")


def _local_midnight(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(dt.UTC)


def expires_at(point_type: PointType, earned_at: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
    """The first instant at which points earned at ``earned_at`` are no longer spendable.

    ``days``: exactly ``expiry_period`` × 24 h later. ``month_end``/``year_end``: local midnight at the
    start of the month/year that follows the month/year ``expiry_period`` periods after the earning one
    (so period 0 = points earned in June expire when July begins)."""
    policy = point_type.expiry_policy
    if policy == ExpiryPolicy.NEVER:
        return None
    if policy == ExpiryPolicy.DAYS:
        return earned_at + dt.timedelta(days=point_type.expiry_period)
    local = earned_at.astimezone(tz).date()
    if policy == ExpiryPolicy.MONTH_END:
        months = local.year * 12 + (local.month - 1) + point_type.expiry_period + 1
        return _local_midnight(dt.date(months // 12, months % 12 + 1, 1), tz)
    if policy == ExpiryPolicy.YEAR_END:
        return _local_midnight(dt.date(local.year + point_type.expiry_period + 1, 1, 1), tz)
    raise ValueError(f"unknown expiry policy {policy!r}")


def available_at(point_type: PointType, earned_at: dt.datetime) -> dt.datetime:
    return earned_at + dt.timedelta(days=point_type.pending_days)


def period_start(period: str, at: dt.datetime, tz: dt.tzinfo) -> dt.date:
    """The first local day of the cap period that contains ``at`` (weeks start on Monday)."""
    day = at.astimezone(tz).date()
    if period == CapPeriod.DAY:
        return day
    if period == CapPeriod.WEEK:
        return day - dt.timedelta(days=day.weekday())
    if period == CapPeriod.MONTH:
        return day.replace(day=1)
    raise ValueError(f"unknown cap period {period!r}")
