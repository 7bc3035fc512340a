"""Domain events inside one process: one domain announces that something happened, others react.

A domain that wants to react registers a handler from its ``AppConfig.ready()``::

    hooks.on(hooks.TIER_CHANGED, grant_upgrade_coupons)

and the domain where it happens calls ``hooks.emit(hooks.TIER_CHANGED, workspace=..., ...)`` inside
its writing transaction. Handlers run synchronously in that transaction, in registration order, so a
failure rolls the whole change back; slow work is enqueued on commit by the handler. This is not
Django's signal machinery: the event names and their keyword arguments are listed here, in one place.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

Handler = Callable[..., None]

# Points were credited or debited on a member's balance (earn, adjust, reversal, expiry, spend,
# transfer). kwargs: workspace, member_id (int), point_type (code), kind (the entry kind), amount (int:
# positive adds, negative removes), at (aware datetime), entry_id (int).
POINTS_CHANGED = "points.changed"
# A member's tier changed. kwargs: workspace, member_id (int), old_tier (code or None),
# new_tier (code or None), direction ("up" | "down"), at (aware datetime).
TIER_CHANGED = "tier.changed"
# A member earned a badge. kwargs: workspace, member_id, badge (code), at.
BADGE_AWARDED = "badge.awarded"
# A member completed a task/quest. kwargs: workspace, member_id, task (code), at.
TASK_COMPLETED = "task.completed"
# A coupon was redeemed at a counter or online. kwargs: workspace, member_id (int or None),
# coupon_id, offer_id, store_id (int or None), at.
COUPON_REDEEMED = "coupon.redeemed"
# A channel QR code was scanned. kwargs: workspace, member_id, code_id, scene (str), new_follower (bool), at.
CHANNEL_CODE_SCANNED = "channel_code.scanned"

EVENTS = frozenset({POINTS_CHANGED, TIER_CHANGED, BADGE_AWARDED, TASK_COMPLETED, COUPON_REDEEMED, CHANNEL_CODE_SCANNED})

_handlers: dict[str, list[Handler]] = defaultdict(list)


def on(event: str, handler: Handler) -> Handler:
    """Register ``handler`` for ``event`` (idempotent: registering twice keeps one)."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    if handler not in _handlers[event]:
        _handlers[event].append(handler)
    return handler


def emit(event: str, **kwargs: Any) -> None:
    """Call every handler of ``event`` with ``kwargs``, in registration order."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    for handler in list(_handlers[event]):
        handler(**kwargs)


def handlers(event: str) -> list[Handler]:
    return list(_handlers[event])
