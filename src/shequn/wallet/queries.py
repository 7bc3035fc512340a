"""Reads of stored value (no writes): balances, history, and the liability report."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate

from shequn.core.models import Workspace
from shequn.core.tenancy import scoped

from .models import Wallet, WalletEntry, WalletEntryKind


def balance(workspace: Workspace, member_id: int) -> int:
    """The member's stored value in fen (0 without a wallet)."""
    value = scoped(Wallet, workspace).filter(member_id=member_id).values_list("balance", flat=True).first()
    return int(value or 0)


def balances(workspace: Workspace, member_ids: list[int]) -> dict[int, int]:
    """The stored value of several members in one query (members without a wallet are left out)."""
    return dict(scoped(Wallet, workspace).filter(member_id__in=member_ids).values_list("member_id", "balance"))


def history(workspace: Workspace, member_id: int, *, before_id: int | None = None, limit: int = 50) -> list[WalletEntry]:
    """The member's entries, newest first, ``limit`` per page (keyset on id)."""
    qs = scoped(WalletEntry, workspace).filter(member_id=member_id)
    if before_id:
        qs = qs.filter(pk__lt=before_id)
    return list(qs.order_by("-pk")[:max(1, min(limit, 500))])


def refundable(workspace: Workspace, payment_ids: list[int]) -> dict[int, int]:
    """What is left to refund of each payment (fen), for the payments given."""
    rows = scoped(WalletEntry, workspace).filter(pk__in=payment_ids, kind=WalletEntryKind.PAY)
    paid = dict(rows.values_list("pk", "amount"))
    refunded = dict(scoped(WalletEntry, workspace).filter(related_id__in=list(paid), kind=WalletEntryKind.REFUND)
                    .values_list("related_id").annotate(n=Sum("amount")).order_by())
    return {pk: -amount - refunded.get(pk, 0) for pk, amount in paid.items()}


@dataclass
class DayFlow:
    day: dt.date
    top_ups: int
    payments: int
    refunds: int


@dataclass
class Liability:
    """What the business owes its members in stored value."""

    outstanding: int
    wallets: int
    by_month: list[tuple[str, int]] = field(default_factory=list)
    days: list[DayFlow] = field(default_factory=list)
    topped_up: int = 0
    paid: int = 0
    refunded: int = 0


def liability(workspace: Workspace, *, now: dt.datetime, days: int = 30, tz: dt.tzinfo | None = None) -> Liability:
    """Total outstanding stored value; the outstanding split by the month of the top-ups it comes from
    (first in, first out: a payment uses the oldest money first, so what is left is the newest
    top-ups); and top-ups, payments and refunds per day over the last ``days`` days (``tz``: the
    workspace time zone)."""
    wallets = scoped(Wallet, workspace).filter(balance__gt=0)
    agg = wallets.aggregate(total=Sum("balance"), n=Count("id"))
    out = Liability(outstanding=int(agg["total"] or 0), wallets=int(agg["n"] or 0))
    # FIFO by month: walk each wallet's top-ups newest first until its balance is covered.
    left = dict(wallets.values_list("pk", "balance"))
    months: dict[str, int] = defaultdict(int)
    tops = (scoped(WalletEntry, workspace).filter(kind=WalletEntryKind.TOP_UP, wallet_id__in=list(left))
            .order_by("wallet_id", "-at", "-id").values_list("wallet_id", "amount", "at"))
    for wid, amount, at in tops:
        need = left.get(wid, 0)
        if need <= 0:
            continue
        take = min(need, amount)
        left[wid] = need - take
        months[at.astimezone(tz).strftime("%Y-%m") if tz else at.strftime("%Y-%m")] += take
    unexplained = sum(v for v in left.values() if v > 0)  # refunds beyond the top-ups still held
    if unexplained:
        months["—"] += unexplained
    out.by_month = sorted(months.items())
    start = now - dt.timedelta(days=days)
    flows = (scoped(WalletEntry, workspace).filter(at__gte=start, at__lte=now)
             .annotate(day=TruncDate("at", tzinfo=tz)).values("day").order_by("day")
             .annotate(top_ups=Sum("amount", filter=Q(kind=WalletEntryKind.TOP_UP)),
                       payments=Sum("amount", filter=Q(kind=WalletEntryKind.PAY)),
                       refunds=Sum("amount", filter=Q(kind=WalletEntryKind.REFUND))))
    by_day = {r["day"]: r for r in flows}
    first = (start.astimezone(tz) if tz else start).date()
    for i in range(days + 1):
        day = first + dt.timedelta(days=i)
        r = by_day.get(day, {})
        flow = DayFlow(day, int(r.get("top_ups") or 0), -int(r.get("payments") or 0), int(r.get("refunds") or 0))
        out.days.append(flow)
        out.topped_up += flow.top_ups
        out.paid += flow.payments
        out.refunded += flow.refunds
    return out
