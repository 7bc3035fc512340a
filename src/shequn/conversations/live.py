"""Live answers of menu options: the member's own data, read from other domains when they ask.

Read-only, a few indexed queries each, on the fast reply path. Each function returns the text sent to
the member (docs/menus.md lists what each shows):

* ``points`` — ``shequn.loyalty.queries`` balances of every point type;
* ``coupons`` — ``shequn.offers.queries.redeemable_coupons`` (no coupons while that module is absent);
* ``latest_purchase`` — the member's latest interaction of type ``purchase``;
* ``booking`` — the member's next event booking: an interaction of type ``custom`` with
  ``properties.kind == "booking"``, ``properties.event`` (name) and ``properties.event_at`` (ISO time),
  not ``properties.status == "cancelled"``, whose ``event_at`` is still ahead.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from shequn.core.models import Workspace
from shequn.core.tenancy import scoped

from .models import LiveData

logger = logging.getLogger("shequn.conversations")

MAX_COUPONS = 5
BOOKINGS_SCANNED = 50


def unknown_member() -> str:
    return _("We could not find your membership yet. Register as a member to check your account here.")


def _tz(workspace: Workspace) -> ZoneInfo:
    try:
        return ZoneInfo(workspace.default_timezone)
    except (ValueError, KeyError):
        return ZoneInfo("UTC")


def _local(workspace: Workspace, value: dt.datetime) -> str:
    return value.astimezone(_tz(workspace)).strftime("%Y-%m-%d %H:%M")


def points(workspace: Workspace, member_id: int, at: dt.datetime) -> str:
    from shequn.loyalty import queries as loyalty

    types = {pt.code: pt for pt in loyalty.point_types(workspace)}
    if not types:
        return _("This account has no points programme.")
    lines = [_("Your points:")]
    for b in loyalty.balances(workspace, member_id):
        pt = types.get(b.point_type)
        name = getattr(pt, "name", "") or b.point_type
        line = _("%(name)s: %(available)s available") % {"name": name, "available": b.available}
        if b.pending:
            line += _(" (%(pending)s pending)") % {"pending": b.pending}
        lines.append(line)
    return "\n".join(lines)


def _offers_queries() -> Any:
    try:
        return importlib.import_module("shequn.offers.queries")
    except ImportError:
        return None


def coupons(workspace: Workspace, member_id: int, at: dt.datetime) -> str:
    module = _offers_queries()
    found = list(module.redeemable_coupons(workspace, member_id, at=at)) if module is not None else []
    if not found:
        return _("You have no coupons to use right now.")
    lines = [_("Your coupons (%(n)s):") % {"n": len(found)}]
    for coupon in found[:MAX_COUPONS]:
        offer = getattr(coupon, "offer", None)
        name = getattr(offer, "name", "") or str(getattr(coupon, "code", ""))
        until = getattr(coupon, "valid_until", None)
        if until is not None:
            lines.append(_("%(name)s, valid until %(until)s") % {"name": name, "until": _local(workspace, until)})
        else:
            lines.append(name)
    if len(found) > MAX_COUPONS:
        lines.append(_("…and %(n)s more in the member centre.") % {"n": len(found) - MAX_COUPONS})
    return "\n".join(lines)


def latest_purchase(workspace: Workspace, member_id: int, at: dt.datetime) -> str:
    from shequn.interactions.models import Interaction

    row = (scoped(Interaction, workspace).filter(member_id=member_id, type="purchase", occurred_at__lte=at)
           .order_by("-occurred_at", "-id").values("occurred_at", "amount", "currency", "properties").first())
    if row is None:
        return _("We have no purchase of yours on record yet.")
    props = row["properties"] or {}
    items = props.get("items") if isinstance(props.get("items"), list) else []
    names = []
    for item in items[:5]:
        if isinstance(item, dict) and item.get("name"):
            qty = item.get("qty") or 1
            names.append(f"{item['name']}×{qty}" if qty != 1 else str(item["name"]))
    lines = [_("Your latest purchase: %(when)s") % {"when": _local(workspace, row["occurred_at"])}]
    if props.get("store"):
        lines.append(_("Store: %(store)s") % {"store": props["store"]})
    if names:
        lines.append(_("Items: %(items)s") % {"items": ", ".join(names)})
    if row["amount"] is not None:
        lines.append(_("Amount: %(amount)s %(currency)s") % {"amount": row["amount"], "currency": row["currency"] or ""})
    return "\n".join(line.rstrip() for line in lines)


def _event_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    parsed = parse_datetime(value)
    if parsed is None or parsed.tzinfo is None:
        return None
    return parsed


def booking(workspace: Workspace, member_id: int, at: dt.datetime) -> str:
    from shequn.interactions.models import Interaction

    rows = (scoped(Interaction, workspace).filter(member_id=member_id, type="custom", properties__kind="booking")
            .order_by("-occurred_at", "-id").values_list("properties", flat=True)[:BOOKINGS_SCANNED])
    upcoming: list[tuple[dt.datetime, dict[str, Any]]] = []
    for props in rows:
        if not isinstance(props, dict) or props.get("status") == "cancelled":
            continue
        when = _event_time(props.get("event_at"))
        if when is not None and when > at:
            upcoming.append((when, props))
    if not upcoming:
        return _("You have no upcoming event booking.")
    when, props = min(upcoming, key=lambda x: x[0])
    lines = [_("Your next booking: %(event)s") % {"event": props.get("event") or _("event")},
             _("Time: %(when)s") % {"when": _local(workspace, when)}]
    if props.get("place"):
        lines.append(_("Place: %(place)s") % {"place": props["place"]})
    if len(upcoming) > 1:
        lines.append(_("You have %(n)s upcoming bookings.") % {"n": len(upcoming)})
    return "\n".join(lines)


ANSWERS: dict[str, Callable[[Workspace, int, dt.datetime], str]] = {
    LiveData.POINTS: points,
    LiveData.COUPONS: coupons,
    LiveData.LATEST_PURCHASE: latest_purchase,
    LiveData.BOOKING: booking,
}


def answer(workspace: Workspace, kind: str, member_id: int | None, at: dt.datetime) -> str:
    """The live answer ``kind`` for the member (a notice when the member is not known)."""
    fn = ANSWERS.get(kind)
    if fn is None:
        return _("This option is not available.")
    if member_id is None:
        return unknown_member()
    return fn(workspace, member_id, at)
