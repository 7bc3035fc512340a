"""Every write of engagement: programme settings and definitions (tiers, badges, tasks, levels,
streak rewards), the reactions to points changes and new interactions, tier upgrades and reviews,
badge awards, task progress and rewards, daily check-in, and leaderboard scores.

Rules (ADR 0008):

* a tier rises at once when an event lifts the member's rolling-window figures over a threshold; it
  falls only at the member's scheduled review (``review_at``), after the tier's grace period, and
  spending points never lowers it (only contribution earned counts, never the spendable balance);
* every tier change is a ``TierChange`` row with its cause, and emits ``hooks.TIER_CHANGED``;
* counters, window buckets, task progress and leaderboard scores change by upserts with SQL
  arithmetic (``INSERT … ON CONFLICT DO UPDATE SET x = x + excluded.x``), so concurrent events lose
  nothing and no reader ever rebuilds them;
* awards are idempotent by unique constraints: one badge award per (member, badge), one check-in per
  (member, local day), one completion per (task, member, period); point rewards go through the
  ledger with idempotency keys.

Lock order for one member (outer first), so no two paths wait on each other in a circle:
``MemberStreak`` (check-in) → member row (interaction write path) → ``TaskProgress`` → point balance
(ledger) → ``ActivityDay`` / ``MemberStatus`` / ``LeaderboardScore`` / ``BadgeAward``.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import IntegrityError, connection, models, transaction
from django.db.models import F, Sum
from django.db.models.functions import Greatest
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from shequn.core import audit, clock, hooks
from shequn.core.errors import Conflict, NotFound, ValidationError
from shequn.core.inserts import passes_unchanged
from shequn.core.models import Workspace
from shequn.core.prepared import Prepared, column_types, prepares
from shequn.core.tenancy import get_scoped, scoped

from .models import (
    ActivityDay,
    Badge,
    BadgeAward,
    Board,
    CheckIn,
    LeaderboardScore,
    Level,
    MemberCounter,
    MemberStatus,
    MemberStreak,
    Period,
    Programme,
    StreakReward,
    Task,
    TaskProgress,
    TaskRepeat,
    Tier,
    TierCause,
    TierChange,
    TierRequirement,
)

logger = logging.getLogger("shequn.engagement")

NO_PERIOD = dt.date(1970, 1, 1)
CHECK_IN = "check_in"
STREAK = "streak"
PROFILE = "profile"
PROFILE_FIELDS = ("display_name", "gender", "birthday", "city")
SPECIAL_METRICS = (CHECK_IN, STREAK, PROFILE)
BOARD_PERIODS: dict[str, tuple[str, ...]] = {
    Board.POINTS: (Period.WEEK, Period.MONTH),
    Board.INVITES: (Period.WEEK, Period.MONTH, Period.ALL),
    Board.STREAK: (Period.ALL,),
}
MAX_THRESHOLD = 10**12
CHECK_IN_SKEW = dt.timedelta(minutes=5)

DEFAULT_LEVELS = [(1, "Lv1", 0), (2, "Lv2", 100), (3, "Lv3", 300), (4, "Lv4", 600), (5, "Lv5", 1000)]


# ---------------------------------------------------------------------------------------------
# time


def zone(name: str | None) -> dt.tzinfo:
    try:
        return ZoneInfo(name) if name else ZoneInfo("Asia/Shanghai")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Shanghai")


def ws_zone(workspace: Workspace) -> dt.tzinfo:
    return zone(workspace.default_timezone)


def period_start(period: str, day: dt.date) -> dt.date:
    """The first local day of the period holding ``day`` (weeks start on Monday)."""
    if period == Period.WEEK:
        return day - dt.timedelta(days=day.weekday())
    if period == Period.MONTH:
        return day.replace(day=1)
    return NO_PERIOD


def task_period_start(repeat: str, day: dt.date) -> dt.date:
    if repeat == TaskRepeat.DAILY:
        return day
    if repeat == TaskRepeat.WEEKLY:
        return period_start(Period.WEEK, day)
    if repeat == TaskRepeat.MONTHLY:
        return period_start(Period.MONTH, day)
    return NO_PERIOD


def local_midnight(day: dt.date, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(dt.UTC)


def _aware(value: dt.datetime | None) -> dt.datetime:
    if value is None:
        return clock.now()
    if timezone.is_naive(value):
        raise ValueError("engagement times must be timezone-aware")
    return value


# ---------------------------------------------------------------------------------------------
# upserts with SQL arithmetic (PostgreSQL and SQLite share the syntax)


def _upsert(model: type[models.Model], keys: Sequence[str], rows: Sequence[Mapping[str, Any]], *,
            add: Sequence[str] = (), greatest: Sequence[str] = (), replace: Sequence[str] = (),
            returning: Sequence[str] = ()) -> list[tuple[Any, ...]]:
    """Insert ``rows`` or, where a row with the same ``keys`` exists, change it in SQL: ``add`` columns
    are summed, ``greatest`` keep the larger value, ``replace`` take the new one. Rows are sent in key
    order so that concurrent upserts lock in the same order."""
    if not rows:
        return []
    sql, params = _upsert_statement(model, keys, rows, add=add, greatest=greatest, replace=replace,
                                    returning=returning)
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall()) if returning else []


def _upsert_statement(model: type[models.Model], keys: Sequence[str], rows: Sequence[Mapping[str, Any]], *,
                      add: Sequence[str] = (), greatest: Sequence[str] = (), replace: Sequence[str] = (),
                      returning: Sequence[str] = (), guard: hooks.Statement | None = None) -> hooks.Statement:
    """``_upsert``'s statement; with ``guard`` (PostgreSQL, ``hooks.plan``) the rows are inserted or
    changed only where the guard's condition holds (each value cast to its column's type, as the
    rows then come from a ``SELECT``), and the statement is prepared once per connection
    (``core.prepared``; the guard's parameters are cast in its text). Built once per shape of call."""
    names = tuple(rows[0].keys())
    shape = (connection.alias, model, tuple(keys), names, len(rows), tuple(add), tuple(greatest), tuple(replace),
             tuple(returning), None if guard is None else (guard[0], len(guard[1])))
    built = _UPSERTS.get(shape)
    if built is None:
        built = _UPSERTS[shape] = _build_upsert(model, keys, names, len(rows), add=add, greatest=greatest,
                                                replace=replace, returning=returning, guard=shape[-1])
    sql, steps, prepared = built
    ordered = sorted(rows, key=lambda r: tuple(str(r[k]) for k in keys)) if len(rows) > 1 else rows
    params: list[Any] = []
    for r in ordered:
        for name, column, unchanged in steps:
            value = r[name]
            params.append(value if type(value) in unchanged else column.get_db_prep_save(value, connection))
    if guard is not None:
        params += guard[1]
    return prepared.bound(params, connection) if prepared is not None else (sql, params)


_UPSERTS: dict[tuple[Any, ...], tuple[str, tuple[tuple[str, Any, frozenset[type]], ...], Prepared | None]] = {}


def _build_upsert(model: type[models.Model], keys: Sequence[str], names: Sequence[str], n: int, *,
                  add: Sequence[str], greatest: Sequence[str], replace: Sequence[str], returning: Sequence[str],
                  guard: tuple[str, int] | None
                  ) -> tuple[str, tuple[tuple[str, Any, frozenset[type]], ...], Prepared | None]:
    table = connection.ops.quote_name(model._meta.db_table)
    q = connection.ops.quote_name
    fields = [model._meta.get_field(n) for n in names]
    big = "GREATEST" if connection.vendor == "postgresql" else "MAX"
    sets = [f"{q(c)} = {table}.{q(c)} + excluded.{q(c)}" for c in (model._meta.get_field(n).column for n in add)]
    sets += [f"{q(c)} = {big}({table}.{q(c)}, excluded.{q(c)})" for c in (model._meta.get_field(n).column for n in greatest)]
    sets += [f"{q(c)} = excluded.{q(c)}" for c in (model._meta.get_field(n).column for n in replace)]
    conflict = ", ".join(q(model._meta.get_field(k).column) for k in keys)
    columns = ", ".join(q(f.column) for f in fields)
    prepared = None
    if guard is None:
        source = "VALUES " + ", ".join(["(" + ", ".join(["%s"] * len(names)) + ")"] * n)
    else:
        types = column_types(fields, connection)
        row = "(" + ", ".join(f"%s::{t}" for t in types) + ")"
        source = f"SELECT * FROM (VALUES {', '.join([row] * n)}) AS v WHERE {guard[0]}"  # noqa: S608 - the guard is the emitter's SQL text, values are parameters
    sql = (f"INSERT INTO {table} ({columns}) {source} "  # noqa: S608 - names from models
           f"ON CONFLICT ({conflict}) DO " + (f"UPDATE SET {', '.join(sets)}" if sets else "NOTHING"))
    if returning:
        sql += " RETURNING " + ", ".join(q(model._meta.get_field(n).column) for n in returning)
    if guard is not None and prepares(connection):
        prepared = Prepared(f"upsert_{model._meta.db_table}", sql, types * n + ["unknown"] * guard[1])
    steps = tuple((name, f, passes_unchanged(f, connection)) for name, f in zip(names, fields, strict=True))
    return sql, steps, prepared


# ---------------------------------------------------------------------------------------------
# programme and definitions


def install_defaults(workspace: Workspace) -> None:
    """A new workspace gets the programme settings and five levels (Lv1 … Lv5 by task XP)."""
    Programme.objects.get_or_create(workspace=workspace, defaults={"revision": uuid.uuid4().hex})
    if not scoped(Level, workspace).exists():
        Level.objects.bulk_create([Level(workspace=workspace, number=n, name=name, min_xp=xp)
                                   for n, name, xp in DEFAULT_LEVELS])


@dataclass(frozen=True)
class Definitions:
    """The workspace's programme, tiers (lowest first), enabled badges and tasks, and streak rewards,
    as one snapshot. Cached per process and revalidated by ``Programme.revision`` (one query), which
    every change of a definition replaces with a new random token in its own transaction."""

    revision: str
    programme: Programme
    tiers: tuple[Tier, ...]
    badges: tuple[Badge, ...]
    tasks: tuple[Task, ...]
    streak_rewards: dict[int, StreakReward]


_DEFINITIONS: dict[int, Definitions] = {}
_REVISION_SQL = (f"SELECT revision FROM {Programme._meta.db_table} WHERE workspace_id = %s")  # noqa: S608 - model name


def definitions(workspace: Workspace) -> Definitions:
    cached = _DEFINITIONS.get(workspace.pk)
    if cached is not None:
        # the hot path of every event: one indexed read of a short string, without the ORM
        with connection.cursor() as cur:
            cur.execute(_REVISION_SQL, [workspace.pk])
            row = cur.fetchone()
        if row is not None and row[0] and row[0] == cached.revision:
            return cached
    prog = programme(workspace)
    defs = Definitions(
        revision=prog.revision, programme=prog, tiers=tuple(scoped(Tier, workspace).order_by("rank")),
        badges=tuple(scoped(Badge, workspace).filter(enabled=True).order_by("pk")),
        tasks=tuple(scoped(Task, workspace).filter(enabled=True).select_related("badge").order_by("position", "pk")),
        streak_rewards={r.days: r for r in scoped(StreakReward, workspace).select_related("badge")})
    if prog.revision:
        _DEFINITIONS[workspace.pk] = defs
    return defs


def _touch(workspace: Workspace) -> None:
    """A definition changed: give the programme a new revision so every process reloads."""
    programme(workspace)
    Programme.objects.filter(workspace=workspace).update(revision=uuid.uuid4().hex)


def programme(workspace: Workspace) -> Programme:
    """The workspace's settings (created with defaults the first time; backed by the one-to-one key)."""
    row = Programme.objects.filter(workspace=workspace).first()
    if row is None:
        row, _created = Programme.objects.get_or_create(workspace=workspace, defaults={"revision": uuid.uuid4().hex})
    return row


def _whole(value: Any, key: str, *, low: int = 0, high: int = MAX_THRESHOLD) -> int:
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, (str, float, Decimal)):
        try:
            dec = Decimal(str(value).strip())
            number = int(dec) if dec.is_finite() and dec == dec.to_integral_value() else None
        except InvalidOperation:
            number = None
    if number is None or number < low or number > high:
        raise ValidationError(_("%(field)s must be a whole number from %(low)d to %(high)d")
                              % {"field": key, "low": low, "high": high}, code="invalid_field", details={"field": key})
    return number


def _text(value: Any, key: str, limit: int, *, required: bool = False) -> str:
    text = str(value or "").strip()
    if (required and not text) or len(text) > limit:
        raise ValidationError(_("%(field)s must be 1–%(n)d characters") % {"field": key, "n": limit}
                              if required else _("%(field)s must be at most %(n)d characters") % {"field": key, "n": limit},
                              code="invalid_field", details={"field": key})
    return text


def _code(value: Any) -> str:
    from django.utils.text import slugify

    code = str(value or "").strip()
    if not code or len(code) > 32 or slugify(code) != code:
        raise ValidationError(_("code must be 1–32 characters of a-z, 0-9, - and _"), code="invalid_field",
                              details={"field": "code"})
    return code


def _time(value: Any, key: str) -> dt.datetime | None:
    if value in (None, ""):
        return None
    parsed = value if isinstance(value, dt.datetime) else parse_datetime(str(value).strip())
    if parsed is None or timezone.is_naive(parsed):
        raise ValidationError(_("%(field)s must be an ISO 8601 date-time with a time zone") % {"field": key},
                              code="invalid_time", details={"field": key})
    return parsed


def _unknown(data: Mapping[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValidationError(_("unknown field %(field)r") % {"field": unknown[0]}, code="invalid_field",
                              details={"field": unknown[0]})


def _point_type(workspace: Workspace, code: Any, key: str = "point_type") -> str:
    from shequn.loyalty import queries as loyalty_queries

    code = str(code or "").strip()
    if code not in {pt.code for pt in loyalty_queries.point_types(workspace)}:
        raise ValidationError(_("unknown point type %(code)r") % {"code": code}, code="unknown_point_type",
                              details={"field": key})
    return code


def valid_metrics() -> list[str]:
    """Metrics a task or badge can count: interaction types, check-ins, streaks, profile."""
    from shequn.interactions.models import InteractionType

    return [CHECK_IN, STREAK, PROFILE, *[t for t in InteractionType.values if t != "custom"]]


def _metric(value: Any, *, allow_profile: bool = True) -> str:
    metric = str(value or "").strip()
    if metric.startswith("custom:") and 7 < len(metric) <= 80:
        return metric
    allowed = valid_metrics() if allow_profile else [m for m in valid_metrics() if m != PROFILE]
    if metric not in allowed:
        raise ValidationError(_("metric must be one of %(v)s, or custom:<event>") % {"v": ", ".join(allowed)},
                              code="invalid_metric", details={"field": "metric"})
    return metric


PROGRAMME_FIELDS = ("window_days", "review_days", "invite_weight", "share_weight", "checkin_points",
                    "checkin_point_type")


@transaction.atomic
def save_programme(workspace: Workspace, data: Mapping[str, Any], *, actor: str) -> Programme:
    _unknown(data, PROGRAMME_FIELDS)
    row = Programme.objects.select_for_update().filter(workspace=workspace).first() or programme(workspace)
    for key, value in data.items():
        if key in ("window_days", "review_days"):
            setattr(row, key, _whole(value, key, low=1, high=3660))
        elif key in ("invite_weight", "share_weight"):
            setattr(row, key, _whole(value, key, low=0, high=1_000_000))
        elif key == "checkin_points":
            row.checkin_points = _whole(value, key, low=0, high=1_000_000)
        elif key == "checkin_point_type":
            row.checkin_point_type = _point_type(workspace, value, key)
    row.revision = uuid.uuid4().hex
    row.save()
    audit.record(workspace, actor, "engagement.programme", row, {k: str(v) for k, v in data.items()})
    return row


TIER_FIELDS = ("code", "name", "rank", "min_contribution", "min_influence", "requires", "multiplier", "grace_days",
               "benefits")


@transaction.atomic
def save_tier(workspace: Workspace, data: Mapping[str, Any], *, tier_id: int | None = None, actor: str) -> Tier:
    """Create a tier, or change ``tier_id``. Members are re-placed after commit (upgrades only)."""
    _unknown(data, TIER_FIELDS)
    tier = get_scoped(Tier, workspace, tier_id, for_update=True) if tier_id else Tier(workspace=workspace)
    for key, value in data.items():
        if key == "code":
            tier.code = _code(value)
        elif key == "name":
            tier.name = _text(value, key, 64, required=True)
        elif key == "rank":
            tier.rank = _whole(value, key, low=0, high=1000)
        elif key in ("min_contribution", "min_influence"):
            setattr(tier, key, _whole(value, key))
        elif key == "requires":
            if value not in TierRequirement.values:
                raise ValidationError(_("requires must be all or any"), code="invalid_field", details={"field": key})
            tier.requires = value
        elif key == "multiplier":
            try:
                mult = Decimal(str(value).strip())
            except InvalidOperation:
                mult = Decimal(0)
            if not mult.is_finite() or mult <= 0 or mult > 100 or mult.as_tuple().exponent < -2:  # type: ignore[operator]
                raise ValidationError(_("multiplier must be above 0 and at most 100, with at most 2 decimals"),
                                      code="invalid_field", details={"field": key})
            tier.multiplier = mult.quantize(Decimal("0.01"))
        elif key == "grace_days":
            tier.grace_days = _whole(value, key, high=3660)
        elif key == "benefits":
            tier.benefits = _text(value, key, 2000)
    if not tier.code or not tier.name or tier.rank is None:
        raise ValidationError(_("a tier needs a code, a name and a rank"), code="invalid_field")
    try:
        with transaction.atomic():
            tier.save()
    except IntegrityError:
        raise Conflict(_("another tier has this code or rank"), code="tier_exists") from None
    audit.record(workspace, actor, "tier.save", tier, {k: str(v) for k, v in data.items()})
    _touch(workspace)
    from shequn.core.tasks import enqueue_on_commit

    from . import tasks as engagement_tasks

    enqueue_on_commit(engagement_tasks.place_members, workspace.pk)
    return tier


@transaction.atomic
def delete_tier(workspace: Workspace, tier_id: int, *, actor: str) -> None:
    tier = get_scoped(Tier, workspace, tier_id, for_update=True)
    if scoped(MemberStatus, workspace).filter(tier=tier).exists():
        raise Conflict(_("members hold this tier; move them first"), code="tier_in_use")
    audit.record(workspace, actor, "tier.delete", tier, {"code": tier.code})
    tier.delete()
    _touch(workspace)


BADGE_FIELDS = ("code", "name", "description", "icon", "metric", "threshold", "ref", "enabled")


@transaction.atomic
def save_badge(workspace: Workspace, data: Mapping[str, Any], *, badge_id: int | None = None, actor: str) -> Badge:
    """Create or change a badge. A new or changed badge is awarded at once to members whose counters
    already meet it (interaction and check-in counts, tiers held)."""
    _unknown(data, BADGE_FIELDS)
    badge = get_scoped(Badge, workspace, badge_id, for_update=True) if badge_id else Badge(workspace=workspace)
    for key, value in data.items():
        if key == "code":
            badge.code = _code(value)
        elif key == "name":
            badge.name = _text(value, key, 64, required=True)
        elif key == "description":
            badge.description = _text(value, key, 200)
        elif key == "icon":
            badge.icon = _text(value, key, 8)
        elif key == "metric":
            metric = str(value or "").strip()
            badge.metric = metric if metric in ("tier", "task") else _metric(metric, allow_profile=False)
        elif key == "threshold":
            badge.threshold = _whole(value, key, low=1)
        elif key == "ref":
            badge.ref = str(value or "").strip()[:32]
        elif key == "enabled":
            badge.enabled = bool(value)
    if not badge.code or not badge.name or not badge.metric:
        raise ValidationError(_("a badge needs a code, a name and a metric"), code="invalid_field")
    if badge.metric == "tier" and not scoped(Tier, workspace).filter(code=badge.ref).exists():
        raise ValidationError(_("ref must be the code of a tier"), code="invalid_field", details={"field": "ref"})
    if badge.metric == "task" and not scoped(Task, workspace).filter(code=badge.ref).exists():
        raise ValidationError(_("ref must be the code of a task"), code="invalid_field", details={"field": "ref"})
    if badge.metric not in ("tier", "task"):
        badge.ref = ""
    try:
        with transaction.atomic():
            badge.save()
    except IntegrityError:
        raise Conflict(_("badge %(code)r already exists") % {"code": badge.code}, code="badge_exists") from None
    audit.record(workspace, actor, "badge.save", badge, {k: str(v) for k, v in data.items()})
    _touch(workspace)
    if badge.enabled:
        _award_existing(workspace, badge)
    return badge


def _award_existing(workspace: Workspace, badge: Badge) -> None:
    """One-time catch-up for a new badge from the counters kept so far (not a rebuild: it reads the
    counters, and awards are unique)."""
    now = clock.now()
    if badge.metric == "tier":
        tiers = {t.code: t.rank for t in scoped(Tier, workspace)}
        holders = scoped(MemberStatus, workspace).filter(tier__rank__gte=tiers.get(badge.ref, 10**9)) \
            .values_list("member_id", flat=True)
    elif badge.metric == "task":
        holders = scoped(TaskProgress, workspace).filter(task__code=badge.ref, completed_at__isnull=False) \
            .values_list("member_id", flat=True).distinct()
    elif badge.metric == STREAK:
        holders = scoped(MemberStreak, workspace).filter(longest__gte=badge.threshold).values_list("member_id", flat=True)
    else:
        holders = scoped(MemberCounter, workspace).filter(key=badge.metric, value__gte=badge.threshold) \
            .values_list("member_id", flat=True)
    for mid in sorted(set(holders)):
        _award(workspace, badge, mid, now)


@transaction.atomic
def delete_badge(workspace: Workspace, badge_id: int, *, actor: str) -> None:
    badge = get_scoped(Badge, workspace, badge_id, for_update=True)
    audit.record(workspace, actor, "badge.delete", badge, {"code": badge.code})
    badge.delete()
    _touch(workspace)


TASK_FIELDS = ("code", "name", "description", "metric", "target", "repeat", "points", "point_type", "xp", "badge",
               "starts_at", "ends_at", "enabled", "position")


@transaction.atomic
def save_task(workspace: Workspace, data: Mapping[str, Any], *, task_id: int | None = None, actor: str) -> Task:
    """Create or change a task. Progress counts events from ``starts_at`` (default: now) on."""
    _unknown(data, TASK_FIELDS)
    task = get_scoped(Task, workspace, task_id, for_update=True) if task_id else Task(workspace=workspace)
    for key, value in data.items():
        if key == "code":
            task.code = _code(value)
        elif key == "name":
            task.name = _text(value, key, 100, required=True)
        elif key == "description":
            task.description = _text(value, key, 200)
        elif key == "metric":
            task.metric = _metric(value)
        elif key == "target":
            task.target = _whole(value, key, low=1, high=1_000_000)
        elif key == "repeat":
            if value not in TaskRepeat.values:
                raise ValidationError(_("repeat must be one of %(v)s") % {"v": ", ".join(TaskRepeat.values)},
                                      code="invalid_field", details={"field": key})
            task.repeat = value
        elif key in ("points", "xp"):
            setattr(task, key, _whole(value, key, high=1_000_000))
        elif key == "point_type":
            task.point_type = _point_type(workspace, value)
        elif key == "badge":
            task.badge = None
            if value not in (None, ""):
                task.badge = scoped(Badge, workspace).filter(code=str(value)).first()
                if task.badge is None:
                    raise ValidationError(_("unknown badge %(code)r") % {"code": value}, code="unknown_badge",
                                          details={"field": key})
        elif key in ("starts_at", "ends_at"):
            setattr(task, key, _time(value, key))
        elif key == "enabled":
            task.enabled = bool(value)
        elif key == "position":
            task.position = _whole(value, key, low=-1_000_000, high=1_000_000)
    if task.starts_at is None:
        task.starts_at = clock.now()
    if not task.code or not task.name or not task.metric:
        raise ValidationError(_("a task needs a code, a name and a metric"), code="invalid_field")
    if task.metric == PROFILE:
        task.target = len(PROFILE_FIELDS)
    if task.ends_at is not None and task.ends_at <= task.starts_at:
        raise ValidationError(_("the task must start before it ends"), code="invalid_field", details={"field": "ends_at"})
    if task.points and "point_type" not in data and not task.pk:
        task.point_type = _point_type(workspace, task.point_type)
    try:
        with transaction.atomic():
            task.save()
    except IntegrityError:
        raise Conflict(_("task %(code)r already exists") % {"code": task.code}, code="task_exists") from None
    audit.record(workspace, actor, "task.save", task, {k: str(v) for k, v in data.items()})
    _touch(workspace)
    return task


@transaction.atomic
def delete_task(workspace: Workspace, task_id: int, *, actor: str) -> None:
    task = get_scoped(Task, workspace, task_id, for_update=True)
    audit.record(workspace, actor, "task.delete", task, {"code": task.code})
    task.delete()
    _touch(workspace)


@transaction.atomic
def save_level(workspace: Workspace, number: Any, name: Any, min_xp: Any, *, actor: str) -> Level:
    n = _whole(number, "number", low=1, high=1000)
    level, _created = Level.objects.update_or_create(
        workspace=workspace, number=n,
        defaults={"name": _text(name, "name", 64, required=True), "min_xp": _whole(min_xp, "min_xp")})
    audit.record(workspace, actor, "level.save", level, {"name": level.name, "min_xp": level.min_xp})
    return level


@transaction.atomic
def delete_level(workspace: Workspace, number: int, *, actor: str) -> None:
    level = scoped(Level, workspace).filter(number=number).first()
    if level is None:
        raise NotFound(_("level %(n)s not found") % {"n": number}, code="not_found")
    audit.record(workspace, actor, "level.delete", level, {"number": number})
    level.delete()


@transaction.atomic
def save_streak_reward(workspace: Workspace, days: Any, points: Any, *, point_type: str = "points",
                       badge: str | None = None, actor: str) -> StreakReward:
    d = _whole(days, "days", low=1, high=3660)
    badge_row = None
    if badge:
        badge_row = scoped(Badge, workspace).filter(code=badge).first()
        if badge_row is None:
            raise ValidationError(_("unknown badge %(code)r") % {"code": badge}, code="unknown_badge",
                                  details={"field": "badge"})
    reward, _created = StreakReward.objects.update_or_create(
        workspace=workspace, days=d,
        defaults={"points": _whole(points, "points", high=1_000_000), "point_type": _point_type(workspace, point_type),
                  "badge": badge_row})
    audit.record(workspace, actor, "streak_reward.save", reward, {"days": d, "points": reward.points})
    _touch(workspace)
    return reward


@transaction.atomic
def delete_streak_reward(workspace: Workspace, days: int, *, actor: str) -> None:
    reward = scoped(StreakReward, workspace).filter(days=days).first()
    if reward is None:
        raise NotFound(_("no reward for a %(n)s-day streak") % {"n": days}, code="not_found")
    audit.record(workspace, actor, "streak_reward.delete", reward, {"days": days})
    reward.delete()
    _touch(workspace)


# ---------------------------------------------------------------------------------------------
# tiers


@dataclass(frozen=True)
class Figures:
    contribution: int
    invites: int
    shares: int
    influence: int


def window_figures(workspace: Workspace, member_ids: Iterable[int], at: dt.datetime,
                   prog: Programme | None = None) -> dict[int, Figures]:
    """Contribution, invites, shares and influence of each member over the rolling window ending on
    the local day of ``at`` — a sum over at most ``window_days`` bucket rows per member."""
    prog = prog or programme(workspace)
    ids = sorted(set(member_ids))
    today = at.astimezone(ws_zone(workspace)).date()
    first = today - dt.timedelta(days=prog.window_days - 1)
    sums = {mid: (c or 0, i or 0, s or 0) for mid, c, i, s in
            scoped(ActivityDay, workspace).filter(member_id__in=ids, day__gte=first, day__lte=today)
            .values_list("member_id").annotate(c=Sum("contribution"), i=Sum("invites"), s=Sum("shares")).order_by()}
    out = {}
    for mid in ids:
        c, i, s = sums.get(mid, (0, 0, 0))
        out[mid] = Figures(max(0, int(c)), int(i), int(s), int(i) * prog.invite_weight + int(s) * prog.share_weight)
    return out


def qualified_tier(tiers: Sequence[Tier], figures: Figures) -> Tier | None:
    """The highest tier the figures qualify for; the lowest tier is everyone's floor."""
    best = tiers[0] if tiers else None
    for tier in tiers:
        if tier.qualifies(figures.contribution, figures.influence):
            best = tier
    return best


def _change_tier(workspace: Workspace, status: MemberStatus, tiers: Sequence[Tier], new: Tier | None,
                 at: dt.datetime, *, cause: str, figures: Figures, actor: str = "system",
                 prog: Programme) -> None:
    by_id = {t.pk: t for t in tiers}
    old = by_id.get(status.tier_id) if status.tier_id else (tiers[0] if tiers else None)
    old_rank = old.rank if old else -1
    new_rank = new.rank if new else -1
    direction = "up" if new_rank > old_rank else "down"
    status.tier = new
    status.tier_since = at
    status.grace_until = None
    status.review_at = at + dt.timedelta(days=prog.review_days) if new is not None and new != tiers[0] else None
    status.save(update_fields=["tier", "tier_since", "grace_until", "review_at", "updated_at"])
    TierChange.objects.create(workspace=workspace, member_id=status.member_id, old_tier=old.code if old else "",
                              new_tier=new.code if new else "", direction=direction, cause=cause,
                              contribution=figures.contribution, influence=figures.influence, actor=actor[:200], at=at)
    hooks.emit(hooks.TIER_CHANGED, workspace=workspace, member_id=status.member_id, old_tier=old.code if old else None,
               new_tier=new.code if new else None, direction=direction, at=at)
    if direction == "up" and new is not None:
        _check_badges(workspace, {status.member_id: {f"tier:{t.code}": 1 for t in tiers if t.rank <= new.rank}}, at)


def _statuses_locked(workspace: Workspace, member_ids: Iterable[int]) -> dict[int, MemberStatus]:
    ids = sorted(set(member_ids))
    MemberStatus.objects.bulk_create([MemberStatus(workspace=workspace, member_id=mid) for mid in ids],
                                     ignore_conflicts=True)
    rows = MemberStatus.objects.select_for_update().filter(workspace=workspace, member_id__in=ids).order_by("pk")
    return {s.member_id: s for s in rows}


def evaluate(workspace: Workspace, member_ids: Iterable[int], at: dt.datetime, *, cause: str) -> int:
    """Upgrade the members whose window figures now qualify them for a higher tier, and end the grace
    period of those who qualify again for the tier they hold. Never lowers a tier. Returns upgrades."""
    ids = sorted(set(member_ids))
    defs = definitions(workspace)
    tiers = list(defs.tiers)
    if not ids or len(tiers) < 2:
        return 0
    prog = defs.programme
    figures = window_figures(workspace, ids, at, prog)
    # a member who qualifies only for the lowest tier can neither rise nor end a grace period
    ids = [mid for mid in ids if qualified_tier(tiers, figures[mid]) != tiers[0]]
    if not ids:
        return 0
    by_id = {t.pk: t for t in tiers}
    current = {mid: (tid, grace) for mid, tid, grace in
               scoped(MemberStatus, workspace).filter(member_id__in=ids).values_list("member_id", "tier_id", "grace_until")}

    def rank_of(tid: int | None) -> int:
        t = by_id.get(tid) if tid else None
        return t.rank if t else tiers[0].rank

    todo = []
    for mid in ids:
        q = qualified_tier(tiers, figures[mid])
        tid, grace = current.get(mid, (None, None))
        if q is not None and (q.rank > rank_of(tid) or (grace is not None and q.rank >= rank_of(tid))):
            todo.append(mid)
    if not todo:
        return 0
    upgrades = 0
    for mid, status in _statuses_locked(workspace, todo).items():
        q = qualified_tier(tiers, figures[mid])
        assert q is not None
        if q.rank > rank_of(status.tier_id):
            _change_tier(workspace, status, tiers, q, at, cause=cause, figures=figures[mid], prog=prog)
            upgrades += 1
        elif status.grace_until is not None and q.rank >= rank_of(status.tier_id):
            status.grace_until = None
            status.review_at = at + dt.timedelta(days=prog.review_days)
            status.save(update_fields=["grace_until", "review_at", "updated_at"])
    return upgrades


@transaction.atomic
def set_tier(workspace: Workspace, member_id: int, tier_code: str, *, actor: str, at: dt.datetime | None = None) -> None:
    """An operator places a member on a tier (either direction); recorded with cause ``operator``."""
    at = _aware(at)
    _member_row(workspace, member_id)
    tiers = list(definitions(workspace).tiers)
    new = next((t for t in tiers if t.code == tier_code), None)
    if new is None:
        raise NotFound(_("unknown tier %(code)r") % {"code": tier_code}, code="unknown_tier", details={"field": "tier"})
    status = _statuses_locked(workspace, [member_id])[member_id]
    if status.tier_id == new.pk or (status.tier_id is None and new == tiers[0]):
        return
    prog = programme(workspace)
    _change_tier(workspace, status, tiers, new, at, cause=TierCause.OPERATOR,
                 figures=window_figures(workspace, [member_id], at, prog)[member_id], actor=actor, prog=prog)
    audit.record(workspace, actor, "tier.set", status, {"member_id": member_id, "tier": tier_code})


@dataclass
class ReviewRun:
    reviewed: int = 0
    kept: int = 0
    grace: int = 0
    downgraded: int = 0


def review_due(workspace: Workspace, now: dt.datetime | None = None, *, chunk: int = 500) -> ReviewRun:
    """The scheduled tier review of every member whose ``review_at`` has come: a member who still
    qualifies keeps the tier until the next review; one who does not enters the tier's grace period
    (if it has one) and is reviewed again when it ends; after that the tier falls to the one the
    member qualifies for. Idempotent: a reviewed member is not due again until the next review."""
    now = _aware(now)
    run = ReviewRun()
    defs = definitions(workspace)
    tiers, prog = list(defs.tiers), defs.programme
    while True:
        with transaction.atomic():
            due = list(MemberStatus.objects.select_for_update().filter(workspace=workspace, review_at__lte=now)
                       .order_by("pk")[:chunk])
            if not due:
                return run
            figures = window_figures(workspace, [s.member_id for s in due], now, prog)
            by_id = {t.pk: t for t in tiers}
            for status in due:
                run.reviewed += 1
                held = by_id.get(status.tier_id) if status.tier_id else None
                q = qualified_tier(tiers, figures[status.member_id]) if tiers else None
                if held is None or q is None or q.rank >= held.rank:
                    run.kept += 1
                    status.grace_until = None
                    status.review_at = now + dt.timedelta(days=prog.review_days) if held and held != tiers[0] else None
                    status.save(update_fields=["grace_until", "review_at", "updated_at"])
                elif status.grace_until is None and held.grace_days > 0:
                    run.grace += 1
                    status.grace_until = status.review_at = now + dt.timedelta(days=held.grace_days)
                    status.save(update_fields=["grace_until", "review_at", "updated_at"])
                else:
                    run.downgraded += 1
                    _change_tier(workspace, status, tiers, q, now, cause=TierCause.REVIEW,
                                 figures=figures[status.member_id], prog=prog)


def evaluate_all(workspace: Workspace, at: dt.datetime | None = None, *, chunk: int = 500) -> int:
    """Place every member with activity in the window on the tier it qualifies for (upgrades only),
    e.g. after the tiers were defined or changed. Returns the number of upgrades."""
    at = _aware(at)
    prog = programme(workspace)
    first = at.astimezone(ws_zone(workspace)).date() - dt.timedelta(days=prog.window_days - 1)
    ids = sorted(set(scoped(ActivityDay, workspace).filter(day__gte=first).values_list("member_id", flat=True))
                 | set(scoped(MemberStatus, workspace).filter(grace_until__isnull=False).values_list("member_id", flat=True)))
    total = 0
    for start in range(0, len(ids), chunk):
        with transaction.atomic():
            total += evaluate(workspace, ids[start:start + chunk], at, cause=TierCause.PLACEMENT)
    return total


def tier_multiplier(workspace: Workspace, rule: Any, row: Any) -> Decimal:
    """``loyalty.services.EARN_MULTIPLIERS``: a member's tier multiplies awards of spendable points
    (never contribution points, which would feed the tier itself)."""
    from shequn.loyalty.models import PointKind

    if getattr(rule.point_type, "kind", None) != PointKind.CURRENCY:
        return Decimal(1)
    cache = row.__dict__.setdefault("_engagement_multiplier", {})
    if workspace.pk not in cache:
        tiers = [(t.pk, t.multiplier) for t in definitions(workspace).tiers]
        mult = Decimal(tiers[0][1]) if tiers else Decimal(1)
        if tiers:
            tid = scoped(MemberStatus, workspace).filter(member_id=row.member_id).values_list("tier_id", flat=True).first()
            mult = next((Decimal(m) for pk, m in tiers if pk == tid), mult)
        cache[workspace.pk] = mult
    return Decimal(cache[workspace.pk])


# ---------------------------------------------------------------------------------------------
# badges


def _award(workspace: Workspace, badge: Badge, member_id: int, at: dt.datetime) -> bool:
    try:
        with transaction.atomic():
            BadgeAward.objects.create(workspace=workspace, badge=badge, member_id=member_id, at=at)
    except IntegrityError:
        return False
    hooks.emit(hooks.BADGE_AWARDED, workspace=workspace, member_id=member_id, badge=badge.code, at=at)
    return True


def _badge_key(badge: Badge) -> str:
    return f"{badge.metric}:{badge.ref}" if badge.metric in ("tier", "task") else badge.metric


def _check_badges(workspace: Workspace, values: Mapping[int, Mapping[str, int]], at: dt.datetime) -> int:
    """Award the enabled badges whose metric reached its threshold in ``values`` ({member: {key: n}}).
    Keys: a metric (``review``, ``check_in``, ``streak`` …) or ``tier:<code>`` / ``task:<code>``."""
    keys = {k for v in values.values() for k in v}
    if not keys:
        return 0
    metrics = {k.split(":", 1)[0] if k.startswith(("tier:", "task:")) else k for k in keys}
    badges = [b for b in definitions(workspace).badges if b.metric in metrics and _badge_key(b) in keys]
    if not badges:
        return 0
    candidates = [(mid, b) for mid, vals in sorted(values.items()) for b in badges
                  if vals.get(_badge_key(b), 0) >= (1 if b.metric in ("tier", "task") else b.threshold)]
    if not candidates:
        return 0
    have = set(scoped(BadgeAward, workspace).filter(member_id__in={m for m, _b in candidates},
                                                    badge__in=[b for _m, b in candidates])
               .values_list("member_id", "badge_id"))
    return sum(_award(workspace, b, mid, at) for mid, b in candidates if (mid, b.pk) not in have)


def award_badge(workspace: Workspace, member_id: int, badge_code: str, *, actor: str,
                at: dt.datetime | None = None) -> bool:
    """An operator awards a badge by hand. False if the member had it already."""
    at = _aware(at)
    _member_row(workspace, member_id)
    badge = scoped(Badge, workspace).filter(code=badge_code).first()
    if badge is None:
        raise NotFound(_("unknown badge %(code)r") % {"code": badge_code}, code="unknown_badge")
    with transaction.atomic():
        done = _award(workspace, badge, member_id, at)
        if done:
            audit.record(workspace, actor, "badge.award", badge, {"member_id": member_id})
    return done


# ---------------------------------------------------------------------------------------------
# tasks and levels


def _active_tasks(workspace: Workspace, metrics: Iterable[str]) -> list[Task]:
    wanted = set(metrics)
    return [t for t in definitions(workspace).tasks if t.metric in wanted]


def _advance_tasks(workspace: Workspace, changes: Mapping[tuple[int, str], tuple[int, dt.datetime]], *,
                   absolute: bool = False, tasks: Sequence[Task] | None = None) -> int:
    """Move task progress: ``changes`` maps (member, metric) to (amount, when). ``absolute`` metrics
    (streak, profile) keep the larger of the stored and the new value; others add. Completes what
    reaches its target, once per task, member and period. Returns completions."""
    if not changes:
        return 0
    tasks = list(tasks) if tasks is not None else _active_tasks(workspace, {m for _mid, m in changes})
    if not tasks:
        return 0
    tz = ws_zone(workspace)
    rows: dict[tuple[int, int, dt.date], dict[str, Any]] = {}
    by_pk = {t.pk: t for t in tasks}
    for (mid, metric), (amount, at) in changes.items():
        for task in tasks:
            if task.metric != metric or at < task.starts_at or (task.ends_at is not None and at >= task.ends_at):
                continue
            start = task_period_start(task.repeat, at.astimezone(tz).date())
            key = (task.pk, mid, start)
            if key in rows:
                row = rows[key]
                row["progress"] = max(row["progress"], amount) if absolute else row["progress"] + amount
                row["updated_at"] = max(row["updated_at"], at)
            else:
                rows[key] = {"workspace": workspace.pk, "task": task.pk, "member": mid, "period_start": start,
                             "progress": amount, "updated_at": at}
    if not rows:
        return 0
    stored = _upsert(TaskProgress, ["task", "member", "period_start"], list(rows.values()),
                     add=() if absolute else ("progress",), greatest=("progress", "updated_at") if absolute else ("updated_at",),
                     returning=("id", "task", "member", "period_start", "progress", "completed_at"))
    done = 0
    for pk, task_id, mid, start, progress, completed in sorted(stored):
        task = by_pk[task_id]
        if completed is not None or progress < task.target:
            continue
        at = rows[(task_id, mid, start if isinstance(start, dt.date) else dt.date.fromisoformat(str(start)))]["updated_at"]
        if TaskProgress.objects.filter(pk=pk, completed_at__isnull=True).update(completed_at=at) != 1:
            continue
        _complete(workspace, task, mid, start if isinstance(start, dt.date) else dt.date.fromisoformat(str(start)), at)
        done += 1
    return done


def _complete(workspace: Workspace, task: Task, member_id: int, start: dt.date, at: dt.datetime) -> None:
    from shequn.loyalty import services as loyalty

    if task.points:
        loyalty.earn(workspace, member_id, task.point_type, task.points, reason=task.name[:200],
                     idempotency_key=f"task:{task.pk}:{member_id}:{start.isoformat()}", actor=f"task:{task.pk}", now=at)
    if task.xp:
        MemberStatus.objects.bulk_create([MemberStatus(workspace=workspace, member_id=member_id)], ignore_conflicts=True)
        MemberStatus.objects.filter(workspace=workspace, member_id=member_id).update(xp=F("xp") + task.xp)
    if task.badge_id and task.badge and task.badge.enabled:
        _award(workspace, task.badge, member_id, at)
    hooks.emit(hooks.TASK_COMPLETED, workspace=workspace, member_id=member_id, task=task.code, at=at)
    _check_badges(workspace, {member_id: {f"task:{task.code}": 1}}, at)


def level_for(levels: Sequence[Level], xp: int) -> Level | None:
    best = None
    for level in sorted(levels, key=lambda lv: lv.min_xp):
        if xp >= level.min_xp:
            best = level
    return best


def profile_filled(member: Any) -> int:
    return sum(1 for f in PROFILE_FIELDS if getattr(member, f, None) not in (None, ""))


def _profile_progress(workspace: Workspace, member_ids: Iterable[int], at: dt.datetime) -> int:
    tasks = _active_tasks(workspace, [PROFILE])
    if not tasks:
        return 0
    from shequn.members.models import Member

    changes = {(m.pk, PROFILE): (profile_filled(m), at)
               for m in scoped(Member, workspace).filter(pk__in=set(member_ids)).only(*PROFILE_FIELDS)}
    return _advance_tasks(workspace, changes, absolute=True, tasks=tasks)


# ---------------------------------------------------------------------------------------------
# leaderboards


def _bump(workspace: Workspace, board: str, amounts: Mapping[int, tuple[int, dt.datetime]]) -> None:
    """Add to members' scores on ``board`` in every period of the board that holds the event."""
    rows = _bump_rows(workspace, board, amounts)
    _upsert(LeaderboardScore, _SCORE_KEYS, rows, add=("score",), greatest=("reached_at",))


_SCORE_KEYS = ("workspace", "board", "period", "period_start", "member")


def _bump_rows(workspace: Workspace, board: str, amounts: Mapping[int, tuple[int, dt.datetime]]) -> list[dict[str, Any]]:
    tz = ws_zone(workspace)
    rows: dict[tuple[str, dt.date, int], dict[str, Any]] = {}
    for mid, (amount, at) in amounts.items():
        if amount <= 0:
            continue
        day = at.astimezone(tz).date()
        for period in BOARD_PERIODS[board]:
            key = (period, period_start(period, day), mid)
            row = rows.get(key)
            if row is None:
                rows[key] = {"workspace": workspace.pk, "board": str(board), "period": str(period), "period_start": key[1],
                             "member": mid, "score": amount, "reached_at": at}
            else:
                row["score"] += amount
                row["reached_at"] = max(row["reached_at"], at)
    return list(rows.values())


def _lower(workspace: Workspace, board: str, member_id: int, amount: int, at: dt.datetime) -> None:
    """Take ``amount`` off a member's scores in the periods holding ``at`` (never below zero)."""
    day = at.astimezone(ws_zone(workspace)).date()
    for period in BOARD_PERIODS[board]:
        scoped(LeaderboardScore, workspace).filter(board=board, period=period, period_start=period_start(period, day),
                                                   member_id=member_id) \
            .update(score=Greatest(F("score") - amount, 0))


def _set_streak_score(workspace: Workspace, member_id: int, streak: int, at: dt.datetime, expires_at: dt.datetime) -> None:
    _upsert(LeaderboardScore, _SCORE_KEYS,
            [{"workspace": workspace.pk, "board": Board.STREAK, "period": Period.ALL, "period_start": NO_PERIOD,
              "member": member_id, "score": streak, "reached_at": at, "expires_at": expires_at}],
            replace=("score", "reached_at", "expires_at"))


# ---------------------------------------------------------------------------------------------
# reactions: the ledger hook and the interaction handler


_POINT_KINDS: dict[tuple[int, str, str], str] = {}


def _point_kind(workspace: Workspace, code: str) -> str | None:
    """The kind of a point type; kinds never change, so they are remembered per process."""
    stamp = str(workspace.created_at)
    key = (workspace.pk, stamp, code)
    if key not in _POINT_KINDS:
        from shequn.loyalty import queries as loyalty_queries

        for pt in loyalty_queries.point_types(workspace):
            _POINT_KINDS[(workspace.pk, stamp, pt.code)] = pt.kind
    return _POINT_KINDS.get(key)


def on_points_changed(*, workspace: Workspace, member_id: int, point_type: str, kind: str, amount: int,
                      at: dt.datetime, entry_id: int | None = None, **_extra: Any) -> None:
    """``hooks.POINTS_CHANGED``: contribution points earned (minus refunds) feed the tier window and
    may upgrade the tier; spendable points earned feed the points leaderboards (a refund takes its
    points off the current period, never below zero). Spending, expiry, transfers and corrections
    change neither, so a tier never falls because a member spends."""
    if kind not in ("earn", "reverse") or not amount:
        return
    from shequn.loyalty.models import PointKind

    pkind = _point_kind(workspace, point_type)
    if pkind == PointKind.CONTRIBUTION:
        day = at.astimezone(ws_zone(workspace)).date()
        _upsert(ActivityDay, ["member", "day"], [{"workspace": workspace.pk, "member": member_id, "day": day,
                                                  "contribution": amount, "invites": 0, "shares": 0}],
                add=("contribution",))
        if amount > 0:
            evaluate(workspace, [member_id], at, cause=TierCause.POINTS)
    elif pkind == PointKind.CURRENCY:
        if amount > 0 and kind == "earn":
            _bump(workspace, Board.POINTS, {member_id: (amount, at)})
        elif amount < 0:
            _lower(workspace, Board.POINTS, member_id, -amount, at)


def plan_points_changed(guard: hooks.Statement, *, workspace: Workspace, member_id: int, point_type: str, kind: str,
                        amount: int, at: dt.datetime, **_extra: Any) -> list[hooks.Statement] | None:
    """What ``on_points_changed`` would write, as statements (``hooks.plan``): the points leaderboards'
    upsert for spendable points earned, nothing for what it ignores; ``None`` (it must run) for
    contribution points, which may change a tier, and for refunds."""
    if kind not in ("earn", "reverse") or not amount:
        return []
    from shequn.loyalty.models import PointKind

    pkind = _point_kind(workspace, point_type)
    if pkind == PointKind.CONTRIBUTION or (pkind == PointKind.CURRENCY and amount < 0):
        return None
    if pkind == PointKind.CURRENCY and kind == "earn":
        rows = _bump_rows(workspace, Board.POINTS, {member_id: (amount, at)})
        return [_upsert_statement(LeaderboardScore, _SCORE_KEYS, rows, add=("score",), greatest=("reached_at",),
                                  guard=guard)] if rows else []
    return []


def counter_key(row: Any) -> str:
    """What a new interaction counts as: its type, ``check_in``, or ``custom:<event>``."""
    if row.type == "custom":
        event = str((row.properties or {}).get("event") or "").strip()[:72]
        if event == CHECK_IN:
            return CHECK_IN
        return f"custom:{event}" if event else "custom"
    return str(row.type)


def on_interactions(workspace: Workspace, rows: Sequence[Any]) -> None:
    """``interactions.services.INTERACTION_HANDLERS``: inside the storing transaction, once per new
    batch. Counts inbound interactions per member and kind, records invites (``referral``) and shares
    in the tier window, the invites leaderboard, advances tasks, awards count badges and upgrades
    tiers. A handful of statements per batch, whatever its size."""
    inbound = [r for r in rows if r.direction == "in"]
    if not inbound:
        return
    tz = ws_zone(workspace)
    counts: dict[tuple[int, str], list[Any]] = {}
    days: dict[tuple[int, dt.date], dict[str, Any]] = {}
    invites: dict[int, tuple[int, dt.datetime]] = {}
    for r in inbound:
        key = counter_key(r)
        entry = counts.setdefault((r.member_id, key), [0, r.occurred_at])
        entry[0] += 1
        entry[1] = max(entry[1], r.occurred_at)
        if r.type in ("referral", "share"):
            day = r.occurred_at.astimezone(tz).date()
            bucket = days.setdefault((r.member_id, day), {"workspace": workspace.pk, "member": r.member_id, "day": day,
                                                          "contribution": 0, "invites": 0, "shares": 0})
            bucket["invites" if r.type == "referral" else "shares"] += 1
            if r.type == "referral":
                n, at = invites.get(r.member_id, (0, r.occurred_at))
                invites[r.member_id] = (n + 1, max(at, r.occurred_at))
    stored = _upsert(MemberCounter, ["member", "key"],
                     [{"workspace": workspace.pk, "member": mid, "key": key, "value": n}
                      for (mid, key), (n, _at) in counts.items()],
                     add=("value",), returning=("member", "key", "value"))
    latest = max(r.occurred_at for r in inbound)
    _check_badges(workspace, _group_values(stored), latest)
    _advance_tasks(workspace, {k: (v[0], v[1]) for k, v in counts.items()})
    _profile_progress(workspace, {r.member_id for r in inbound}, latest)
    if days:
        _upsert(ActivityDay, ["member", "day"], list(days.values()), add=("invites", "shares"))
        if invites:
            _bump(workspace, Board.INVITES, invites)
        when: dict[int, dt.datetime] = {}
        for r in inbound:
            if r.type in ("referral", "share"):
                when[r.member_id] = max(when.get(r.member_id, r.occurred_at), r.occurred_at)
        for mid in sorted(when):
            evaluate(workspace, [mid], when[mid], cause=TierCause.INTERACTION)


def _group_values(rows: Iterable[tuple[int, str, int]]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = defaultdict(dict)
    for mid, key, value in rows:
        out[mid][key] = int(value)
    return out


# ---------------------------------------------------------------------------------------------
# daily check-in


@dataclass
class CheckInResult:
    check_in: CheckIn
    created: bool
    current: int
    longest: int
    total: int
    points: int
    rewards: list[int] = field(default_factory=list)  # streak lengths rewarded by this check-in


def _member_row(workspace: Workspace, member_id: Any) -> Any:
    from shequn.members.models import Member

    member = scoped(Member, workspace).filter(pk=member_id).only("pk", "timezone", "status", *PROFILE_FIELDS).first() \
        if isinstance(member_id, int) and not isinstance(member_id, bool) else None
    if member is None:
        raise NotFound(_("member %(id)s not found") % {"id": member_id}, code="unknown_member",
                       details={"field": "member_id"})
    return member


def member_zone(workspace: Workspace, member: Any) -> dt.tzinfo:
    return zone(member.timezone or workspace.default_timezone)


def next_streak(last_day: dt.date | None, current: int, day: dt.date) -> int:
    """The consecutive streak after checking in on ``day`` (the previous check-in was ``last_day``)."""
    return current + 1 if last_day is not None and day - last_day == dt.timedelta(days=1) else 1


@transaction.atomic
def check_in(workspace: Workspace, member_id: int, at: dt.datetime | None = None, *, channel: str = "portal",
             actor: str = "member") -> CheckInResult:
    """The member checks in for the local day of ``at`` (member's time zone, else the workspace's).
    Idempotent: a second check-in the same local day — a replay, a double tap, two devices at once —
    returns the first one and changes nothing. Days must come in order: a check-in for a day before
    the member's last one is refused (``check_in_out_of_order``); a time in the future too.

    Records a ``custom`` interaction with ``properties.event = "check_in"`` (so tasks and badges count
    it like any interaction), awards the programme's daily points and the streak rewards of the
    streak length reached, through the ledger with one key per member, day and reward."""
    from shequn.interactions import services as interactions
    from shequn.loyalty import services as loyalty

    now = clock.now()
    at = _aware(at) if at is not None else now
    if at > now + CHECK_IN_SKEW:
        raise ValidationError(_("a check-in cannot be in the future"), code="invalid_time", details={"field": "at"})
    member = _member_row(workspace, member_id)
    tz = member_zone(workspace, member)
    day = at.astimezone(tz).date()
    MemberStreak.objects.bulk_create([MemberStreak(workspace=workspace, member_id=member.pk)], ignore_conflicts=True)
    streak = MemberStreak.objects.select_for_update().get(workspace=workspace, member_id=member.pk)
    existing = CheckIn.objects.filter(workspace=workspace, member_id=member.pk, day=day).first()
    if existing is not None:
        return CheckInResult(existing, False, streak.current, streak.longest, streak.total, existing.points)
    if streak.last_day is not None and day < streak.last_day:
        raise Conflict(_("check-ins must come in date order: %(day)s is before the last one, %(last)s")
                       % {"day": day.isoformat(), "last": streak.last_day.isoformat()}, code="check_in_out_of_order")
    current = next_streak(streak.last_day, streak.current, day)
    streak.current, streak.total, streak.last_day = current, streak.total + 1, day
    streak.longest = max(streak.longest, current)
    streak.save(update_fields=["current", "total", "last_day", "longest", "updated_at"])
    row = CheckIn.objects.create(workspace=workspace, member_id=member.pk, day=day, at=at, streak=current)
    interactions.ingest(workspace, {
        "member_id": member.pk, "type": "custom", "channel": channel[:64] or "portal", "occurred_at": at,
        "source": "engagement", "external_id": f"checkin:{member.pk}:{day.isoformat()}",
        "properties": {"event": CHECK_IN, "day": day.isoformat(), "streak": current},
    }, actor=actor)
    defs = definitions(workspace)
    prog = defs.programme
    points = 0
    rewards: list[int] = []
    if prog.checkin_points:
        loyalty.earn(workspace, member.pk, prog.checkin_point_type, prog.checkin_points, reason=_("Daily check-in"),
                     idempotency_key=f"checkin:{member.pk}:{day.isoformat()}", actor="engagement:check_in", now=at)
        points += prog.checkin_points
    for reward in [r for d, r in defs.streak_rewards.items() if d == current]:
        rewards.append(reward.days)
        if reward.points:
            loyalty.earn(workspace, member.pk, reward.point_type, reward.points,
                         reason=_("%(n)d-day check-in streak") % {"n": reward.days},
                         idempotency_key=f"checkin:{member.pk}:{day.isoformat()}:streak:{reward.days}",
                         actor="engagement:check_in", now=at)
            points += reward.points
        if reward.badge is not None and reward.badge.enabled:
            _award(workspace, reward.badge, member.pk, at)
    if points:
        row.points = points
        row.save(update_fields=["points"])
    _set_streak_score(workspace, member.pk, current, at, local_midnight(day + dt.timedelta(days=2), tz))
    _advance_tasks(workspace, {(member.pk, STREAK): (current, at)}, absolute=True)
    _check_badges(workspace, {member.pk: {STREAK: streak.longest}}, at)
    return CheckInResult(row, True, current, streak.longest, streak.total, points, rewards)


def streak_alive(last_day: dt.date | None, today: dt.date) -> bool:
    """A streak counts as current while the member can still extend it: checked in today or yesterday."""
    return last_day is not None and (today - last_day).days <= 1
