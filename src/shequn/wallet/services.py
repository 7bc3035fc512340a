"""Every write of stored value (储值): top up, pay, refund a payment, and the ledger check.

How the wallet stays right (ADR 0009, built on the rules of ADR 0006):

* amounts are whole fen (分), positive, at most 10^11 fen per operation; anything else is refused
  before anything is written (``invalid_amount``);
* every operation carries an idempotency key, unique per workspace in the database: a replay — also
  one racing the first call — returns the first entry and changes nothing; a key reused for another
  operation is ``idempotency_key_reused``;
* the balance changes only by arithmetic in SQL; a payment is ``UPDATE … SET balance = balance - x
  WHERE … AND balance >= x`` whose row count is checked, with ``CHECK (balance >= 0)`` as the
  backstop. On PostgreSQL a payment or top-up of an existing wallet is one statement (the
  conditional ``UPDATE`` takes the row lock, the entry is inserted from what it returns); otherwise,
  and for every refund, the wallet row is locked first (``SELECT … FOR UPDATE``; SQLite serialises
  writers with ``BEGIN IMMEDIATE``);
* a refund names its payment and is refused beyond what is left of it (``refund_exceeds_payment``):
  the refunds of one payment are summed under the wallet's row lock, which every write of that wallet
  takes.

Stored value does not record interactions: the payment belongs to a purchase that the till already
reports as a ``purchase`` interaction (earn rules and counters would count it twice), and the entries
are the wallet's own history.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from shequn.core import audit, clock
from shequn.core.errors import Conflict, NotFound, ValidationError
from shequn.core.models import Workspace
from shequn.core.tenancy import scoped
from shequn.members import queries as member_queries

from .models import Wallet, WalletEntry, WalletEntryKind

MAX_FEN = 10**11
"""Largest amount one operation may move: ¥1,000,000,000.00."""

KEY_MAX = WalletEntry._meta.get_field("idempotency_key").max_length or 200
REASON_MAX = WalletEntry._meta.get_field("reason").max_length or 200
ACTOR_MAX = WalletEntry._meta.get_field("actor").max_length or 200
STORE_MAX = WalletEntry._meta.get_field("store").max_length or 64


# ---------------------------------------------------------------------------------------------
# input


def clean_fen(value: Any, *, field: str = "amount") -> int:
    """A positive whole number of fen. Accepts ints and integral strings/decimals (``"1200"``,
    ``Decimal("1200")``); refuses fractions of a fen (``12.5``, ``"0.5"``), zero, negatives, booleans,
    floats that are not whole, and more than 10^11."""
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float):
        number = int(value) if value.is_integer() else None
    elif isinstance(value, (str, Decimal)):
        try:
            dec = Decimal(str(value).strip())
        except InvalidOperation:
            dec = None
        if dec is not None and dec.is_finite() and dec == dec.to_integral_value():
            number = int(dec)
    if number is None:
        raise ValidationError(_("%(field)s must be a whole number of fen (1 yuan = 100 fen)") % {"field": field},
                              code="invalid_amount", details={"field": field})
    if number <= 0 or number > MAX_FEN:
        raise ValidationError(_("%(field)s must be a positive number of fen, at most %(max)d")
                              % {"field": field, "max": MAX_FEN}, code="invalid_amount", details={"field": field})
    return number


def _clean_key(value: Any) -> str:
    key = value.strip() if isinstance(value, str) else ""
    if not key or len(key) > KEY_MAX:
        raise ValidationError(_("an idempotency key of 1–%(n)d characters is required") % {"n": KEY_MAX},
                              code="invalid_idempotency_key", details={"field": "idempotency_key"})
    return key


def _clean_text(value: Any, field: str, limit: int) -> str:
    text = str(value or "").strip()
    if len(text) > limit:
        raise ValidationError(_("%(field)s is longer than %(n)d characters") % {"field": field, "n": limit},
                              code="invalid_field", details={"field": field})
    return text


def _clean_actor(value: Any) -> str:
    actor = str(value or "").strip()
    if not actor:
        raise ValidationError(_("an actor is required"), code="invalid_field", details={"field": "actor"})
    return actor[:ACTOR_MAX]


def _member_id(workspace: Workspace, member: Any) -> int:
    mid = getattr(member, "pk", member)
    if getattr(member, "workspace_id", workspace.pk) != workspace.pk or not isinstance(mid, int) \
            or isinstance(mid, bool) or mid <= 0:
        raise NotFound(_("member %(id)s not found") % {"id": mid}, code="unknown_member", details={"field": "member"})
    return mid


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and timezone.is_naive(value):
        raise ValueError("times given to the wallet must be timezone-aware")
    return value


# ---------------------------------------------------------------------------------------------
# the wallet row


def _ensure_wallet(workspace: Workspace, mid: int) -> None:
    """Create the member's wallet if it has none (members of ``workspace`` only)."""
    if scoped(Wallet, workspace).filter(member_id=mid).exists():
        return
    if not member_queries.existing_ids(workspace, [mid]):
        raise NotFound(_("member %(id)s not found") % {"id": mid}, code="unknown_member", details={"field": "member"})
    Wallet.objects.bulk_create([Wallet(workspace=workspace, member_id=mid, updated_at=clock.now())],
                               ignore_conflicts=True)


def _lock_wallet(workspace: Workspace, mid: int) -> Wallet:
    _ensure_wallet(workspace, mid)
    return scoped(Wallet, workspace).select_for_update().get(member_id=mid)


def _replayed(workspace: Workspace, key: str, *, kind: str, member_id: int, amount: int,
              related_id: int | None = None) -> WalletEntry | None:
    entry = scoped(WalletEntry, workspace).filter(idempotency_key=key).first()
    if entry is None:
        return None
    if entry.kind != kind or entry.member_id != member_id or entry.amount != amount or (
            related_id is not None and entry.related_id != related_id):
        raise Conflict(_("idempotency key %(key)r was already used for a different operation") % {"key": key},
                       code="idempotency_key_reused", details={"entry_id": entry.pk})
    return entry


def _insufficient(balance: int, amount: int) -> Conflict:
    return Conflict(_("not enough stored value: %(balance)d fen, %(amount)d fen requested")
                    % {"balance": balance, "amount": amount}, code="insufficient_funds",
                    details={"balance": balance, "requested": amount})


@functools.cache
def _tables() -> dict[str, str]:
    qn = connection.ops.quote_name
    return {"wallet": qn(Wallet._meta.db_table), "entry": qn(WalletEntry._meta.db_table)}


_COLUMNS = ("workspace_id, wallet_id, member_id, kind, amount, balance_after, reason, actor, store, idempotency_key, "
            "related_id, at, created_at")


def _pg_change(workspace: Workspace, mid: int, kind: str, delta: int, *, reason: str, actor: str, store: str,
               key: str, requested: dt.datetime | None) -> WalletEntry | None:
    """PostgreSQL: a top-up or payment of an existing wallet as one statement. ``None`` (nothing
    written) when the wallet does not exist or a payment finds too little."""
    t = _tables()
    stamp = clock.now()
    at = "%(now)s::timestamptz" if requested is not None else "GREATEST(updated_at, %(now)s::timestamptz)"
    guard = "AND balance >= %(need)s" if delta < 0 else ""
    sql = f"""
        WITH w AS (
            UPDATE {t['wallet']} SET balance = balance + %(delta)s, updated_at = {at}
            WHERE workspace_id = %(ws)s AND member_id = %(member)s {guard}
            RETURNING id, balance, updated_at
        )
        INSERT INTO {t['entry']} ({_COLUMNS})
        SELECT %(ws)s, w.id, %(member)s, %(kind)s, %(delta)s, w.balance, %(reason)s, %(actor)s, %(store)s, %(key)s,
               NULL, w.updated_at, %(stamp)s FROM w
        RETURNING id, wallet_id, balance_after, at"""  # noqa: S608 - names from the models, values are parameters
    params = {"delta": delta, "need": -delta, "ws": workspace.pk, "member": mid, "kind": kind, "reason": reason,
              "actor": actor, "store": store, "key": key, "now": requested or stamp, "stamp": stamp}
    with transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext(), connection.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    if row is None:
        return None
    entry = WalletEntry(id=row[0], workspace_id=workspace.pk, wallet_id=row[1], member_id=mid, kind=kind, amount=delta,
                        balance_after=row[2], reason=reason, actor=actor, store=store, idempotency_key=key,
                        related_id=None, at=row[3], created_at=stamp)
    entry._state.adding, entry._state.db = False, connection.alias
    return entry


def _locked_change(workspace: Workspace, mid: int, kind: str, delta: int, *, reason: str, actor: str, store: str,
                   key: str, requested: dt.datetime | None, related: WalletEntry | None = None,
                   wallet: Wallet | None = None) -> WalletEntry:
    """The general path, in the caller's transaction: lock the wallet row, insert the entry (its key
    is unique: a replay fails here), change the balance conditionally."""
    wallet = wallet or _lock_wallet(workspace, mid)
    now = requested or max(clock.now(), wallet.updated_at)
    if delta < 0 and wallet.balance < -delta:
        raise _insufficient(wallet.balance, -delta)
    entry = WalletEntry.objects.create(workspace=workspace, wallet=wallet, member_id=mid, kind=kind, amount=delta,
                                       balance_after=wallet.balance + delta, reason=reason, actor=actor, store=store,
                                       idempotency_key=key, related=related, at=now)
    changed = (scoped(Wallet, workspace).filter(pk=wallet.pk, balance__gte=max(0, -delta))
               .update(balance=F("balance") + delta, updated_at=now))
    if changed != 1:
        raise _insufficient(wallet.balance, -delta)
    return entry


def _operate(workspace: Workspace, member: Any, kind: str, amount: Any, *, reason: Any, actor: Any, store: Any,
             idempotency_key: Any, now: dt.datetime | None) -> WalletEntry:
    fen = clean_fen(amount)
    key = _clean_key(idempotency_key)
    reason = _clean_text(reason, "reason", REASON_MAX)
    store = _clean_text(store, "store", STORE_MAX)
    actor = _clean_actor(actor)
    mid = _member_id(workspace, member)
    requested = _aware(now)
    delta = fen if kind == WalletEntryKind.TOP_UP else -fen

    def check() -> WalletEntry | None:
        return _replayed(workspace, key, kind=kind, member_id=mid, amount=delta)

    if connection.vendor == "postgresql":
        try:
            entry = _pg_change(workspace, mid, kind, delta, reason=reason, actor=actor, store=store, key=key,
                               requested=requested)
        except IntegrityError:
            entry = check()
            if entry is None:
                raise
            return entry
        if entry is not None:
            return entry
        # No row: no wallet yet, too little, or the replay of a payment that has spent the balance.
        hit = check()
        if hit is not None:
            return hit
    try:
        with transaction.atomic():
            return _locked_change(workspace, mid, kind, delta, reason=reason, actor=actor, store=store, key=key,
                                  requested=requested)
    except IntegrityError:
        entry = check()
        if entry is None:
            raise
        return entry
    except Conflict as exc:
        if exc.code == "insufficient_funds":
            hit = check()
            if hit is not None:
                return hit
        raise


# ---------------------------------------------------------------------------------------------
# operations


def top_up(workspace: Workspace, member: Any, amount: Any, *, idempotency_key: str, actor: str, reason: str = "",
           store: str = "", now: dt.datetime | None = None) -> WalletEntry:
    """Add ``amount`` fen to the member's stored value (the member paid for it at the counter or
    online). Creates the wallet on the first top-up."""
    entry = _operate(workspace, member, WalletEntryKind.TOP_UP, amount, reason=reason, actor=actor, store=store,
                     idempotency_key=idempotency_key, now=now)
    return entry


def pay(workspace: Workspace, member: Any, amount: Any, *, idempotency_key: str, actor: str, reason: str = "",
        store: str = "", now: dt.datetime | None = None) -> WalletEntry:
    """Pay ``amount`` fen from the member's stored value; ``insufficient_funds`` beyond the balance."""
    return _operate(workspace, member, WalletEntryKind.PAY, amount, reason=reason, actor=actor, store=store,
                    idempotency_key=idempotency_key, now=now)


def refund(workspace: Workspace, payment_id: int, amount: Any = None, *, idempotency_key: str, actor: str,
           reason: str = "", now: dt.datetime | None = None) -> WalletEntry:
    """Give back ``amount`` fen of a payment (all that is left of it when ``amount`` is omitted) to
    the wallet it was paid from. Partial refunds add up; together never more than the payment
    (``refund_exceeds_payment``; ``already_refunded`` when nothing is left)."""
    payment = scoped(WalletEntry, workspace).filter(pk=payment_id if isinstance(payment_id, int) else -1).first()
    if payment is None or payment.kind != WalletEntryKind.PAY:
        raise NotFound(_("payment %(id)s not found") % {"id": payment_id}, code="unknown_payment",
                       details={"field": "payment_id"})
    fen = clean_fen(amount) if amount is not None else None
    key = _clean_key(idempotency_key)
    reason = _clean_text(reason, "reason", REASON_MAX)
    actor = _clean_actor(actor)
    requested = _aware(now)

    def check() -> WalletEntry | None:
        entry = scoped(WalletEntry, workspace).filter(idempotency_key=key).first()
        if entry is None:
            return None
        if entry.kind != WalletEntryKind.REFUND or entry.related_id != payment.pk or (
                fen is not None and entry.amount != fen):
            raise Conflict(_("idempotency key %(key)r was already used for a different operation") % {"key": key},
                           code="idempotency_key_reused", details={"entry_id": entry.pk})
        return entry

    try:
        with transaction.atomic():
            wallet = _lock_wallet(workspace, payment.member_id)
            hit = check()  # how much is left depends on what happened before: find a replay first
            if hit is not None:
                return hit
            refunded = scoped(WalletEntry, workspace).filter(related=payment, kind=WalletEntryKind.REFUND) \
                .aggregate(n=Sum("amount"))["n"] or 0
            left = -payment.amount - refunded
            if left <= 0:
                raise Conflict(_("this payment has been refunded in full"), code="already_refunded",
                               details={"payment_id": payment.pk})
            give = left if fen is None else fen
            if give > left:
                raise Conflict(_("a refund of %(amount)d fen is more than the %(left)d fen left of the payment")
                               % {"amount": give, "left": left}, code="refund_exceeds_payment",
                               details={"payment_id": payment.pk, "left": left, "requested": give})
            entry = _locked_change(workspace, payment.member_id, WalletEntryKind.REFUND, give, reason=reason,
                                   actor=actor, store=payment.store, key=key, requested=requested, related=payment,
                                   wallet=wallet)
            audit.record(workspace, actor, "wallet.refund", entry, {"payment": payment.pk, "amount": give})
            return entry
    except IntegrityError:
        entry = check()
        if entry is None:
            raise
        return entry


# ---------------------------------------------------------------------------------------------
# the ledger check


@dataclass
class Discrepancy:
    check: str
    member_id: int | None
    expected: int
    actual: int
    ref: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "member_id": self.member_id, "expected": self.expected, "actual": self.actual,
                "ref": self.ref}


@dataclass
class VerifyReport:
    workspace: str
    wallets: int = 0
    entries: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.discrepancies

    def as_dict(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "ok": self.ok, "wallets": self.wallets, "entries": self.entries,
                "discrepancies": [d.as_dict() for d in self.discrepancies]}


def verify(workspace: Workspace) -> VerifyReport:
    """Prove the stored value of a workspace (reads only, a fixed number of queries): every wallet's
    balance equals the sum of its entries (``entries_sum``) and is not negative (``negative``); no
    entry lacks its wallet (``orphan``); the refunds of every payment add up to at most the payment
    (``over_refunded``); the newest entry of a wallet states its balance (``balance_after``)."""
    report = VerifyReport(workspace=workspace.slug)
    entries = scoped(WalletEntry, workspace)
    sums = {wid: (total, n) for wid, total, n in entries.values_list("wallet_id").annotate(
        total=Sum("amount"), n=Count("id")).order_by()}
    report.entries = sum(n for _total, n in sums.values())
    last: dict[int, int] = {}
    for wid, balance_after in (entries.order_by("wallet_id", "-id").values_list("wallet_id", "balance_after")):
        last.setdefault(wid, balance_after)
    seen = set()
    for wid, mid, balance in scoped(Wallet, workspace).values_list("pk", "member_id", "balance").order_by("pk"):
        report.wallets += 1
        seen.add(wid)
        total = sums.get(wid, (0, 0))[0]
        if balance < 0:
            report.discrepancies.append(Discrepancy("negative", mid, 0, balance))
        if total != balance:
            report.discrepancies.append(Discrepancy("entries_sum", mid, total, balance))
        if wid in last and last[wid] != balance:
            report.discrepancies.append(Discrepancy("balance_after", mid, balance, last[wid]))
    for wid in sorted(set(sums) - seen):
        report.discrepancies.append(Discrepancy("orphan", None, 0, sums[wid][0], ref=wid))
    refunded = dict(entries.filter(kind=WalletEntryKind.REFUND).values_list("related_id")
                    .annotate(n=Sum("amount")).order_by())
    for pk, mid, amount in entries.filter(pk__in=list(refunded), kind=WalletEntryKind.PAY) \
            .values_list("pk", "member_id", "amount"):
        if refunded[pk] > -amount:
            report.discrepancies.append(Discrepancy("over_refunded", mid, -amount, refunded[pk], ref=pk))
    return report
