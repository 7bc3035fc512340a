"""The points ledger (积分账本): point types, append-only entries, lots, draws, cached balances, and the
earn rules that award points as interactions arrive.

Invariants (checked by ``services.verify`` and ADR 0006):

* entries are never updated or deleted; a correction is a new entry;
* for every (member, point type): ``available + pending`` == the sum of the entries' amounts ==
  the sum of ``remaining`` over the member's lots, ``available`` being the released lots and
  ``pending`` the lots still waiting for ``available_at``;
* ``available``, ``pending`` and every lot's ``remaining`` are never negative;
* every debit (spend, expire, reverse, transfer out, negative adjust) records the lots it drew from.

Ledger rows point at their member, workspace and point type without a database foreign-key constraint
(``db_constraint=False``). On PostgreSQL a foreign key takes a KEY SHARE lock on the referenced row for
every insert: on the member row that lock would wait behind the row lock the interaction write path
holds on members while it runs the earn rules, so a spend racing an ingested purchase of the same
member would deadlock; on the workspace and point type rows — shared by every entry of a programme —
concurrent inserts would turn the lock into a shared multixact that every writer must update. The
services check that a member belongs to the workspace before they create its balance, and Django
still cascades deletions (see ADR 0006).
"""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from shequn.core.models import Workspace


class PointKind(models.TextChoices):
    CURRENCY = "currency", _("Spendable points (消费积分)")
    CONTRIBUTION = "contribution", _("Contribution points for tiers (成长值)")


class ExpiryPolicy(models.TextChoices):
    NEVER = "never", _("Never expire")
    DAYS = "days", _("After N days")
    MONTH_END = "month_end", _("At the end of a month")
    YEAR_END = "year_end", _("At the end of a year")


class PointType(models.Model):
    """A currency of the programme. ``currency`` points can be spent; ``contribution`` points measure a
    member's contribution for tiers and are never spent, so spending never lowers a tier.

    Expiry is computed per lot from the day the points were earned, in the workspace time zone:
    ``days`` — ``expiry_period`` days later; ``month_end`` — at the end of the month ``expiry_period``
    months after the month earned (0 = the same month); ``year_end`` — likewise in years."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="point_types")
    code = models.SlugField(max_length=32)
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=PointKind.choices, default=PointKind.CURRENCY)
    expiry_policy = models.CharField(max_length=16, choices=ExpiryPolicy.choices, default=ExpiryPolicy.NEVER)
    expiry_period = models.PositiveIntegerField(default=0)
    pending_days = models.PositiveIntegerField(default=0, help_text="awards wait this many days before they can be spent")
    transferable = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "code"], name="uniq_point_type_code"),
            models.CheckConstraint(condition=~Q(expiry_policy="days") | Q(expiry_period__gte=1),
                                   name="point_type_days_positive"),
        ]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"

    @property
    def spendable(self) -> bool:
        return self.kind == PointKind.CURRENCY


class EntryKind(models.TextChoices):
    EARN = "earn", _("Earned")
    SPEND = "spend", _("Spent")
    EXPIRE = "expire", _("Expired")
    REVERSE = "reverse", _("Reversed")
    TRANSFER_IN = "transfer_in", _("Transferred in")
    TRANSFER_OUT = "transfer_out", _("Transferred out")
    ADJUST = "adjust", _("Adjusted")
    MERGE_IN = "merge_in", _("Merged in")
    MERGE_OUT = "merge_out", _("Merged out")


class PointBalance(models.Model):
    """The cached balance of one member in one point type. Changed only under a row lock taken with
    ``select_for_update`` (primary-key order when several), with ``F()`` expressions and, for debits,
    a conditional ``WHERE available >= x`` whose row count is checked. ``next_change_at`` is the
    earliest moment a lot of this balance expires or becomes available (never later than that)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="point_balances",
                               db_constraint=False, db_index=False)
    point_type = models.ForeignKey(PointType, on_delete=models.CASCADE, related_name="balances", db_index=False)
    available = models.BigIntegerField(default=0)
    pending = models.BigIntegerField(default=0)
    lifetime_earned = models.BigIntegerField(default=0, help_text="earned minus reversed; adjustments and transfers excluded")
    next_change_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["member", "point_type"], name="uniq_point_balance"),
            models.CheckConstraint(condition=Q(available__gte=0), name="point_balance_available_gte_0"),
            models.CheckConstraint(condition=Q(pending__gte=0), name="point_balance_pending_gte_0"),
            models.CheckConstraint(condition=Q(lifetime_earned__gte=0), name="point_balance_lifetime_gte_0"),
        ]
        # No index covers the amounts, so changing them is a heap-only (HOT) update on PostgreSQL.
        indexes = [
            models.Index(fields=["workspace", "next_change_at"], condition=Q(next_change_at__isnull=False),
                         name="pointbal_ws_next_change"),
            models.Index(fields=["point_type", "member"], name="pointbal_type_member"),
        ]

    def __str__(self) -> str:
        return f"{self.member_id}/{self.point_type_id}: {self.available} (+{self.pending} pending)"


class PointEntry(models.Model):
    """One append-only ledger line. ``amount`` is signed: credits (earn, transfer in, positive adjust)
    are positive, debits negative. ``idempotency_key`` makes every operation safe to replay: it is
    unique per (workspace, point type). Entries the ledger writes by itself (expiry, the receiving
    side of a transfer) have no key. A reversal records in ``shortfall`` what it could not take back."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_constraint=False,
                                  db_index=False)
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="point_entries",
                               db_constraint=False, db_index=False)
    point_type = models.ForeignKey(PointType, on_delete=models.CASCADE, related_name="entries", db_constraint=False,
                                   db_index=False)
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    amount = models.BigIntegerField()
    shortfall = models.BigIntegerField(default=0)
    reason = models.CharField(max_length=200)
    actor = models.CharField(max_length=200)
    source_interaction_id = models.BigIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    related = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="+", db_index=False,
                                help_text="the earn a reversal takes back; the transfer-out a transfer-in answers")
    at = models.DateTimeField(help_text="when the entry took effect")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "point entries"
        constraints = [
            models.UniqueConstraint(fields=["workspace", "point_type", "idempotency_key"],
                                    condition=Q(idempotency_key__isnull=False), name="uniq_point_entry_key"),
            models.CheckConstraint(
                condition=(Q(kind__in=["earn", "transfer_in", "merge_in"], amount__gt=0)
                           | Q(kind__in=["spend", "expire", "transfer_out", "merge_out"], amount__lt=0)
                           | Q(kind="reverse", amount__lte=0)
                           | (Q(kind="adjust") & ~Q(amount=0))),
                name="point_entry_sign_by_kind"),
            models.CheckConstraint(condition=Q(shortfall__gte=0), name="point_entry_shortfall_gte_0"),
        ]
        indexes = [
            models.Index(fields=["member", "point_type", "-id"], name="pointentry_member_type_id"),
            models.Index(fields=["workspace", "source_interaction_id"], condition=Q(source_interaction_id__isnull=False),
                         name="pointentry_ws_interaction"),
            models.Index(fields=["related"], condition=Q(related__isnull=False), name="pointentry_related"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+d} #{self.pk}"


class PointLot(models.Model):
    """Points credited together (an award, an adjustment, the part of a transfer that came from one
    lot of the sender). ``remaining`` falls as debits draw from it. A lot is *pending* until it is
    ``released`` at ``available_at``; it is expired at ``expires_at`` (``None`` = never)."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_constraint=False,
                                  db_index=False)
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="point_lots",
                               db_constraint=False, db_index=False)
    point_type = models.ForeignKey(PointType, on_delete=models.CASCADE, related_name="lots", db_constraint=False,
                                   db_index=False)
    entry = models.ForeignKey(PointEntry, on_delete=models.CASCADE, related_name="lots")
    amount = models.BigIntegerField()
    remaining = models.BigIntegerField()
    earned_at = models.DateTimeField()
    available_at = models.DateTimeField()
    released = models.BooleanField()
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="point_lot_amount_gt_0"),
            models.CheckConstraint(condition=Q(remaining__gte=0) & Q(remaining__lte=F("amount")),
                                   name="point_lot_remaining_in_range"),
        ]
        indexes = [
            # PostgreSQL sorts NULLs last in an ascending index, which is the spending order.
            models.Index(fields=["member", "point_type", "expires_at", "id"], condition=Q(remaining__gt=0),
                         name="pointlot_live_fifo"),
        ]

    def __str__(self) -> str:
        return f"lot #{self.pk}: {self.remaining}/{self.amount}"


class PointLotDraw(models.Model):
    """How much one debit entry took from one lot."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_constraint=False,
                                  db_index=False)
    entry = models.ForeignKey(PointEntry, on_delete=models.CASCADE, related_name="draws")
    lot = models.ForeignKey(PointLot, on_delete=models.CASCADE, related_name="draws")
    amount = models.BigIntegerField()

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="point_draw_amount_gt_0")]


class CapPeriod(models.TextChoices):
    DAY = "day", _("Day")
    WEEK = "week", _("Week")
    MONTH = "month", _("Month")


class EarnRule(models.Model):
    """Award points when an interaction arrives: ``points`` fixed plus ``points_per_yuan`` × the
    interaction's ``amount`` (rounded down), for interactions of ``interaction_type`` (optionally only
    on ``channel``, through ``touchpoint``, in ``direction``, from ``min_amount``), occurring between
    ``starts_at`` and ``ends_at``. Caps limit the points one member (``member_cap_*``) or all members
    together (``global_cap_*``) get from this rule per day, week (Monday first) or month of the
    workspace time zone; ``None`` = no cap."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="earn_rules")
    name = models.CharField(max_length=100)
    point_type = models.ForeignKey(PointType, on_delete=models.CASCADE, related_name="earn_rules")
    interaction_type = models.CharField(max_length=24)
    direction = models.CharField(max_length=3, blank=True, default="in", help_text="in / out; empty = either")
    channel = models.CharField(max_length=64, blank=True)
    touchpoint = models.ForeignKey("interactions.Touchpoint", null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="+")
    min_amount = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    points = models.PositiveIntegerField(default=0)
    points_per_yuan = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    member_cap_day = models.PositiveIntegerField(null=True, blank=True)
    member_cap_week = models.PositiveIntegerField(null=True, blank=True)
    member_cap_month = models.PositiveIntegerField(null=True, blank=True)
    global_cap_day = models.PositiveIntegerField(null=True, blank=True)
    global_cap_week = models.PositiveIntegerField(null=True, blank=True)
    global_cap_month = models.PositiveIntegerField(null=True, blank=True)
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    priority = models.IntegerField(default=100, help_text="lower runs first")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["priority", "id"]
        indexes = [models.Index(fields=["workspace", "enabled", "interaction_type"], name="earnrule_ws_enabled_type")]

    def __str__(self) -> str:
        return self.name


class EarnCapUsage(models.Model):
    """Points a rule has awarded in one cap period, to one member (``member`` set) or to everyone
    (``member`` empty). Rows are locked before they are read and changed with ``F()``."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    rule = models.ForeignKey(EarnRule, on_delete=models.CASCADE, related_name="usage")
    member = models.ForeignKey("members.Member", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    period = models.CharField(max_length=8, choices=CapPeriod.choices)
    period_start = models.DateField()
    points = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rule", "member", "period", "period_start"],
                                    condition=Q(member__isnull=False), name="uniq_cap_usage_member"),
            models.UniqueConstraint(fields=["rule", "period", "period_start"],
                                    condition=Q(member__isnull=True), name="uniq_cap_usage_global"),
            models.CheckConstraint(condition=Q(points__gte=0), name="cap_usage_points_gte_0"),
        ]


class MergeDirection(models.TextChoices):
    MERGE = "merge", _("Merge")
    UNMERGE = "unmerge", _("Unmerge")


class PointMerge(models.Model):
    """What a member merge (or its undoing) moved in one point type: the ``merge_out`` entry of the
    member who gave the points, the ``merge_in`` entry of the one who received them (both empty when
    only lifetime earned moved), and the lifetime earned that moved with them. One row per
    (merge record, point type, direction): a merge cannot move points twice (ADR 0006)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    merge_record_id = models.BigIntegerField(help_text="members.MergeRecord id")
    direction = models.CharField(max_length=8, choices=MergeDirection.choices)
    point_type = models.ForeignKey(PointType, on_delete=models.CASCADE, related_name="+", db_index=False)
    from_member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+",
                                    db_constraint=False, db_index=False)
    to_member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+",
                                  db_constraint=False, db_index=False)
    out_entry = models.ForeignKey(PointEntry, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
                                  db_index=False)
    in_entry = models.ForeignKey(PointEntry, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
                                 db_index=False)
    lifetime = models.BigIntegerField(default=0)
    at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "merge_record_id", "point_type", "direction"],
                                    name="uniq_point_merge"),
            models.CheckConstraint(condition=Q(lifetime__gte=0), name="point_merge_lifetime_gte_0"),
        ]

    def __str__(self) -> str:
        return f"{self.direction} #{self.merge_record_id}: {self.from_member_id} → {self.to_member_id}"
