"""Reads of the points ledger (no writes): balances, history, lots, what expires soon, settings."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import F, Q, QuerySet, Sum

from shequn.core.models import Workspace
from shequn.core.tenancy import scoped

from .models import EarnRule, EntryKind, PointBalance, PointEntry, PointLot, PointLotDraw, PointType


@dataclass(frozen=True)
class Balance:
    point_type: str
    available: int
    pending: int
    lifetime_earned: int


def point_types(workspace: Workspace) -> list[PointType]:
    return list(scoped(PointType, workspace).order_by("pk"))


def earn_rules(workspace: Workspace) -> list[EarnRule]:
    return list(scoped(EarnRule, workspace).select_related("point_type", "touchpoint").order_by("priority", "pk"))


def balances(workspace: Workspace, member_id: int) -> list[Balance]:
    """The member's balance in every point type of the workspace (zero where nothing was earned)."""
    rows = {b.point_type_id: b for b in scoped(PointBalance, workspace).filter(member_id=member_id)}
    out = []
    for pt in point_types(workspace):
        b = rows.get(pt.pk)
        out.append(Balance(pt.code, b.available if b else 0, b.pending if b else 0, b.lifetime_earned if b else 0))
    return out


def balance(workspace: Workspace, member_id: int, point_type_code: str) -> Balance:
    row = (scoped(PointBalance, workspace).filter(member_id=member_id, point_type__code=point_type_code)
           .values_list("available", "pending", "lifetime_earned").first())
    return Balance(point_type_code, *(row or (0, 0, 0)))


def history(workspace: Workspace, member_id: int, point_type_code: str | None = None, *,
            before_id: int | None = None, limit: int = 50) -> list[PointEntry]:
    """The member's entries, newest first, ``limit`` per page (keyset on id)."""
    qs = scoped(PointEntry, workspace).filter(member_id=member_id).select_related("point_type")
    if point_type_code:
        qs = qs.filter(point_type__code=point_type_code)
    if before_id:
        qs = qs.filter(pk__lt=before_id)
    return list(qs.order_by("-pk")[:max(1, min(limit, 500))])


def entry_draws(workspace: Workspace, entry_id: int) -> list[PointLotDraw]:
    """Which lots a debit took from, in the order it took them."""
    return list(scoped(PointLotDraw, workspace).filter(entry_id=entry_id).select_related("lot").order_by("pk"))


def live_lots(workspace: Workspace, member_id: int, point_type_code: str) -> QuerySet[PointLot]:
    """The lots that still hold points, in the order a spend takes them."""
    return (scoped(PointLot, workspace).filter(member_id=member_id, point_type__code=point_type_code, remaining__gt=0)
            .order_by(F("expires_at").asc(nulls_last=True), "pk"))


def expiring(workspace: Workspace, member_id: int, point_type_code: str, *, now: dt.datetime,
             within: dt.timedelta) -> int:
    """Points of the member that expire between ``now`` and ``now + within``."""
    total = live_lots(workspace, member_id, point_type_code).filter(
        expires_at__gt=now, expires_at__lte=now + within).aggregate(n=Sum("remaining"))["n"]
    return int(total or 0)


def awards_of_interaction(workspace: Workspace, interaction_id: int) -> list[PointEntry]:
    """The entries an interaction caused (awards, and reversals for a refund)."""
    return list(scoped(PointEntry, workspace).filter(source_interaction_id=interaction_id)
                .filter(Q(kind=EntryKind.EARN) | Q(kind=EntryKind.REVERSE)).select_related("point_type").order_by("pk"))


def member_ids_with_points(workspace: Workspace, member_ids: list[int]) -> set[int]:
    return set(scoped(PointBalance, workspace).filter(member_id__in=member_ids).values_list("member_id", flat=True))


def draws_of(workspace: Workspace, entry_ids: list[int]) -> dict[int, list[PointLotDraw]]:
    """The lot draws of many entries in one query (for a page of history)."""
    out: dict[int, list[PointLotDraw]] = {}
    for d in scoped(PointLotDraw, workspace).filter(entry_id__in=entry_ids).select_related("lot").order_by("pk"):
        out.setdefault(d.entry_id, []).append(d)
    return out


@dataclass(frozen=True)
class TypeLiability:
    code: str
    name: str
    spendable: bool
    available: int
    pending: int
    expiring: int  # within ``within`` from now
    members: int


@dataclass(frozen=True)
class WeekFlow:
    week: dt.date  # the Monday, local
    issued: int  # awards and positive adjustments, transfers and merges excluded
    redeemed: int  # spends
    expired: int
    reversed: int


@dataclass
class PointsLiability:
    types: list[TypeLiability]
    weeks: dict[str, list[WeekFlow]]  # per point type code


def liability(workspace: Workspace, *, now: dt.datetime, within: dt.timedelta = dt.timedelta(days=30),
              weeks: int = 12, tz: dt.tzinfo | None = None) -> PointsLiability:
    """The points the programme owes, per point type: available and pending, what of it expires
    between now and ``now + within``, and per week (Monday first, in ``tz``) over the last ``weeks``
    weeks what was issued, redeemed, expired and reversed. A fixed number of queries."""
    from django.db.models import Count
    from django.db.models.functions import TruncWeek

    types = point_types(workspace)
    sums = {tid: (a or 0, p or 0, n) for tid, a, p, n in scoped(PointBalance, workspace).values_list("point_type_id")
            .annotate(a=Sum("available"), p=Sum("pending"), n=Count("id", filter=Q(available__gt=0) | Q(pending__gt=0)))
            .order_by().values_list("point_type_id", "a", "p", "n")}
    soon = dict(scoped(PointLot, workspace).filter(remaining__gt=0, expires_at__gt=now, expires_at__lte=now + within)
                .values_list("point_type_id").annotate(n=Sum("remaining")).order_by())
    local = now.astimezone(tz) if tz else now
    first_monday = local.date() - dt.timedelta(days=local.weekday() + 7 * (weeks - 1))
    start = dt.datetime(first_monday.year, first_monday.month, first_monday.day, tzinfo=tz or dt.UTC)
    flows: dict[tuple[int, dt.date], dict[str, int]] = {}
    for tid, week, kind, total in (scoped(PointEntry, workspace).filter(at__gte=start, at__lte=now)
                                   .filter(Q(kind__in=[EntryKind.EARN, EntryKind.SPEND, EntryKind.EXPIRE,
                                                       EntryKind.REVERSE]) | Q(kind=EntryKind.ADJUST, amount__gt=0))
                                   .annotate(week=TruncWeek("at", tzinfo=tz))
                                   .values_list("point_type_id", "week", "kind").annotate(total=Sum("amount"))
                                   .order_by()):
        day = week.date() if isinstance(week, dt.datetime) else week
        slot = flows.setdefault((tid, day), {})
        slot[kind] = slot.get(kind, 0) + int(total)
    out = PointsLiability(types=[], weeks={})
    for pt in types:
        a, p, n = sums.get(pt.pk, (0, 0, 0))
        out.types.append(TypeLiability(pt.code, pt.name, pt.spendable, int(a), int(p), int(soon.get(pt.pk, 0)), n))
        series = []
        for i in range(weeks):
            monday = first_monday + dt.timedelta(days=7 * i)
            f = flows.get((pt.pk, monday), {})
            series.append(WeekFlow(monday, f.get(EntryKind.EARN, 0) + f.get(EntryKind.ADJUST, 0),
                                   -f.get(EntryKind.SPEND, 0), -f.get(EntryKind.EXPIRE, 0), -f.get(EntryKind.REVERSE, 0)))
        out.weeks[pt.code] = series
    return out
