"""API: the points programme (point types, earn rules), members' points (balances, history,
earn/spend/adjust/reverse/transfer) and the points liability report; stored value (储值).

Roles: owners and operators change the programme and make every kind of ledger entry; agents read;
clerks (the counter) read a member's balances and spend points, and top up and take payments from
stored value. Refunds of stored value are for owners and operators. Every ledger write takes an
``Idempotency-Key`` header: a replay answers with the first result and changes nothing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.http import HttpRequest
from django.utils.translation import gettext as _
from ninja import Header, Query, Router, Schema, Status
from pydantic import Field

from shequn.core import clock
from shequn.core.errors import NotFound
from shequn.core.models import Role, Workspace
from shequn.loyalty import periods
from shequn.loyalty import queries as loyalty_queries
from shequn.loyalty import services as loyalty
from shequn.loyalty.models import EarnRule, PointEntry
from shequn.wallet import queries as wallet_queries
from shequn.wallet import services as wallet
from shequn.wallet.models import WalletEntry

from .auth import EVERYONE, MANAGERS, READERS, allow, context
from .members import member_id_or_404
from .schemas import DEFAULT_PAGE, MAX_PAGE, Input, with_errors

router = Router(tags=["loyalty"])
wallet_router = Router(tags=["wallet"])
routers: list[Router] = [router, wallet_router]

CASHIERS: tuple[str, ...] = (Role.OWNER, Role.OPERATOR, Role.CLERK)
COUNTER: tuple[str, ...] = EVERYONE
KEY_HEADER = "Idempotency-Key"


def _key(value: str | None) -> str:
    return value or ""


# ---------------------------------------------------------------------------------------------
# point types and earn rules


class PointTypeOut(Schema):
    code: str
    name: str
    kind: str
    expiry_policy: str
    expiry_period: int
    pending_days: int
    transferable: bool


class PointTypeList(Schema):
    items: list[PointTypeOut]


class PointTypeIn(Input):
    name: str | None = None
    kind: str | None = Field(None, description="currency or contribution; fixed once the type exists")
    expiry_policy: str | None = Field(None, description="never, days, month_end or year_end")
    expiry_period: int | None = None
    pending_days: int | None = None
    transferable: bool | None = None


@router.get("/point-types", response=with_errors({200: PointTypeList}), operation_id="point_types_list",
            summary="The programme's point types")
@allow(*EVERYONE)
def list_point_types(request: HttpRequest) -> dict[str, Any]:
    return {"items": loyalty_queries.point_types(context(request).workspace)}


@router.put("/point-types/{code}", response=with_errors({200: PointTypeOut}), operation_id="point_types_save",
            summary="Create or change a point type")
@allow(*MANAGERS)
def save_point_type(request: HttpRequest, code: str, body: PointTypeIn) -> Any:
    """A new expiry policy or waiting time applies to points earned from then on."""
    ctx = context(request)
    data = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    return loyalty.save_point_type(ctx.workspace, code, data, actor=ctx.actor)


class EarnRulePatch(Input):
    name: str | None = None
    point_type: str | None = Field(None, description="Point type code")
    interaction_type: str | None = None
    direction: str | None = Field(None, description="in, out or empty for either")
    channel: str | None = None
    touchpoint: str | None = Field(None, description="Touchpoint code; empty for any")
    min_amount: Decimal | None = None
    points: int | None = None
    points_per_yuan: Decimal | None = None
    member_cap_day: int | None = None
    member_cap_week: int | None = None
    member_cap_month: int | None = None
    global_cap_day: int | None = None
    global_cap_week: int | None = None
    global_cap_month: int | None = None
    starts_at: dt.datetime | None = None
    ends_at: dt.datetime | None = None
    priority: int | None = None
    enabled: bool | None = None


class EarnRuleIn(EarnRulePatch):
    name: str  # type: ignore[assignment]
    point_type: str  # type: ignore[assignment]
    interaction_type: str  # type: ignore[assignment]


class EarnRuleOut(Schema):
    id: int
    name: str
    point_type: str
    interaction_type: str
    direction: str
    channel: str
    touchpoint: str | None
    min_amount: Decimal | None
    points: int
    points_per_yuan: Decimal | None
    member_cap_day: int | None
    member_cap_week: int | None
    member_cap_month: int | None
    global_cap_day: int | None
    global_cap_week: int | None
    global_cap_month: int | None
    starts_at: dt.datetime | None
    ends_at: dt.datetime | None
    priority: int
    enabled: bool

    @staticmethod
    def resolve_point_type(obj: EarnRule) -> str:
        return obj.point_type.code

    @staticmethod
    def resolve_touchpoint(obj: EarnRule) -> str | None:
        return obj.touchpoint.code if obj.touchpoint_id and obj.touchpoint else None


class EarnRuleList(Schema):
    items: list[EarnRuleOut]


_NULLABLE = {"touchpoint", "min_amount", "points_per_yuan", "member_cap_day", "member_cap_week", "member_cap_month",
             "global_cap_day", "global_cap_week", "global_cap_month", "starts_at", "ends_at"}


def _rule_data(body: EarnRulePatch) -> dict[str, Any]:
    data = body.model_dump(exclude_unset=True)
    return {k: v for k, v in data.items() if v is not None or k in _NULLABLE}


def _rule(workspace: Workspace, rule_id: int) -> EarnRule:
    return next(r for r in loyalty_queries.earn_rules(workspace) if r.pk == rule_id)


@router.get("/earn-rules", response=with_errors({200: EarnRuleList}), operation_id="earn_rules_list",
            summary="List earn rules")
@allow(*READERS)
def list_earn_rules(request: HttpRequest) -> dict[str, Any]:
    """In the order they run (priority, then id)."""
    return {"items": loyalty_queries.earn_rules(context(request).workspace)}


@router.post("/earn-rules", response=with_errors({201: EarnRuleOut}), operation_id="earn_rules_create",
             summary="Create an earn rule")
@allow(*MANAGERS)
def create_earn_rule(request: HttpRequest, body: EarnRuleIn) -> Status[EarnRule]:
    ctx = context(request)
    rule = loyalty.save_earn_rule(ctx.workspace, _rule_data(body), actor=ctx.actor)
    return Status(201, _rule(ctx.workspace, rule.pk))


@router.patch("/earn-rules/{int:rule_id}", response=with_errors({200: EarnRuleOut}), operation_id="earn_rules_update",
              summary="Change an earn rule")
@allow(*MANAGERS)
def update_earn_rule(request: HttpRequest, rule_id: int, body: EarnRulePatch) -> EarnRule:
    ctx = context(request)
    rule = loyalty.save_earn_rule(ctx.workspace, _rule_data(body), rule_id=rule_id, actor=ctx.actor)
    return _rule(ctx.workspace, rule.pk)


@router.delete("/earn-rules/{int:rule_id}", response=with_errors({204: None}), operation_id="earn_rules_delete",
               summary="Delete an earn rule")
@allow(*MANAGERS)
def delete_earn_rule(request: HttpRequest, rule_id: int) -> Status[None]:
    """Points the rule awarded stay."""
    ctx = context(request)
    loyalty.delete_earn_rule(ctx.workspace, rule_id, actor=ctx.actor)
    return Status(204, None)


# ---------------------------------------------------------------------------------------------
# a member's points


class BalanceOut(Schema):
    point_type: str
    available: int
    pending: int
    lifetime_earned: int
    expiring_30d: int


class BalancesOut(Schema):
    member_id: int
    items: list[BalanceOut]


class DrawOut(Schema):
    lot_id: int
    amount: int
    earned_at: dt.datetime
    expires_at: dt.datetime | None


class EntryOut(Schema):
    id: int
    member_id: int
    point_type: str
    kind: str
    amount: int
    shortfall: int
    reason: str
    actor: str
    source_interaction_id: int | None
    related_id: int | None
    idempotency_key: str | None
    at: dt.datetime
    draws: list[DrawOut] = []


class EntryPage(Schema):
    items: list[EntryOut]
    next: int | None


def _entry_out(entry: PointEntry, code: str, draws: list[Any] | None = None) -> dict[str, Any]:
    return {"id": entry.pk, "member_id": entry.member_id, "point_type": code, "kind": entry.kind,
            "amount": entry.amount, "shortfall": entry.shortfall, "reason": entry.reason, "actor": entry.actor,
            "source_interaction_id": entry.source_interaction_id, "related_id": entry.related_id,
            "idempotency_key": entry.idempotency_key, "at": entry.at,
            "draws": [{"lot_id": d.lot_id, "amount": d.amount, "earned_at": d.lot.earned_at,
                       "expires_at": d.lot.expires_at} for d in draws or []]}


def _written(workspace: Workspace, entry: PointEntry) -> dict[str, Any]:
    code = loyalty.get_point_type(workspace, entry.point_type_id).code
    return _entry_out(entry, code, loyalty_queries.draws_of(workspace, [entry.pk]).get(entry.pk, []))


@router.get("/members/{int:member_id}/points", response=with_errors({200: BalancesOut}),
            operation_id="member_points", summary="A member's point balances")
@allow(*COUNTER)
def member_points(request: HttpRequest, member_id: int) -> dict[str, Any]:
    """Every point type: available, pending, lifetime earned, and what expires in the next 30 days."""
    ctx = context(request)
    member_id_or_404(ctx.workspace, member_id)
    now = clock.now()
    items = [{"point_type": b.point_type, "available": b.available, "pending": b.pending,
              "lifetime_earned": b.lifetime_earned,
              "expiring_30d": loyalty_queries.expiring(ctx.workspace, member_id, b.point_type, now=now,
                                                       within=dt.timedelta(days=30))}
             for b in loyalty_queries.balances(ctx.workspace, member_id)]
    return {"member_id": member_id, "items": items}


@router.get("/members/{int:member_id}/points/history", response=with_errors({200: EntryPage}),
            operation_id="member_points_history", summary="A member's points history")
@allow(*COUNTER)
def member_points_history(
    request: HttpRequest,
    member_id: int,
    point_type: str = Query("", description="Point type code; empty for all"),  # noqa: B008
    after: int | None = Query(None, description="Cursor: the `next` of the previous page"),  # noqa: B008
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),  # noqa: B008
) -> dict[str, Any]:
    """Newest first: every entry with its reason, actor, source interaction and the lots a debit drew."""
    ctx = context(request)
    member_id_or_404(ctx.workspace, member_id)
    if point_type:
        loyalty.get_point_type(ctx.workspace, point_type)
    rows = loyalty_queries.history(ctx.workspace, member_id, point_type or None, before_id=after, limit=limit + 1)
    page = rows[:limit]
    draws = loyalty_queries.draws_of(ctx.workspace, [e.pk for e in page])
    return {"items": [_entry_out(e, e.point_type.code, draws.get(e.pk)) for e in page],
            "next": page[-1].pk if len(rows) > limit else None}


class EarnIn(Input):
    point_type: str = "points"
    amount: int = Field(description="Whole points, positive")
    reason: str = ""
    source_interaction_id: int | None = None


class SpendIn(Input):
    point_type: str = "points"
    amount: int = Field(description="Whole points, positive")
    reason: str = ""


class AdjustIn(Input):
    point_type: str = "points"
    amount: int = Field(description="Whole points; negative takes points away")
    reason: str = Field(description="Required: why the correction is made")


class ReverseIn(Input):
    entry_id: int = Field(description="The award (earn entry) to take back")
    amount: int | None = Field(None, description="Part of it; omit for all that is still open")
    reason: str = ""


class TransferIn(Input):
    point_type: str = "points"
    to_member_id: int
    amount: int
    reason: str = ""


@router.post("/members/{int:member_id}/points/earn", response=with_errors({200: EntryOut}),
             operation_id="member_points_earn", summary="Award points")
@allow(*MANAGERS)
def earn(request: HttpRequest, member_id: int, body: EarnIn,
         idempotency_key: str | None = Header(None, alias=KEY_HEADER)) -> dict[str, Any]:  # noqa: B008
    ctx = context(request)
    entry = loyalty.earn(ctx.workspace, member_id_or_404(ctx.workspace, member_id), body.point_type, body.amount,
                         reason=body.reason, idempotency_key=_key(idempotency_key), actor=ctx.actor,
                         source_interaction_id=body.source_interaction_id)
    return _written(ctx.workspace, entry)


@router.post("/members/{int:member_id}/points/spend", response=with_errors({200: EntryOut}),
             operation_id="member_points_spend", summary="Spend points (redeem)")
@allow(*CASHIERS)
def spend(request: HttpRequest, member_id: int, body: SpendIn,
          idempotency_key: str | None = Header(None, alias=KEY_HEADER)) -> dict[str, Any]:  # noqa: B008
    """The soonest-expiring points go first; the answer lists the lots drawn."""
    ctx = context(request)
    entry = loyalty.spend(ctx.workspace, member_id_or_404(ctx.workspace, member_id), body.point_type, body.amount,
                          reason=body.reason, idempotency_key=_key(idempotency_key), actor=ctx.actor)
    return _written(ctx.workspace, entry)


@router.post("/members/{int:member_id}/points/adjust", response=with_errors({200: EntryOut}),
             operation_id="member_points_adjust", summary="Correct a balance")
@allow(*MANAGERS)
def adjust(request: HttpRequest, member_id: int, body: AdjustIn,
           idempotency_key: str | None = Header(None, alias=KEY_HEADER)) -> dict[str, Any]:  # noqa: B008
    ctx = context(request)
    entry = loyalty.adjust(ctx.workspace, member_id_or_404(ctx.workspace, member_id), body.point_type, body.amount,
                           reason=body.reason, idempotency_key=_key(idempotency_key), actor=ctx.actor)
    return _written(ctx.workspace, entry)


@router.post("/members/{int:member_id}/points/reverse", response=with_errors({200: EntryOut}),
             operation_id="member_points_reverse", summary="Take an award back")
@allow(*MANAGERS)
def reverse(request: HttpRequest, member_id: int, body: ReverseIn,
            idempotency_key: str | None = Header(None, alias=KEY_HEADER)) -> dict[str, Any]:  # noqa: B008
    """By the reversal rule (ADR 0006); what cannot be taken is the entry's ``shortfall``."""
    ctx = context(request)
    member_id_or_404(ctx.workspace, member_id)
    earned = loyalty_queries.history(ctx.workspace, member_id, limit=1, before_id=body.entry_id + 1)
    if not earned or earned[0].pk != body.entry_id:
        raise NotFound(_("entry %(id)s not found") % {"id": body.entry_id}, code="unknown_entry",
                       details={"field": "entry_id"})
    entry = loyalty.reverse(ctx.workspace, entry_id=body.entry_id, amount=body.amount, reason=body.reason,
                            actor=ctx.actor, idempotency_key=_key(idempotency_key))
    return _written(ctx.workspace, entry)


@router.post("/members/{int:member_id}/points/transfer", response=with_errors({200: EntryOut}),
             operation_id="member_points_transfer", summary="Give points to another member")
@allow(*MANAGERS)
def transfer(request: HttpRequest, member_id: int, body: TransferIn,
             idempotency_key: str | None = Header(None, alias=KEY_HEADER)) -> dict[str, Any]:  # noqa: B008
    """Returns the giver's ``transfer_out`` entry."""
    ctx = context(request)
    entry = loyalty.transfer(ctx.workspace, body.point_type, member_id_or_404(ctx.workspace, member_id), body.to_member_id,
                             body.amount, reason=body.reason, idempotency_key=_key(idempotency_key), actor=ctx.actor)
    return _written(ctx.workspace, entry)


class TypeLiabilityOut(Schema):
    code: str
    name: str
    spendable: bool
    available: int
    pending: int
    expiring: int
    members: int


class WeekOut(Schema):
    week: dt.date
    issued: int
    redeemed: int
    expired: int
    reversed: int


class PointsLiabilityOut(Schema):
    at: dt.datetime
    types: list[TypeLiabilityOut]
    weeks: dict[str, list[WeekOut]]


@router.get("/loyalty/liability", response=with_errors({200: PointsLiabilityOut}), operation_id="points_liability",
            summary="Points liability report")
@allow(*MANAGERS)
def points_liability(request: HttpRequest, weeks: int = Query(12, ge=1, le=104)) -> dict[str, Any]:  # noqa: B008
    """Outstanding points per type, what expires in the next 30 days, issued vs redeemed per week."""
    ctx = context(request)
    now = clock.now()
    report = loyalty_queries.liability(ctx.workspace, now=now, weeks=weeks,
                                       tz=periods.zone(ctx.workspace.default_timezone))
    return {"at": now, "types": report.types, "weeks": report.weeks}


# ---------------------------------------------------------------------------------------------
# stored value


class WalletEntryOut(Schema):
    id: int
    member_id: int
    kind: str
    amount: int = Field(description="fen; positive adds")
    balance_after: int
    reason: str
    actor: str
    store: str
    related_id: int | None
    idempotency_key: str
    at: dt.datetime


class WalletOut(Schema):
    member_id: int
    balance: int = Field(description="fen")
    items: list[WalletEntryOut]
    next: int | None


class MoneyIn(Input):
    amount: int = Field(description="Whole fen (分), positive: ¥12.50 is 1250")
    reason: str = ""
    store: str = ""


class RefundIn(Input):
    amount: int | None = Field(None, description="fen; omit to refund all that is left of the payment")
    reason: str = ""


class DayOut(Schema):
    day: dt.date
    top_ups: int
    payments: int
    refunds: int


class WalletLiabilityOut(Schema):
    at: dt.datetime
    outstanding: int
    wallets: int
    by_month: list[tuple[str, int]]
    topped_up: int
    paid: int
    refunded: int
    days: list[DayOut]


@wallet_router.get("/members/{int:member_id}/wallet", response=with_errors({200: WalletOut}),
                   operation_id="member_wallet", summary="A member's stored value and its history")
@allow(*COUNTER)
def member_wallet(
    request: HttpRequest,
    member_id: int,
    after: int | None = Query(None, description="Cursor: the `next` of the previous page"),  # noqa: B008
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),  # noqa: B008
) -> dict[str, Any]:
    ctx = context(request)
    member_id_or_404(ctx.workspace, member_id)
    rows = wallet_queries.history(ctx.workspace, member_id, before_id=after, limit=limit + 1)
    return {"member_id": member_id, "balance": wallet_queries.balance(ctx.workspace, member_id),
            "items": rows[:limit], "next": rows[limit - 1].pk if len(rows) > limit else None}


@wallet_router.post("/members/{int:member_id}/wallet/top-ups", response=with_errors({200: WalletEntryOut}),
                    operation_id="member_wallet_top_up", summary="Top up stored value")
@allow(*CASHIERS)
def top_up(request: HttpRequest, member_id: int, body: MoneyIn,
           idempotency_key: str | None = Header(None, alias=KEY_HEADER)) -> WalletEntry:  # noqa: B008
    ctx = context(request)
    member_id_or_404(ctx.workspace, member_id)
    return wallet.top_up(ctx.workspace, member_id, body.amount, idempotency_key=_key(idempotency_key),
                         actor=ctx.actor, reason=body.reason, store=body.store)


@wallet_router.post("/members/{int:member_id}/wallet/payments", response=with_errors({200: WalletEntryOut}),
                    operation_id="member_wallet_pay", summary="Pay from stored value")
@allow(*CASHIERS)
def pay(request: HttpRequest, member_id: int, body: MoneyIn,
        idempotency_key: str | None = Header(None, alias=KEY_HEADER)) -> WalletEntry:  # noqa: B008
    """``insufficient_funds`` (409) beyond the balance."""
    ctx = context(request)
    member_id_or_404(ctx.workspace, member_id)
    return wallet.pay(ctx.workspace, member_id, body.amount, idempotency_key=_key(idempotency_key), actor=ctx.actor,
                      reason=body.reason, store=body.store)


@wallet_router.post("/wallet/payments/{int:payment_id}/refunds", response=with_errors({200: WalletEntryOut}),
                    operation_id="wallet_refund", summary="Refund a stored-value payment")
@allow(*MANAGERS)
def refund(request: HttpRequest, payment_id: int, body: RefundIn,
           idempotency_key: str | None = Header(None, alias=KEY_HEADER)) -> WalletEntry:  # noqa: B008
    """Partial refunds add up, never to more than the payment (``refund_exceeds_payment``)."""
    ctx = context(request)
    try:
        return wallet.refund(ctx.workspace, payment_id, body.amount, idempotency_key=_key(idempotency_key),
                             actor=ctx.actor, reason=body.reason)
    except NotFound as exc:
        if exc.code != "unknown_payment":
            raise
        # an id in the path that names nothing of this workspace: the same answer as anywhere in the API
        raise NotFound(_("payment %(id)s not found") % {"id": payment_id}) from None


@wallet_router.get("/wallet/liability", response=with_errors({200: WalletLiabilityOut}),
                   operation_id="wallet_liability", summary="Stored-value liability report")
@allow(*MANAGERS)
def wallet_liability(request: HttpRequest, days: int = Query(30, ge=1, le=366)) -> dict[str, Any]:  # noqa: B008
    """Outstanding stored value (fen), split by the month of the top-ups it comes from (first in,
    first out), and top-ups, payments and refunds per day."""
    ctx = context(request)
    now = clock.now()
    report = wallet_queries.liability(ctx.workspace, now=now, days=days, tz=periods.zone(ctx.workspace.default_timezone))
    return {"at": now, "outstanding": report.outstanding, "wallets": report.wallets, "by_month": report.by_month,
            "topped_up": report.topped_up, "paid": report.paid, "refunded": report.refunded, "days": report.days}
