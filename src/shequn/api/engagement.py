"""Engagement: tiers, badges, tasks, levels and streak rewards (operators), a member's engagement
summary, daily check-in, tier changes and leaderboards."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from shequn.core.models import Workspace
from shequn.core.tenancy import get_scoped
from shequn.engagement import queries
from shequn.engagement import services as engagement
from shequn.engagement.models import Badge, Task, Tier

from .auth import EVERYONE, MANAGERS, READERS, allow, context
from .members import member_id_or_404
from .schemas import Input, with_errors

router = Router(tags=["engagement"])


# ---------------------------------------------------------------------------------------------
# programme


class ProgrammeIO(Schema):
    window_days: int | None = Field(None, description="Rolling window of tier contribution and influence, in days")
    review_days: int | None = Field(None, description="A tier is reviewed this many days after it was reached")
    invite_weight: int | None = Field(None, description="Influence of one invite (a referral interaction)")
    share_weight: int | None = Field(None, description="Influence of one share")
    checkin_points: int | None = Field(None, description="Points for every daily check-in (0 = none)")
    checkin_point_type: str | None = Field(None, description="Point type code of check-in points and rewards")


class ProgrammePatch(ProgrammeIO, Input):
    pass


def _programme_out(workspace: Workspace) -> dict[str, Any]:
    p = engagement.programme(workspace)
    return {k: getattr(p, k) for k in engagement.PROGRAMME_FIELDS}


@router.get("/engagement/programme", response=with_errors({200: ProgrammeIO}), operation_id="engagement_programme",
            summary="Engagement programme settings")
@allow(*READERS)
def get_programme(request: HttpRequest) -> dict[str, Any]:
    return _programme_out(context(request).workspace)


@router.patch("/engagement/programme", response=with_errors({200: ProgrammeIO}),
              operation_id="engagement_programme_update", summary="Change engagement programme settings")
@allow(*MANAGERS)
def patch_programme(request: HttpRequest, body: ProgrammePatch) -> dict[str, Any]:
    ctx = context(request)
    engagement.save_programme(ctx.workspace, body.model_dump(exclude_none=True), actor=ctx.actor)
    return _programme_out(ctx.workspace)


# ---------------------------------------------------------------------------------------------
# tiers


class TierPatch(Input):
    code: str | None = None
    name: str | None = None
    rank: int | None = Field(None, description="Higher is better; the lowest tier is everyone's floor")
    min_contribution: int | None = Field(None, description="Contribution points (成长值) in the window")
    min_influence: int | None = Field(None, description="Weighted invites and shares in the window")
    requires: str | None = Field(None, description="all: both minimums; any: either")
    multiplier: Decimal | None = Field(None, description="Multiplies awards of spendable points")
    grace_days: int | None = Field(None, description="Days a member below the tier keeps it after a review")
    benefits: str | None = None


class TierIn(TierPatch):
    code: str  # type: ignore[assignment]
    name: str  # type: ignore[assignment]
    rank: int  # type: ignore[assignment]


class TierOut(Schema):
    id: int
    code: str
    name: str
    rank: int
    min_contribution: int
    min_influence: int
    requires: str
    multiplier: Decimal
    grace_days: int
    benefits: str


class TierList(Schema):
    items: list[TierOut]


@router.get("/engagement/tiers", response=with_errors({200: TierList}), operation_id="tiers_list",
            summary="List tiers, lowest first")
@allow(*EVERYONE)
def list_tiers(request: HttpRequest) -> dict[str, Any]:
    return {"items": queries.tiers(context(request).workspace)}


@router.post("/engagement/tiers", response=with_errors({201: TierOut}), operation_id="tiers_create",
             summary="Create a tier")
@allow(*MANAGERS)
def create_tier(request: HttpRequest, body: TierIn) -> Status[Tier]:
    ctx = context(request)
    return Status(201, engagement.save_tier(ctx.workspace, body.model_dump(exclude_none=True), actor=ctx.actor))


@router.patch("/engagement/tiers/{int:tier_id}", response=with_errors({200: TierOut}), operation_id="tiers_update",
              summary="Change a tier")
@allow(*MANAGERS)
def update_tier(request: HttpRequest, tier_id: int, body: TierPatch) -> Tier:
    ctx = context(request)
    return engagement.save_tier(ctx.workspace, body.model_dump(exclude_none=True), tier_id=tier_id, actor=ctx.actor)


@router.delete("/engagement/tiers/{int:tier_id}", response=with_errors({204: None}), operation_id="tiers_delete",
               summary="Delete a tier nobody holds")
@allow(*MANAGERS)
def delete_tier(request: HttpRequest, tier_id: int) -> Status[None]:
    ctx = context(request)
    engagement.delete_tier(ctx.workspace, tier_id, actor=ctx.actor)
    return Status(204, None)


class EvaluateOut(Schema):
    upgraded: int


@router.post("/engagement/tiers/evaluate", response=with_errors({200: EvaluateOut}), operation_id="tiers_evaluate",
             summary="Place members on the tiers they qualify for now (upgrades only)")
@allow(*MANAGERS)
def evaluate_tiers(request: HttpRequest) -> dict[str, int]:
    return {"upgraded": engagement.evaluate_all(context(request).workspace)}


# ---------------------------------------------------------------------------------------------
# badges


class BadgePatch(Input):
    code: str | None = None
    name: str | None = None
    description: str | None = None
    icon: str | None = Field(None, description="An emoji")
    metric: str | None = Field(None, description="An interaction type, check_in, streak, custom:<event>, tier or task")
    threshold: int | None = Field(None, description="Count (or streak days) to reach")
    ref: str | None = Field(None, description="Tier code (metric tier) or task code (metric task)")
    enabled: bool | None = None


class BadgeIn(BadgePatch):
    code: str  # type: ignore[assignment]
    name: str  # type: ignore[assignment]
    metric: str  # type: ignore[assignment]


class BadgeOut(Schema):
    id: int
    code: str
    name: str
    description: str
    icon: str
    metric: str
    threshold: int
    ref: str
    enabled: bool


class BadgeList(Schema):
    items: list[BadgeOut]


@router.get("/engagement/badges", response=with_errors({200: BadgeList}), operation_id="badges_list",
            summary="List badges")
@allow(*EVERYONE)
def list_badges(request: HttpRequest) -> dict[str, Any]:
    return {"items": queries.badges(context(request).workspace)}


@router.post("/engagement/badges", response=with_errors({201: BadgeOut}), operation_id="badges_create",
             summary="Create a badge (members who already meet it get it at once)")
@allow(*MANAGERS)
def create_badge(request: HttpRequest, body: BadgeIn) -> Status[Badge]:
    ctx = context(request)
    return Status(201, engagement.save_badge(ctx.workspace, body.model_dump(exclude_none=True), actor=ctx.actor))


@router.patch("/engagement/badges/{int:badge_id}", response=with_errors({200: BadgeOut}), operation_id="badges_update",
              summary="Change a badge")
@allow(*MANAGERS)
def update_badge(request: HttpRequest, badge_id: int, body: BadgePatch) -> Badge:
    ctx = context(request)
    return engagement.save_badge(ctx.workspace, body.model_dump(exclude_none=True), badge_id=badge_id, actor=ctx.actor)


@router.delete("/engagement/badges/{int:badge_id}", response=with_errors({204: None}), operation_id="badges_delete",
               summary="Delete a badge and its awards")
@allow(*MANAGERS)
def delete_badge(request: HttpRequest, badge_id: int) -> Status[None]:
    ctx = context(request)
    engagement.delete_badge(ctx.workspace, badge_id, actor=ctx.actor)
    return Status(204, None)


# ---------------------------------------------------------------------------------------------
# tasks


class TaskPatch(Input):
    code: str | None = None
    name: str | None = None
    description: str | None = None
    metric: str | None = Field(None, description="An interaction type, check_in, streak, profile or custom:<event>")
    target: int | None = None
    repeat: str | None = Field(None, description="once, daily, weekly or monthly")
    points: int | None = None
    point_type: str | None = None
    xp: int | None = Field(None, description="Experience towards levels")
    badge: str | None = Field(None, description="Badge code awarded on completion; empty for none")
    starts_at: dt.datetime | None = Field(None, description="Progress counts from here (default: now)")
    ends_at: dt.datetime | None = None
    enabled: bool | None = None
    position: int | None = None


class TaskIn(TaskPatch):
    code: str  # type: ignore[assignment]
    name: str  # type: ignore[assignment]
    metric: str  # type: ignore[assignment]


class TaskOut(Schema):
    id: int
    code: str
    name: str
    description: str
    metric: str
    target: int
    repeat: str
    points: int
    point_type: str
    xp: int
    badge: str | None
    starts_at: dt.datetime
    ends_at: dt.datetime | None
    enabled: bool
    position: int

    @staticmethod
    def resolve_badge(obj: Task) -> str | None:
        return obj.badge.code if obj.badge_id and obj.badge else None


class TaskList(Schema):
    items: list[TaskOut]


def _task_data(body: TaskPatch) -> dict[str, Any]:
    data = body.model_dump(exclude_unset=True)
    return {k: v for k, v in data.items() if v is not None or k in ("badge", "ends_at")}


@router.get("/engagement/tasks", response=with_errors({200: TaskList}), operation_id="tasks_list",
            summary="List tasks")
@allow(*EVERYONE)
def list_tasks(request: HttpRequest) -> dict[str, Any]:
    return {"items": queries.tasks(context(request).workspace)}


@router.post("/engagement/tasks", response=with_errors({201: TaskOut}), operation_id="tasks_create",
             summary="Create a task")
@allow(*MANAGERS)
def create_task(request: HttpRequest, body: TaskIn) -> Status[Task]:
    ctx = context(request)
    return Status(201, engagement.save_task(ctx.workspace, _task_data(body), actor=ctx.actor))


@router.patch("/engagement/tasks/{int:task_id}", response=with_errors({200: TaskOut}), operation_id="tasks_update",
              summary="Change a task")
@allow(*MANAGERS)
def update_task(request: HttpRequest, task_id: int, body: TaskPatch) -> Task:
    ctx = context(request)
    return engagement.save_task(ctx.workspace, _task_data(body), task_id=task_id, actor=ctx.actor)


@router.delete("/engagement/tasks/{int:task_id}", response=with_errors({204: None}), operation_id="tasks_delete",
               summary="Delete a task and its progress")
@allow(*MANAGERS)
def delete_task(request: HttpRequest, task_id: int) -> Status[None]:
    ctx = context(request)
    get_scoped(Task, ctx.workspace, task_id)
    engagement.delete_task(ctx.workspace, task_id, actor=ctx.actor)
    return Status(204, None)


# ---------------------------------------------------------------------------------------------
# levels and streak rewards


class LevelIn(Input):
    name: str
    min_xp: int


class LevelOut(Schema):
    number: int
    name: str
    min_xp: int


class LevelList(Schema):
    items: list[LevelOut]


@router.get("/engagement/levels", response=with_errors({200: LevelList}), operation_id="levels_list",
            summary="List levels")
@allow(*EVERYONE)
def list_levels(request: HttpRequest) -> dict[str, Any]:
    return {"items": queries.levels(context(request).workspace)}


@router.put("/engagement/levels/{int:number}", response=with_errors({200: LevelOut}), operation_id="levels_put",
            summary="Create or change level N")
@allow(*MANAGERS)
def put_level(request: HttpRequest, number: int, body: LevelIn) -> Any:
    ctx = context(request)
    return engagement.save_level(ctx.workspace, number, body.name, body.min_xp, actor=ctx.actor)


@router.delete("/engagement/levels/{int:number}", response=with_errors({204: None}), operation_id="levels_delete",
               summary="Delete level N")
@allow(*MANAGERS)
def delete_level(request: HttpRequest, number: int) -> Status[None]:
    ctx = context(request)
    engagement.delete_level(ctx.workspace, number, actor=ctx.actor)
    return Status(204, None)


class StreakRewardIn(Input):
    points: int
    point_type: str = "points"
    badge: str | None = Field(None, description="Badge code awarded as well")


class StreakRewardOut(Schema):
    days: int
    points: int
    point_type: str
    badge: str | None

    @staticmethod
    def resolve_badge(obj: Any) -> str | None:
        return obj.badge.code if obj.badge_id and obj.badge else None


class StreakRewardList(Schema):
    items: list[StreakRewardOut]


@router.get("/engagement/streak-rewards", response=with_errors({200: StreakRewardList}),
            operation_id="streak_rewards_list", summary="Rewards for check-in streaks")
@allow(*EVERYONE)
def list_streak_rewards(request: HttpRequest) -> dict[str, Any]:
    return {"items": queries.streak_rewards(context(request).workspace)}


@router.put("/engagement/streak-rewards/{int:days}", response=with_errors({200: StreakRewardOut}),
            operation_id="streak_rewards_put", summary="Reward for reaching a streak of N days")
@allow(*MANAGERS)
def put_streak_reward(request: HttpRequest, days: int, body: StreakRewardIn) -> Any:
    ctx = context(request)
    return engagement.save_streak_reward(ctx.workspace, days, body.points, point_type=body.point_type, badge=body.badge,
                                         actor=ctx.actor)


@router.delete("/engagement/streak-rewards/{int:days}", response=with_errors({204: None}),
               operation_id="streak_rewards_delete", summary="Delete the reward for an N-day streak")
@allow(*MANAGERS)
def delete_streak_reward(request: HttpRequest, days: int) -> Status[None]:
    ctx = context(request)
    engagement.delete_streak_reward(ctx.workspace, days, actor=ctx.actor)
    return Status(204, None)


# ---------------------------------------------------------------------------------------------
# members


class SummaryOut(Schema):
    member_id: int
    tier: dict[str, Any] | None
    tier_since: dt.datetime | None
    review_at: dt.datetime | None
    grace_until: dt.datetime | None
    next_tier: dict[str, Any] | None
    progress: dict[str, Any]
    badges: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    check_in: dict[str, Any]
    level: dict[str, Any]


@router.get("/members/{int:member_id}/engagement", response=with_errors({200: SummaryOut}),
            operation_id="member_engagement", summary="A member's tier, badges, tasks, streaks and level")
@allow(*EVERYONE)
def member_engagement(request: HttpRequest, member_id: int) -> dict[str, Any]:
    ctx = context(request)
    return queries.member_summary(ctx.workspace, member_id_or_404(ctx.workspace, member_id))


class CheckInOut(Schema):
    id: int
    day: dt.date
    at: dt.datetime
    created: bool = Field(description="False when the member had already checked in that day")
    current: int
    longest: int
    total: int
    points: int
    rewards: list[int] = Field(description="Streak lengths rewarded by this check-in")


@router.post("/members/{int:member_id}/check-in", response=with_errors({200: CheckInOut, 201: CheckInOut}),
             operation_id="member_check_in", summary="Daily check-in (idempotent per local day)")
@allow(*EVERYONE)
def member_check_in(request: HttpRequest, member_id: int, channel: str = "api") -> Status[dict[str, Any]]:
    """The member's local day (their time zone, else the workspace's) decides; calling again the same
    day answers 200 with the first check-in and changes nothing. ``?channel=`` says where the member
    checked in (portal, miniprogram, store …)."""
    ctx = context(request)
    result = engagement.check_in(ctx.workspace, member_id_or_404(ctx.workspace, member_id), channel=channel.strip()[:64] or "api",
                                 actor=ctx.actor)
    row = result.check_in
    return Status(201 if result.created else 200, {
        "id": row.pk, "day": row.day, "at": row.at, "created": result.created, "current": result.current,
        "longest": result.longest, "total": result.total, "points": row.points, "rewards": result.rewards})


class TierSetIn(Input):
    tier: str = Field(description="Tier code")


@router.post("/members/{int:member_id}/tier", response=with_errors({200: SummaryOut}), operation_id="member_tier_set",
             summary="Place a member on a tier by hand (recorded with cause operator)")
@allow(*MANAGERS)
def set_member_tier(request: HttpRequest, member_id: int, body: TierSetIn) -> dict[str, Any]:
    ctx = context(request)
    engagement.set_tier(ctx.workspace, member_id_or_404(ctx.workspace, member_id), body.tier, actor=ctx.actor)
    return queries.member_summary(ctx.workspace, member_id)


class TierChangeOut(Schema):
    old_tier: str
    new_tier: str
    direction: str
    cause: str
    contribution: int
    influence: int
    actor: str
    at: dt.datetime


class TierChangeList(Schema):
    items: list[TierChangeOut]


@router.get("/members/{int:member_id}/tier-changes", response=with_errors({200: TierChangeList}),
            operation_id="member_tier_changes", summary="Every tier change of a member, newest first")
@allow(*READERS)
def member_tier_changes(request: HttpRequest, member_id: int) -> dict[str, Any]:
    ctx = context(request)
    return {"items": queries.tier_history(ctx.workspace, member_id_or_404(ctx.workspace, member_id))}


# ---------------------------------------------------------------------------------------------
# leaderboards


class BoardQuery(Schema):
    period: str = Field("week", description="points: week, month; invites: week, month, all; streak: all")
    limit: int = Field(20, ge=1, le=500)
    member_id: int | None = Field(None, description="Also give this member's place")


class RankOut(Schema):
    rank: int
    member_id: int
    name: str
    score: int
    reached_at: dt.datetime


class BoardOut(Schema):
    board: str
    period: str
    period_start: dt.date | None
    tie_break: str
    items: list[RankOut]
    member: RankOut | None = None


TIE_BREAK = "score desc, reached_at asc (who reached the score first), member_id asc"


@router.get("/leaderboards/{board}", response=with_errors({200: BoardOut}), operation_id="leaderboard",
            summary="A leaderboard: points, invites or streak")
@allow(*EVERYONE)
def leaderboard(request: HttpRequest, board: str, q: Query[BoardQuery]) -> dict[str, Any]:
    """Kept up to date as events arrive; the current period of the workspace time zone (weeks start
    on Monday). Tie-break: higher score, then who reached it earlier, then the lower member id."""
    ctx = context(request)
    period, start = queries.board_period(ctx.workspace, board, q.period)
    mine = queries.member_rank(ctx.workspace, board, period, q.member_id) if q.member_id else None
    return {"board": board, "period": period, "period_start": None if period == "all" else start,
            "tie_break": TIE_BREAK, "items": queries.leaderboard(ctx.workspace, board, period, limit=q.limit),
            "member": mine}


routers: list[Router] = [router]
