"""Engagement (会员成长): tiers by contribution and influence, badges, tasks/quests and levels, daily
check-in streaks and leaderboards.

Everything here is kept incrementally as events arrive (points changes from the ledger, new
interactions, check-ins); nothing is rebuilt from scratch on a timer (ADR 0008):

* ``ActivityDay`` holds one row per member and local day with the contribution points earned and the
  invites and shares made that day, so a tier decision sums at most ``window_days`` small rows and
  never reads the points ledger or the interaction log;
* ``MemberCounter`` counts a member's interactions per kind (badges and tasks read it);
* ``LeaderboardScore`` holds one row per (board, period, member), changed by an upsert with SQL
  arithmetic, never by read-modify-write.

Rows written from the ledger's hook or the interaction write path point at their member and
workspace without a database foreign-key constraint (``db_constraint=False``), for the reason the
ledger gives (see ``shequn.loyalty.models``): a foreign key would take a KEY SHARE lock on the member
row for every insert, which waits behind the member-row lock of the interaction write path.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from shequn.core.models import Workspace

EPOCH_DAY = "1970-01-01"
"""``period_start`` of rows that have no period (one-off tasks, all-time boards)."""


def _member(related_name: str) -> models.ForeignKey:  # type: ignore[type-arg]
    return models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name=related_name,
                             db_constraint=False, db_index=False)


def _workspace() -> models.ForeignKey:  # type: ignore[type-arg]
    return models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False)


class Programme(models.Model):
    """Per-workspace settings of the engagement programme (one row, created with defaults)."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, related_name="engagement_programme")
    window_days = models.PositiveIntegerField(default=365, help_text="rolling window for tier contribution and influence")
    review_days = models.PositiveIntegerField(default=365, help_text="a tier is reviewed this many days after it was reached")
    invite_weight = models.PositiveIntegerField(default=10, help_text="influence of one invite")
    share_weight = models.PositiveIntegerField(default=1, help_text="influence of one share")
    checkin_points = models.PositiveIntegerField(default=0, help_text="points for every daily check-in")
    checkin_point_type = models.CharField(max_length=32, default="points")
    revision = models.CharField(max_length=32, blank=True, default="",
                                help_text="changes whenever a definition changes; readers cache definitions by it")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("engagement programme")

    def __str__(self) -> str:
        return f"engagement programme of {self.workspace_id}"


class TierRequirement(models.TextChoices):
    ALL = "all", _("Contribution and influence")
    ANY = "any", _("Contribution or influence")


class Tier(models.Model):
    """A member tier (会员等级). A member qualifies when the contribution points (成长值) and the
    influence (weighted invites and shares) of the rolling window reach the minimums — both, or
    either, by ``requires``. ``multiplier`` scales spendable-point awards; ``grace_days`` is how long a
    member who no longer qualifies keeps the tier after a review before it falls."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="tiers")
    code = models.SlugField(max_length=32)
    name = models.CharField(max_length=64)
    rank = models.PositiveIntegerField(help_text="higher is better; the lowest tier is where everyone starts")
    min_contribution = models.PositiveBigIntegerField(default=0)
    min_influence = models.PositiveBigIntegerField(default=0)
    requires = models.CharField(max_length=3, choices=TierRequirement.choices, default=TierRequirement.ALL)
    multiplier = models.DecimalField(max_digits=5, decimal_places=2, default=1)
    grace_days = models.PositiveIntegerField(default=0)
    benefits = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("tier")
        ordering = ["rank"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "code"], name="uniq_tier_code"),
            models.UniqueConstraint(fields=["workspace", "rank"], name="uniq_tier_rank"),
            models.CheckConstraint(condition=Q(multiplier__gt=0), name="tier_multiplier_gt_0"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    def qualifies(self, contribution: int, influence: int) -> bool:
        c, i = contribution >= self.min_contribution, influence >= self.min_influence
        return (c and i) if self.requires == TierRequirement.ALL else (c or i)


class MemberStatus(models.Model):
    """A member's tier and experience. No row = the base tier (the lowest), no XP.
    ``review_at`` is when the tier is next reviewed; ``grace_until`` is set when a review found the
    member below the tier and the tier has a grace period."""

    workspace = _workspace()
    member = models.OneToOneField("members.Member", on_delete=models.CASCADE, related_name="engagement_status",
                                  db_constraint=False)
    tier = models.ForeignKey(Tier, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                             db_constraint=False)
    tier_since = models.DateTimeField(null=True, blank=True)
    review_at = models.DateTimeField(null=True, blank=True)
    grace_until = models.DateTimeField(null=True, blank=True)
    xp = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("member engagement status")
        verbose_name_plural = _("member engagement statuses")
        indexes = [
            models.Index(fields=["review_at"], condition=Q(review_at__isnull=False), name="engstatus_review"),
            models.Index(fields=["workspace", "tier"], name="engstatus_ws_tier"),
        ]

    def __str__(self) -> str:
        return f"{self.member_id}: tier {self.tier_id}, {self.xp} xp"


class TierCause(models.TextChoices):
    POINTS = "points", _("Contribution points")
    INTERACTION = "interaction", _("Invites and shares")
    REVIEW = "review", _("Scheduled review")
    PLACEMENT = "placement", _("Tiers re-evaluated")
    OPERATOR = "operator", _("Set by staff")


class TierChange(models.Model):
    """Every tier change, never edited: from/to (codes, so history survives a renamed or deleted tier),
    the direction, the cause and the window figures that decided it."""

    id = models.BigAutoField(primary_key=True)
    workspace = _workspace()
    member = _member("tier_changes")
    old_tier = models.CharField(max_length=32, blank=True)
    new_tier = models.CharField(max_length=32, blank=True)
    direction = models.CharField(max_length=4)
    cause = models.CharField(max_length=16, choices=TierCause.choices)
    contribution = models.BigIntegerField(default=0)
    influence = models.BigIntegerField(default=0)
    actor = models.CharField(max_length=200, default="system")
    at = models.DateTimeField()

    class Meta:
        verbose_name = _("tier change")
        indexes = [models.Index(fields=["member", "-at"], name="tierchange_member_at"),
                   models.Index(fields=["workspace", "-at"], name="tierchange_ws_at")]


class ActivityDay(models.Model):
    """What one member did on one local day (workspace time zone) that tiers count: contribution
    points earned (minus refunds), invites and shares. Changed only by upserts with SQL arithmetic."""

    id = models.BigAutoField(primary_key=True)
    workspace = _workspace()
    member = _member("+")
    day = models.DateField()
    contribution = models.BigIntegerField(default=0)
    invites = models.IntegerField(default=0)
    shares = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["member", "day"], name="uniq_activity_member_day")]


class MemberCounter(models.Model):
    """How many interactions of one kind a member has made since engagement started counting
    (key: an interaction type, ``check_in``, or ``custom:<event>``)."""

    id = models.BigAutoField(primary_key=True)
    workspace = _workspace()
    member = _member("+")
    key = models.CharField(max_length=80)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["member", "key"], name="uniq_counter_member_key")]
        indexes = [models.Index(fields=["workspace", "key", "value"], name="counter_ws_key_value")]


class Badge(models.Model):
    """A badge (徽章) awarded once when its criterion is met: ``metric`` reaches ``threshold`` (an
    interaction type, ``check_in``, ``custom:<event>``, ``streak`` = consecutive check-in days), or
    ``metric`` = ``tier`` (``ref`` = a tier code reached or passed) or ``task`` (``ref`` = a task code done)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="badges")
    code = models.SlugField(max_length=32)
    name = models.CharField(max_length=64)
    description = models.CharField(max_length=200, blank=True)
    icon = models.CharField(max_length=8, blank=True, help_text="an emoji")
    metric = models.CharField(max_length=80)
    threshold = models.PositiveIntegerField(default=1)
    ref = models.CharField(max_length=32, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("badge")
        ordering = ["pk"]
        constraints = [models.UniqueConstraint(fields=["workspace", "code"], name="uniq_badge_code")]

    def __str__(self) -> str:
        return self.name


class BadgeAward(models.Model):
    id = models.BigAutoField(primary_key=True)
    workspace = _workspace()
    badge = models.ForeignKey(Badge, on_delete=models.CASCADE, related_name="awards", db_constraint=False)
    member = _member("badge_awards")
    at = models.DateTimeField()

    class Meta:
        verbose_name = _("badge award")
        constraints = [models.UniqueConstraint(fields=["member", "badge"], name="uniq_badge_award")]
        indexes = [models.Index(fields=["badge", "-at"], name="badgeaward_badge_at")]


class TaskRepeat(models.TextChoices):
    ONCE = "once", _("Once")
    DAILY = "daily", _("Every day")
    WEEKLY = "weekly", _("Every week")
    MONTHLY = "monthly", _("Every month")


class Task(models.Model):
    """A task/quest (任务): reach ``target`` of ``metric`` — an interaction type (``review``,
    ``referral``, ``event_attendance`` …), ``check_in``, ``custom:<event>``, ``streak`` (consecutive
    check-in days) or ``profile`` (profile fields filled) — counted from ``starts_at``; once, or again
    every day/week/month (workspace time zone). Completing it gives ``points`` of ``point_type``,
    ``xp`` towards levels and optionally a badge."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="engagement_tasks")
    code = models.SlugField(max_length=32)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=200, blank=True)
    metric = models.CharField(max_length=80)
    target = models.PositiveIntegerField(default=1)
    repeat = models.CharField(max_length=8, choices=TaskRepeat.choices, default=TaskRepeat.ONCE)
    points = models.PositiveIntegerField(default=0)
    point_type = models.CharField(max_length=32, default="points")
    xp = models.PositiveIntegerField(default=0)
    badge = models.ForeignKey(Badge, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    position = models.IntegerField(default=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("task")
        ordering = ["position", "pk"]
        constraints = [models.UniqueConstraint(fields=["workspace", "code"], name="uniq_task_code")]

    def __str__(self) -> str:
        return self.name


class TaskProgress(models.Model):
    """A member's progress on a task in one period (``period_start`` = 1970-01-01 for one-off tasks).
    ``completed_at`` is set once, by a conditional UPDATE, which is what pays the reward once."""

    id = models.BigAutoField(primary_key=True)
    workspace = _workspace()
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="progress", db_constraint=False,
                             db_index=False)
    member = _member("+")
    period_start = models.DateField()
    progress = models.BigIntegerField(default=0)
    completed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "member", "period_start"], name="uniq_task_progress")]
        indexes = [models.Index(fields=["member", "task"], name="taskprogress_member")]


class Level(models.Model):
    """Level ``number`` (等级) is reached with ``min_xp`` experience from completed tasks."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="levels")
    number = models.PositiveIntegerField()
    name = models.CharField(max_length=64)
    min_xp = models.PositiveBigIntegerField()

    class Meta:
        verbose_name = _("level")
        ordering = ["number"]
        constraints = [models.UniqueConstraint(fields=["workspace", "number"], name="uniq_level_number")]

    def __str__(self) -> str:
        return f"Lv{self.number} {self.name}"


class MemberStreak(models.Model):
    """Check-in streaks of a member: ``current`` consecutive local days ending on ``last_day``,
    the ``longest`` ever, and the ``total`` (cumulative) days checked in. Locked by a check-in."""

    workspace = _workspace()
    member = models.OneToOneField("members.Member", on_delete=models.CASCADE, related_name="checkin_streak",
                                  db_constraint=False)
    current = models.PositiveIntegerField(default=0)
    longest = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    last_day = models.DateField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)


class CheckIn(models.Model):
    """One daily check-in (签到): at most one per member and local day (member's time zone)."""

    id = models.BigAutoField(primary_key=True)
    workspace = _workspace()
    member = _member("check_ins")
    day = models.DateField()
    at = models.DateTimeField()
    streak = models.PositiveIntegerField(help_text="consecutive days including this one")
    points = models.PositiveIntegerField(default=0, help_text="points awarded for this check-in and its streak rewards")

    class Meta:
        verbose_name = _("check-in")
        constraints = [models.UniqueConstraint(fields=["member", "day"], name="uniq_checkin_member_day")]
        indexes = [models.Index(fields=["workspace", "day"], name="checkin_ws_day")]


class StreakReward(models.Model):
    """Points (and optionally a badge) when a consecutive check-in streak reaches ``days``."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="streak_rewards")
    days = models.PositiveIntegerField()
    points = models.PositiveIntegerField(default=0)
    point_type = models.CharField(max_length=32, default="points")
    badge = models.ForeignKey(Badge, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["days"]
        constraints = [models.UniqueConstraint(fields=["workspace", "days"], name="uniq_streak_reward_days"),
                       models.CheckConstraint(condition=Q(days__gte=1), name="streak_reward_days_gte_1")]


class Board(models.TextChoices):
    POINTS = "points", _("Points earned")
    INVITES = "invites", _("Invites")
    STREAK = "streak", _("Current check-in streak")


class Period(models.TextChoices):
    WEEK = "week", _("This week")
    MONTH = "month", _("This month")
    ALL = "all", _("All time")


class LeaderboardScore(models.Model):
    """One member's score on one board in one period (weeks start on Monday, workspace time zone).
    ``reached_at`` is when the score reached its present value (the tie-break: earlier is better);
    ``expires_at`` (streak board) is when the score stops counting unless renewed."""

    id = models.BigAutoField(primary_key=True)
    workspace = _workspace()
    board = models.CharField(max_length=16, choices=Board.choices)
    period = models.CharField(max_length=8, choices=Period.choices)
    period_start = models.DateField()
    member = _member("+")
    score = models.BigIntegerField(default=0)
    reached_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "board", "period", "period_start", "member"],
                                    name="uniq_leaderboard_score"),
            models.CheckConstraint(condition=Q(score__gte=0), name="leaderboard_score_gte_0"),
        ]
        indexes = [models.Index(fields=["workspace", "board", "period", "period_start", "-score", "reached_at", "member"],
                                name="leaderboard_rank")]
