"""Reads of the lifecycle domain (no writes): the pipeline funnel with time in stage, the
relationship-strength distribution and the latest stage changes. Every figure comes from an
aggregate query (GROUP BY or a window function); nothing loops over members."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from django.db.models import Count, F, Window
from django.db.models.functions import Lead

from shequn.core.models import Workspace
from shequn.core.tenancy import scoped
from shequn.members.models import Member, MemberStatus, Strength

from .models import Stage, StageChange

SECONDS_PER_DAY = 86_400


def _active_members(workspace: Workspace):  # type: ignore[no-untyped-def]
    return scoped(Member, workspace).filter(status=MemberStatus.ACTIVE)


def time_in_stage(workspace: Workspace) -> dict[int, float]:
    """Stage id → median days that members spent in the stage before moving on.

    A stay starts with the StageChange that brought the member into the stage and ends with the
    member's next StageChange, if that change leaves this very stage (forward, backward or by a
    merge alike). Stays that have not ended — members still in the stage — are not counted: the
    figure answers "how long until people move on", not "how long have the current ones been
    waiting". A next change that does not start from the stage (history recorded out of order)
    ends no stay. One query: the next change of each change comes from ``LEAD`` windows over the
    member's history."""
    history = {"partition_by": [F("member_id")], "order_by": [F("at").asc(), F("id").asc()]}
    rows = (
        scoped(StageChange, workspace)
        .filter(member__status=MemberStatus.ACTIVE, to_stage__isnull=False)
        .annotate(next_at=Window(Lead("at"), **history), next_from=Window(Lead("from_stage_id"), **history))
        .values_list("to_stage_id", "at", "next_at", "next_from")
    )
    stays: dict[int, list[float]] = defaultdict(list)
    for stage_id, entered, left, left_from in rows.iterator(chunk_size=5000):
        if left is not None and left_from == stage_id:
            stays[stage_id].append((left - entered).total_seconds() / SECONDS_PER_DAY)
    return {stage_id: float(statistics.median(days)) for stage_id, days in stays.items()}


def funnel(workspace: Workspace) -> list[dict[str, Any]]:
    """The pipeline (消费者管道) in stage order. For each stage: ``members`` (active members at the
    stage now), ``reached`` (active members at this stage or a later one), ``conversion`` (reached /
    reached of the previous stage; None for the first stage or when the previous reached nobody) and
    ``time_in_stage`` (median days spent in the stage before moving on; None without finished stays)."""
    stages = list(scoped(Stage, workspace).order_by("position", "pk").values("pk", "key", "name", "position"))
    counts = dict(_active_members(workspace).filter(stage__isnull=False).values_list("stage_id")
                  .annotate(n=Count("pk")).order_by())
    medians = time_in_stage(workspace)
    out: list[dict[str, Any]] = []
    reached_after = 0
    reached_by_index: list[int] = [0] * len(stages)
    for i in range(len(stages) - 1, -1, -1):
        reached_after += counts.get(stages[i]["pk"], 0)
        reached_by_index[i] = reached_after
    for i, s in enumerate(stages):
        reached = reached_by_index[i]
        previous = reached_by_index[i - 1] if i else None
        out.append({
            "stage_id": s["pk"],
            "stage_key": s["key"],
            "name": s["name"],
            "position": s["position"],
            "members": counts.get(s["pk"], 0),
            "reached": reached,
            "conversion": (reached / previous) if previous else None,
            "time_in_stage": medians.get(s["pk"]),
        })
    return out


def strength_distribution(workspace: Workspace) -> list[dict[str, Any]]:
    """Active members per relationship-strength level (关系强度), all six levels, weakest first."""
    counts = dict(_active_members(workspace).values_list("strength").annotate(n=Count("pk")).order_by())
    return [{"level": level.value, "label": str(level.label), "members": counts.get(level.value, 0)}
            for level in Strength]


def recent_changes(workspace: Workspace, limit: int = 20) -> list[StageChange]:
    """The latest stage changes, newest first, with member, stages and rule loaded (no N+1)."""
    limit = max(1, min(int(limit), 500))
    return list(scoped(StageChange, workspace).select_related("member", "from_stage", "to_stage", "rule")
                .order_by("-at", "-id")[:limit])
