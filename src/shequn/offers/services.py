"""Every write of offers and coupons: offers and stores, issuance (to members, on a rule, by a claim
code, for points, on a clip), redemption at the counter and its void, share-after-consumption claims.

How a coupon is used exactly once (ADR 0007):

* redeeming is one conditional ``UPDATE`` of the coupon row — ``uses = uses + 1`` where the coupon is
  ``issued``, ``uses < max_uses`` and now is inside its validity window — whose row count is checked.
  On PostgreSQL a second counter redeeming the same coupon at the same moment waits for the first
  one's row lock, then re-evaluates the condition on the committed row and changes nothing. On
  SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (settings), so writers run one
  after the other and the second sees the first one's result. ``CHECK (uses <= max_uses)`` is the
  backstop;
* the ``Redemption`` row is inserted in the same transaction, unique per (workspace, key): a replay
  — also one racing the first call — returns the first redemption and changes nothing;
* issuance locks the offer row (stock and per-member limits are counted under it) and every coupon
  carries an ``issue_key`` unique per workspace: a replay returns the coupon issued first;
* a void is a row unique per redemption; it gives the use back with ``uses = uses - 1`` and writes an
  audit entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from django.db import IntegrityError, transaction
from django.db.models import Case, Count, F, Q, Value, When
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from shequn.core import audit, clock, hooks
from shequn.core.errors import Conflict, NotFound, PermissionDenied, ValidationError
from shequn.core.models import Role, Workspace
from shequn.core.tenancy import get_scoped, scoped
from shequn.members import queries as member_queries

from . import codes
from .models import (
    ActivityClaim,
    ActivityCode,
    ClaimCode,
    Coupon,
    CouponStatus,
    Offer,
    OfferClip,
    OfferKind,
    Redemption,
    RedemptionVoid,
    Store,
    StoreClerk,
    Trigger,
)

KEY_MAX = 200
MONEY_MAX = Decimal("100000000")
CENT = Decimal("0.01")
INTERACTION_SOURCE = "offers"


class Source:
    MANUAL = "manual"
    TIER = "tier_upgrade"
    BIRTHDAY = "birthday"
    CLAIM = "claim"
    POINTS = "points"
    SHARE = "share"
    CLIP = "clip"


# ---------------------------------------------------------------------------------------------
# input cleaning


def clean_key(value: Any, field_name: str = "key") -> str:
    key = value.strip() if isinstance(value, str) else ""
    if not key or len(key) > KEY_MAX:
        raise ValidationError(_("an idempotency key of 1–%(n)d characters is required") % {"n": KEY_MAX},
                              code="invalid_idempotency_key", details={"field": field_name})
    return key


def clean_money(value: Any, field_name: str, *, allow_zero: bool = True) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        amount = None
    if (amount is None or not amount.is_finite() or amount < 0 or (amount == 0 and not allow_zero)
            or amount >= MONEY_MAX or amount != amount.quantize(CENT)):
        raise ValidationError(_("%(field)s must be an amount in yuan with at most 2 decimals") % {"field": field_name},
                              code="invalid_amount", details={"field": field_name})
    return amount.quantize(CENT)


def _whole(value: Any, field_name: str, *, low: int, high: int = 10**9) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number < low or number > high:
        raise ValidationError(_("%(field)s must be a whole number from %(low)d to %(high)d")
                              % {"field": field_name, "low": low, "high": high},
                              code="invalid_field", details={"field": field_name})
    return number


def _time(value: Any, field_name: str) -> dt.datetime | None:
    if value in (None, ""):
        return None
    parsed = value if isinstance(value, dt.datetime) else parse_datetime(str(value).strip())
    if parsed is None or parsed.tzinfo is None:
        raise ValidationError(_("%(field)s must be a date-time with a time zone") % {"field": field_name},
                              code="invalid_time", details={"field": field_name})
    return parsed


def _names(value: Any, field_name: str) -> list[str]:
    if value in (None, ""):
        return []
    items = value.replace("，", ",").split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        text = str(item).strip()
        if len(text) > 100:
            raise ValidationError(_("%(field)s: each name may have at most 100 characters") % {"field": field_name},
                                  code="invalid_field", details={"field": field_name})
        if text and text not in out:
            out.append(text)
    return out


def _actor(value: Any) -> str:
    text = str(value or "").strip()
    if not text:
        raise ValidationError(_("an actor is required"), code="invalid_field", details={"field": "actor"})
    return text[:200]


def _member_id(workspace: Workspace, member_id: Any) -> int:
    try:
        mid = int(member_id)
    except (TypeError, ValueError):
        mid = 0
    if mid <= 0 or not member_queries.existing_ids(workspace, [mid]):
        raise NotFound(_("member %(id)s not found") % {"id": member_id}, code="unknown_member",
                       details={"field": "member_id"})
    return mid


def _now(at: dt.datetime | None) -> dt.datetime:
    if at is not None and at.tzinfo is None:
        raise ValueError("times given to offers must be timezone-aware")
    return at or clock.now()


# ---------------------------------------------------------------------------------------------
# stores and clerks


@transaction.atomic
def save_store(workspace: Workspace, code: str, name: str, *, actor: str) -> Store:
    code = str(code or "").strip().lower()
    name = str(name or "").strip()
    if not code or len(code) > 32 or not all(c.isalnum() or c in "-_" for c in code) or not code.isascii():
        raise ValidationError(_("A store code is 1–32 letters, digits, - or _."), code="invalid_store_code",
                              details={"field": "code"})
    if not name or len(name) > 100:
        raise ValidationError(_("A store needs a name of at most 100 characters."), code="invalid_field",
                              details={"field": "name"})
    store, created = Store.objects.get_or_create(workspace=workspace, code=code, defaults={"name": name})
    if not created and store.name != name:
        store.name = name
        store.save(update_fields=["name"])
    audit.record(workspace, _actor(actor), "offers.store_saved", store, {"code": code, "name": name})
    return store


def get_store(workspace: Workspace, store: Store | int | str) -> Store:
    row: Store | None = None
    if isinstance(store, Store):
        row = store if store.workspace_id == workspace.pk else None
    elif isinstance(store, int) and not isinstance(store, bool):
        row = scoped(Store, workspace).filter(pk=store).first()
    elif isinstance(store, str) and store.strip():
        text = store.strip()
        row = scoped(Store, workspace).filter(code=text.lower()).first()
        if row is None and text.isdigit():
            row = scoped(Store, workspace).filter(pk=int(text)).first()
    if row is None:
        raise NotFound(_("unknown store %(store)s") % {"store": getattr(store, "code", store)}, code="unknown_store",
                       details={"field": "store"})
    return row


@transaction.atomic
def assign_clerk(workspace: Workspace, store: Store | int | str, user_id: int, *, actor: str) -> StoreClerk:
    """Assign a staff user of this workspace to a store (idempotent)."""
    from shequn.core.models import StaffMembership

    row = get_store(workspace, store)
    if not StaffMembership.objects.filter(workspace=workspace, user_id=user_id).exists():
        raise NotFound(_("This user is not on the staff of this workspace."), code="unknown_staff",
                       details={"field": "user"})
    link, created = StoreClerk.objects.get_or_create(workspace=workspace, store=row, user_id=user_id)
    if created:
        audit.record(workspace, _actor(actor), "offers.clerk_assigned", link, {"store": row.code, "user": user_id})
    return link


@transaction.atomic
def unassign_clerk(workspace: Workspace, store: Store | int | str, user_id: int, *, actor: str) -> int:
    row = get_store(workspace, store)
    deleted, _detail = scoped(StoreClerk, workspace).filter(store=row, user_id=user_id).delete()
    if deleted:
        audit.record(workspace, _actor(actor), "offers.clerk_unassigned", row, {"user": user_id})
    return deleted


# ---------------------------------------------------------------------------------------------
# offers

OFFER_FIELDS = frozenset({
    "name", "description", "kind", "percent_off", "amount_off", "gift_item", "items", "categories", "min_spend",
    "valid_from", "valid_until", "coupon_days", "stock", "per_member", "uses_per_coupon", "points_price",
    "point_type", "trigger", "trigger_tier", "clippable", "active", "stores",
})


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "on", "yes"}
    return bool(value)


@transaction.atomic
def save_offer(workspace: Workspace, data: Mapping[str, Any], *, offer_id: int | None = None, actor: str) -> Offer:
    """Create an offer, or change the given fields of ``offer_id``. Coupons already issued keep their
    validity and number of uses."""
    unknown = sorted(set(data) - OFFER_FIELDS)
    if unknown:
        raise ValidationError(_("unknown field(s): %(fields)s") % {"fields": ", ".join(unknown)}, code="invalid_field",
                              details={"field": unknown[0]})
    offer = get_scoped(Offer, workspace, offer_id, for_update=True) if offer_id is not None else Offer(
        workspace=workspace)
    if offer_id is None:
        for required in ("name", "kind"):
            if not data.get(required):
                raise ValidationError(_("%(field)s is required") % {"field": required}, code="invalid_field",
                                      details={"field": required})
    d = dict(data)
    if "name" in d:
        name = str(d["name"] or "").strip()
        if not name or len(name) > 100:
            raise ValidationError(_("An offer needs a name of at most 100 characters."), code="invalid_field",
                                  details={"field": "name"})
        offer.name = name
    if "description" in d:
        offer.description = str(d["description"] or "").strip()[:500]
    if "kind" in d:
        if d["kind"] not in OfferKind.values:
            raise ValidationError(_("kind must be one of %(kinds)s") % {"kinds": ", ".join(OfferKind.values)},
                                  code="invalid_kind", details={"field": "kind"})
        offer.kind = d["kind"]
    if "percent_off" in d:
        offer.percent_off = _whole(d["percent_off"], "percent_off", low=1, high=100)
    if "amount_off" in d:
        offer.amount_off = clean_money(d["amount_off"], "amount_off", allow_zero=False)
    if "gift_item" in d:
        offer.gift_item = str(d["gift_item"] or "").strip()[:100]
    if "items" in d:
        offer.items = _names(d["items"], "items")
    if "categories" in d:
        offer.categories = _names(d["categories"], "categories")
    if "min_spend" in d:
        offer.min_spend = clean_money(d["min_spend"], "min_spend")
    if "valid_from" in d:
        offer.valid_from = _time(d["valid_from"], "valid_from")
    if "valid_until" in d:
        offer.valid_until = _time(d["valid_until"], "valid_until")
    for name, low in (("coupon_days", 1), ("stock", 0), ("per_member", 1), ("points_price", 1)):
        if name in d:
            setattr(offer, name, _whole(d[name], name, low=low))
    if "uses_per_coupon" in d:
        offer.uses_per_coupon = _whole(d["uses_per_coupon"], "uses_per_coupon", low=1, high=1000) or 1
    if "point_type" in d:
        offer.point_type = str(d["point_type"] or "points").strip()[:32]
    if "trigger" in d:
        if (d["trigger"] or Trigger.MANUAL) not in Trigger.values:
            raise ValidationError(_("trigger must be one of %(values)s") % {"values": ", ".join(Trigger.values)},
                                  code="invalid_trigger", details={"field": "trigger"})
        offer.trigger = d["trigger"] or Trigger.MANUAL
    if "trigger_tier" in d:
        offer.trigger_tier = str(d["trigger_tier"] or "").strip()[:32]
    for name in ("clippable", "active"):
        if name in d:
            setattr(offer, name, _bool(d[name]))

    # whole-offer rules
    if offer.kind == OfferKind.PERCENT_OFF and not (offer.percent_off and 1 <= offer.percent_off <= 99):
        raise ValidationError(_("A percentage-off offer needs a percentage from 1 to 99."), code="invalid_field",
                              details={"field": "percent_off"})
    if offer.kind == OfferKind.AMOUNT_OFF and not offer.amount_off:
        raise ValidationError(_("An amount-off offer needs the amount taken off."), code="invalid_field",
                              details={"field": "amount_off"})
    if offer.kind == OfferKind.GIFT and not offer.gift_item:
        raise ValidationError(_("A gift offer needs the item given."), code="invalid_field",
                              details={"field": "gift_item"})
    if offer.valid_from and offer.valid_until and offer.valid_from >= offer.valid_until:
        raise ValidationError(_("The offer must start before it ends."), code="invalid_window",
                              details={"field": "valid_until"})
    if offer.trigger == Trigger.TIER_UPGRADE and not offer.trigger_tier:
        raise ValidationError(_("Name the tier (code) whose upgrade issues this offer."), code="invalid_field",
                              details={"field": "trigger_tier"})
    if offer.stock is not None and offer.stock < offer.issued_count:
        raise ValidationError(_("The stock cannot be lower than the %(n)d coupons already issued.")
                              % {"n": offer.issued_count}, code="invalid_field", details={"field": "stock"})
    if offer.points_price:
        from shequn.loyalty import services as loyalty

        loyalty.get_point_type(workspace, offer.point_type)
    created = offer.pk is None
    offer.save()
    if "stores" in d:
        wanted = _names(d["stores"], "stores")
        rows = [get_store(workspace, code) for code in wanted]
        offer.stores.set(rows)
    audit.record(workspace, _actor(actor), "offers.offer_created" if created else "offers.offer_changed", offer,
                 {k: str(v) for k, v in d.items()})
    return offer


def get_offer(workspace: Workspace, offer_id: Any) -> Offer:
    try:
        return get_scoped(Offer, workspace, offer_id)
    except NotFound:
        raise NotFound(_("offer %(id)s not found") % {"id": offer_id}, code="not_found",
                       details={"field": "offer_id"}) from None


# ---------------------------------------------------------------------------------------------
# issuance


@dataclass
class Skipped:
    member_id: int
    code: str
    message: str


@dataclass
class IssueResult:
    """``coupons``: one per member issued to (newly, or earlier under the same key);
    ``created``: how many are new; ``skipped``: members a limit kept from getting one."""

    coupons: list[Coupon] = field(default_factory=list)
    created: int = 0
    skipped: list[Skipped] = field(default_factory=list)


def _coupon_window(offer: Offer, at: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
    until = offer.valid_until
    if offer.coupon_days:
        start = max(at, offer.valid_from) if offer.valid_from else at
        own = start + dt.timedelta(days=offer.coupon_days)
        until = min(until, own) if until else own
    return offer.valid_from, until


def _check_issuable(offer: Offer, at: dt.datetime) -> None:
    if not offer.active:
        raise ValidationError(_("The offer “%(name)s” is not active.") % {"name": offer.name}, code="offer_inactive",
                              details={"offer_id": offer.pk})
    if offer.valid_until is not None and offer.valid_until <= at:
        raise ValidationError(_("The offer “%(name)s” has ended.") % {"name": offer.name}, code="offer_ended",
                              details={"offer_id": offer.pk})


def _issue(workspace: Workspace, offer_id: int, keys: Mapping[int, str], *, source: str, actor: str,
           at: dt.datetime, point_entry_ids: Mapping[int, int] | None = None) -> IssueResult:
    """Issue one coupon of ``offer_id`` to each member in ``keys`` (member id → issue key), inside
    the caller's transaction. The offer row is locked first: stock and per-member counts read after
    the lock see every issuance committed before, so limits hold under concurrency; a key stored
    already (by an earlier or a concurrent call) returns its coupon."""
    offer = scoped(Offer, workspace).select_for_update().filter(pk=offer_id).first()
    if offer is None:
        raise NotFound(_("offer %(id)s not found") % {"id": offer_id}, code="not_found", details={"field": "offer_id"})
    result = IssueResult()
    stored = {c.issue_key: c for c in scoped(Coupon, workspace).filter(issue_key__in=list(keys.values()))}
    todo: list[int] = []
    for mid, key in keys.items():
        hit = stored.get(key)
        if hit is None:
            todo.append(mid)
        elif hit.offer_id != offer.pk or hit.member_id != mid:
            raise Conflict(_("idempotency key %(key)r was already used for a different operation") % {"key": key},
                           code="idempotency_key_reused", details={"coupon_id": hit.pk})
        else:
            result.coupons.append(hit)
    if not todo:
        return result
    _check_issuable(offer, at)
    counts: dict[int, int] = {}
    if offer.per_member is not None:
        counts = dict(Coupon.objects.filter(offer=offer, member_id__in=todo).values("member_id")
                      .annotate(n=Count("id")).values_list("member_id", "n"))
    valid_from, valid_until = _coupon_window(offer, at)
    new: list[Coupon] = []
    issued = offer.issued_count
    for mid in todo:
        if offer.per_member is not None and counts.get(mid, 0) >= offer.per_member:
            result.skipped.append(Skipped(mid, "per_member_limit", _("The member already has %(n)d coupon(s) of "
                                                                      "this offer, the most allowed.")
                                          % {"n": counts.get(mid, 0)}))
            continue
        if offer.stock is not None and issued >= offer.stock:
            result.skipped.append(Skipped(mid, "out_of_stock", _("All %(n)d coupons of this offer are issued.")
                                          % {"n": offer.stock}))
            continue
        issued += 1
        new.append(Coupon(workspace=workspace, offer=offer, member_id=mid, code=codes.new_code(),
                          max_uses=offer.uses_per_coupon, valid_from=valid_from, valid_until=valid_until,
                          source=source, issue_key=keys[mid], actor=actor, issued_at=at,
                          point_entry_id=(point_entry_ids or {}).get(mid)))
    if new:
        try:
            with transaction.atomic():
                Coupon.objects.bulk_create(new)
        except IntegrityError:
            # A random code collided (about one chance in 10^17 per pair): new codes, one by one.
            for coupon in new:
                for attempt in range(5):
                    try:
                        with transaction.atomic():
                            coupon.pk = None
                            coupon.save(force_insert=True)
                        break
                    except IntegrityError:
                        if attempt == 4:
                            raise
                        coupon.code = codes.new_code()
        Offer.objects.filter(pk=offer.pk).update(issued_count=F("issued_count") + len(new))
        result.coupons.extend(new)
        result.created = len(new)
    return result


def issue_coupon(workspace: Workspace, offer_id: int, member_id: int, *, key: str, source: str = Source.MANUAL,
                 actor: str, at: dt.datetime | None = None, point_entry_id: int | None = None) -> tuple[Coupon, bool]:
    """Issue one coupon to one member; returns (coupon, created). A limit that keeps the member from
    getting one is an error with the limit's code (``per_member_limit``, ``out_of_stock``)."""
    key = clean_key(key)
    mid = _member_id(workspace, member_id)
    now = _now(at)
    with transaction.atomic():
        result = _issue(workspace, int(offer_id), {mid: key}, source=source, actor=_actor(actor), at=now,
                        point_entry_ids={mid: point_entry_id} if point_entry_id else None)
    if result.skipped:
        skip = result.skipped[0]
        raise Conflict(skip.message, code=skip.code, details={"member_id": mid})
    return result.coupons[0], bool(result.created)


def issue_to_members(workspace: Workspace, offer_id: int, member_ids: Iterable[Any], *, batch_key: str, actor: str,
                     at: dt.datetime | None = None, source: str = Source.MANUAL) -> IssueResult:
    """Issue one coupon to each member (a list, or the members of a filter). ``batch_key`` names the
    operation: each member's coupon gets the key ``<batch_key>:<member id>``, so running the same
    batch again issues nothing twice. Members of another workspace are refused as unknown."""
    batch_key = clean_key(batch_key, "batch_key")
    wanted: list[int] = []
    for raw in member_ids:
        try:
            mid = int(raw)
        except (TypeError, ValueError):
            raise ValidationError(_("member ids must be integers"), code="invalid_field",
                                  details={"field": "member_ids"}) from None
        if mid not in wanted:
            wanted.append(mid)
    if len(wanted) > 100_000:
        raise ValidationError(_("At most 100,000 members per issuance."), code="too_many",
                              details={"field": "member_ids"})
    found = member_queries.existing_ids(workspace, wanted)
    missing = [m for m in wanted if m not in found]
    if missing:
        raise NotFound(_("member %(id)s not found") % {"id": missing[0]}, code="unknown_member",
                       details={"field": "member_ids", "member_ids": missing[:20]})
    now = _now(at)
    keys = {mid: f"{batch_key}:{mid}"[:KEY_MAX] for mid in wanted}
    with transaction.atomic():
        result = _issue(workspace, int(offer_id), keys, source=source, actor=_actor(actor), at=now)
        if result.created:
            audit.record(workspace, actor, "offers.issued", result.coupons[0].offer,
                         {"batch_key": batch_key, "created": result.created, "skipped": len(result.skipped)})
    return result


def members_by_phone(workspace: Workspace, phones: Iterable[str]) -> tuple[list[int], list[str]]:
    """Member ids for phone numbers (normalised as identities are), and the phones nobody has."""
    from shequn.members import queries as member_queries

    return member_queries.member_ids_by_phone(workspace, phones)


def buy_with_points(workspace: Workspace, offer_id: int, member_id: int, *, key: str, actor: str,
                    at: dt.datetime | None = None) -> tuple[Coupon, bool]:
    """积分兑换: spend the offer's ``points_price`` and issue the coupon, in one transaction. The spend
    carries the key ``offers:buy:<key>`` and the coupon the key ``buy:<key>``: a replay returns the
    coupon and spends nothing more; without enough points nothing is issued."""
    from shequn.loyalty import services as loyalty

    offer = get_offer(workspace, offer_id)
    key = clean_key(key)
    mid = _member_id(workspace, member_id)
    if not offer.points_price:
        raise ValidationError(_("This offer cannot be bought with points."), code="not_for_points",
                              details={"field": "offer_id"})
    issue_key = f"buy:{key}"[:KEY_MAX]
    stored = scoped(Coupon, workspace).filter(issue_key=issue_key).first()
    if stored is not None:
        if stored.offer_id != offer.pk or stored.member_id != mid:
            raise Conflict(_("idempotency key %(key)r was already used for a different operation") % {"key": key},
                           code="idempotency_key_reused", details={"coupon_id": stored.pk})
        return stored, False
    now = _now(at)
    _check_issuable(offer, now)
    actor = _actor(actor)
    with transaction.atomic():
        entry = loyalty.spend(workspace, mid, offer.point_type, offer.points_price,
                              reason=(_("Coupon: %(name)s") % {"name": offer.name})[:150],
                              idempotency_key=f"offers:buy:{key}"[:KEY_MAX], actor=actor)
        result = _issue(workspace, offer.pk, {mid: issue_key}, source=Source.POINTS, actor=actor, at=now,
                        point_entry_ids={mid: entry.pk})
        if result.skipped:
            skip = result.skipped[0]
            raise Conflict(skip.message, code=skip.code, details={"member_id": mid})
    return result.coupons[0], bool(result.created)


# ---------------------------------------------------------------------------------------------
# redemption


def _store_for(workspace: Workspace, offer: Offer, store: Store | int | str | None, *, role: str,
               user_id: int | None) -> Store | None:
    row = get_store(workspace, store) if store not in (None, "") else None
    if role == Role.CLERK:
        if row is None:
            raise ValidationError(_("Choose the store you are redeeming at."), code="store_required",
                                  details={"field": "store"})
        if user_id is None or not scoped(StoreClerk, workspace).filter(store=row, user_id=user_id).exists():
            raise PermissionDenied(_("You are not assigned to the store %(store)s.") % {"store": row.name},
                                   code="store_not_assigned", details={"field": "store"})
    limited = [s.pk for s in offer.stores.all()]
    if limited:
        if row is None:
            raise ValidationError(_("This offer is limited to some stores: name the store."), code="store_required",
                                  details={"field": "store"})
        if row.pk not in limited:
            raise ValidationError(_("This offer cannot be redeemed at %(store)s.") % {"store": row.name},
                                  code="store_not_allowed", details={"field": "store"})
    return row


def _discount(offer: Offer, amount: Decimal | None) -> Decimal:
    if offer.kind == OfferKind.PERCENT_OFF and amount is not None and offer.percent_off:
        return (amount * offer.percent_off / 100).quantize(CENT, rounding=ROUND_HALF_UP)
    if offer.kind == OfferKind.AMOUNT_OFF and offer.amount_off is not None:
        return min(offer.amount_off, amount) if amount is not None else offer.amount_off
    return Decimal("0.00")


def _coupon_state_error(coupon: Coupon, now: dt.datetime) -> Exception | None:
    """Why ``coupon`` cannot be redeemed now, or None."""
    if coupon.status == CouponStatus.REDEEMED or coupon.uses >= coupon.max_uses:
        return Conflict(_("This coupon was already redeemed."), code="already_redeemed",
                        details={"coupon": coupon.code})
    if coupon.valid_until is not None and coupon.valid_until <= now:
        return ValidationError(_("This coupon expired on %(date)s.") % {"date": coupon.valid_until.date().isoformat()},
                               code="coupon_expired", details={"coupon": coupon.code})
    if coupon.valid_from is not None and coupon.valid_from > now:
        return ValidationError(_("This coupon is valid from %(date)s.") % {"date": coupon.valid_from.date().isoformat()},
                               code="coupon_not_yet_valid", details={"coupon": coupon.code})
    if not coupon.offer.active:
        return ValidationError(_("The offer of this coupon is paused."), code="offer_inactive",
                               details={"coupon": coupon.code})
    return None


def _replayed_redemption(workspace: Workspace, key: str, coupon_id: int | None) -> Redemption | None:
    row = scoped(Redemption, workspace).filter(key=key).first()
    if row is not None and coupon_id is not None and row.coupon_id != coupon_id:
        raise Conflict(_("idempotency key %(key)r was already used for a different operation") % {"key": key},
                       code="idempotency_key_reused", details={"redemption_id": row.pk})
    return row


def find_coupon(workspace: Workspace, code: Any) -> Coupon:
    text = codes.normalize(code)
    coupon = (scoped(Coupon, workspace).select_related("offer").filter(code=text).first()
              if codes.looks_like_code(text) else None)
    if coupon is None:
        raise NotFound(_("No coupon %(code)s in this workspace.") % {"code": str(code)[:40]}, code="unknown_coupon",
                       details={"field": "code"})
    return coupon


def redeem(workspace: Workspace, code: Any, *, key: str, actor: str, role: str, user_id: int | None = None,
           store: Store | int | str | None = None, amount: Any = None, at: dt.datetime | None = None,
           member_id: int | None = None) -> Redemption:
    """Use a coupon once at a counter. ``amount`` is the bill (needed when the offer has a minimum
    spend or takes a percentage); ``member_id``, when the clerk looked a member up, must be the
    coupon's owner. Errors have stable codes: unknown_coupon, already_redeemed, coupon_expired,
    coupon_not_yet_valid, offer_inactive, below_minimum_spend, store_required, store_not_allowed,
    store_not_assigned, foreign_coupon; a replayed ``key`` returns the first redemption."""
    key = clean_key(key)
    actor = _actor(actor)
    coupon = find_coupon(workspace, code)
    replay = _replayed_redemption(workspace, key, coupon.pk)
    if replay is not None:
        return replay
    if member_id is not None and coupon.member_id != member_id:
        raise ValidationError(_("This coupon belongs to another member."), code="foreign_coupon",
                              details={"field": "code"})
    bill = clean_money(amount, "amount")
    offer = coupon.offer
    row = _store_for(workspace, offer, store, role=role, user_id=user_id)
    now = _now(at)
    problem = _coupon_state_error(coupon, now)
    if problem is not None:
        raise problem
    if offer.min_spend is not None and offer.min_spend > 0 and (bill is None or bill < offer.min_spend):
        raise ValidationError(_("This coupon needs a bill of at least ¥%(min)s.") % {"min": offer.min_spend},
                              code="below_minimum_spend", details={"field": "amount", "min_spend": str(offer.min_spend)})

    try:
        with transaction.atomic():
            changed = (Coupon.objects.filter(pk=coupon.pk, status=CouponStatus.ISSUED, uses__lt=F("max_uses"))
                       .filter(Q(valid_until__isnull=True) | Q(valid_until__gt=now))
                       .filter(Q(valid_from__isnull=True) | Q(valid_from__lte=now))
                       .update(uses=F("uses") + 1, redeemed_at=now,
                               status=Case(When(uses__gte=F("max_uses") - 1, then=Value(CouponStatus.REDEEMED)),
                                           default=Value(CouponStatus.ISSUED))))
            if changed != 1:
                raise _Lost()
            redemption = Redemption.objects.create(
                workspace=workspace, coupon=coupon, offer=offer, member_id=coupon.member_id, store=row,
                clerk_id=user_id, actor=actor, key=key, amount=bill, discount=_discount(offer, bill), at=now)
            _record_interaction(workspace, redemption, coupon, row)
            hooks.emit(hooks.COUPON_REDEEMED, workspace=workspace, member_id=coupon.member_id, coupon_id=coupon.pk,
                       offer_id=offer.pk, store_id=row.pk if row else None, at=now)
            return redemption
    except (_Lost, IntegrityError):
        # Another counter (or a replay of this key) got there first: its committed result decides.
        replay = _replayed_redemption(workspace, key, coupon.pk)
        if replay is not None:
            return replay
        coupon.refresh_from_db()
        problem = _coupon_state_error(coupon, now)
        if problem is not None:
            raise problem from None
        raise Conflict(_("The coupon changed while it was being redeemed: try again."), code="redeem_retry",
                       details={"coupon": coupon.code}) from None


class _Lost(Exception):
    """The conditional UPDATE changed no row."""


def _record_interaction(workspace: Workspace, redemption: Redemption, coupon: Coupon, store: Store | None) -> None:
    from shequn.interactions import services as interactions

    props: dict[str, Any] = {"event": "coupon_redeemed", "coupon": coupon.code, "offer_id": coupon.offer_id,
                             "offer": coupon.offer.name, "redemption_id": redemption.pk,
                             "discount": str(redemption.discount)}
    if store is not None:
        props["store"] = store.name
    interactions.ingest(workspace, {
        "member_id": coupon.member_id, "type": "custom", "channel": "store", "direction": "in",
        "occurred_at": redemption.at, "source": INTERACTION_SOURCE, "external_id": f"redemption:{redemption.pk}",
        "properties": props, **({"amount": str(redemption.amount)} if redemption.amount is not None else {}),
    }, actor=redemption.actor)


def void_redemption(workspace: Workspace, redemption_id: Any, *, reason: str, actor: str,
                    at: dt.datetime | None = None) -> RedemptionVoid:
    """Cancel a redemption (a mistake at the counter, a refunded bill): the coupon gets the use back,
    an audit entry says who and why. Voiding twice is ``already_voided``."""
    try:
        redemption = get_scoped(Redemption, workspace, redemption_id)
    except NotFound:
        raise NotFound(_("redemption %(id)s not found") % {"id": redemption_id}, code="not_found",
                       details={"field": "redemption_id"}) from None
    reason = str(reason or "").strip()
    if not reason or len(reason) > 200:
        raise ValidationError(_("Say why the redemption is voided (at most 200 characters)."), code="reason_required",
                              details={"field": "reason"})
    actor = _actor(actor)
    now = _now(at)
    with transaction.atomic():
        try:
            with transaction.atomic():
                void = RedemptionVoid.objects.create(workspace=workspace, redemption=redemption, reason=reason,
                                                     actor=actor, at=now)
        except IntegrityError:
            raise Conflict(_("This redemption was already voided."), code="already_voided",
                           details={"redemption_id": redemption.pk}) from None
        changed = Coupon.objects.filter(pk=redemption.coupon_id, uses__gt=0).update(
            uses=F("uses") - 1, status=CouponStatus.ISSUED)
        if changed != 1:
            raise Conflict(_("The coupon of this redemption has no use to give back."), code="inconsistent",
                           details={"redemption_id": redemption.pk})
        audit.record(workspace, actor, "offers.redemption_voided", redemption,
                     {"reason": reason, "coupon_id": redemption.coupon_id, "offer_id": redemption.offer_id})
    return void


# ---------------------------------------------------------------------------------------------
# clips (personalised offers)


def clip_offer(workspace: Workspace, member_id: int, offer_id: int, *, actor: str) -> OfferClip:
    """A member clips a personalised offer (idempotent: clipping again returns the same clip)."""
    offer = get_offer(workspace, offer_id)
    mid = _member_id(workspace, member_id)
    now = clock.now()
    if not offer.clippable or not offer.active or (offer.valid_until is not None and offer.valid_until <= now):
        raise ValidationError(_("This offer cannot be clipped."), code="not_clippable", details={"field": "offer_id"})
    _actor(actor)
    with transaction.atomic():
        clip, _created = OfferClip.objects.get_or_create(workspace=workspace, offer=offer, member_id=mid)
    return clip


def redeem_clip(workspace: Workspace, member_id: int, offer_id: int, *, key: str, actor: str, role: str,
                user_id: int | None = None, store: Store | int | str | None = None, amount: Any = None,
                at: dt.datetime | None = None) -> Redemption:
    """Apply a clipped offer at the counter: issue its coupon and redeem it, in one transaction. A
    clip is used once; a replayed ``key`` returns the first redemption."""
    key = clean_key(key)
    mid = _member_id(workspace, member_id)
    replay = _replayed_redemption(workspace, key, None)
    if replay is not None:
        if replay.member_id != mid or replay.offer_id != int(offer_id):
            raise Conflict(_("idempotency key %(key)r was already used for a different operation") % {"key": key},
                           code="idempotency_key_reused", details={"redemption_id": replay.pk})
        return replay
    clip = scoped(OfferClip, workspace).filter(member_id=mid, offer_id=offer_id).first()
    if clip is None:
        raise NotFound(_("The member has not clipped this offer."), code="unknown_clip", details={"field": "offer_id"})
    now = _now(at)
    with transaction.atomic():
        coupon, _created = issue_coupon(workspace, clip.offer_id, mid, key=f"clip:{clip.pk}", source=Source.CLIP,
                                        actor=actor, at=now)
        OfferClip.objects.filter(pk=clip.pk, coupon__isnull=True).update(coupon=coupon)
        return redeem(workspace, coupon.code, key=key, actor=actor, role=role, user_id=user_id, store=store,
                      amount=amount, at=now, member_id=mid)


# ---------------------------------------------------------------------------------------------
# claim codes (campaign QR) and share-after-consumption codes


@transaction.atomic
def create_claim_code(workspace: Workspace, offer_id: int, name: str, *, actor: str) -> ClaimCode:
    offer = get_offer(workspace, offer_id)
    name = str(name or "").strip()[:100] or offer.name
    for attempt in range(5):
        try:
            with transaction.atomic():
                row = ClaimCode.objects.create(workspace=workspace, offer=offer, name=name, code=codes.new_code())
            break
        except IntegrityError:
            if attempt == 4:
                raise
    audit.record(workspace, _actor(actor), "offers.claim_code_created", row, {"offer_id": offer.pk})
    return row


def resolve_member(workspace: Workspace, member_id: Any = None, identity: Mapping[str, str] | None = None, *,
                   actor: str) -> int:
    """The member a claim is for: by id (checked in the workspace), or by an identity — a new one
    (a first-time scanner) creates the member."""
    from shequn.members import services as members

    if member_id not in (None, ""):
        return _member_id(workspace, member_id)
    if not identity:
        raise ValidationError(_("Give member_id or an identity."), code="no_member", details={"field": "member"})
    return int(members.upsert_member(workspace, [identity], overwrite=False, actor=actor,
                                     reason="claimed an offer").member.pk)


def claim(workspace: Workspace, code: Any, member_id: int, *, actor: str, at: dt.datetime | None = None) -> tuple[
        Coupon, bool]:
    """A member scanned a campaign QR: one coupon of its offer per member (a second scan returns it)."""
    text = codes.normalize(code)
    row = scoped(ClaimCode, workspace).filter(code=text, active=True).first() if text else None
    if row is None:
        raise NotFound(_("Unknown or closed claim code."), code="unknown_claim_code", details={"field": "code"})
    return issue_coupon(workspace, row.offer_id, member_id, key=f"claim:{row.pk}:{int(member_id)}",
                        source=Source.CLAIM, actor=actor, at=at)


@transaction.atomic
def create_activity_code(workspace: Workspace, data: Mapping[str, Any], *, actor: str) -> ActivityCode:
    """A table code for "share after consumption": ``name``, ``store`` (code), ``table``,
    ``reward_offer`` (id) and/or ``reward_points`` (+ ``point_type``)."""
    name = str(data.get("name") or "").strip()[:100]
    if not name:
        raise ValidationError(_("An activity code needs a name."), code="invalid_field", details={"field": "name"})
    store = get_store(workspace, data["store"]) if data.get("store") not in (None, "") else None
    offer = get_offer(workspace, data["reward_offer"]) if data.get("reward_offer") not in (None, "") else None
    points = _whole(data.get("reward_points"), "reward_points", low=1)
    point_type = str(data.get("point_type") or "points").strip()[:32]
    if offer is None and not points:
        raise ValidationError(_("Give a reward: an offer, points, or both."), code="no_reward",
                              details={"field": "reward_offer"})
    if points:
        from shequn.loyalty import services as loyalty

        loyalty.get_point_type(workspace, point_type)
    for attempt in range(5):
        try:
            with transaction.atomic():
                row = ActivityCode.objects.create(workspace=workspace, store=store,
                                                  table=str(data.get("table") or "").strip()[:32], name=name,
                                                  code=codes.new_code(), reward_offer=offer, reward_points=points,
                                                  point_type=point_type)
            break
        except IntegrityError:
            if attempt == 4:
                raise
    audit.record(workspace, _actor(actor), "offers.activity_code_created", row, {"name": name})
    return row


def claim_activity(workspace: Workspace, code: Any, member_id: int, *, actor: str,
                   at: dt.datetime | None = None) -> tuple[ActivityClaim, bool]:
    """A member scanned a table code and shared: record the ``share`` interaction and give the reward,
    once per member per code per day (workspace time zone). Returns (claim, created)."""
    from shequn.interactions import services as interactions
    from shequn.loyalty import services as loyalty

    text = codes.normalize(code)
    activity = (scoped(ActivityCode, workspace).select_related("store").filter(code=text, active=True).first()
                if text else None)
    if activity is None:
        raise NotFound(_("Unknown or closed activity code."), code="unknown_activity_code", details={"field": "code"})
    mid = _member_id(workspace, member_id)
    actor = _actor(actor)
    now = _now(at)
    day = now.astimezone(ZoneInfo(workspace.default_timezone)).date()
    stored = ActivityClaim.objects.filter(activity=activity, member_id=mid, day=day).first()
    if stored is not None:
        return stored, False
    try:
        with transaction.atomic():
            row = ActivityClaim.objects.create(workspace=workspace, activity=activity, member_id=mid, day=day, at=now)
            props: dict[str, Any] = {"activity_code": activity.code, "activity": activity.name}
            if activity.store is not None:
                props["store"] = activity.store.name
            if activity.table:
                props["table"] = activity.table
            result = interactions.ingest(workspace, {
                "member_id": mid, "type": "share", "channel": "store", "direction": "in", "occurred_at": now,
                "source": INTERACTION_SOURCE, "external_id": f"share:{row.pk}", "properties": props}, actor=actor)
            row.interaction_id = result.id
            if activity.reward_offer_id:
                coupon, _created = issue_coupon(workspace, activity.reward_offer_id, mid, key=f"share:{row.pk}",
                                                source=Source.SHARE, actor=actor, at=now)
                row.coupon = coupon
            if activity.reward_points:
                entry = loyalty.earn(workspace, mid, activity.point_type, activity.reward_points,
                                     reason=_("Shared after consumption: %(name)s") % {"name": activity.name},
                                     idempotency_key=f"offers:share:{row.pk}", actor=actor,
                                     source_interaction_id=result.id)
                row.point_entry_id = entry.pk
            row.save(update_fields=["interaction_id", "coupon", "point_entry_id"])
            return row, True
    except IntegrityError:
        stored = ActivityClaim.objects.filter(activity=activity, member_id=mid, day=day).first()
        if stored is None:
            raise
        return stored, False


# ---------------------------------------------------------------------------------------------
# rules: tier upgrade (hook) and birthday (periodic task)


def on_tier_changed(*, workspace: Workspace, member_id: int, old_tier: str | None, new_tier: str | None,
                    direction: str, at: dt.datetime, **_kwargs: Any) -> None:
    """hooks.TIER_CHANGED: an upgrade to a tier issues every active offer whose trigger is
    ``tier_upgrade`` to that tier's code — once per member, offer and tier (key
    ``tier:<offer>:<tier>:<member>``). Runs in the tier change's transaction; a limit reached
    (stock, per member) skips the coupon rather than undoing the upgrade."""
    if direction != "up" or not new_tier:
        return
    offers = list(scoped(Offer, workspace).filter(active=True, trigger=Trigger.TIER_UPGRADE, trigger_tier=new_tier)
                  .filter(Q(valid_until__isnull=True) | Q(valid_until__gt=at)).values_list("pk", flat=True))
    for offer_id in offers:
        with transaction.atomic():
            _issue(workspace, offer_id, {int(member_id): f"tier:{offer_id}:{new_tier}:{int(member_id)}"},
                   source=Source.TIER, actor="hook:tier_changed", at=at)


def _birthday_matches(birthday: dt.date, local_day: dt.date) -> bool:
    if (birthday.month, birthday.day) == (local_day.month, local_day.day):
        return True
    # 29 February birthdays are celebrated on 28 February in other years.
    leap = local_day.year % 4 == 0 and (local_day.year % 100 != 0 or local_day.year % 400 == 0)
    return (birthday.month, birthday.day) == (2, 29) and not leap and (local_day.month, local_day.day) == (2, 28)


def issue_birthday_coupons(workspace: Workspace, now: dt.datetime | None = None) -> int:
    """Issue the workspace's ``birthday`` offers to members whose birthday it is today in their own
    time zone (``Member.timezone``, else the workspace's). Key ``birthday:<offer>:<member>:<year>``:
    once a year, however often this runs. Returns the number of coupons issued."""
    from shequn.members.models import Member, MemberStatus

    now = _now(now)
    offers = list(scoped(Offer, workspace).filter(active=True, trigger=Trigger.BIRTHDAY)
                  .filter(Q(valid_until__isnull=True) | Q(valid_until__gt=now)).values_list("pk", flat=True))
    if not offers:
        return 0
    # Today's date somewhere on Earth is one of the UTC dates yesterday, today or tomorrow.
    utc_day = now.astimezone(dt.UTC).date()
    days = [utc_day + dt.timedelta(days=d) for d in (-1, 0, 1)]
    month_days = Q()
    for d in days:
        month_days |= Q(birthday__month=d.month, birthday__day=d.day)
        if (d.month, d.day) == (2, 28):
            month_days |= Q(birthday__month=2, birthday__day=29)
    candidates = (scoped(Member, workspace).filter(status=MemberStatus.ACTIVE, birthday__isnull=False)
                  .filter(month_days).values_list("pk", "birthday", "timezone"))
    keys_by_year: dict[int, dict[int, str]] = {}
    for mid, birthday, tz_name in candidates:
        try:
            zone = ZoneInfo(tz_name or workspace.default_timezone)
        except (KeyError, ValueError):
            zone = ZoneInfo(workspace.default_timezone)
        local = now.astimezone(zone).date()
        if _birthday_matches(birthday, local):
            keys_by_year.setdefault(local.year, {})[mid] = str(local.year)
    issued = 0
    for offer_id in offers:
        for year, members in keys_by_year.items():
            keys = {mid: f"birthday:{offer_id}:{mid}:{year}" for mid in members}
            with transaction.atomic():
                issued += _issue(workspace, offer_id, keys, source=Source.BIRTHDAY, actor="task:offers.birthday",
                                 at=now).created
    return issued

