"""Offers and coupons: offer templates, issuance, coupons and their QR codes, counter redemptions
and voids, stores, member clips, campaign claims and share-after-consumption claims."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from ninja import Query, Router, Schema, Status
from pydantic import Field

from shequn.core.errors import NotFound, ValidationError
from shequn.core.models import Workspace
from shequn.core.tenancy import scoped
from shequn.offers import codes, queries
from shequn.offers import services as offers
from shequn.offers.models import Coupon, Offer, Redemption, Store

from .auth import EVERYONE, MANAGERS, READERS, allow, context
from .schemas import DEFAULT_PAGE, MAX_PAGE, Input, keyset_page, with_errors

router = Router(tags=["offers"])


# ---------------------------------------------------------------------------------------------
# schemas


class OfferPatch(Input):
    name: str | None = None
    description: str | None = None
    kind: str | None = Field(None, description="percent_off, amount_off or gift")
    percent_off: int | None = Field(None, description="1–99, for percent_off")
    amount_off: Decimal | None = Field(None, description="Yuan taken off, for amount_off")
    gift_item: str | None = Field(None, description="The item given, for gift")
    items: list[str] | None = Field(None, description="Item names the offer is about (as in purchase items)")
    categories: list[str] | None = None
    min_spend: Decimal | None = Field(None, description="Smallest bill in yuan the coupon can be used on")
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    coupon_days: int | None = Field(None, description="A coupon is valid this many days from issue; null: until the offer ends")
    stock: int | None = Field(None, description="Coupons that may be issued in all; null: no limit")
    per_member: int | None = Field(None, description="Coupons one member may get; null: no limit")
    uses_per_coupon: int | None = Field(None, description="Redemptions per coupon (default 1)")
    points_price: int | None = Field(None, description="Members may buy a coupon for this many points")
    point_type: str | None = Field(None, description="Point type code the price is paid in (default points)")
    trigger: str | None = Field(None, description="manual, tier_upgrade or birthday")
    trigger_tier: str | None = Field(None, description="Tier code, for tier_upgrade")
    clippable: bool | None = Field(None, description="Shown to members as a personalised offer to clip")
    active: bool | None = None
    stores: list[str] | None = Field(None, description="Store codes the offer is limited to; empty: every store")


class OfferIn(OfferPatch):
    name: str  # type: ignore[assignment]
    kind: str = Field(description="percent_off, amount_off or gift")  # type: ignore[assignment]


class OfferOut(Schema):
    id: int
    name: str
    description: str
    kind: str
    percent_off: int | None
    amount_off: Decimal | None
    gift_item: str
    items: list[str]
    categories: list[str]
    min_spend: Decimal | None
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    coupon_days: int | None
    stock: int | None
    per_member: int | None
    uses_per_coupon: int
    issued_count: int
    points_price: int | None
    point_type: str
    trigger: str
    trigger_tier: str
    clippable: bool
    active: bool
    stores: list[str]
    created_at: dt.datetime

    @staticmethod
    def resolve_stores(obj: Offer) -> list[str]:
        return [s.code for s in obj.stores.all()]


class OfferList(Schema):
    items: list[OfferOut]
    next: int | None


class CouponOut(Schema):
    id: int
    code: str
    offer_id: int
    offer_name: str
    member_id: int
    status: str = Field(description="issued or redeemed (the stored status)")
    state: str = Field(description="redeemable, redeemed, expired, not_yet_valid or paused (now)")
    uses: int
    max_uses: int
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    source: str
    issued_at: dt.datetime
    redeemed_at: dt.datetime | None

    @staticmethod
    def resolve_offer_name(obj: Coupon) -> str:
        return obj.offer.name

    @staticmethod
    def resolve_state(obj: Coupon) -> str:
        return queries.coupon_state(obj)


class CouponList(Schema):
    items: list[CouponOut]
    next: int | None


class IssueIn(Input):
    member_ids: list[int] = Field(default_factory=list)
    phones: list[str] = Field(default_factory=list, description="Members found by phone number")
    batch_key: str = Field(description="Names this issuance: running it again issues nothing twice")


class SkippedOut(Schema):
    member_id: int
    code: str
    message: str


class IssueOut(Schema):
    created: int
    coupons: list[CouponOut]
    skipped: list[SkippedOut]
    unknown_phones: list[str]


class MemberKeyIn(Input):
    member_id: int
    key: str = Field(description="Idempotency key: a replay returns the first coupon")


class MemberIn(Input):
    member_id: int


class IdentityIn(Input):
    kind: str
    value: str
    namespace: str = ""


class ClaimIn(Input):
    code: str = Field(description="The claim code of the campaign QR")
    member_id: int | None = None
    identity: IdentityIn | None = Field(None, description="Instead of member_id: a new identity creates the member")


class ClaimOut(Schema):
    created: bool
    coupon: CouponOut


class ShareOut(Schema):
    created: bool
    claim_id: int
    day: dt.date
    coupon: CouponOut | None
    points_entry_id: int | None
    interaction_id: int | None


class ClipOut(Schema):
    id: int
    offer_id: int
    member_id: int
    created_at: dt.datetime


class RedeemIn(Input):
    code: str = Field(description="The coupon code (typed or scanned; dashes and spaces are ignored)")
    key: str = Field(description="Idempotency key of this redemption, e.g. the POS receipt number")
    store: str | None = Field(None, description="Store code (or id); clerks must give one they are assigned to")
    amount: Decimal | None = Field(None, description="The bill in yuan (needed for a minimum spend or a percentage)")
    member_id: int | None = Field(None, description="If given, the coupon must belong to this member")


class RedeemClipIn(Input):
    member_id: int
    offer_id: int
    key: str
    store: str | None = None
    amount: Decimal | None = None


class RedemptionOut(Schema):
    id: int
    coupon_code: str
    offer_id: int
    member_id: int
    store: str | None
    clerk: str | None
    actor: str
    key: str
    amount: Decimal | None
    discount: Decimal
    at: dt.datetime
    voided: bool
    void_reason: str | None

    @staticmethod
    def resolve_coupon_code(obj: Redemption) -> str:
        return obj.coupon.code

    @staticmethod
    def resolve_store(obj: Redemption) -> str | None:
        return obj.store.code if obj.store_id and obj.store else None

    @staticmethod
    def resolve_clerk(obj: Redemption) -> str | None:
        return obj.clerk.get_username() if obj.clerk_id and obj.clerk else None

    @staticmethod
    def resolve_voided(obj: Redemption) -> bool:
        return _void(obj) is not None

    @staticmethod
    def resolve_void_reason(obj: Redemption) -> str | None:
        void = _void(obj)
        return void.reason if void is not None else None


def _void(obj: Redemption) -> Any:
    try:
        return obj.void
    except Redemption.void.RelatedObjectDoesNotExist:  # type: ignore[attr-defined]
        return None


class RedemptionList(Schema):
    items: list[RedemptionOut]
    next: int | None


class VoidIn(Input):
    reason: str


class StoreIn(Input):
    code: str
    name: str


class StoreOut(Schema):
    id: int
    code: str
    name: str


class StoreList(Schema):
    items: list[StoreOut]


class OfferStatsOut(Schema):
    offer_id: int
    name: str
    issued: int
    redeemed: int
    voided: int
    expired: int
    open: int


class ByOut(Schema):
    label: str
    redemptions: int
    discount: Decimal


class ReportOut(Schema):
    offers: list[OfferStatsOut]
    by_store: list[ByOut]
    by_clerk: list[ByOut]


# ---------------------------------------------------------------------------------------------
# helpers


def _offer_rows(workspace: Workspace) -> QuerySet[Offer]:
    return scoped(Offer, workspace).prefetch_related("stores")


def _coupon_rows(workspace: Workspace) -> QuerySet[Coupon]:
    return scoped(Coupon, workspace).select_related("offer")


def _coupon(workspace: Workspace, coupon_code: str) -> Coupon:
    text = codes.normalize(coupon_code)
    row = _coupon_rows(workspace).filter(code=text).first() if codes.looks_like_code(text) else None
    if row is None:
        raise NotFound(_("coupon %(code)s not found") % {"code": coupon_code[:40]}, code="not_found",
                       details={"field": "coupon_code"})
    return row


def _offer_data(body: OfferPatch) -> dict[str, Any]:
    return body.model_dump(exclude_unset=True)


def _user_id(request: HttpRequest) -> int | None:
    user = context(request).user
    return int(user.pk) if user is not None else None


def _member(request: HttpRequest, member_id: int | None, identity: IdentityIn | None) -> int:
    ctx = context(request)
    return offers.resolve_member(ctx.workspace, member_id, identity.model_dump() if identity else None,
                                 actor=ctx.actor)


# ---------------------------------------------------------------------------------------------
# offers


@router.get("/offers", response=with_errors({200: OfferList}), operation_id="offers_list", summary="List offers")
@allow(*READERS)
def list_offers(request: HttpRequest, active: bool | None = None,
                after: int | None = Query(None, description="Cursor: the `next` of the previous page"),  # noqa: B008
                limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE)) -> dict[str, Any]:  # noqa: B008
    """Newest first."""
    qs = _offer_rows(context(request).workspace)
    if active is not None:
        qs = qs.filter(active=active)
    rows, next_cursor = keyset_page(qs, after=after, limit=limit)
    return {"items": rows, "next": next_cursor}


@router.post("/offers", response=with_errors({201: OfferOut}), operation_id="offers_create", summary="Create an offer")
@allow(*MANAGERS)
def create_offer(request: HttpRequest, body: OfferIn) -> Status[Offer]:
    ctx = context(request)
    offer = offers.save_offer(ctx.workspace, _offer_data(body), actor=ctx.actor)
    return Status(201, _offer_rows(ctx.workspace).get(pk=offer.pk))


@router.get("/offers/report", response=with_errors({200: ReportOut}), operation_id="offers_report",
            summary="Issued / redeemed / expired per offer; redemptions by store and clerk")
@allow(*READERS)
def offers_report(request: HttpRequest) -> dict[str, Any]:
    ws = context(request).workspace
    stats = queries.offer_stats(ws)
    names = dict(scoped(Offer, ws).values_list("pk", "name"))
    empty = {"issued": 0, "redeemed": 0, "voided": 0, "expired": 0, "open": 0}
    return {
        "offers": [{"offer_id": pk, "name": name, **stats.get(pk, empty)} for pk, name in sorted(names.items())],
        "by_store": queries.redemptions_by(ws, "store"),
        "by_clerk": queries.redemptions_by(ws, "clerk"),
    }


@router.get("/offers/{int:offer_id}", response=with_errors({200: OfferOut}), operation_id="offers_get",
            summary="One offer")
@allow(*READERS)
def get_offer(request: HttpRequest, offer_id: int) -> Offer:
    ws = context(request).workspace
    offers.get_offer(ws, offer_id)
    return _offer_rows(ws).get(pk=offer_id)


@router.patch("/offers/{int:offer_id}", response=with_errors({200: OfferOut}), operation_id="offers_update",
              summary="Change an offer")
@allow(*MANAGERS)
def update_offer(request: HttpRequest, offer_id: int, body: OfferPatch) -> Offer:
    ctx = context(request)
    offers.get_offer(ctx.workspace, offer_id)
    offer = offers.save_offer(ctx.workspace, _offer_data(body), offer_id=offer_id, actor=ctx.actor)
    return _offer_rows(ctx.workspace).get(pk=offer.pk)


@router.post("/offers/{int:offer_id}/issue", response=with_errors({200: IssueOut}), operation_id="offers_issue",
             summary="Issue coupons to members (by id or phone)")
@allow(*MANAGERS)
def issue(request: HttpRequest, offer_id: int, body: IssueIn) -> dict[str, Any]:
    """One coupon per member; each member's coupon is keyed ``<batch_key>:<member id>``, so sending
    the same batch again issues nothing twice. Members a limit keeps out are listed in ``skipped``."""
    ctx = context(request)
    offers.get_offer(ctx.workspace, offer_id)
    by_phone, unknown = offers.members_by_phone(ctx.workspace, body.phones)
    result = offers.issue_to_members(ctx.workspace, offer_id, [*body.member_ids, *by_phone], batch_key=body.batch_key,
                                     actor=ctx.actor)
    return {"created": result.created, "coupons": result.coupons, "unknown_phones": unknown,
            "skipped": [{"member_id": s.member_id, "code": s.code, "message": s.message} for s in result.skipped]}


@router.post("/offers/{int:offer_id}/buy", response=with_errors({200: ClaimOut, 201: ClaimOut}),
             operation_id="offers_buy", summary="A member buys a coupon with points")
@allow(*MANAGERS)
def buy(request: HttpRequest, offer_id: int, body: MemberKeyIn) -> Status[dict[str, Any]]:
    ctx = context(request)
    coupon, created = offers.buy_with_points(ctx.workspace, offer_id, body.member_id, key=body.key, actor=ctx.actor)
    return Status(201 if created else 200, {"created": created, "coupon": coupon})


@router.post("/offers/{int:offer_id}/clip", response=with_errors({200: ClipOut}), operation_id="offers_clip",
             summary="A member clips a personalised offer")
@allow(*MANAGERS)
def clip(request: HttpRequest, offer_id: int, body: MemberIn) -> Any:
    ctx = context(request)
    return offers.clip_offer(ctx.workspace, body.member_id, offer_id, actor=ctx.actor)


@router.post("/offers/claim", response=with_errors({200: ClaimOut, 201: ClaimOut}), operation_id="offers_claim",
             summary="Claim a coupon with a campaign QR's code")
@allow(*MANAGERS)
def claim(request: HttpRequest, body: ClaimIn) -> Status[dict[str, Any]]:
    """One coupon per member and claim code: a second claim returns the first coupon (200)."""
    ctx = context(request)
    mid = _member(request, body.member_id, body.identity)
    coupon, created = offers.claim(ctx.workspace, body.code, mid, actor=ctx.actor)
    return Status(201 if created else 200, {"created": created, "coupon": coupon})


@router.post("/offers/share", response=with_errors({200: ShareOut, 201: ShareOut}), operation_id="offers_share",
             summary="Share after consumption: claim a table code's reward")
@allow(*MANAGERS)
def share(request: HttpRequest, body: ClaimIn) -> Status[dict[str, Any]]:
    """Records a ``share`` interaction and gives the code's reward once per member, code and day."""
    ctx = context(request)
    mid = _member(request, body.member_id, body.identity)
    row, created = offers.claim_activity(ctx.workspace, body.code, mid, actor=ctx.actor)
    coupon = _coupon_rows(ctx.workspace).filter(pk=row.coupon_id).first() if row.coupon_id else None
    return Status(201 if created else 200, {"created": created, "claim_id": row.pk, "day": row.day, "coupon": coupon,
                                            "points_entry_id": row.point_entry_id,
                                            "interaction_id": row.interaction_id})


# ---------------------------------------------------------------------------------------------
# coupons


@router.get("/coupons", response=with_errors({200: CouponList}), operation_id="coupons_list", summary="List coupons")
@allow(*READERS)
def list_coupons(request: HttpRequest, member_id: int | None = None, offer_id: int | None = None,
                 status: str = "", after: int | None = Query(None, description="Cursor"),  # noqa: B008
                 limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE)) -> dict[str, Any]:  # noqa: B008
    qs = _coupon_rows(context(request).workspace)
    if member_id is not None:
        qs = qs.filter(member_id=member_id)
    if offer_id is not None:
        qs = qs.filter(offer_id=offer_id)
    if status:
        qs = qs.filter(status=status)
    rows, next_cursor = keyset_page(qs, after=after, limit=limit)
    return {"items": rows, "next": next_cursor}


@router.get("/coupons/{coupon_code}", response=with_errors({200: CouponOut}), operation_id="coupons_get",
            summary="One coupon by its code")
@allow(*EVERYONE)
def get_coupon(request: HttpRequest, coupon_code: str) -> Coupon:
    return _coupon(context(request).workspace, coupon_code)


@router.get("/coupons/{coupon_code}/qr.svg", response=with_errors({200: None}), operation_id="coupons_qr",
            summary="The coupon's QR code (image/svg+xml)")
@allow(*EVERYONE)
def coupon_qr(request: HttpRequest, coupon_code: str) -> HttpResponse:
    coupon = _coupon(context(request).workspace, coupon_code)
    return HttpResponse(codes.qr_svg(coupon.code), content_type="image/svg+xml")


# ---------------------------------------------------------------------------------------------
# redemptions


def _redemption_rows(workspace: Workspace) -> QuerySet[Redemption]:
    return scoped(Redemption, workspace).select_related("coupon", "store", "clerk", "void")


@router.post("/redemptions", response=with_errors({201: RedemptionOut}), operation_id="redemptions_create",
             summary="Redeem a coupon at a counter")
@allow(*EVERYONE)
def redeem(request: HttpRequest, body: RedeemIn) -> Status[Redemption]:
    """Exactly once, also when two counters send the same coupon at the same moment: the loser gets
    409 ``already_redeemed``. Replaying ``key`` returns the first redemption. A clerk (console
    session) must name a store they are assigned to; a clerk-role API key has no store and may not
    redeem."""
    ctx = context(request)
    r = offers.redeem(ctx.workspace, body.code, key=body.key, actor=ctx.actor, role=ctx.role,
                      user_id=_user_id(request), store=body.store, amount=body.amount, member_id=body.member_id)
    return Status(201, _redemption_rows(ctx.workspace).get(pk=r.pk))


@router.post("/redemptions/clip", response=with_errors({201: RedemptionOut}), operation_id="redemptions_clip",
             summary="Apply a member's clipped offer at the counter")
@allow(*EVERYONE)
def redeem_clip(request: HttpRequest, body: RedeemClipIn) -> Status[Redemption]:
    ctx = context(request)
    r = offers.redeem_clip(ctx.workspace, body.member_id, body.offer_id, key=body.key, actor=ctx.actor, role=ctx.role,
                           user_id=_user_id(request), store=body.store, amount=body.amount)
    return Status(201, _redemption_rows(ctx.workspace).get(pk=r.pk))


@router.get("/redemptions", response=with_errors({200: RedemptionList}), operation_id="redemptions_list",
            summary="The redemption log")
@allow(*READERS)
def list_redemptions(request: HttpRequest, offer_id: int | None = None, member_id: int | None = None,
                     store: str = "", after: int | None = Query(None, description="Cursor"),  # noqa: B008
                     limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE)) -> dict[str, Any]:  # noqa: B008
    ws = context(request).workspace
    qs = _redemption_rows(ws)
    if offer_id is not None:
        qs = qs.filter(offer_id=offer_id)
    if member_id is not None:
        qs = qs.filter(member_id=member_id)
    if store:
        qs = qs.filter(store=offers.get_store(ws, store))
    rows, next_cursor = keyset_page(qs, after=after, limit=limit)
    return {"items": rows, "next": next_cursor}


@router.post("/redemptions/{int:redemption_id}/void", response=with_errors({200: RedemptionOut}),
             operation_id="redemptions_void", summary="Void a redemption (the coupon gets the use back)")
@allow(*MANAGERS)
def void(request: HttpRequest, redemption_id: int, body: VoidIn) -> Redemption:
    ctx = context(request)
    offers.void_redemption(ctx.workspace, redemption_id, reason=body.reason, actor=ctx.actor)
    return _redemption_rows(ctx.workspace).get(pk=redemption_id)


# ---------------------------------------------------------------------------------------------
# stores


@router.get("/stores", response=with_errors({200: StoreList}), operation_id="stores_list", summary="List stores")
@allow(*EVERYONE)
def list_stores(request: HttpRequest) -> dict[str, Any]:
    return {"items": queries.stores(context(request).workspace)}


@router.post("/stores", response=with_errors({200: StoreOut}), operation_id="stores_save",
             summary="Create a store or rename it (by code)")
@allow(*MANAGERS)
def save_store(request: HttpRequest, body: StoreIn) -> Store:
    ctx = context(request)
    if not body.code.strip():
        raise ValidationError(_("A store code is 1–32 letters, digits, - or _."), code="invalid_store_code",
                              details={"field": "code"})
    return offers.save_store(ctx.workspace, body.code, body.name, actor=ctx.actor)


routers: list[Router] = [router]
