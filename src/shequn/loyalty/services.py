"""Every write of the points ledger: earn, spend, reverse, transfer, adjust, expiry and release of
pending points, the earn rules that react to new interactions, and the programme settings.

How the ledger stays right (ADR 0006):

* every operation locks the member's ``PointBalance`` row before it reads or writes anything else —
  ``SELECT … FOR UPDATE`` (several rows in primary-key order), or for a plain earn on PostgreSQL the
  ``UPDATE`` of the row itself — and changes amounts only with arithmetic in SQL
  (``available = available + x``); a debit is a conditional ``UPDATE … WHERE available >= x`` whose
  row count is checked, with ``CHECK (available >= 0)`` as the backstop. On SQLite every write
  transaction starts with ``BEGIN IMMEDIATE`` (settings), which serialises writers, so the same
  code is correct there;
* every operation carries an idempotency key, unique per (workspace, point type) in the database: a
  replay — also one racing the first call — returns the first entry and changes nothing;
* spending draws the soonest-expiring available lot first (then the oldest) and records the draws;
* due expiries and releases of pending points are applied to a balance before it is used, and by
  the periodic ``expire_due``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import F, Min, Q, Sum
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.text import slugify
from django.utils.translation import gettext as _

from shequn.core import audit, clock, hooks
from shequn.core.errors import Conflict, NotFound, ValidationError
from shequn.core.models import Workspace
from shequn.core.prepared import Prepared, batches
from shequn.core.tenancy import get_scoped, scoped
from shequn.interactions.conditions import matches
from shequn.members import queries as member_queries
from shequn.members.models import Member, MemberStatus

from . import periods
from .models import (
    CapPeriod,
    EarnCapUsage,
    EarnRule,
    EntryKind,
    ExpiryPolicy,
    MergeDirection,
    PointBalance,
    PointEntry,
    PointKind,
    PointLot,
    PointLotDraw,
    PointMerge,
    PointType,
)

MAX_POINTS = 10**12
"""Largest amount one operation may move (the columns hold about 9.2 × 10^18)."""

KEY_MAX = PointEntry._meta.get_field("idempotency_key").max_length or 200
REASON_MAX = PointEntry._meta.get_field("reason").max_length or 200
ACTOR_MAX = PointEntry._meta.get_field("actor").max_length or 200

# Domains that scale awards (tiers with a point multiplier, double-points campaigns) register a
# function here from their AppConfig.ready(). Each returns the factor for one award of ``rule`` for
# ``interaction``; the factors are multiplied and the result is rounded down to whole points.
EARN_MULTIPLIERS: list[Callable[[Workspace, EarnRule, Any], Decimal]] = []

DEFAULT_POINT_TYPES: list[dict[str, Any]] = [
    {"code": "points", "name": "积分", "kind": PointKind.CURRENCY, "expiry_policy": ExpiryPolicy.YEAR_END,
     "expiry_period": 1},
    {"code": "growth", "name": "成长值", "kind": PointKind.CONTRIBUTION, "expiry_policy": ExpiryPolicy.NEVER,
     "expiry_period": 0},
]


# ---------------------------------------------------------------------------------------------
# programme defaults and input cleaning


@transaction.atomic
def install_defaults(workspace: Workspace) -> None:
    """Give a new workspace a spendable currency 积分 (expires at the end of the year after it was
    earned) and a contribution currency 成长值 for tiers (never expires, never spent)."""
    if scoped(PointType, workspace).exists():
        return
    PointType.objects.bulk_create([PointType(workspace=workspace, **spec) for spec in DEFAULT_POINT_TYPES])


def clean_points(value: Any, *, field: str = "amount", allow_negative: bool = False) -> int:
    """A whole number of points: positive (or, with ``allow_negative``, non-zero), at most 10^12.
    Accepts ints and integral decimals or strings; refuses fractions, booleans and anything else."""
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
        raise ValidationError(_("%(field)s must be a whole number of points") % {"field": field},
                              code="invalid_amount", details={"field": field})
    if number == 0 or (number < 0 and not allow_negative) or abs(number) > MAX_POINTS:
        message = (_("%(field)s must not be zero") if allow_negative else _("%(field)s must be a positive whole number"))
        raise ValidationError(message % {"field": field}, code="invalid_amount", details={"field": field})
    return number


def _clean_key(value: Any) -> str:
    key = value.strip() if isinstance(value, str) else ""
    if not key or len(key) > KEY_MAX:
        raise ValidationError(_("an idempotency key of 1–%(n)d characters is required") % {"n": KEY_MAX},
                              code="invalid_idempotency_key", details={"field": "idempotency_key"})
    return key


def _clean_reason(value: Any, *, required: bool = False) -> str:
    reason = str(value or "").strip()
    if required and not reason:
        raise ValidationError(_("a reason is required"), code="reason_required", details={"field": "reason"})
    if len(reason) > REASON_MAX:
        raise ValidationError(_("the reason is longer than %(n)d characters") % {"n": REASON_MAX},
                              code="invalid_field", details={"field": "reason"})
    return reason


def _clean_actor(value: Any) -> str:
    actor = str(value or "").strip()
    if not actor:
        raise ValidationError(_("an actor is required"), code="invalid_field", details={"field": "actor"})
    return actor[:ACTOR_MAX]


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and timezone.is_naive(value):
        raise ValueError("times given to the ledger must be timezone-aware")
    return value


def _now(value: dt.datetime | None) -> dt.datetime:
    return _aware(value) or clock.now()


def _ledger_time(requested: dt.datetime | None, *bals: PointBalance) -> dt.datetime:
    """When an operation takes effect. A time given by the caller is used as is (imports, tests).
    Otherwise the clock is read once the balance rows are locked, and never earlier than their last
    change: the entries of a balance are in time order whatever order the callers started in, and
    whatever the skew between the clocks of application servers."""
    if requested is not None:
        return requested
    return max([clock.now(), *(b.updated_at for b in bals)])


def get_point_type(workspace: Workspace, point_type: PointType | str | int) -> PointType:
    """The workspace's point type by instance, code or id; ``unknown_point_type`` otherwise."""
    row: PointType | None = None
    if isinstance(point_type, PointType):
        row = point_type if point_type.workspace_id == workspace.pk else None
    elif isinstance(point_type, str) and point_type:
        row = scoped(PointType, workspace).filter(code=point_type).first()
    elif isinstance(point_type, int) and not isinstance(point_type, bool):
        row = scoped(PointType, workspace).filter(pk=point_type).first()
    if row is None:
        raise NotFound(_("unknown point type %(code)r") % {"code": getattr(point_type, "code", point_type)},
                       code="unknown_point_type", details={"field": "point_type"})
    return row


def _member_id(workspace: Workspace, member: Member | int) -> int:
    if isinstance(member, Member):
        if member.workspace_id != workspace.pk:
            raise NotFound(_("member %(id)s not found") % {"id": member.pk}, code="unknown_member",
                           details={"field": "member"})
        return int(member.pk)
    if isinstance(member, int) and not isinstance(member, bool) and member > 0:
        return member
    raise NotFound(_("member %(id)s not found") % {"id": member}, code="unknown_member", details={"field": "member"})


# ---------------------------------------------------------------------------------------------
# the hot path: a handful of fixed SQL statements per operation, all under the balance row lock
#
# Earn and spend run once per purchase and per redemption, so their statements are written out
# (fixed text, every value a parameter) instead of being compiled by the ORM on each call. On
# PostgreSQL a plain earn and a spend are one prepared statement each (below): a spend costs three
# round trips — begin, the statement, commit — and a plain earn one. On the general path,
# statements that do not wait for one another are sent in one round trip (a psycopg pipeline). The
# rare paths (expiry, reversal, settings, verify) use the ORM. Table and column names come from the
# models.


@dataclass
class _Lot:
    """What the hot path needs of a lot."""

    id: int
    remaining: int
    released: bool
    earned_at: dt.datetime
    expires_at: dt.datetime | None


@functools.cache
def _tables() -> dict[str, str]:
    qn = connection.ops.quote_name
    return {"bal": qn(PointBalance._meta.db_table), "entry": qn(PointEntry._meta.db_table),
            "lot": qn(PointLot._meta.db_table), "draw": qn(PointLotDraw._meta.db_table)}


def _to_db(value: dt.datetime | None) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _from_db(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


@functools.cache
def _can_pipeline() -> bool:
    if connection.vendor != "postgresql":
        return False
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


class _Batch:
    """Statements sent together: in one round trip on PostgreSQL (a pipeline: the server runs them in
    order, the client waits once), one after the other elsewhere. Expected row counts are checked,
    and results read, once the batch is done."""

    def __init__(self) -> None:
        self._cursors: list[Any] = []
        self._checks: list[tuple[Any, int, Callable[[], Exception]]] = []
        self._after: list[Callable[[], None]] = []

    def run(self, sql: str, params: Sequence[Any], *, rowcount: int | None = None,
            error: Callable[[], Exception] | None = None) -> Any:
        cur = connection.cursor()
        self._cursors.append(cur)
        cur.execute(sql, params)
        if rowcount is not None:
            self._checks.append((cur, rowcount, error or _inconsistent))
        return cur

    def rows(self, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
        """Run a query; the list it returns is filled when the batch is done."""
        cur = self.run(sql, params)
        out: list[Sequence[Any]] = []
        self.after(lambda: out.extend(cur.fetchall()))
        return out

    def after(self, fn: Callable[[], None]) -> None:
        self._after.append(fn)

    def finish(self) -> None:
        for cur, expected, error in self._checks:
            if cur.rowcount != expected:
                raise error()
        for fn in self._after:
            fn()

    def close(self) -> None:
        for cur in self._cursors:
            cur.close()


@contextlib.contextmanager
def _batch() -> Iterator[_Batch]:
    batch = _Batch()
    try:
        if _can_pipeline():
            connection.ensure_connection()
            with connection.wrap_database_errors, connection.connection.pipeline():
                yield batch
        else:
            yield batch
        batch.finish()
    finally:
        batch.close()


def _inconsistent() -> Exception:
    return Conflict(_("the ledger changed under a lock; nothing was written"), code="ledger_inconsistent")


def _lock_sql(n: int) -> str:
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    return (f"SELECT id, member_id, available, pending, lifetime_earned, next_change_at, updated_at FROM {_tables()['bal']} "  # noqa: S608
            f"WHERE workspace_id = %s AND point_type_id = %s AND member_id IN ({', '.join(['%s'] * n)}) ORDER BY id{lock}")


def _read_balances(workspace: Workspace, pt: PointType, rows: Iterable[Sequence[Any]]) -> dict[int, PointBalance]:
    out = {}
    for pk, mid, available, pending, lifetime, next_change_at, updated_at in rows:
        bal = PointBalance(id=pk, workspace_id=workspace.pk, member_id=mid, point_type_id=pt.pk, available=available,
                           pending=pending, lifetime_earned=lifetime, next_change_at=_from_db(next_change_at),
                           updated_at=_from_db(updated_at))
        bal._state.adding, bal._state.db = False, connection.alias
        out[mid] = bal
    return out


def _create_balances(workspace: Workspace, pt: PointType, missing: set[int]) -> None:
    unknown = sorted(missing - member_queries.existing_ids(workspace, missing))
    if unknown:
        raise NotFound(_("member %(id)s not found") % {"id": unknown[0]}, code="unknown_member",
                       details={"field": "member"})
    stamp = clock.now()
    PointBalance.objects.bulk_create(
        [PointBalance(workspace=workspace, member_id=mid, point_type=pt, updated_at=stamp) for mid in sorted(missing)],
        ignore_conflicts=True)


def _lock_balances(workspace: Workspace, pt: PointType, member_ids: Iterable[int]) -> dict[int, PointBalance]:
    """Lock the balance rows of ``member_ids`` in ``pt`` in primary-key order (``SELECT … FOR
    UPDATE``), creating missing rows — only for members of ``workspace``, ``unknown_member``
    otherwise."""
    ids = sorted(set(member_ids))
    with _batch() as b:
        found = b.rows(_lock_sql(len(ids)), [workspace.pk, pt.pk, *ids])
    rows = _read_balances(workspace, pt, found)
    missing = set(ids) - set(rows)
    if missing:
        _create_balances(workspace, pt, missing)
        with _batch() as b:
            found = b.rows(_lock_sql(len(ids)), [workspace.pk, pt.pk, *ids])
        rows = _read_balances(workspace, pt, found)
    return rows


def _subscribed() -> bool:
    return bool(hooks.handlers(hooks.POINTS_CHANGED))


def _announce(workspace: Workspace, code: str, *entries: PointEntry) -> None:
    """``hooks.POINTS_CHANGED`` for each new entry, inside the operation's transaction (a handler
    that fails rolls the operation back). Replays announce nothing: they write nothing."""
    for entry in entries:
        hooks.emit(hooks.POINTS_CHANGED, workspace=workspace, member_id=entry.member_id, point_type=code,
                   kind=entry.kind, amount=entry.amount, at=entry.at, entry_id=entry.pk)


def _type_code(workspace: Workspace, type_id: int) -> str:
    return str(scoped(PointType, workspace).values_list("code", flat=True).get(pk=type_id))


def _min_time(*values: dt.datetime | None) -> dt.datetime | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _next_change(bal: PointBalance) -> dt.datetime | None:
    agg = PointLot.objects.filter(member_id=bal.member_id, point_type_id=bal.point_type_id, remaining__gt=0).aggregate(
        expires=Min("expires_at"), release=Min("available_at", filter=Q(released=False)))
    return _min_time(agg["expires"], agg["release"])


def _due(bal: PointBalance, now: dt.datetime) -> bool:
    return bal.next_change_at is not None and bal.next_change_at <= now


_KEEP: Any = object()


def _change_balance(b: _Batch, bal: PointBalance, now: dt.datetime, *, available: int = 0, pending: int = 0,
                    lifetime: int = 0, next_change_at: dt.datetime | None = _KEEP) -> None:
    """Add the (signed) deltas to the locked balance row with one conditional ``UPDATE … WHERE
    available >= x``: a row count other than 1 means the balance would go below zero, and the
    operation fails with nothing written (``CHECK (available >= 0)`` is the last backstop)."""
    sets = "available = available + %s, pending = pending + %s, lifetime_earned = lifetime_earned + %s, updated_at = %s"
    params: list[Any] = [available, pending, lifetime, _to_db(now)]
    if next_change_at is not _KEEP:
        sets += ", next_change_at = %s"
        params.append(_to_db(next_change_at))
    params += [bal.pk, max(0, -available), max(0, -pending)]
    snapshot = (bal.available, bal.pending)

    def refused() -> Exception:
        return Conflict(_("not enough points"), code="insufficient_points",
                        details={"available": snapshot[0], "pending": snapshot[1], "requested": -available})

    b.run(f"UPDATE {_tables()['bal']} SET {sets} WHERE id = %s AND available >= %s AND pending >= %s", params,  # noqa: S608
          rowcount=1, error=refused)
    bal.available += available
    bal.pending += pending
    bal.lifetime_earned += lifetime
    bal.updated_at = now
    if next_change_at is not _KEEP:
        bal.next_change_at = next_change_at


def _new_entry(b: _Batch, workspace: Workspace, type_id: int, member_id: int, kind: str, amount: int, *, reason: str,
               actor: str, key: str | None, now: dt.datetime, source_interaction_id: int | None = None,
               related_id: int | None = None, shortfall: int = 0) -> PointEntry:
    """Insert one entry; its id is known when the batch is done. A key already stored in the point
    type raises ``IntegrityError`` (the unique constraint), which the caller turns into a replay."""
    stamp = clock.now()
    entry = PointEntry(workspace_id=workspace.pk, member_id=member_id, point_type_id=type_id, kind=kind, amount=amount,
                       shortfall=shortfall, reason=reason, actor=actor, source_interaction_id=source_interaction_id,
                       idempotency_key=key, related_id=related_id, at=now, created_at=stamp)
    cur = b.run(f"INSERT INTO {_tables()['entry']} (workspace_id, member_id, point_type_id, kind, amount, shortfall, "  # noqa: S608
                "reason, actor, source_interaction_id, idempotency_key, related_id, at, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                [workspace.pk, member_id, type_id, kind, amount, shortfall, reason, actor, source_interaction_id, key,
                 related_id, _to_db(now), _to_db(stamp)])

    def identify() -> None:
        entry.pk = cur.fetchone()[0]
        entry._state.adding, entry._state.db = False, connection.alias

    b.after(identify)
    return entry


def _entry_ref(entry: PointEntry) -> tuple[str, list[Any]]:
    """SQL for the id of ``entry`` in a statement of the batch that inserts it: the id itself once
    known, otherwise a look-up by its idempotency key (unique, indexed)."""
    if entry.pk is not None:
        return "%s", [entry.pk]
    assert entry.idempotency_key is not None, "an entry without a key must be inserted in an earlier batch"
    return (f"(SELECT id FROM {_tables()['entry']} WHERE workspace_id = %s AND point_type_id = %s "  # noqa: S608
            "AND idempotency_key = %s)", [entry.workspace_id, entry.point_type_id, entry.idempotency_key])


@dataclass
class _LotSpec:
    amount: int
    earned_at: dt.datetime
    available_at: dt.datetime
    expires_at: dt.datetime | None


def _credit(b: _Batch, workspace: Workspace, bal: PointBalance, entry: PointEntry, lots: Sequence[_LotSpec],
            now: dt.datetime, *, lifetime: int = 0) -> None:
    """Create the lots of a credit entry and add them to the balance (pending until available_at)."""
    ref, ref_params = _entry_ref(entry)
    sql = (f"INSERT INTO {_tables()['lot']} (workspace_id, member_id, point_type_id, entry_id, amount, remaining, "  # noqa: S608
           f"earned_at, available_at, released, expires_at) VALUES (%s, %s, %s, {ref}, %s, %s, %s, %s, %s, %s)")
    for s in lots:
        b.run(sql, [workspace.pk, bal.member_id, bal.point_type_id, *ref_params, s.amount, s.amount, _to_db(s.earned_at),
                    _to_db(s.available_at), s.available_at <= now, _to_db(s.expires_at)])
    available = sum(s.amount for s in lots if s.available_at <= now)
    pending = sum(s.amount for s in lots if s.available_at > now)
    nxt = _min_time(bal.next_change_at, *(s.expires_at for s in lots),
                    *(s.available_at for s in lots if s.available_at > now))
    _change_balance(b, bal, now, available=available, pending=pending, lifetime=lifetime,
                    next_change_at=nxt if nxt != bal.next_change_at else _KEEP)


def _plan_sql(exclude_lot: bool) -> str:
    """Lots a debit may take from, in the order it takes them: available (released, not expired),
    the soonest-expiring first, those that never expire last, then the oldest."""
    return (f"SELECT id, remaining, earned_at, expires_at FROM {_tables()['lot']} "  # noqa: S608
            "WHERE member_id = %s AND point_type_id = %s AND remaining > 0 AND released = %s "
            "AND (expires_at IS NULL OR expires_at > %s)" + (" AND id <> %s" if exclude_lot else "")
            + " ORDER BY expires_at ASC NULLS LAST, id LIMIT %s OFFSET %s")


def _take(rows: Iterable[Sequence[Any]], need: int, plan: list[tuple[_Lot, int]]) -> int:
    for pk, remaining, earned_at, expires_at in rows:
        if need == 0:
            break
        take = min(remaining, need)
        plan.append((_Lot(pk, remaining, True, _from_db(earned_at), _from_db(expires_at)), take))  # type: ignore[arg-type]
        need -= take
    return need


PLAN_CHUNK = 8


def _plan_draw(bal: PointBalance, amount: int, now: dt.datetime, *, exclude_lot: int | None = None) -> list[tuple[_Lot, int]]:
    """Which lots a debit of ``amount`` takes from (see ``_plan_sql``). Never an expired or a pending
    lot. May cover less than ``amount`` when the lots hold less."""
    params: list[Any] = [bal.member_id, bal.point_type_id, True, _to_db(now)]
    if exclude_lot is not None:
        params.append(exclude_lot)
    plan: list[tuple[_Lot, int]] = []
    need, offset, chunk = amount, 0, PLAN_CHUNK
    with connection.cursor() as cur:
        while need > 0:
            cur.execute(_plan_sql(exclude_lot is not None), [*params, chunk, offset])
            rows = cur.fetchall()
            need = _take(rows, need, plan)
            if len(rows) < chunk:
                break
            offset += chunk
            chunk *= 4
    return plan


def _apply_draws(b: _Batch, workspace: Workspace, entry: PointEntry, plan: Sequence[tuple[_Lot, int]]) -> None:
    """Take the planned amounts from the lots (each ``UPDATE`` conditional on the lot still holding
    them) and record the draws."""
    t = _tables()
    ref, ref_params = _entry_ref(entry)
    for lot, take in plan:
        b.run(f"UPDATE {t['lot']} SET remaining = remaining - %s WHERE id = %s AND remaining >= %s",  # noqa: S608
              [take, lot.id, take], rowcount=1)
        b.run(f"INSERT INTO {t['draw']} (workspace_id, entry_id, lot_id, amount) VALUES (%s, {ref}, %s, %s)",  # noqa: S608
              [workspace.pk, *ref_params, lot.id, take])
        lot.remaining -= take


@dataclass
class SettleResult:
    expired: int = 0
    released: int = 0


def _settle(workspace: Workspace, bal: PointBalance, now: dt.datetime) -> SettleResult:
    """Apply what is due on a locked balance at ``now``: lots past ``expires_at`` expire (one expire
    entry drawing them to zero), pending lots past ``available_at`` become available. Idempotent;
    costs nothing while ``next_change_at`` is in the future."""
    result = SettleResult()
    if not _due(bal, now):
        return result
    lots = list(PointLot.objects.filter(member_id=bal.member_id, point_type_id=bal.point_type_id, remaining__gt=0)
                .filter(Q(expires_at__lte=now) | Q(released=False, available_at__lte=now)).order_by("id"))
    expired = [lot for lot in lots if lot.expires_at is not None and lot.expires_at <= now]
    releasing = [lot for lot in lots if lot not in expired and not lot.released]
    from_available = sum(lot.remaining for lot in expired if lot.released)
    from_pending = sum(lot.remaining for lot in expired if not lot.released)
    released = sum(lot.remaining for lot in releasing)
    if expired:
        with _batch() as b:
            entry = _new_entry(b, workspace, bal.point_type_id, bal.member_id, EntryKind.EXPIRE,
                               -(from_available + from_pending), reason="expired", actor="system", key=None, now=now)
        with _batch() as b:
            _apply_draws(b, workspace, entry, [(_Lot(lot.pk, lot.remaining, lot.released, lot.earned_at, lot.expires_at),
                                                lot.remaining) for lot in expired])
        if _subscribed():
            _announce(workspace, _type_code(workspace, bal.point_type_id), entry)
    if releasing:
        PointLot.objects.filter(pk__in=[lot.pk for lot in releasing], released=False).update(released=True)
    with _batch() as b:
        _change_balance(b, bal, now, available=released - from_available, pending=-(from_pending + released),
                        next_change_at=_next_change(bal))
    result.expired, result.released = from_available + from_pending, released
    return result


def _replayed(workspace: Workspace, pt: PointType, key: str, *, kind: str, member_id: int | None,
              amount: int | None = None, related_id: int | None = None) -> PointEntry | None:
    """The entry stored under ``key``, if any. The same key used for a different operation is an
    error: the first operation stands and nothing changes."""
    entry = PointEntry.objects.filter(workspace=workspace, point_type=pt, idempotency_key=key).first()
    if entry is None:
        return None
    if (entry.kind != kind or (member_id is not None and entry.member_id != member_id)
            or (amount is not None and entry.amount != amount)
            or (related_id is not None and entry.related_id != related_id)):
        raise Conflict(_("idempotency key %(key)r was already used for a different operation") % {"key": key},
                       code="idempotency_key_reused", details={"entry_id": entry.pk})
    return entry


def _idempotent(check: Callable[[], PointEntry | None], body: Callable[[], PointEntry]) -> PointEntry:
    """Run ``body`` in a transaction (a savepoint inside an outer one). ``body`` inserts its entry,
    key and all, before or together with everything else it writes; when the key is already stored —
    by an earlier call, or by a concurrent one that committed first — the unique constraint rejects
    the insert, everything is rolled back, and the stored entry is the answer."""
    try:
        with transaction.atomic():
            return body()
    except IntegrityError:
        entry = check()
        if entry is None:
            raise
        return entry


# ---------------------------------------------------------------------------------------------
# PostgreSQL: the writes of an operation in one statement
#
# On PostgreSQL the writes that belong together are one statement with data-modifying CTEs: the
# server plans one statement instead of four and the client sends one. An earn that needs nothing
# else (the balance row exists and nothing is due on it) is a single statement: the conditional
# ``UPDATE`` of the balance row takes the row lock and the entry and its lot are inserted from what
# it returns. SQLite runs the same writes as separate statements (it has no round trips to save).

_ENTRY_COLUMNS = ("workspace_id, member_id, point_type_id, kind, amount, shortfall, reason, actor, source_interaction_id, "
                  "idempotency_key, related_id, at, created_at")
_LOT_COLUMNS = "workspace_id, member_id, point_type_id, entry_id, amount, remaining, earned_at, available_at, released, expires_at"


def _fused() -> bool:
    return connection.vendor == "postgresql"


# The hot statements below are fixed text with named parameters. Parsing and planning a statement of
# five data-modifying CTEs costs the server more than running it, so on PostgreSQL each is prepared
# once per connection (``core.prepared``) and then run with ``EXECUTE``: the server keeps the plan.


_TYPES = {"ws": "bigint", "pt": "bigint", "member": "bigint", "points": "bigint", "reason": "text", "actor": "text",
          "source": "bigint", "key": "text", "now": "timestamptz", "stamp": "timestamptz", "basis": "timestamptz",
          "available_at": "timestamptz", "expires": "timestamptz", "chunk": "bigint"}


@functools.cache
def _earn_statement(at_given: bool, clocked: bool = False) -> Prepared:
    """A plain earn: the conditional ``UPDATE`` of the balance row (which is the lock; it matches no
    row when something is due), the entry and the lot inserted from what it returns.

    The entry's time is the later of the balance's last change and now (ledger time never goes
    back on a balance), or the time the caller gave (``at_given``). ``clocked``: it is now, and the
    statement matches no row where the balance changed later than that (another clock ran ahead) —
    the time the handlers' statements planned with it were given (``hooks.plan``)."""
    at = "%(now)s" if at_given or clocked else "GREATEST(updated_at, %(now)s)"
    ahead = " AND updated_at <= %(now)s" if clocked and not at_given else ""
    released = f"(%(available_at)s <= {at})"
    t = _tables()
    sql = f"""
        WITH u AS (
            UPDATE {t['bal']} SET
                available = available + CASE WHEN {released} THEN %(points)s ELSE 0 END,
                pending = pending + CASE WHEN {released} THEN 0 ELSE %(points)s END,
                lifetime_earned = lifetime_earned + %(points)s,
                next_change_at = LEAST(next_change_at, %(expires)s, CASE WHEN {released} THEN NULL ELSE %(available_at)s END),
                updated_at = {at}
            WHERE workspace_id = %(ws)s AND point_type_id = %(pt)s AND member_id = %(member)s
              AND (next_change_at IS NULL OR next_change_at > {at}){ahead}
            RETURNING updated_at AS at
        ), e AS (
            INSERT INTO {t['entry']} ({_ENTRY_COLUMNS})
            SELECT %(ws)s, %(member)s, %(pt)s, 'earn', %(points)s, 0, %(reason)s, %(actor)s, %(source)s, %(key)s, NULL,
                   u.at, %(stamp)s FROM u
            RETURNING id, at
        ), l AS (
            INSERT INTO {t['lot']} ({_LOT_COLUMNS})
            SELECT %(ws)s, %(member)s, %(pt)s, e.id, %(points)s, %(points)s, %(basis)s, %(available_at)s,
                   %(available_at)s <= e.at, %(expires)s FROM e
            RETURNING 1
        )
        SELECT e.id, e.at FROM e, l"""  # noqa: S608 - names from the models, values are parameters
    return Prepared("loyalty_earn_clocked" if ahead else "loyalty_earn", sql, _TYPES)


_SPEND_CHECK = "ledger_inconsistent: the spend drew other lots than it planned"


@functools.cache
def _spend_statement(at_given: bool, clocked: bool = False) -> Prepared:
    """A spend (see ``_pg_spend``): lock the balance row, read the lots in expiry order, and — when
    the gate ``ok`` lets it — write the entry, the lot updates, the draws and the balance update.
    ``clocked`` as for ``_earn_statement``: the gate also closes where the balance changed later
    than now."""
    at = "%(now)s" if at_given or clocked else "GREATEST(updated_at, %(now)s)"
    ahead = " AND b.changed <= %(now)s" if clocked and not at_given else ""
    t = _tables()
    sql = f"""
        WITH b AS (
            SELECT id, available, pending, xmin AS v, {at} AS at, updated_at AS changed,
                   (next_change_at IS NOT NULL AND next_change_at <= {at}) AS due
            FROM {t['bal']} WHERE workspace_id = %(ws)s AND point_type_id = %(pt)s AND member_id = %(member)s
            FOR UPDATE
        ), s AS (
            SELECT xmin AS v FROM {t['bal']} WHERE workspace_id = %(ws)s AND point_type_id = %(pt)s AND member_id = %(member)s
        ), l AS (
            SELECT lot.id, lot.remaining,
                   (sum(lot.remaining) OVER (ORDER BY lot.expires_at ASC NULLS LAST, lot.id))::bigint AS upto
            FROM {t['lot']} AS lot, b
            WHERE lot.member_id = %(member)s AND lot.point_type_id = %(pt)s AND lot.remaining > 0 AND lot.released
              AND (lot.expires_at IS NULL OR lot.expires_at > b.at)
            ORDER BY lot.expires_at ASC NULLS LAST, lot.id LIMIT %(chunk)s
        ), d AS (
            SELECT id AS lot_id, LEAST(remaining, %(points)s - (upto - remaining)) AS take FROM l
            WHERE upto - remaining < %(points)s
        ), ok AS (
            SELECT b.id, b.at FROM b, s
            WHERE b.v = s.v AND NOT b.due AND b.available >= %(points)s AND (SELECT sum(take) FROM d) = %(points)s{ahead}
        ), e AS (
            INSERT INTO {t['entry']} ({_ENTRY_COLUMNS})
            SELECT %(ws)s, %(member)s, %(pt)s, 'spend', -%(points)s, 0, %(reason)s, %(actor)s, %(source)s, %(key)s,
                   NULL, ok.at, %(stamp)s FROM ok
            RETURNING id, at
        ), u AS (
            UPDATE {t['lot']} AS lot SET remaining = lot.remaining - d.take FROM d, ok
            WHERE lot.id = d.lot_id AND lot.remaining >= d.take RETURNING lot.id
        ), w AS (
            INSERT INTO {t['draw']} (workspace_id, entry_id, lot_id, amount)
            SELECT %(ws)s, e.id, d.lot_id, d.take FROM e CROSS JOIN d JOIN u ON u.id = d.lot_id RETURNING 1
        ), c AS (
            UPDATE {t['bal']} AS bal SET available = bal.available - %(points)s, updated_at = ok.at FROM ok
            WHERE bal.id = ok.id AND bal.available >= %(points)s RETURNING 1
        )
        SELECT b.available, b.pending, b.due, e.id, e.at, (SELECT count(*) FROM d), (SELECT count(*) FROM w),
               (SELECT count(*) FROM c),
               -- The statement checks itself, as it may commit by itself: a spend that drew other lots
               -- than it planned, or missed its balance update, fails whole (a text cast to a number).
               CAST(CASE WHEN e.id IS NULL OR ((SELECT count(*) FROM w) = (SELECT count(*) FROM d)
                                               AND (SELECT count(*) FROM c) = 1)
                         THEN '1' ELSE '{_SPEND_CHECK}' END AS int)
        FROM b LEFT JOIN e ON true"""  # noqa: S608 - names from the models, values are parameters
    return Prepared("loyalty_spend_clocked" if ahead else "loyalty_spend", sql, _TYPES)


def _pg_earn(workspace: Workspace, pt: PointType, mid: int, points: int, *, reason: str, actor: str, key: str,
             source_interaction_id: int | None, requested: dt.datetime | None, earned_at: dt.datetime | None,
             tz: dt.tzinfo) -> PointEntry | None:
    """An earn as one statement; ``None`` (and nothing written) when the member has no balance row
    yet or something is due on it — the general path handles those.

    Outside a transaction, when the ``POINTS_CHANGED`` handlers can say what they would write as
    statements (``hooks.plan``; none at all is the simplest case), the earn and those statements
    are sent as one text and commit together: one round trip. Otherwise it runs in a transaction
    (a savepoint inside an outer one) together with the handlers."""
    stamp = clock.now()
    now = requested or stamp
    basis = min(earned_at or now, now)
    available_at, expires = periods.available_at(pt, basis), periods.expires_at(pt, basis, tz)
    params = {"ws": workspace.pk, "pt": pt.pk, "member": mid, "points": points, "reason": reason, "actor": actor,
              "source": source_interaction_id, "key": key, "now": now, "stamp": stamp, "basis": basis,
              "available_at": available_at, "expires": expires}
    planned = _planned(workspace, pt, key, mid, EntryKind.EARN, points, now)
    subscribed = planned is None
    with transaction.atomic() if subscribed else contextlib.nullcontext():
        with connection.cursor() as cur:
            _earn_statement(requested is not None, clocked=bool(planned)).run(cur, params, connection,
                                                                             then=planned or ())
            row = cur.fetchone()
        if row is None:
            return None
        entry = PointEntry(id=row[0], workspace_id=workspace.pk, member_id=mid, point_type_id=pt.pk,
                           kind=EntryKind.EARN, amount=points, shortfall=0, reason=reason, actor=actor,
                           source_interaction_id=source_interaction_id, idempotency_key=key, related_id=None,
                           at=row[1], created_at=stamp)
        entry._state.adding, entry._state.db = False, connection.alias
        if subscribed:
            _announce(workspace, pt.code, entry)
    return entry


def _planned(workspace: Workspace, pt: PointType, key: str, mid: int, kind: str, amount: int,
             at: dt.datetime) -> list[hooks.Statement] | None:
    """The statements the ``POINTS_CHANGED`` handlers would write for an entry about to be written
    outside a transaction (``hooks.plan``), or ``None`` when it must run in a transaction (inside
    one already, a connection that cannot send statements together, a handler that must run).
    Their guard holds where the entry under ``key`` was written by the same transaction — so they
    write nothing when the operation wrote nothing (it fell to the general path, or it was a replay,
    whose insert fails and takes the whole text with it)."""
    if connection.in_atomic_block or not batches(connection):
        return None
    guard = (f"EXISTS (SELECT 1 FROM {_tables()['entry']} WHERE workspace_id = %s::bigint "  # noqa: S608
             "AND point_type_id = %s::bigint AND idempotency_key = %s::text AND xmin = pg_current_xact_id()::xid)",
             [workspace.pk, pt.pk, key])
    return hooks.plan(hooks.POINTS_CHANGED, guard, workspace=workspace, member_id=mid, point_type=pt.code,
                      kind=kind, amount=amount, at=at)


@dataclass
class _Refused:
    """A spend the locked balance cannot cover (nothing was written)."""

    available: int
    pending: int


def _pg_spend(workspace: Workspace, pt: PointType, mid: int, points: int, *, reason: str, actor: str, key: str,
              source_interaction_id: int | None, requested: dt.datetime | None, stamp: dt.datetime | None = None,
              then: Sequence[hooks.Statement] | None = None) -> PointEntry | _Refused | None:
    """A spend as one statement, inside the caller's transaction or outside one (``spend`` decides,
    see ``_planned``), then committing by itself together with ``then``, the handlers' statements
    sent in the same text. It locks the balance row (``FOR UPDATE``), reads the lots to draw from
    in expiry order, and writes the entry, the lot updates, the draws and the conditional balance
    update — or writes nothing and returns ``_Refused`` when the available points do not cover the
    spend, or ``None`` when the general path must run: no balance row yet, something due on it, more
    than ``PLAN_CHUNK`` lots needed, or the row changed after the statement's snapshot was taken.

    That last gate is what makes one statement safe. The lots are read from the statement's
    snapshot, while ``FOR UPDATE`` returns the newest version of the balance row (after waiting for
    a concurrent holder of the lock). Every operation that changes a member's lots updates their
    balance row in the same transaction, so when the locked version is the one the snapshot sees
    (same ``xmin``) the snapshot holds every change made to the lots before the lock — and nobody
    changes them after it until this transaction ends. Otherwise the general path reads them again
    under the lock."""
    stamp = stamp or clock.now()
    params = {"ws": workspace.pk, "pt": pt.pk, "member": mid, "points": points, "reason": reason, "actor": actor,
              "source": source_interaction_id, "key": key, "now": requested or stamp, "stamp": stamp,
              "chunk": PLAN_CHUNK}
    try:
        with connection.cursor() as cur:
            _spend_statement(requested is not None, clocked=bool(then)).run(cur, params, connection, then=then or ())
            row = cur.fetchone()
    except DataError as exc:
        if _SPEND_CHECK in str(exc):
            raise _inconsistent() from exc
        raise
    if row is None:
        return None  # no balance row yet
    available, pending, due, pk, at, planned, drawn, changed, _checked = row
    if pk is None:
        return _Refused(available, pending) if not due and available < points else None
    if drawn != planned or changed != 1:
        raise _inconsistent()
    entry = PointEntry(id=pk, workspace_id=workspace.pk, member_id=mid, point_type_id=pt.pk, kind=EntryKind.SPEND,
                       amount=-points, shortfall=0, reason=reason, actor=actor,
                       source_interaction_id=source_interaction_id, idempotency_key=key, related_id=None, at=at,
                       created_at=stamp)
    entry._state.adding, entry._state.db = False, connection.alias
    return entry


def _write_debit(workspace: Workspace, bal: PointBalance, now: dt.datetime, *, kind: str, amount: int,
                 plan: Sequence[tuple[_Lot, int]], available: int, pending: int = 0, lifetime: int = 0, reason: str,
                 actor: str, key: str, source_interaction_id: int | None = None, related_id: int | None = None,
                 shortfall: int = 0) -> PointEntry:
    """A debit's writes: the entry, the draws from the planned lots (each conditional on the lot
    still holding what is taken) and the conditional balance update."""
    if not (_fused() and plan):
        with _batch() as b:
            entry = _new_entry(b, workspace, bal.point_type_id, bal.member_id, kind, amount, reason=reason, actor=actor,
                               key=key, now=now, source_interaction_id=source_interaction_id, related_id=related_id,
                               shortfall=shortfall)
            _apply_draws(b, workspace, entry, plan)
            _change_balance(b, bal, now, available=available, pending=pending, lifetime=lifetime)
        return entry
    t = _tables()
    stamp = clock.now()
    sql = f"""
        WITH e AS (
            INSERT INTO {t['entry']} ({_ENTRY_COLUMNS})
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id
        ), d (lot_id, take) AS (
            VALUES {', '.join(['(%s::bigint, %s::bigint)'] * len(plan))}
        ), u AS (
            UPDATE {t['lot']} AS lot SET remaining = lot.remaining - d.take FROM d
            WHERE lot.id = d.lot_id AND lot.remaining >= d.take RETURNING lot.id
        ), w AS (
            INSERT INTO {t['draw']} (workspace_id, entry_id, lot_id, amount)
            SELECT %s, e.id, d.lot_id, d.take FROM e CROSS JOIN d JOIN u ON u.id = d.lot_id RETURNING 1
        ), b AS (
            UPDATE {t['bal']} SET available = available + %s, pending = pending + %s,
                   lifetime_earned = lifetime_earned + %s, updated_at = %s
            WHERE id = %s AND available >= %s AND pending >= %s RETURNING 1
        )
        SELECT e.id, (SELECT count(*) FROM w), (SELECT count(*) FROM b) FROM e"""  # noqa: S608
    params: list[Any] = [workspace.pk, bal.member_id, bal.point_type_id, kind, amount, shortfall, reason, actor,
                         source_interaction_id, key, related_id, now, stamp]
    for lot, take in plan:
        params += [lot.id, take]
    params += [workspace.pk, available, pending, lifetime, now, bal.pk, max(0, -available), max(0, -pending)]
    with connection.cursor() as cur:
        cur.execute(sql, params)
        pk, drawn, changed = cur.fetchone()
    if drawn != len(plan):
        raise _inconsistent()
    if changed != 1:
        raise _insufficient(bal, -available)
    for lot, take in plan:
        lot.remaining -= take
    bal.available += available
    bal.pending += pending
    bal.lifetime_earned += lifetime
    bal.updated_at = now
    entry = PointEntry(id=pk, workspace_id=workspace.pk, member_id=bal.member_id, point_type_id=bal.point_type_id,
                       kind=kind, amount=amount, shortfall=shortfall, reason=reason, actor=actor,
                       source_interaction_id=source_interaction_id, idempotency_key=key, related_id=related_id, at=now,
                       created_at=stamp)
    entry._state.adding, entry._state.db = False, connection.alias
    return entry


# ---------------------------------------------------------------------------------------------
# ledger operations


def earn(workspace: Workspace, member: Member | int, point_type: PointType | str | int, amount: Any, *, reason: str,
         idempotency_key: str, actor: str, source_interaction_id: int | None = None,
         earned_at: dt.datetime | None = None, now: dt.datetime | None = None) -> PointEntry:
    """Award ``amount`` points. The award is one lot: pending for the type's ``pending_days`` after
    ``earned_at`` (default: now; never later than now), expiring by the type's policy."""
    pt = get_point_type(workspace, point_type)
    points = clean_points(amount)
    key = _clean_key(idempotency_key)
    reason = _clean_reason(reason)
    actor = _clean_actor(actor)
    mid = _member_id(workspace, member)
    requested, earned_at = _aware(now), _aware(earned_at)
    tz = periods.zone(workspace.default_timezone)

    def check() -> PointEntry | None:
        return _replayed(workspace, pt, key, kind=EntryKind.EARN, member_id=mid, amount=points)

    def body() -> PointEntry:
        bal = _lock_balances(workspace, pt, [mid])[mid]
        now = _ledger_time(requested, bal)
        basis = min(earned_at or now, now)
        _settle(workspace, bal, now)
        with _batch() as b:
            entry = _new_entry(b, workspace, pt.pk, mid, EntryKind.EARN, points, reason=reason, actor=actor, key=key,
                               now=now, source_interaction_id=source_interaction_id)
            _credit(b, workspace, bal, entry, [_LotSpec(points, basis, periods.available_at(pt, basis),
                                                        periods.expires_at(pt, basis, tz))], now, lifetime=points)
        _announce(workspace, pt.code, entry)
        return entry

    if _fused():
        try:
            fast = _pg_earn(workspace, pt, mid, points, reason=reason, actor=actor, key=key,
                            source_interaction_id=source_interaction_id, requested=requested, earned_at=earned_at, tz=tz)
        except IntegrityError:
            fast = check()
            if fast is None:
                raise
        if fast is not None:
            return fast
    return _idempotent(check, body)


def _insufficient(bal: PointBalance | _Refused, points: int) -> Conflict:
    return Conflict(_("not enough points: %(available)d available, %(requested)d requested")
                    % {"available": bal.available, "requested": points}, code="insufficient_points",
                    details={"available": bal.available, "pending": bal.pending, "requested": points})


def _debit(workspace: Workspace, pt: PointType, bal: PointBalance, kind: str, points: int, now: dt.datetime, *,
           reason: str, actor: str, key: str, check: Callable[[], PointEntry | None],
           plan: list[tuple[_Lot, int]] | None = None, source_interaction_id: int | None = None
           ) -> tuple[PointEntry, list[tuple[_Lot, int]]]:
    """Draw ``points`` from the locked balance's lots (``plan``, or planned here): the entry, the lot
    updates, the draws and the balance update are written together (``_write_debit``). Refused
    beyond the available points — unless ``key`` was used already, then that entry is the answer and
    the plan returned is empty."""
    if bal.available < points:
        hit = check()
        if hit is not None:
            return hit, []
        raise _insufficient(bal, points)
    if plan is None:
        plan = _plan_draw(bal, points, now)
    if sum(take for _lot, take in plan) != points:
        raise Conflict(_("the balance and its lots disagree; run the ledger check"), code="ledger_inconsistent")
    entry = _write_debit(workspace, bal, now, kind=kind, amount=-points, plan=plan, available=-points, reason=reason,
                         actor=actor, key=key, source_interaction_id=source_interaction_id)
    return entry, plan


def spend(workspace: Workspace, member: Member | int, point_type: PointType | str | int, amount: Any, *, reason: str,
          idempotency_key: str, actor: str, source_interaction_id: int | None = None,
          now: dt.datetime | None = None) -> PointEntry:
    """Spend ``amount`` available points, drawing the soonest-expiring lots first."""
    pt = get_point_type(workspace, point_type)
    if not pt.spendable:
        raise ValidationError(_("%(name)s cannot be spent") % {"name": pt.name}, code="not_spendable",
                              details={"field": "point_type"})
    points = clean_points(amount)
    key = _clean_key(idempotency_key)
    reason = _clean_reason(reason)
    actor = _clean_actor(actor)
    mid = _member_id(workspace, member)
    requested = _aware(now)

    def check() -> PointEntry | None:
        return _replayed(workspace, pt, key, kind=EntryKind.SPEND, member_id=mid, amount=-points)

    def answer(done: PointEntry | _Refused | None) -> PointEntry | None:
        if isinstance(done, _Refused):
            hit = check()
            if hit is not None:
                return hit
            raise _insufficient(done, points)
        return done

    def body() -> PointEntry:
        if _fused():
            done = _pg_spend(workspace, pt, mid, points, reason=reason, actor=actor, key=key,
                             source_interaction_id=source_interaction_id, requested=requested)
            if isinstance(done, PointEntry):
                _announce(workspace, pt.code, done)
            if (entry := answer(done)) is not None:
                return entry
        # The general path. One round trip: lock the balance, then (the server runs them in order)
        # read the lots the spend would take, as of a time no later than the ledger time decided below.
        provisional = requested or clock.now()
        with _batch() as b:
            balance_rows = b.rows(_lock_sql(1), [workspace.pk, pt.pk, mid])
            rows = b.rows(_plan_sql(False), [mid, pt.pk, True, _to_db(provisional), PLAN_CHUNK, 0])
        found = _read_balances(workspace, pt, balance_rows)
        bal = found[mid] if mid in found else _lock_balances(workspace, pt, [mid])[mid]
        now = _ledger_time(requested, bal)
        plan: list[tuple[_Lot, int]] | None = []
        if _due(bal, now) or mid not in found:
            _settle(workspace, bal, now)
            plan = None
        elif _take(rows, points, plan) or any(lot.expires_at is not None and lot.expires_at <= now for lot, _ in plan):
            plan = None  # more lots than one read brings, or one expired in between: read them again
        entry, drawn = _debit(workspace, pt, bal, EntryKind.SPEND, points, now, reason=reason, actor=actor, key=key,
                              check=check, plan=plan, source_interaction_id=source_interaction_id)
        if drawn:
            _announce(workspace, pt.code, entry)
        return entry

    if _fused():
        # Outside a transaction, one round trip: the spend statement commits by itself, with what
        # the handlers would write (``_planned``); the general path runs when it cannot apply.
        stamp = clock.now()
        planned = _planned(workspace, pt, key, mid, EntryKind.SPEND, -points, requested or stamp)
        if planned is not None:
            try:
                done = _pg_spend(workspace, pt, mid, points, reason=reason, actor=actor, key=key,
                                 source_interaction_id=source_interaction_id, requested=requested, stamp=stamp,
                                 then=planned)
            except IntegrityError:
                done = check()  # a replay: the key's insert failed, and nothing of the text was kept
                if done is None:
                    raise
            if (entry := answer(done)) is not None:
                return entry
    return _idempotent(check, body)


def reverse(workspace: Workspace, *, entry_id: int | None = None, point_type: PointType | str | int | None = None,
            earn_key: str | None = None, amount: Any = None, reason: str, actor: str,
            idempotency_key: str | None = None, source_interaction_id: int | None = None,
            now: dt.datetime | None = None) -> PointEntry:
    """Take back an award (a refund), found by ``entry_id`` or by its ``earn_key`` in ``point_type``;
    all of what is still open of it, or ``amount`` of it.

    The rule: what expired of the award is gone already and is not taken again. Of the rest, first
    what is left of the award's own lot (pending or available), then the remainder from the member's
    other available points (soonest-expiring first) — never below zero. What cannot be taken is
    recorded as ``shortfall`` on the reversal entry and counts as reversed. The default key
    ``reverse:<entry id>`` makes a full reversal happen once."""
    if entry_id is not None:
        try:
            earned = get_scoped(PointEntry, workspace, entry_id)
        except NotFound:
            raise NotFound(_("entry %(id)s not found") % {"id": entry_id}, code="unknown_entry",
                           details={"field": "entry_id"}) from None
        pt = get_point_type(workspace, earned.point_type_id)
    elif earn_key is not None and point_type is not None:
        pt = get_point_type(workspace, point_type)
        found = PointEntry.objects.filter(workspace=workspace, point_type=pt, idempotency_key=_clean_key(earn_key)).first()
        if found is None:
            raise NotFound(_("no entry with key %(key)r") % {"key": earn_key}, code="unknown_entry",
                           details={"field": "earn_key"})
        earned = found
    else:
        raise ValidationError(_("name the award to reverse by entry id, or by point type and key"),
                              code="invalid_field", details={"field": "entry_id"})
    if earned.kind != EntryKind.EARN:
        raise ValidationError(_("only an award (earn) can be reversed"), code="not_reversible",
                              details={"entry_id": earned.pk, "kind": earned.kind})
    limit = clean_points(amount) if amount is not None else None
    key = _clean_key(idempotency_key if idempotency_key is not None else f"reverse:{earned.pk}")
    reason = _clean_reason(reason)
    actor = _clean_actor(actor)
    requested = _aware(now)
    # After a member merge the award's points live on the surviving member: the reversal is theirs.
    mid = _holder(workspace, earned.member_id)

    def check() -> PointEntry | None:
        return _replayed(workspace, pt, key, kind=EntryKind.REVERSE, member_id=None, related_id=earned.pk)

    def body() -> PointEntry:
        bal = _lock_balances(workspace, pt, [mid])[mid]
        # How much a reversal takes depends on what happened before, so a replay is found first.
        hit = check()
        if hit is not None:
            return hit
        now = _ledger_time(requested, bal)
        _settle(workspace, bal, now)
        row = PointLot.objects.get(entry_id=earned.pk)
        lot = _Lot(row.pk, row.remaining, row.released, row.earned_at, row.expires_at)
        expired = PointLotDraw.objects.filter(lot_id=lot.id, entry__kind=EntryKind.EXPIRE).aggregate(n=Sum("amount"))["n"] or 0
        claimed = sum(-a + s for a, s in PointEntry.objects.filter(related_id=earned.pk, kind=EntryKind.REVERSE)
                      .values_list("amount", "shortfall"))
        still_open = earned.amount - expired - claimed
        if still_open <= 0:
            raise Conflict(_("this award has been reversed already (or has expired)"), code="already_reversed",
                           details={"entry_id": earned.pk})
        want = min(still_open, limit) if limit is not None else still_open
        from_lot = min(lot.remaining, want)
        from_pending = 0 if lot.released else from_lot
        plan: list[tuple[_Lot, int]] = [(lot, from_lot)] if from_lot else []
        others_available = bal.available - (lot.remaining if lot.released else 0)
        rest = min(want - from_lot, others_available)
        if rest > 0:
            plan += _plan_draw(bal, rest, now, exclude_lot=lot.id)
        taken = sum(take for _lot, take in plan)
        entry = _write_debit(workspace, bal, now, kind=EntryKind.REVERSE, amount=-taken, plan=plan,
                             available=-(taken - from_pending), pending=-from_pending, lifetime=-want, reason=reason,
                             actor=actor, key=key, source_interaction_id=source_interaction_id, related_id=earned.pk,
                             shortfall=want - taken)
        _announce(workspace, pt.code, entry)
        return entry

    return _idempotent(check, body)


def _holder(workspace: Workspace, member_id: int) -> int:
    """The member who holds the points of ``member_id`` now: itself, or the member it was merged into
    (following merges of merges)."""
    mid = member_id
    for _step in range(32):
        row = scoped(Member, workspace).filter(pk=mid).values_list("status", "merged_into_id").first()
        if row is None or row[0] != MemberStatus.MERGED or row[1] is None:
            return mid
        mid = row[1]
    return mid


def transfer(workspace: Workspace, point_type: PointType | str | int, from_member: Member | int, to_member: Member | int,
             amount: Any, *, reason: str, idempotency_key: str, actor: str,
             now: dt.datetime | None = None) -> PointEntry:
    """Move available points to another member, if the type is transferable. Returns the
    ``transfer_out`` entry; the receiver's ``transfer_in`` entry points to it (``related``). The
    receiver gets one lot per lot drawn, with the same expiry, available at once."""
    pt = get_point_type(workspace, point_type)
    if not pt.transferable or not pt.spendable:
        raise ValidationError(_("%(name)s cannot be transferred") % {"name": pt.name}, code="not_transferable",
                              details={"field": "point_type"})
    points = clean_points(amount)
    key = _clean_key(idempotency_key)
    reason = _clean_reason(reason)
    actor = _clean_actor(actor)
    src, dst = _member_id(workspace, from_member), _member_id(workspace, to_member)
    if src == dst:
        raise ValidationError(_("a member cannot transfer points to themselves"), code="same_member",
                              details={"field": "to_member"})
    requested = _aware(now)

    def check() -> PointEntry | None:
        return _replayed(workspace, pt, key, kind=EntryKind.TRANSFER_OUT, member_id=src, amount=-points)

    def body() -> PointEntry:
        bals = _lock_balances(workspace, pt, [src, dst])
        now = _ledger_time(requested, *bals.values())
        _settle(workspace, bals[src], now)
        _settle(workspace, bals[dst], now)
        out, plan = _debit(workspace, pt, bals[src], EntryKind.TRANSFER_OUT, points, now, reason=reason, actor=actor,
                           key=key, check=check)
        if not plan:  # a replay: the first transfer stands
            return out
        with _batch() as b:
            incoming = _new_entry(b, workspace, pt.pk, dst, EntryKind.TRANSFER_IN, points, reason=reason, actor=actor,
                                  key=None, now=now, related_id=out.pk)
        with _batch() as b:
            _credit(b, workspace, bals[dst], incoming,
                    [_LotSpec(take, lot.earned_at, now, lot.expires_at) for lot, take in plan], now)
        _announce(workspace, pt.code, out, incoming)
        return out

    return _idempotent(check, body)


def adjust(workspace: Workspace, member: Member | int, point_type: PointType | str | int, amount: Any, *, reason: str,
           idempotency_key: str, actor: str, now: dt.datetime | None = None) -> PointEntry:
    """An operator's correction: a positive amount is a new lot (available at once, expiring by the
    type's policy), a negative one is drawn like a spend (and refused beyond the available points).
    Needs a reason; recorded in the audit log."""
    pt = get_point_type(workspace, point_type)
    points = clean_points(amount, allow_negative=True)
    key = _clean_key(idempotency_key)
    reason = _clean_reason(reason, required=True)
    actor = _clean_actor(actor)
    mid = _member_id(workspace, member)
    requested = _aware(now)
    tz = periods.zone(workspace.default_timezone)

    def check() -> PointEntry | None:
        return _replayed(workspace, pt, key, kind=EntryKind.ADJUST, member_id=mid, amount=points)

    def body() -> PointEntry:
        bal = _lock_balances(workspace, pt, [mid])[mid]
        now = _ledger_time(requested, bal)
        _settle(workspace, bal, now)
        if points > 0:
            with _batch() as b:
                entry = _new_entry(b, workspace, pt.pk, mid, EntryKind.ADJUST, points, reason=reason, actor=actor,
                                   key=key, now=now)
                _credit(b, workspace, bal, entry, [_LotSpec(points, now, now, periods.expires_at(pt, now, tz))], now)
        else:
            entry, plan = _debit(workspace, pt, bal, EntryKind.ADJUST, -points, now, reason=reason, actor=actor, key=key,
                                 check=check)
            if not plan:  # a replay: the first correction stands (and was audited)
                return entry
        audit.record(workspace, actor, "points.adjust", entry,
                     {"member": mid, "point_type": pt.code, "amount": points, "reason": reason})
        _announce(workspace, pt.code, entry)
        return entry

    return _idempotent(check, body)


# ---------------------------------------------------------------------------------------------
# member merges (members.services.MERGE_HANDLERS / UNMERGE_HANDLERS)


def _move_points(workspace: Workspace, pt: PointType, *, record_id: int, direction: str, src: int, dst: int,
                 lots_of: Callable[[PointBalance], list[PointLot]], lifetime_of: Callable[[PointBalance], int],
                 actor: str) -> PointMerge | None:
    """Move ``lots_of(source balance)`` — what is left in them, available and pending alike — from
    ``src`` to ``dst`` as a ``merge_out`` entry (drawing the lots to zero) and a ``merge_in`` entry
    (one lot per lot drawn, with the same earning, availability and expiry dates), plus
    ``lifetime_of(source balance)`` of lifetime earned. Idempotent by the ``PointMerge`` row."""
    if PointMerge.objects.filter(workspace=workspace, merge_record_id=record_id, point_type=pt,
                                 direction=direction).exists():
        return None
    bals = _lock_balances(workspace, pt, [src, dst])
    now = _ledger_time(None, *bals.values())
    _settle(workspace, bals[src], now)
    _settle(workspace, bals[dst], now)
    source, target = bals[src], bals[dst]
    lots = [lot for lot in lots_of(source) if lot.remaining > 0]
    lifetime = min(max(0, lifetime_of(source)), source.lifetime_earned)
    available = sum(lot.remaining for lot in lots if lot.released)
    pending = sum(lot.remaining for lot in lots if not lot.released)
    out = incoming = None
    reason = f"{direction} #{record_id}"
    if lots:
        plan = [(_Lot(lot.pk, lot.remaining, lot.released, lot.earned_at, lot.expires_at), lot.remaining)
                for lot in lots]
        out = _write_debit(workspace, source, now, kind=EntryKind.MERGE_OUT, amount=-(available + pending), plan=plan,
                           available=-available, pending=-pending, lifetime=-lifetime, reason=reason, actor=actor,
                           key=f"{direction}:{record_id}")
        with _batch() as b:
            incoming = _new_entry(b, workspace, pt.pk, dst, EntryKind.MERGE_IN, available + pending, reason=reason,
                                  actor=actor, key=None, now=now, related_id=out.pk)
        with _batch() as b:
            _credit(b, workspace, target, incoming,
                    [_LotSpec(lot.remaining, lot.earned_at, lot.available_at, lot.expires_at) for lot in lots], now,
                    lifetime=lifetime)
    elif lifetime:
        with _batch() as b:
            _change_balance(b, source, now, lifetime=-lifetime)
            _change_balance(b, target, now, lifetime=lifetime)
    move = PointMerge.objects.create(workspace=workspace, merge_record_id=record_id, direction=direction,
                                     point_type=pt, from_member_id=src, to_member_id=dst, out_entry=out,
                                     in_entry=incoming, lifetime=lifetime, at=now)
    if out is not None and incoming is not None:
        _announce(workspace, pt.code, out, incoming)
    return move


@transaction.atomic
def merge_points(workspace: Workspace, record: Any, *, actor: str, at: dt.datetime | None = None) -> list[PointMerge]:
    """A member merge (``record``: a ``members.MergeRecord``) combines the two members' points: in
    every point type, what the absorbed member holds — available and pending lots, with their dates
    — and its lifetime earned move to the survivor by a ``merge_out`` / ``merge_in`` pair of entries
    (ADR 0006). Runs inside the merge's transaction; a second call for the same record moves
    nothing."""
    src, dst = int(record.absorbed_id), int(record.survivor_id)
    holding = set(PointBalance.objects.filter(workspace=workspace, member_id=src)
                  .filter(Q(available__gt=0) | Q(pending__gt=0) | Q(lifetime_earned__gt=0))
                  .values_list("point_type_id", flat=True))
    moves = []
    for pt in scoped(PointType, workspace).filter(pk__in=holding).order_by("pk"):
        move = _move_points(
            workspace, pt, record_id=int(record.pk), direction=MergeDirection.MERGE, src=src, dst=dst,
            lots_of=lambda bal: list(PointLot.objects.filter(member_id=bal.member_id, point_type_id=bal.point_type_id,
                                                             remaining__gt=0).order_by("pk")),
            lifetime_of=lambda bal: bal.lifetime_earned, actor=_clean_actor(actor))
        if move is not None:
            moves.append(move)
    return moves


@transaction.atomic
def unmerge_points(workspace: Workspace, record: Any, *, actor: str) -> list[PointMerge]:
    """Undo what ``merge_points`` did for ``record``: the restored member gets back what is still left
    of the lots the merge gave the survivor (same dates), and the lifetime earned that moved (at most
    the survivor's). Points of those lots that the survivor spent, or that expired, meanwhile stay
    spent or expired — the survivor's entries say so."""
    moves = []
    for merged in (PointMerge.objects.filter(workspace=workspace, merge_record_id=record.pk,
                                             direction=MergeDirection.MERGE).select_related("point_type").order_by("pk")):
        in_entry = merged.in_entry_id
        move = _move_points(
            workspace, merged.point_type, record_id=int(record.pk), direction=MergeDirection.UNMERGE,
            src=merged.to_member_id, dst=merged.from_member_id,
            lots_of=lambda bal, in_entry=in_entry: (
                list(PointLot.objects.filter(entry_id=in_entry, remaining__gt=0).order_by("pk")) if in_entry else []),
            lifetime_of=lambda bal, n=merged.lifetime: n, actor=_clean_actor(actor))
        if move is not None:
            moves.append(move)
    return moves


@dataclass
class ExpiryRun:
    balances: int = 0
    expired: int = 0
    released: int = 0


def expire_due(workspace: Workspace, now: dt.datetime | None = None, *, chunk: int = 200) -> ExpiryRun:
    """Expire every lot past its expiry and release every pending lot past its waiting time, in the
    workspace, as of ``now``. Balances are taken in primary-key order, ``chunk`` per transaction.
    Idempotent: a second run at the same ``now`` finds nothing due."""
    now = _now(now)
    run = ExpiryRun()
    after = 0
    while True:
        ids = list(PointBalance.objects.filter(workspace=workspace, next_change_at__lte=now, pk__gt=after)
                   .order_by("pk").values_list("pk", flat=True)[:chunk])
        if not ids:
            return run
        with transaction.atomic():
            for bal in PointBalance.objects.select_for_update().filter(pk__in=ids).order_by("pk"):
                done = _settle(workspace, bal, now)
                if done.expired or done.released:
                    run.balances += 1
                    run.expired += done.expired
                    run.released += done.released
        after = ids[-1]


# ---------------------------------------------------------------------------------------------
# earn rules: the interaction hook


def _rule_matches(rule: EarnRule, row: Any) -> bool:
    if not matches(row, interaction_type=rule.interaction_type, direction=rule.direction, channel=rule.channel,
                   touchpoint_id=rule.touchpoint_id, min_amount=rule.min_amount):
        return False
    if rule.starts_at is not None and row.occurred_at < rule.starts_at:
        return False
    if rule.ends_at is not None and row.occurred_at >= rule.ends_at:
        return False
    return True


def rule_points(workspace: Workspace, rule: EarnRule, row: Any) -> int:
    """Points ``rule`` gives for interaction ``row`` before caps: the fixed points plus points per ¥
    of a positive ``amount``, times every registered multiplier, rounded down."""
    total = Decimal(rule.points)
    if rule.points_per_yuan and row.amount is not None and row.amount > 0:
        total += Decimal(row.amount) * rule.points_per_yuan
    for multiplier in EARN_MULTIPLIERS:
        total *= Decimal(multiplier(workspace, rule, row))
    return max(0, int(total.to_integral_value(rounding=ROUND_FLOOR)))


_CAP_FIELDS = ((CapPeriod.DAY, "day"), (CapPeriod.WEEK, "week"), (CapPeriod.MONTH, "month"))
_CapKey = tuple[int, int | None, str, dt.date]


def _caps(rule: EarnRule, row: Any, tz: dt.tzinfo) -> list[tuple[_CapKey, int]]:
    out: list[tuple[_CapKey, int]] = []
    for period, suffix in _CAP_FIELDS:
        start = None
        for scope, member_id in (("member", row.member_id), ("global", None)):
            limit = getattr(rule, f"{scope}_cap_{suffix}")
            if limit is None:
                continue
            start = start or periods.period_start(period, row.occurred_at, tz)
            out.append(((rule.pk, member_id, str(period), start), int(limit)))
    return out


def _lock_usage(workspace: Workspace, keys: set[_CapKey]) -> dict[_CapKey, EarnCapUsage]:
    """Create the cap counters that are missing and lock them all, in primary-key order."""
    if not keys:
        return {}
    EarnCapUsage.objects.bulk_create([EarnCapUsage(workspace=workspace, rule_id=r, member_id=m, period=p, period_start=s)
                                      for r, m, p, s in sorted(keys, key=lambda k: (k[0], k[1] or 0, k[2], k[3]))],
                                     ignore_conflicts=True)
    q = Q()
    for r, m, p, s in keys:
        q |= Q(rule_id=r, member_id=m, period=p, period_start=s) if m is not None else \
            Q(rule_id=r, member__isnull=True, period=p, period_start=s)
    rows = EarnCapUsage.objects.select_for_update().filter(workspace=workspace).filter(q).order_by("pk")
    return {(u.rule_id, u.member_id, u.period, u.period_start): u for u in rows}


@dataclass
class _Award:
    rule: EarnRule
    row: Any
    points: int
    caps: list[tuple[_CapKey, int]] = field(default_factory=list)


def on_interactions(workspace: Workspace, rows: Sequence[Any]) -> None:
    """The interaction hook (``interactions.services.INTERACTION_HANDLERS``): runs inside the storing
    transaction, once per new interaction. Awards what the enabled earn rules give (within their
    caps), then reverses the awards of purchases that new ``refund`` interactions name."""
    if not rows:
        return
    ordered = sorted(rows, key=lambda r: (r.occurred_at, r.pk))
    refunds = [r for r in ordered if r.type == "refund" and (r.properties or {}).get("refund_of")]
    rules = list(scoped(EarnRule, workspace).filter(enabled=True).select_related("point_type").order_by("priority", "pk"))
    if rules:
        _award(workspace, ordered, rules)
    for refund in refunds:
        _reverse_refund(workspace, refund)


def _award(workspace: Workspace, rows: Sequence[Any], rules: Sequence[EarnRule]) -> None:
    tz = periods.zone(workspace.default_timezone)
    awards = [_Award(rule, row, pts, _caps(rule, row, tz))
              for row in rows for rule in rules
              if _rule_matches(rule, row) and (pts := rule_points(workspace, rule, row)) > 0]
    if not awards:
        return
    usage = _lock_usage(workspace, {key for a in awards for key, _limit in a.caps})
    added: dict[int, int] = defaultdict(int)
    granted: list[_Award] = []
    for a in awards:
        allowed = min([a.points, *(limit - usage[key].points for key, limit in a.caps)])
        if allowed <= 0:
            continue
        for key, _limit in a.caps:
            usage[key].points += allowed
            added[usage[key].pk] += allowed
        a.points = allowed
        granted.append(a)
    for pk, n in sorted(added.items()):
        EarnCapUsage.objects.filter(pk=pk).update(points=F("points") + n)
    by_type: dict[int, list[_Award]] = defaultdict(list)
    for a in granted:
        by_type[a.rule.point_type_id].append(a)
    for type_id in sorted(by_type):
        pt = by_type[type_id][0].rule.point_type
        bals = _lock_balances(workspace, pt, [a.row.member_id for a in by_type[type_id]])
        now = _ledger_time(None, *bals.values())
        for bal in bals.values():
            _settle(workspace, bal, now)
        created: list[PointEntry] = []
        with _batch() as b:
            for a in by_type[type_id]:
                bal = bals[a.row.member_id]
                basis = min(a.row.occurred_at, now)
                entry = _new_entry(b, workspace, pt.pk, bal.member_id, EntryKind.EARN, a.points,
                                   reason=a.rule.name[:REASON_MAX], actor=f"rule:{a.rule.pk}",
                                   key=f"interaction:{a.row.pk}:rule:{a.rule.pk}", now=now, source_interaction_id=a.row.pk)
                _credit(b, workspace, bal, entry, [_LotSpec(a.points, basis, periods.available_at(pt, basis),
                                                            periods.expires_at(pt, basis, tz))], now, lifetime=a.points)
                created.append(entry)
        _announce(workspace, pt.code, *created)


def _reverse_refund(workspace: Workspace, refund: Any) -> None:
    """Reverse the awards of the purchase a refund names: ``properties.refund_of`` is the purchase's
    ``external_id`` (from the refund's own ``source``, or ``properties.refund_source``). A refund with
    an ``amount`` below the purchase's reverses that share of each award (rounded half up); without an
    amount, or for the whole amount, everything still open."""
    from shequn.interactions.models import Interaction

    props = refund.properties or {}
    source = str(props.get("refund_source") or refund.source)
    purchase = (scoped(Interaction, workspace).filter(source=source, external_id=str(props["refund_of"]))
                .exclude(pk=refund.pk).values("pk", "amount").first())
    if purchase is None:
        return
    earns = list(PointEntry.objects.filter(workspace=workspace, source_interaction_id=purchase["pk"], kind=EntryKind.EARN)
                 .order_by("pk"))
    share: Decimal | None = None
    if refund.amount is not None and purchase["amount"] and purchase["amount"] > 0:
        refunded = abs(Decimal(refund.amount))
        if refunded < purchase["amount"]:
            share = refunded / Decimal(purchase["amount"])
    for earned in earns:
        amount = None
        if share is not None:
            amount = int((earned.amount * share).to_integral_value(rounding=ROUND_HALF_UP))
            if amount <= 0:
                continue
        try:
            reverse(workspace, entry_id=earned.pk, amount=amount, reason=_("refund"), actor=f"interaction:{refund.pk}",
                    idempotency_key=f"interaction:{refund.pk}:reverse:{earned.pk}", source_interaction_id=refund.pk)
        except Conflict as exc:
            if exc.code != "already_reversed":
                raise


# ---------------------------------------------------------------------------------------------
# programme settings: point types and earn rules


POINT_TYPE_FIELDS = ("name", "kind", "expiry_policy", "expiry_period", "pending_days", "transferable")
MAX_PENDING_DAYS = 366
MAX_EXPIRY_PERIOD = 36_500


def _whole(value: Any, key: str, *, low: int, high: int) -> int:
    if isinstance(value, bool):
        value = None
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        number = low - 1
    if not low <= number <= high:
        raise ValidationError(_("%(field)s must be a whole number from %(low)d to %(high)d")
                              % {"field": key, "low": low, "high": high}, code="invalid_field", details={"field": key})
    return number


@transaction.atomic
def save_point_type(workspace: Workspace, code: str, data: Mapping[str, Any], *, actor: str) -> PointType:
    """Create or update the point type ``code``. The kind (currency or contribution) is fixed at
    creation; a new expiry policy or pending time applies to points earned from then on."""
    actor = _clean_actor(actor)
    if not isinstance(code, str) or not code or slugify(code) != code or len(code) > 32:
        raise ValidationError(_("code must be a slug (a-z, 0-9, - and _)"), code="invalid_field", details={"field": "code"})
    unknown = sorted(set(data) - set(POINT_TYPE_FIELDS))
    if unknown:
        raise ValidationError(_("unknown field %(field)r") % {"field": unknown[0]}, code="invalid_field",
                              details={"field": unknown[0]})
    pt = scoped(PointType, workspace).select_for_update().filter(code=code).first()
    creating = pt is None
    if pt is None:
        pt = PointType(workspace=workspace, code=code)
    for key, value in data.items():
        if key == "name":
            name = str(value or "").strip()
            if not name or len(name) > 64:
                raise ValidationError(_("name must be 1–64 characters"), code="invalid_field", details={"field": key})
            pt.name = name
        elif key == "kind":
            if value not in PointKind.values:
                raise ValidationError(_("kind must be one of %(v)s") % {"v": ", ".join(PointKind.values)},
                                      code="invalid_field", details={"field": key})
            if not creating and value != pt.kind:
                raise ValidationError(_("the kind of a point type cannot change"), code="immutable_field",
                                      details={"field": key})
            pt.kind = value
        elif key == "expiry_policy":
            if value not in ExpiryPolicy.values:
                raise ValidationError(_("expiry_policy must be one of %(v)s") % {"v": ", ".join(ExpiryPolicy.values)},
                                      code="invalid_field", details={"field": key})
            pt.expiry_policy = value
        elif key == "expiry_period":
            pt.expiry_period = _whole(value, key, low=0, high=MAX_EXPIRY_PERIOD)
        elif key == "pending_days":
            pt.pending_days = _whole(value, key, low=0, high=MAX_PENDING_DAYS)
        elif key == "transferable":
            pt.transferable = bool(value)
    if not pt.name:
        raise ValidationError(_("a new point type needs a name"), code="invalid_field", details={"field": "name"})
    if pt.expiry_policy == ExpiryPolicy.DAYS and pt.expiry_period < 1:
        raise ValidationError(_("points that expire after N days need N of at least 1"), code="invalid_field",
                              details={"field": "expiry_period"})
    if pt.expiry_policy == ExpiryPolicy.DAYS and pt.pending_days >= pt.expiry_period:
        raise ValidationError(_("points would expire before they become available"), code="invalid_field",
                              details={"field": "pending_days"})
    try:
        with transaction.atomic():
            pt.save()
    except IntegrityError:
        raise Conflict(_("point type %(code)r already exists") % {"code": code}, code="point_type_exists") from None
    audit.record(workspace, actor, "point_type.create" if creating else "point_type.update", pt,
                 {k: str(v) for k, v in data.items()})
    return pt


RULE_FIELDS = ("name", "point_type", "interaction_type", "direction", "channel", "touchpoint", "min_amount", "points",
               "points_per_yuan", "member_cap_day", "member_cap_week", "member_cap_month", "global_cap_day",
               "global_cap_week", "global_cap_month", "starts_at", "ends_at", "priority", "enabled")


def _decimal(value: Any, key: str, places: int) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        number = Decimal(-1)
    if not number.is_finite() or number < 0 or number >= Decimal(10) ** 9 or number.as_tuple().exponent < -places:  # type: ignore[operator]
        raise ValidationError(_("%(field)s must be a number ≥ 0 with at most %(n)d decimals") % {"field": key, "n": places},
                              code="invalid_field", details={"field": key})
    return number


def _time(value: Any, key: str) -> dt.datetime | None:
    if value in (None, ""):
        return None
    parsed = value if isinstance(value, dt.datetime) else parse_datetime(str(value).strip())
    if parsed is None or timezone.is_naive(parsed):
        raise ValidationError(_("%(field)s must be an ISO 8601 date-time with a time zone") % {"field": key},
                              code="invalid_time", details={"field": key})
    return parsed


@transaction.atomic
def save_earn_rule(workspace: Workspace, data: Mapping[str, Any], *, rule_id: int | None = None, actor: str) -> EarnRule:
    """Create an earn rule, or update ``rule_id``. ``point_type`` is a code, ``touchpoint`` a code."""
    from shequn.interactions.models import Direction, InteractionType, Touchpoint

    actor = _clean_actor(actor)
    unknown = sorted(set(data) - set(RULE_FIELDS))
    if unknown:
        raise ValidationError(_("unknown field %(field)r") % {"field": unknown[0]}, code="invalid_field",
                              details={"field": unknown[0]})
    rule = get_scoped(EarnRule, workspace, rule_id, for_update=True) if rule_id else EarnRule(workspace=workspace)
    for key, value in data.items():
        if key == "name":
            name = str(value or "").strip()
            if not name or len(name) > 100:
                raise ValidationError(_("name must be 1–100 characters"), code="invalid_field", details={"field": key})
            rule.name = name
        elif key == "point_type":
            rule.point_type = get_point_type(workspace, str(value or ""))
        elif key == "interaction_type":
            if value not in ("", None, *InteractionType.values):
                raise ValidationError(_("unknown interaction type %(v)r") % {"v": value}, code="invalid_type",
                                      details={"field": key})
            rule.interaction_type = value or ""
        elif key == "direction":
            if value not in ("", None, *Direction.values):
                raise ValidationError(_("direction must be in, out or empty"), code="invalid_field", details={"field": key})
            rule.direction = value or ""
        elif key == "channel":
            rule.channel = str(value or "").strip()[:64]
        elif key == "touchpoint":
            rule.touchpoint = None
            if value:
                tp = scoped(Touchpoint, workspace).filter(code=str(value)).first()
                if tp is None:
                    raise ValidationError(_("unknown touchpoint %(v)r") % {"v": value}, code="unknown_touchpoint",
                                          details={"field": key})
                rule.touchpoint = tp
        elif key == "min_amount":
            rule.min_amount = _decimal(value, key, 2)
        elif key == "points_per_yuan":
            rule.points_per_yuan = _decimal(value, key, 4)
        elif key == "points":
            rule.points = _whole(value, key, low=0, high=MAX_POINTS)
        elif key.startswith(("member_cap_", "global_cap_")):
            setattr(rule, key, None if value in (None, "") else _whole(value, key, low=1, high=MAX_POINTS))
        elif key in ("starts_at", "ends_at"):
            setattr(rule, key, _time(value, key))
        elif key == "priority":
            rule.priority = _whole(value, key, low=-1_000_000, high=1_000_000)
        elif key == "enabled":
            rule.enabled = bool(value)
    if not rule.name or not rule.point_type_id:
        raise ValidationError(_("a rule needs a name and a point type"), code="invalid_field")
    if not rule.points and not rule.points_per_yuan:
        raise ValidationError(_("a rule must give fixed points or points per ¥"), code="invalid_field",
                              details={"field": "points"})
    if rule.starts_at and rule.ends_at and rule.starts_at >= rule.ends_at:
        raise ValidationError(_("the rule must start before it ends"), code="invalid_field", details={"field": "ends_at"})
    rule.save()
    audit.record(workspace, actor, "earn_rule.save", rule, {k: str(v) for k, v in data.items()})
    return rule


@transaction.atomic
def delete_earn_rule(workspace: Workspace, rule_id: int, *, actor: str) -> None:
    """Delete a rule and its cap counters. Points it awarded stay (their entries name the rule)."""
    rule = get_scoped(EarnRule, workspace, rule_id, for_update=True)
    audit.record(workspace, _clean_actor(actor), "earn_rule.delete", rule, {"name": rule.name})
    rule.delete()


# ---------------------------------------------------------------------------------------------
# the ledger check


@dataclass
class Discrepancy:
    check: str
    member_id: int | None
    point_type: str
    expected: int
    actual: int
    ref: int | None = None  # the entry or lot concerned

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "member_id": self.member_id, "point_type": self.point_type,
                "expected": self.expected, "actual": self.actual, "ref": self.ref}


@dataclass
class VerifyReport:
    workspace: str
    balances: int = 0
    entries: int = 0
    lots: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.discrepancies

    def as_dict(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "ok": self.ok, "balances": self.balances, "entries": self.entries,
                "lots": self.lots, "discrepancies": [d.as_dict() for d in self.discrepancies]}


_DEBITS = (EntryKind.SPEND, EntryKind.EXPIRE, EntryKind.REVERSE, EntryKind.TRANSFER_OUT, EntryKind.MERGE_OUT,
           EntryKind.ADJUST)


def verify(workspace: Workspace) -> VerifyReport:
    """Prove the ledger of a workspace (reads only, a fixed number of queries):

    * ``entries_sum`` — every balance's available + pending equals the sum of its entries;
    * ``available_lots`` / ``pending_lots`` — available equals what is left in its released lots,
      pending what is left in its pending ones;
    * ``negative`` — nothing is below zero;
    * ``lifetime`` — lifetime earned equals the awards minus what reversals claimed, plus what
      member merges moved in and minus what they moved out;
    * ``orphan`` — no entry or lot without its balance;
    * ``draws`` — every debit drew exactly its amount from lots; ``lot_draws`` — every lot's
      remaining equals its amount minus its draws;
    * ``expired_lot_drawn`` / ``pending_lot_drawn`` — no spend, transfer or correction took points
      from a lot that had expired or was still pending.
    """
    report = VerifyReport(workspace=workspace.slug)
    codes = dict(scoped(PointType, workspace).values_list("pk", "code"))

    def add(check: str, member_id: int | None, type_id: int, expected: int, actual: int, ref: int | None = None) -> None:
        report.discrepancies.append(Discrepancy(check, member_id, codes.get(type_id, str(type_id)), expected, actual, ref))

    entry_sums: dict[tuple[int, int], int] = {}
    earned: dict[tuple[int, int], int] = defaultdict(int)
    for mid, tid, kind, total, short in (PointEntry.objects.filter(workspace=workspace)
                                         .values_list("member_id", "point_type_id", "kind")
                                         .annotate(total=Sum("amount"), short=Sum("shortfall")).order_by()):
        key = (mid, tid)
        entry_sums[key] = entry_sums.get(key, 0) + total
        if kind == EntryKind.EARN:
            earned[key] += total
        elif kind == EntryKind.REVERSE:
            earned[key] -= -total + short
    for tid, src, dst, moved in (PointMerge.objects.filter(workspace=workspace)
                                 .values_list("point_type_id", "from_member_id", "to_member_id", "lifetime")):
        earned[(src, tid)] -= moved
        earned[(dst, tid)] += moved
    report.entries = PointEntry.objects.filter(workspace=workspace).count()
    lot_sums: dict[tuple[int, int, bool], int] = defaultdict(int)
    for mid, tid, released, remaining in (PointLot.objects.filter(workspace=workspace, remaining__gt=0)
                                          .values_list("member_id", "point_type_id", "released")
                                          .annotate(n=Sum("remaining")).order_by()):
        lot_sums[(mid, tid, released)] = remaining
    report.lots = PointLot.objects.filter(workspace=workspace).count()

    seen: set[tuple[int, int]] = set()
    for mid, tid, available, pending, lifetime in (PointBalance.objects.filter(workspace=workspace)
                                                   .values_list("member_id", "point_type_id", "available", "pending",
                                                                "lifetime_earned").order_by("pk")):
        report.balances += 1
        key = (mid, tid)
        seen.add(key)
        if available < 0 or pending < 0:
            add("negative", mid, tid, 0, min(available, pending))
        if entry_sums.get(key, 0) != available + pending:
            add("entries_sum", mid, tid, entry_sums.get(key, 0), available + pending)
        if lot_sums.get((mid, tid, True), 0) != available:
            add("available_lots", mid, tid, lot_sums.get((mid, tid, True), 0), available)
        if lot_sums.get((mid, tid, False), 0) != pending:
            add("pending_lots", mid, tid, lot_sums.get((mid, tid, False), 0), pending)
        if earned.get(key, 0) != lifetime:
            add("lifetime", mid, tid, earned.get(key, 0), lifetime)
    for mid, tid in sorted(set(entry_sums) - seen):
        add("orphan", mid, tid, 0, entry_sums[(mid, tid)])
    for mid, tid, _released in sorted({k for k in lot_sums if (k[0], k[1]) not in seen}):
        add("orphan", mid, tid, 0, lot_sums[(mid, tid, _released)])

    drawn = {pk: n for pk, n in PointLotDraw.objects.filter(workspace=workspace).values_list("entry_id")
             .annotate(n=Sum("amount")).order_by()}
    for pk, mid, tid, amount in (PointEntry.objects.filter(workspace=workspace, kind__in=_DEBITS)
                                 .filter(~Q(kind=EntryKind.ADJUST) | Q(amount__lt=0))
                                 .values_list("pk", "member_id", "point_type_id", "amount")):
        if drawn.get(pk, 0) != -amount:
            add("draws", mid, tid, -amount, drawn.get(pk, 0), ref=pk)
    taken = {pk: n for pk, n in PointLotDraw.objects.filter(workspace=workspace).values_list("lot_id")
             .annotate(n=Sum("amount")).order_by()}
    for pk, mid, tid, amount, remaining in (PointLot.objects.filter(workspace=workspace)
                                            .values_list("pk", "member_id", "point_type_id", "amount", "remaining")):
        if amount - taken.get(pk, 0) != remaining:
            add("lot_draws", mid, tid, amount - taken.get(pk, 0), remaining, ref=pk)
        if remaining and (amount < 0 or remaining > amount):
            add("negative", mid, tid, 0, remaining, ref=pk)

    spending = PointLotDraw.objects.filter(workspace=workspace, entry__kind__in=[EntryKind.SPEND, EntryKind.TRANSFER_OUT,
                                                                                 EntryKind.ADJUST])
    for pk, mid, tid, n in (spending.filter(lot__expires_at__lte=F("entry__at"))
                            .values_list("entry_id", "entry__member_id", "entry__point_type_id", "amount")):
        add("expired_lot_drawn", mid, tid, 0, n, ref=pk)
    for pk, mid, tid, n in (spending.filter(lot__available_at__gt=F("entry__at"))
                            .values_list("entry_id", "entry__member_id", "entry__point_type_id", "amount")):
        add("pending_lot_drawn", mid, tid, 0, n, ref=pk)
    return report
