"""Reads of engagement (no writes): definitions, a member's summary, leaderboards with their
tie-break, tier distribution and history."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q

from shequn.core import clock
from shequn.core.errors import ValidationError
from shequn.core.models import Workspace
from shequn.core.tenancy import scoped

from .models import (
    Badge,
    BadgeAward,
    Board,
    CheckIn,
    LeaderboardScore,
    Level,
    MemberStatus,
    MemberStreak,
    Period,
    StreakReward,
    Task,
    TaskProgress,
    Tier,
    TierChange,
)
from .services import (
    BOARD_PERIODS,
    NO_PERIOD,
    level_for,
    member_zone,
    period_start,
    programme,
    qualified_tier,
    streak_alive,
    task_period_start,
    window_figures,
    ws_zone,
)


def tiers(workspace: Workspace) -> list[Tier]:
    return list(scoped(Tier, workspace).order_by("rank"))


def badges(workspace: Workspace) -> list[Badge]:
    return list(scoped(Badge, workspace).order_by("pk"))


def tasks(workspace: Workspace) -> list[Task]:
    return list(scoped(Task, workspace).select_related("badge").order_by("position", "pk"))


def levels(workspace: Workspace) -> list[Level]:
    return list(scoped(Level, workspace).order_by("number"))


def streak_rewards(workspace: Workspace) -> list[StreakReward]:
    return list(scoped(StreakReward, workspace).select_related("badge").order_by("days"))


def badge_counts(workspace: Workspace) -> dict[int, int]:
    """How many members hold each badge."""
    return dict(scoped(BadgeAward, workspace).values_list("badge_id").annotate(n=Count("pk")).order_by())


def task_completions(workspace: Workspace) -> dict[int, int]:
    return dict(scoped(TaskProgress, workspace).filter(completed_at__isnull=False).values_list("task_id")
                .annotate(n=Count("pk")).order_by())


def tier_distribution(workspace: Workspace) -> list[dict[str, Any]]:
    """Members per tier, lowest tier first. Members without a status row are on the lowest tier;
    only active members are counted."""
    from shequn.members.models import Member
    from shequn.members.models import MemberStatus as Active

    rows = tiers(workspace)
    if not rows:
        return []
    held = dict(scoped(MemberStatus, workspace).filter(tier__isnull=False, member__status=Active.ACTIVE)
                .values_list("tier_id").annotate(n=Count("pk")).order_by())
    total = scoped(Member, workspace).filter(status=Active.ACTIVE).count()
    out = [{"code": t.code, "name": t.name, "rank": t.rank, "members": held.get(t.pk, 0)} for t in rows]
    out[0]["members"] += max(0, total - sum(held.values()))
    return out


def recent_tier_changes(workspace: Workspace, *, limit: int = 20) -> list[TierChange]:
    return list(scoped(TierChange, workspace).select_related("member").only(
        "pk", "member_id", "member__display_name", "old_tier", "new_tier", "direction", "cause", "contribution",
        "influence", "at").order_by("-at", "-pk")[:limit])


def tier_history(workspace: Workspace, member_id: int) -> list[TierChange]:
    return list(scoped(TierChange, workspace).filter(member_id=member_id).order_by("-at", "-pk"))


# ---------------------------------------------------------------------------------------------
# leaderboards


@dataclass(frozen=True)
class Ranked:
    rank: int
    member_id: int
    name: str
    score: int
    reached_at: dt.datetime


def board_period(workspace: Workspace, board: str, period: str, at: dt.datetime | None = None) -> tuple[str, dt.date]:
    """Validate a (board, period) pair and give the start of the period holding ``at``."""
    if board not in Board.values:
        raise ValidationError(f"board must be one of {', '.join(Board.values)}", code="invalid_board",
                              details={"field": "board"})
    if period not in BOARD_PERIODS[board]:
        raise ValidationError(f"period must be one of {', '.join(BOARD_PERIODS[board])} for {board}",
                              code="invalid_period", details={"field": "period"})
    day = (at or clock.now()).astimezone(ws_zone(workspace)).date()
    return period, period_start(period, day) if period != Period.ALL else NO_PERIOD


def _board_rows(workspace: Workspace, board: str, period: str, at: dt.datetime | None) -> Any:
    period, start = board_period(workspace, board, period, at)
    qs = scoped(LeaderboardScore, workspace).filter(board=board, period=period, period_start=start, score__gt=0)
    if board == Board.STREAK:
        qs = qs.filter(expires_at__gt=at or clock.now())
    return qs


def leaderboard(workspace: Workspace, board: str, period: str, *, at: dt.datetime | None = None,
                limit: int = 20) -> list[Ranked]:
    """The top of a board. Order (the tie-break, ADR 0008): higher score first; on equal scores the
    member who reached the score earlier; then the lower member id. Ranks are therefore strict
    (1, 2, 3 …) and stable between two reads with no new events."""
    qs = _board_rows(workspace, board, period, at).order_by("-score", "reached_at", "member_id")
    rows = qs.values_list("member_id", "member__display_name", "score", "reached_at")[:max(1, min(limit, 500))]
    return [Ranked(i + 1, mid, name or f"#{mid}", int(score), reached) for i, (mid, name, score, reached) in enumerate(rows)]


def member_rank(workspace: Workspace, board: str, period: str, member_id: int, *,
                at: dt.datetime | None = None) -> Ranked | None:
    """A member's place on a board (None without a score): one plus the members ahead by the tie-break."""
    qs = _board_rows(workspace, board, period, at)
    mine = qs.filter(member_id=member_id).values_list("score", "reached_at", "member__display_name").first()
    if mine is None:
        return None
    score, reached, name = mine
    ahead = qs.filter(Q(score__gt=score) | Q(score=score, reached_at__lt=reached)
                      | Q(score=score, reached_at=reached, member_id__lt=member_id)).count()
    return Ranked(ahead + 1, member_id, name or f"#{member_id}", int(score), reached)


# ---------------------------------------------------------------------------------------------
# a member's summary


def member_summary(workspace: Workspace, member_id: int, *, at: dt.datetime | None = None) -> dict[str, Any]:
    """Everything a member (portal) or an agent (inbox sidebar) wants to see, in a fixed number of
    queries: tier and progress to the next tier, badges, tasks with progress in their current
    period, check-in streaks, level and XP.

    ``tier`` and ``next_tier`` are ``{"code", "name", "rank", "multiplier", "benefits"}`` or None;
    ``progress`` holds the window figures and what the next tier needs."""
    from shequn.members.models import Member

    at = at or clock.now()
    tier_rows = tiers(workspace)
    status = scoped(MemberStatus, workspace).filter(member_id=member_id).first()
    prog = programme(workspace)
    figures = window_figures(workspace, [member_id], at, prog)[member_id]
    held = next((t for t in tier_rows if status is not None and t.pk == status.tier_id), tier_rows[0] if tier_rows else None)
    higher = [t for t in tier_rows if held is not None and t.rank > held.rank]
    nxt = higher[0] if higher else None

    def tier_dict(t: Tier | None) -> dict[str, Any] | None:
        if t is None:
            return None
        return {"code": t.code, "name": t.name, "rank": t.rank, "multiplier": str(t.multiplier), "benefits": t.benefits,
                "min_contribution": t.min_contribution, "min_influence": t.min_influence, "requires": t.requires}

    progress = {
        "window_days": prog.window_days, "contribution": figures.contribution, "invites": figures.invites,
        "shares": figures.shares, "influence": figures.influence,
        "contribution_needed": max(0, nxt.min_contribution - figures.contribution) if nxt else 0,
        "influence_needed": max(0, nxt.min_influence - figures.influence) if nxt else 0,
        "qualifies_for": getattr(qualified_tier(tier_rows, figures), "code", None),
    }
    awards = list(scoped(BadgeAward, workspace).filter(member_id=member_id).select_related("badge").order_by("at", "pk"))
    member = scoped(Member, workspace).filter(pk=member_id).only("pk", "timezone").first()
    tz = member_zone(workspace, member) if member is not None else ws_zone(workspace)
    wtz = ws_zone(workspace)
    today = at.astimezone(tz).date()
    task_rows = [t for t in tasks(workspace) if t.enabled and t.starts_at <= at and (t.ends_at is None or at < t.ends_at)]
    wanted = {(t.pk, task_period_start(t.repeat, at.astimezone(wtz).date())) for t in task_rows}
    stored = {(p.task_id, p.period_start): p for p in
              scoped(TaskProgress, workspace).filter(member_id=member_id, task__in=[t.pk for t in task_rows])
              if (p.task_id, p.period_start) in wanted}
    task_list = []
    for t in task_rows:
        p = stored.get((t.pk, task_period_start(t.repeat, at.astimezone(wtz).date())))
        task_list.append({"code": t.code, "name": t.name, "description": t.description, "metric": t.metric,
                          "target": t.target, "repeat": t.repeat, "progress": min(int(p.progress), t.target) if p else 0,
                          "completed": bool(p and p.completed_at), "completed_at": p.completed_at if p else None,
                          "points": t.points, "point_type": t.point_type, "xp": t.xp})
    streak = scoped(MemberStreak, workspace).filter(member_id=member_id).first()
    alive = streak is not None and streak_alive(streak.last_day, today)
    xp = int(status.xp) if status else 0
    level_rows = levels(workspace)
    level = level_for(level_rows, xp)
    next_level = next((lv for lv in sorted(level_rows, key=lambda lv: lv.min_xp) if lv.min_xp > xp), None)
    return {
        "member_id": member_id,
        "tier": tier_dict(held),
        "tier_since": status.tier_since if status else None,
        "review_at": status.review_at if status else None,
        "grace_until": status.grace_until if status else None,
        "next_tier": tier_dict(nxt),
        "progress": progress,
        "badges": [{"code": a.badge.code, "name": a.badge.name, "icon": a.badge.icon,
                    "description": a.badge.description, "at": a.at} for a in awards],
        "tasks": task_list,
        "check_in": {
            "current": streak.current if alive and streak else 0,
            "longest": streak.longest if streak else 0,
            "total": streak.total if streak else 0,
            "last_day": streak.last_day if streak else None,
            "checked_in_today": bool(streak and streak.last_day == today),
        },
        "level": {"number": level.number if level else 0, "name": level.name if level else "", "xp": xp,
                  "next_min_xp": next_level.min_xp if next_level else None},
    }


def recent_check_ins(workspace: Workspace, member_id: int, *, limit: int = 30) -> list[CheckIn]:
    return list(scoped(CheckIn, workspace).filter(member_id=member_id).order_by("-day")[:limit])
