"""The conditions rules of several domains put on an interaction (stage rules, earn rules …)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def matches(row: Any, *, interaction_type: str = "", direction: str = "", channel: str = "",
            touchpoint_id: int | None = None, min_amount: Decimal | None = None) -> bool:
    """Does interaction ``row`` meet every condition given? Empty / None means "any"."""
    if interaction_type and interaction_type != row.type:
        return False
    if direction and direction != row.direction:
        return False
    if channel and channel != row.channel:
        return False
    if touchpoint_id and touchpoint_id != row.touchpoint_id:
        return False
    if min_amount is not None and (row.amount is None or row.amount < min_amount):
        return False
    return True
