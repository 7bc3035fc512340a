"""Reads of offers and coupons (no writes): what a member can redeem or clip, the counter lookup,
the redemption log and the reports."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Sum
from django.utils.translation import gettext as _

from shequn.core import clock
from shequn.core.errors import NotFound, ValidationError
from shequn.core.models import Role, Workspace
from shequn.core.tenancy import scoped

from . import cards, codes
from .models import (
    ActivityCode,
    ClaimCode,
    Coupon,
    CouponStatus,
    Offer,
    OfferClip,
    Redemption,
    RedemptionVoid,
    Store,
    StoreClerk,
)


def _valid_at(at: dt.datetime, prefix: str = "") -> Q:
    return ((Q(**{f"{prefix}valid_until__isnull": True}) | Q(**{f"{prefix}valid_until__gt": at}))
            & (Q(**{f"{prefix}valid_from__isnull": True}) | Q(**{f"{prefix}valid_from__lte": at})))


def offers(workspace: Workspace) -> QuerySet[Offer]:
    return scoped(Offer, workspace).prefetch_related("stores").order_by("-pk")


def stores(workspace: Workspace) -> list[Store]:
    return list(scoped(Store, workspace).order_by("code"))


def clerk_stores(workspace: Workspace, user_id: int | None) -> list[Store]:
    if user_id is None:
        return []
    ids = scoped(StoreClerk, workspace).filter(user_id=user_id).values_list("store_id", flat=True)
    return list(scoped(Store, workspace).filter(pk__in=ids).order_by("code"))


def counter_stores(workspace: Workspace, role: str, user_id: int | None) -> list[Store]:
    """The stores a staff user may redeem as: a clerk's own stores; every store for higher roles."""
    return clerk_stores(workspace, user_id) if role == Role.CLERK else stores(workspace)


def store_clerks(workspace: Workspace) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for link in scoped(StoreClerk, workspace).select_related("user").order_by("user__username"):
        out.setdefault(link.store_id, []).append(link.user)
    return out


def redeemable_coupons(workspace: Workspace, member_id: int, *, at: dt.datetime | None = None) -> list[Coupon]:
    """The member's coupons that can be redeemed now (issued, uses left, inside their window, offer active)."""
    now = at or clock.now()
    return list(scoped(Coupon, workspace).filter(member_id=member_id, status=CouponStatus.ISSUED, offer__active=True)
                .filter(_valid_at(now)).select_related("offer").order_by("valid_until", "pk"))


def member_coupons(workspace: Workspace, member_id: int, *, limit: int = 100) -> list[Coupon]:
    return list(scoped(Coupon, workspace).filter(member_id=member_id).select_related("offer").order_by("-pk")[:limit])


def clippable_offers(workspace: Workspace, *, at: dt.datetime | None = None) -> list[Offer]:
    """Active personalised offers members may clip now."""
    now = at or clock.now()
    return list(scoped(Offer, workspace).filter(active=True, clippable=True).filter(_valid_at(now)).order_by("pk"))


def clipped_offers(workspace: Workspace, member_id: int, *, at: dt.datetime | None = None) -> list[Offer]:
    """Offers the member clipped and has not used yet, still valid."""
    now = at or clock.now()
    clipped = OfferClip.objects.filter(workspace=workspace, member_id=member_id, coupon__isnull=True,
                                       offer_id=OuterRef("pk"))
    return list(scoped(Offer, workspace).filter(Exists(clipped), active=True).filter(_valid_at(now)).order_by("pk"))


def find_coupon_or_none(workspace: Workspace, code: str) -> Coupon | None:
    text = codes.normalize(code)
    if not codes.looks_like_code(text):
        return None
    return scoped(Coupon, workspace).select_related("offer").filter(code=text).first()


def coupon_state(coupon: Coupon, at: dt.datetime | None = None) -> str:
    """redeemed, expired, not_yet_valid, paused or redeemable."""
    now = at or clock.now()
    if coupon.status == CouponStatus.REDEEMED:
        return "redeemed"
    if coupon.valid_until is not None and coupon.valid_until <= now:
        return "expired"
    if coupon.valid_from is not None and coupon.valid_from > now:
        return "not_yet_valid"
    if not coupon.offer.active:
        return "paused"
    return "redeemable"


@dataclass
class CounterLookup:
    """What the counter found for what the clerk typed or scanned."""

    kind: str  # coupon | member
    member_id: int
    member_name: str
    coupon: Coupon | None = None
    coupons: list[Coupon] = field(default_factory=list)
    clipped: list[Offer] = field(default_factory=list)


def counter_lookup(workspace: Workspace, text: str, *, at: dt.datetime | None = None) -> CounterLookup:
    """A coupon code, a member card code (QR) or a phone number."""
    from shequn.members import services as members
    from shequn.members.models import Member

    raw = str(text or "").strip()
    if not raw:
        raise ValidationError(_("Scan or type a coupon code, a member card or a phone number."), code="empty_lookup",
                              details={"field": "q"})
    member_id: int | None = None
    code = codes.normalize(raw)
    if codes.looks_like_code(code):
        coupon = scoped(Coupon, workspace).select_related("offer").filter(code=code).first()
        if coupon is not None:
            name = scoped(Member, workspace).filter(pk=coupon.member_id).values_list("display_name", flat=True).first()
            return CounterLookup("coupon", coupon.member_id, name or f"#{coupon.member_id}", coupon=coupon)
    if cards.looks_like_card(raw):
        member_id = cards.member_from_card(workspace, raw)
    else:
        try:
            found = members.find_member(workspace, {"kind": "phone", "value": raw})
        except ValidationError:
            found = None
        member_id = found.pk if found is not None else None
    if member_id is None:
        raise NotFound(_("No coupon, member card or phone number %(text)s here.") % {"text": raw[:40]},
                       code="nothing_found", details={"field": "q"})
    member = scoped(Member, workspace).get(pk=member_id)
    if member.merged_into_id:
        member = scoped(Member, workspace).get(pk=member.merged_into_id)
    return CounterLookup("member", member.pk, member.display_name or f"#{member.pk}",
                         coupons=redeemable_coupons(workspace, member.pk, at=at),
                         clipped=clipped_offers(workspace, member.pk, at=at))


def redemptions(workspace: Workspace, *, offer_id: int | None = None, store_id: int | None = None,
                member_id: int | None = None) -> QuerySet[Redemption]:
    qs = (scoped(Redemption, workspace).select_related("coupon", "offer", "store", "clerk", "void")
          .order_by("-pk"))
    if offer_id is not None:
        qs = qs.filter(offer_id=offer_id)
    if store_id is not None:
        qs = qs.filter(store_id=store_id)
    if member_id is not None:
        qs = qs.filter(member_id=member_id)
    return qs


def offer_stats(workspace: Workspace, *, at: dt.datetime | None = None) -> dict[int, dict[str, int]]:
    """Per offer: coupons issued, redeemed (net of voids), expired unused, still open. Two grouped queries."""
    now = at or clock.now()
    out: dict[int, dict[str, int]] = {}
    rows = (scoped(Coupon, workspace).values("offer_id").annotate(
        issued=Count("pk"),
        expired=Count("pk", filter=Q(status=CouponStatus.ISSUED, uses=0, valid_until__lte=now)),
        open=Count("pk", filter=Q(status=CouponStatus.ISSUED) & (Q(valid_until__isnull=True) | Q(valid_until__gt=now))),
    ))
    for r in rows:
        out[r["offer_id"]] = {"issued": r["issued"], "expired": r["expired"], "open": r["open"], "redeemed": 0,
                              "voided": 0}
    voided = RedemptionVoid.objects.filter(redemption_id=OuterRef("pk"))
    for r in (scoped(Redemption, workspace).annotate(voided=Exists(voided)).values("offer_id")
              .annotate(redeemed=Count("pk", filter=Q(voided=False)), voids=Count("pk", filter=Q(voided=True)))):
        entry = out.setdefault(r["offer_id"], {"issued": 0, "expired": 0, "open": 0, "redeemed": 0, "voided": 0})
        entry["redeemed"] = r["redeemed"]
        entry["voided"] = r["voids"]
    return out


def redemptions_by(workspace: Workspace, dimension: str, *, since: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Redemptions (net of voids) grouped by ``store`` or ``clerk``, most first, with the discount given."""
    if dimension not in ("store", "clerk"):
        raise ValueError(dimension)
    qs = scoped(Redemption, workspace).filter(void__isnull=True)
    if since is not None:
        qs = qs.filter(at__gte=since)
    label = "store__name" if dimension == "store" else "clerk__username"
    rows = (qs.values(f"{dimension}_id", label).annotate(n=Count("pk"), discount=Sum("discount")).order_by("-n"))
    return [{"id": r[f"{dimension}_id"], "label": r[label] or "—", "redemptions": r["n"],
             "discount": r["discount"] or 0} for r in rows]


def redemptions_per_day(workspace: Workspace, *, days: int = 30, at: dt.datetime | None = None) -> list[dict[str, Any]]:
    from django.db.models.functions import TruncDate

    now = at or clock.now()
    since = now - dt.timedelta(days=days)
    rows = (scoped(Redemption, workspace).filter(at__gte=since, void__isnull=True).annotate(day=TruncDate("at"))
            .values("day").annotate(n=Count("pk")).order_by("day"))
    return [{"day": r["day"], "redemptions": r["n"]} for r in rows]


def claim_code(workspace: Workspace, code: Any) -> ClaimCode:
    """An open campaign claim code with its offer (what the member portal shows before claiming)."""
    text = codes.normalize(code)
    row = scoped(ClaimCode, workspace).select_related("offer").filter(code=text, active=True).first() if text else None
    if row is None:
        raise NotFound(_("Unknown or closed claim code."), code="unknown_claim_code", details={"field": "code"})
    return row


def activity_code(workspace: Workspace, code: Any) -> ActivityCode:
    """An open "share after consumption" table code with its store and reward offer."""
    text = codes.normalize(code)
    row = (scoped(ActivityCode, workspace).select_related("store", "reward_offer").filter(code=text, active=True).first()
           if text else None)
    if row is None:
        raise NotFound(_("Unknown or closed activity code."), code="unknown_activity_code", details={"field": "code"})
    return row
