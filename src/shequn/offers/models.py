"""Offers (coupon templates), coupons, counter redemptions and their voids, stores and the clerks
assigned to them, member clips of personalised offers, campaign claim codes and the "share after
consumption" table codes.

Rows that point at a member do so without a database foreign-key constraint (as the points ledger
does, ADR 0006): buying a coupon with points holds the member's balance row lock while it inserts the
coupon, and a foreign key would then wait for the member row that the interaction write path locks
before it takes the balance lock — a deadlock. The services check the member's workspace first.

Invariants (ADR 0007):

* a coupon's ``uses`` only changes through a conditional ``UPDATE`` (``uses < max_uses``,
  ``status = 'issued'``, inside its validity window) whose row count is checked; ``CHECK (0 <= uses <=
  max_uses)`` is the backstop;
* redemptions are append-only and unique per (workspace, key): a replayed key returns the first
  redemption; a void is a separate row, unique per redemption, that gives the use back;
* every issuance carries a key unique per (workspace, issue_key): a replay returns the first coupon;
* coupon codes are random, unique per workspace by constraint.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from shequn.core.models import Workspace


class Store(models.Model):
    """A shop where coupons are redeemed at the counter (门店)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    code = models.SlugField(max_length=32)
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("store")
        constraints = [models.UniqueConstraint(fields=["workspace", "code"], name="uniq_store_code")]
        ordering = ["code"]

    def __str__(self) -> str:
        return self.name


class StoreClerk(models.Model):
    """A staff user assigned to a store. A clerk may redeem only as a store they are assigned to."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="clerks")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["store", "user"], name="uniq_store_clerk")]
        indexes = [models.Index(fields=["workspace", "user"], name="storeclerk_ws_user")]


class OfferKind(models.TextChoices):
    PERCENT_OFF = "percent_off", _("Percentage off")
    AMOUNT_OFF = "amount_off", _("Amount off")
    GIFT = "gift", _("Gift / free item")


class Trigger(models.TextChoices):
    MANUAL = "manual", _("Issued by staff, claim codes or points only")
    TIER_UPGRADE = "tier_upgrade", _("On tier upgrade")
    BIRTHDAY = "birthday", _("On the member's birthday")


class Offer(models.Model):
    """A coupon template. ``valid_from``/``valid_until`` bound when coupons can be issued and redeemed;
    a coupon is valid ``coupon_days`` days from issue (``None``: until the offer ends).

    Limits: ``stock`` coupons in all (global), ``per_member`` coupons per member, ``uses_per_coupon``
    redemptions per coupon (per code). ``points_price`` > 0 lets members buy a coupon with points
    (积分兑换). ``clippable`` offers are shown to members to clip (personalised offers)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    kind = models.CharField(max_length=16, choices=OfferKind.choices)
    percent_off = models.PositiveSmallIntegerField(null=True, blank=True)
    amount_off = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    gift_item = models.CharField(max_length=100, blank=True)
    items = models.JSONField(default=list, blank=True, help_text="item names the offer is about")
    categories = models.JSONField(default=list, blank=True)
    min_spend = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    valid_from = models.DateTimeField(null=True, blank=True)
    valid_until = models.DateTimeField(null=True, blank=True)
    coupon_days = models.PositiveIntegerField(null=True, blank=True)
    stock = models.PositiveIntegerField(null=True, blank=True)
    per_member = models.PositiveIntegerField(null=True, blank=True)
    uses_per_coupon = models.PositiveIntegerField(default=1)
    issued_count = models.PositiveIntegerField(default=0)
    points_price = models.PositiveIntegerField(null=True, blank=True)
    point_type = models.CharField(max_length=32, default="points")
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.MANUAL)
    trigger_tier = models.CharField(max_length=32, blank=True)
    clippable = models.BooleanField(default=False)
    stores = models.ManyToManyField(Store, blank=True, related_name="offers")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("offer")
        constraints = [
            models.CheckConstraint(condition=Q(uses_per_coupon__gte=1), name="offer_uses_gte_1"),
            models.CheckConstraint(condition=Q(stock__isnull=True) | Q(issued_count__lte=F("stock")),
                                   name="offer_issued_lte_stock"),
        ]
        indexes = [models.Index(fields=["workspace", "active", "trigger"], name="offer_ws_active_trigger")]
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.name


class CouponStatus(models.TextChoices):
    ISSUED = "issued", _("Issued")
    REDEEMED = "redeemed", _("Redeemed")


class Coupon(models.Model):
    """One member's coupon. Expiry is not a stored status: a coupon with status ``issued`` past its
    ``valid_until`` is expired."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    offer = models.ForeignKey(Offer, on_delete=models.CASCADE, related_name="coupons")
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+", db_constraint=False)
    code = models.CharField(max_length=24)
    status = models.CharField(max_length=8, choices=CouponStatus.choices, default=CouponStatus.ISSUED)
    uses = models.PositiveIntegerField(default=0)
    max_uses = models.PositiveIntegerField(default=1)
    valid_from = models.DateTimeField(null=True, blank=True)
    valid_until = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=16)
    issue_key = models.CharField(max_length=200)
    point_entry_id = models.BigIntegerField(null=True, blank=True)
    actor = models.CharField(max_length=200)
    issued_at = models.DateTimeField()
    redeemed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("coupon")
        constraints = [
            models.UniqueConstraint(fields=["workspace", "code"], name="uniq_coupon_code"),
            models.UniqueConstraint(fields=["workspace", "issue_key"], name="uniq_coupon_issue_key"),
            models.CheckConstraint(condition=Q(uses__lte=F("max_uses")), name="coupon_uses_lte_max"),
            models.CheckConstraint(condition=Q(max_uses__gte=1), name="coupon_max_uses_gte_1"),
        ]
        indexes = [
            models.Index(fields=["member", "status"], name="coupon_member_status"),
            models.Index(fields=["offer", "status"], name="coupon_offer_status"),
        ]

    def __str__(self) -> str:
        return self.code


class Redemption(models.Model):
    """One use of a coupon at a counter (append-only). ``key`` makes redeeming safe to replay."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    coupon = models.ForeignKey(Coupon, on_delete=models.CASCADE, related_name="redemptions")
    offer = models.ForeignKey(Offer, on_delete=models.CASCADE, related_name="redemptions")
    member_id = models.BigIntegerField()
    store = models.ForeignKey(Store, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    clerk = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    actor = models.CharField(max_length=200)
    key = models.CharField(max_length=200)
    amount = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True,
                                 help_text="the bill the coupon was used on")
    discount = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    at = models.DateTimeField()

    class Meta:
        verbose_name = _("redemption")
        constraints = [models.UniqueConstraint(fields=["workspace", "key"], name="uniq_redemption_key")]
        indexes = [
            models.Index(fields=["workspace", "-id"], name="redemption_ws_id"),
            models.Index(fields=["offer", "at"], name="redemption_offer_at"),
        ]


class RedemptionVoid(models.Model):
    """Cancels one redemption (once): the coupon gets its use back; an audit entry records who and why."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    redemption = models.OneToOneField(Redemption, on_delete=models.CASCADE, related_name="void")
    reason = models.CharField(max_length=200)
    actor = models.CharField(max_length=200)
    at = models.DateTimeField()


class OfferClip(models.Model):
    """A member clipped a personalised offer; at the counter it becomes a coupon redeemed at once."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    offer = models.ForeignKey(Offer, on_delete=models.CASCADE, related_name="clips")
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+", db_constraint=False)
    coupon = models.OneToOneField(Coupon, null=True, blank=True, on_delete=models.SET_NULL, related_name="clip")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["offer", "member"], name="uniq_offer_clip")]
        indexes = [models.Index(fields=["workspace", "member"], name="offerclip_ws_member")]


class ClaimCode(models.Model):
    """A campaign QR (活动码): scanning it claims one coupon of ``offer`` per member."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    offer = models.ForeignKey(Offer, on_delete=models.CASCADE, related_name="claim_codes")
    name = models.CharField(max_length=100)
    code = models.CharField(max_length=24)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "code"], name="uniq_claim_code")]


class ActivityCode(models.Model):
    """A "share after consumption" code (消费后分享) on a store's table: scan, share, get the reward —
    a coupon of ``reward_offer`` and/or ``reward_points`` — once per member per code per day."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    store = models.ForeignKey(Store, null=True, blank=True, on_delete=models.CASCADE, related_name="activity_codes")
    table = models.CharField(max_length=32, blank=True)
    name = models.CharField(max_length=100)
    code = models.CharField(max_length=24)
    reward_offer = models.ForeignKey(Offer, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reward_points = models.PositiveIntegerField(null=True, blank=True)
    point_type = models.CharField(max_length=32, default="points")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "code"], name="uniq_activity_code"),
            models.CheckConstraint(condition=Q(reward_offer__isnull=False) | Q(reward_points__gt=0),
                                   name="activity_code_has_reward"),
        ]


class ActivityClaim(models.Model):
    """One member's share at one activity code on one day (workspace time zone)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    activity = models.ForeignKey(ActivityCode, on_delete=models.CASCADE, related_name="claims")
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+", db_constraint=False)
    day = models.DateField()
    coupon = models.ForeignKey(Coupon, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    point_entry_id = models.BigIntegerField(null=True, blank=True)
    interaction_id = models.BigIntegerField(null=True, blank=True)
    at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["activity", "member", "day"], name="uniq_activity_claim_day")]
