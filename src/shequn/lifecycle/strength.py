"""Relationship strength (关系强度): a pure function of a member's engagement counters.

The formula (also in docs/lifecycle.md):

* ``activity`` — interactions counted with an exponential decay of half-life ``HALF_LIFE`` (30 days),
  kept incrementally: a new event at time t turns ``(score, at)`` into ``(score·2^(-(t-at)/H) + 1, t)``.
  It measures frequency and recency at once.
* ``balance`` — min(inbound, outbound) / max(inbound, outbound): 0 for a one-way relationship (the brand
  only broadcasts, or the member only talks and never hears back), 1 for a perfectly two-way one.
* ``span`` — days from the first to the last interaction.

Levels, from the top, the first that holds:

====== =============================================================================
亢 5   long, activity ≥ 8 and balance ≥ 0.5 (intense, two-way, for a long time)
长 4   strong and span ≥ 180 days
强 3   inbound ≥ 1, balance ≥ 0.25, activity ≥ 1 and last contact within 90 days
弱 2   inbound ≥ 1 and last contact within 90 days (one-way or infrequent)
潜在 1 any interaction (or only outbound ones, or gone quiet for over 90 days)
无 0   no interaction at all, or none within 365 days
====== =============================================================================
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

HALF_LIFE = dt.timedelta(days=30)
QUIET_AFTER = dt.timedelta(days=90)
GONE_AFTER = dt.timedelta(days=365)
LONG_SPAN = dt.timedelta(days=180)


def decay(score: float, at: dt.datetime | None, to: dt.datetime) -> float:
    if at is None:
        return 0.0
    return score * 2 ** (-((to - at) / HALF_LIFE))


def add_event(score: float, at: dt.datetime | None, when: dt.datetime) -> tuple[float, dt.datetime]:
    """Fold one event into the decayed counter; events may arrive out of order."""
    if at is None:
        return 1.0, when
    if when >= at:
        return decay(score, at, when) + 1.0, when
    return score + 2 ** (-((at - when) / HALF_LIFE)), at


@dataclass(frozen=True)
class Engagement:
    inbound: int
    outbound: int
    first_at: dt.datetime | None
    last_at: dt.datetime | None
    activity: float
    activity_at: dt.datetime | None


def balance(inbound: int, outbound: int) -> float:
    hi = max(inbound, outbound)
    return min(inbound, outbound) / hi if hi else 0.0


def strength(e: Engagement, now: dt.datetime) -> int:
    if e.last_at is None or e.inbound + e.outbound == 0 or now - e.last_at > GONE_AFTER:
        return 0
    if e.inbound == 0 or now - e.last_at > QUIET_AFTER:
        return 1
    activity = decay(e.activity, e.activity_at, now)
    bal = balance(e.inbound, e.outbound)
    if bal < 0.25 or activity < 1.0:
        return 2
    span = (e.last_at - e.first_at) if e.first_at else dt.timedelta(0)
    if span < LONG_SPAN:
        return 3
    if activity >= 8.0 and bal >= 0.5:
        return 5
    return 4
