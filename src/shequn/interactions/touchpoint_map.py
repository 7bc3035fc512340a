"""The touchpoint map (接触点地图) of the seed's touchpoint analysis — a read, never a write.

For each touchpoint of a workspace, over a window of days, it adds up the daily roll-ups
(``TouchpointDay``) in one aggregate query and places the touchpoint on a value × complexity plane:

* **trust** = (positive + 1) / (positive + negative + 2): the share of positive trust signals, with
  one imaginary positive and one imaginary negative signal added (Laplace smoothing). A touchpoint
  nobody has judged sits at 0.5 (no evidence either way) instead of 0 or 1, a single complaint does
  not drive a quiet touchpoint to 0, and the estimate moves to the raw share as signals accumulate.
  ``trust < 0.5`` holds exactly when negative signals outnumber positive ones.
* **value** = 0.5 · importance_norm + 0.5 · conversation_share, in 0–1: the seed's 会话价值
  (how much conversation passes through the touchpoint, relative to the busiest one) weighted
  equally with what the operator says matters (importance 1–5 mapped to 0–1).
* **complexity** is the operator's 1–5 score.

Quadrants split at ``value_threshold`` (0.5) and ``complexity_threshold`` (3); a point on a line
belongs to the high side. The seed's two lists:

* ``flagged`` — 高会话低信任: conversations at least the median of the touchpoints that had any
  conversation in the window, and trust < 0.5. They breed distrust and bad word of mouth: fix first.
* ``quiet_trusted`` — 低会话高信任: conversations below that median, and trust > 0.5. Members trust
  them; make them more visible.

The median (rather than a share of the busiest touchpoint) is the yardstick for "high conversation"
because it is robust to one dominant touchpoint: with a share rule, a single very busy touchpoint
would push every other one into "low conversation" and hide a second problem touchpoint.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass

from django.db.models import Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext

from shequn.core.clock import now as clock_now
from shequn.core.models import Workspace
from shequn.core.tenancy import scoped

from .models import Touchpoint

VALUE_THRESHOLD = 0.5
COMPLEXITY_THRESHOLD = 3


def quadrant_labels() -> dict[str, str]:
    """Quadrant key → label in the active language (Chinese by default)."""
    return {
        "high_value_high_complexity": gettext("High value · high complexity"),
        "high_value_low_complexity": gettext("High value · low complexity"),
        "low_value_high_complexity": gettext("Low value · high complexity"),
        "low_value_low_complexity": gettext("Low value · low complexity"),
    }


def quadrant_key(value: float, complexity: int, *, value_threshold: float = VALUE_THRESHOLD,
                 complexity_threshold: int = COMPLEXITY_THRESHOLD) -> str:
    v = "high_value" if value >= value_threshold else "low_value"
    c = "high_complexity" if complexity >= complexity_threshold else "low_complexity"
    return f"{v}_{c}"


def trust_score(positive: int, negative: int) -> float:
    """Laplace-smoothed share of positive signals: (positive + 1) / (positive + negative + 2)."""
    return (positive + 1) / (positive + negative + 2)


@dataclass(frozen=True)
class TouchpointPoint:
    code: str
    name: str
    channel: str
    function: str
    segment: str
    lifecycle_stage: str
    importance: int
    complexity: int
    consistency: int
    conversations: int
    inbound: int
    positive: int
    negative: int
    trust: float
    value: float
    quadrant: str
    flagged: bool
    quiet_trusted: bool
    quadrant_key: str = ""
    conversation_share: float = 0.0


@dataclass(frozen=True)
class TouchpointMap:
    points: list[TouchpointPoint]
    value_threshold: float
    complexity_threshold: int
    window_days: int
    conversation_median: float = 0.0
    since: dt.date | None = None
    until: dt.date | None = None

    @property
    def flagged(self) -> list[TouchpointPoint]:
        """高会话低信任, busiest first: the touchpoints to fix first."""
        return sorted((p for p in self.points if p.flagged), key=lambda p: (-p.conversations, p.code))

    @property
    def quiet_trusted(self) -> list[TouchpointPoint]:
        """低会话高信任, most trusted first: the touchpoints to make more visible."""
        return sorted((p for p in self.points if p.quiet_trusted), key=lambda p: (-p.trust, p.code))


def compute(workspace: Workspace, *, days: int = 90, now: dt.datetime | None = None) -> TouchpointMap:
    """The touchpoint map over the ``days`` local calendar days that end with the day of ``now``."""
    if days < 1:
        days = 1
    moment = now or clock_now()
    until = timezone.localtime(moment, timezone.get_default_timezone()).date()
    since = until - dt.timedelta(days=days - 1)
    window = Q(days__day__gte=since, days__day__lte=until)
    rows = list(
        scoped(Touchpoint, workspace)
        .annotate(
            conv=Coalesce(Sum("days__conversations", filter=window), 0),
            inb=Coalesce(Sum("days__inbound", filter=window), 0),
            pos=Coalesce(Sum("days__positive", filter=window), 0),
            neg=Coalesce(Sum("days__negative", filter=window), 0),
        )
        .order_by("code")
    )
    busiest = max((r.conv for r in rows), default=0)
    active = [r.conv for r in rows if r.conv > 0]
    median = float(statistics.median(active)) if active else 0.0
    labels = quadrant_labels()
    points: list[TouchpointPoint] = []
    for r in rows:
        share = r.conv / busiest if busiest else 0.0
        value = 0.5 * (r.importance - 1) / 4 + 0.5 * share
        trust = trust_score(r.pos, r.neg)
        key = quadrant_key(value, r.complexity)
        high_conversation = r.conv > 0 and r.conv >= median
        points.append(TouchpointPoint(
            code=r.code, name=r.name, channel=r.channel, function=r.function, segment=r.segment,
            lifecycle_stage=r.lifecycle_stage, importance=r.importance, complexity=r.complexity,
            consistency=r.consistency, conversations=r.conv, inbound=r.inb, positive=r.pos, negative=r.neg,
            trust=trust, value=value, quadrant=labels[key], flagged=high_conversation and trust < 0.5,
            quiet_trusted=not high_conversation and trust > 0.5, quadrant_key=key, conversation_share=share,
        ))
    points.sort(key=lambda p: (-p.conversations, p.code))
    return TouchpointMap(points=points, value_threshold=VALUE_THRESHOLD, complexity_threshold=COMPLEXITY_THRESHOLD,
                         window_days=days, conversation_median=median, since=since, until=until)
