"""Domain events inside one process: one domain announces that something happened, others react.

A domain that wants to react registers a handler from its ``AppConfig.ready()``::

    hooks.on(hooks.TIER_CHANGED, grant_upgrade_coupons)

and the domain where it happens calls ``hooks.emit(hooks.TIER_CHANGED, workspace=..., ...)`` inside
its writing transaction. Handlers run synchronously in that transaction, in registration order, so a
failure rolls the whole change back; slow work is enqueued on commit by the handler. This is not
Django's signal machinery: the event names and their keyword arguments are listed here, in one place.

**Planned statements.** A handler may also say what it would write as SQL statements, without
running anything: ``hooks.on(EVENT, handler, plan=planner)``. The domain where the event happens
can then ask :func:`plan` *before* it writes, and send its own statement and the handlers' in one
text (PostgreSQL runs several statements sent as one text in order, in one transaction), so the
event costs no round trip of its own — the points ledger does so for an award outside a transaction.
A planner gets a *guard* — an SQL condition with its parameters, true only where the emitter's own
write happened in the same transaction; each parameter is cast in the text, so a planner may
prepare its statement with them as of type ``unknown`` — and the event's keyword arguments except
``entry_id`` (not known before the write). It returns statements that write only where the guard
holds, ``[]`` when the handler would do nothing, or ``None`` when it needs to run (to read something,
to decide): the emitter then runs its usual transaction and calls :func:`emit`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

Handler = Callable[..., None]
# An SQL text with its parameters (``%s`` placeholders).
Statement = tuple[str, Sequence[Any]]
Planner = Callable[..., "list[Statement] | None"]

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
_planners: dict[str, dict[Handler, Planner]] = defaultdict(dict)


def on(event: str, handler: Handler, *, plan: Planner | None = None) -> Handler:
    """Register ``handler`` for ``event`` (idempotent: registering twice keeps one), with the
    ``plan`` that says what it would write as statements, if it has one (see the module doc)."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    if handler not in _handlers[event]:
        _handlers[event].append(handler)
    if plan is not None:
        _planners[event][handler] = plan
    return handler


def plan(event: str, guard: Statement, **kwargs: Any) -> list[Statement] | None:
    """What every handler of ``event`` would write for it, as statements guarded by ``guard``, in
    registration order — or ``None`` when one of them has to run instead (no planner, or its
    planner declines), and the emitter must call :func:`emit` in its transaction."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    out: list[Statement] = []
    for handler in list(_handlers[event]):
        planner = _planners[event].get(handler)
        statements = planner(guard, **kwargs) if planner is not None else None
        if statements is None:
            return None
        out += statements
    return out


def emit(event: str, **kwargs: Any) -> None:
    """Call every handler of ``event`` with ``kwargs``, in registration order."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    for handler in list(_handlers[event]):
        handler(**kwargs)


def handlers(event: str) -> list[Handler]:
    return list(_handlers[event])
