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
