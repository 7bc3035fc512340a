"""Stored value (储值): a member's prepaid balance in fen, as append-only entries plus a cached balance.

Invariants (checked by ``services.verify``, ADR 0009):

* entries are never updated or deleted; a refund is a new entry that names the payment it refunds;
* for every wallet ``balance`` == the sum of its entries' amounts, and ``balance >= 0``;
* the refunds of a payment never add up to more than the payment;
* every entry carries an idempotency key, unique per workspace.

Like the points ledger, wallet rows point at their member without a database foreign-key constraint
(``db_constraint=False``): the services check that a member belongs to the workspace before they
create its wallet (see ADR 0006 for why a KEY SHARE lock on the member row is avoided).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from shequn.core.models import Workspace


class Wallet(models.Model):
    """The cached balance of one member, in fen (分). Changed only by arithmetic in SQL: a payment
    is ``UPDATE … SET balance = balance - x WHERE … AND balance >= x`` with its row count checked, and
    ``CHECK (balance >= 0)`` is the backstop."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+", db_constraint=False,
                               db_index=False)
    balance = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "member"], name="uniq_wallet_member"),
            models.CheckConstraint(condition=Q(balance__gte=0), name="wallet_balance_gte_0"),
        ]
        indexes = [models.Index(fields=["workspace", "balance"], condition=Q(balance__gt=0), name="wallet_ws_positive")]

    def __str__(self) -> str:
        return f"{self.member_id}: {self.balance} fen"


class WalletEntryKind(models.TextChoices):
    TOP_UP = "top_up", _("Top-up")
    PAY = "pay", _("Payment")
    REFUND = "refund", _("Refund")


class WalletEntry(models.Model):
    """One append-only line of a wallet: a top-up (+), a payment (−) or the refund of a payment (+,
    ``related`` = the payment). ``amount`` is in fen."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_constraint=False,
                                  db_index=False)
    wallet = models.ForeignKey(Wallet, on_delete=models.CASCADE, related_name="entries", db_constraint=False,
                               db_index=False)
    member = models.ForeignKey("members.Member", on_delete=models.CASCADE, related_name="+", db_constraint=False,
                               db_index=False)
    kind = models.CharField(max_length=8, choices=WalletEntryKind.choices)
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField(help_text="the wallet's balance right after this entry")
    reason = models.CharField(max_length=200, blank=True)
    actor = models.CharField(max_length=200)
    store = models.CharField(max_length=64, blank=True)
    idempotency_key = models.CharField(max_length=200)
    related = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="refunds",
                                db_constraint=False, db_index=False, help_text="the payment a refund gives back")
    at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "wallet entries"
        constraints = [
            models.UniqueConstraint(fields=["workspace", "idempotency_key"], name="uniq_wallet_entry_key"),
            models.CheckConstraint(
                condition=(Q(kind__in=["top_up", "refund"], amount__gt=0) | Q(kind="pay", amount__lt=0)),
                name="wallet_entry_sign_by_kind"),
            models.CheckConstraint(condition=Q(balance_after__gte=0), name="wallet_entry_balance_after_gte_0"),
            models.CheckConstraint(condition=Q(kind="refund", related__isnull=False) | ~Q(kind="refund"),
                                   name="wallet_refund_names_payment"),
        ]
        indexes = [
            models.Index(fields=["wallet", "-id"], name="walletentry_wallet_id"),
            models.Index(fields=["workspace", "at"], name="walletentry_ws_at"),
            models.Index(fields=["related"], condition=Q(related__isnull=False), name="walletentry_related"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+d} #{self.pk}"
