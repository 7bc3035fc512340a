"""Property-based test of the ledger: any sequence of earn / spend / expire / reverse / transfer /
adjust, at any times, keeps every balance equal to the sum of its entries and of its lots, never
below zero, never spends an expired or pending lot — and agrees, lot by lot, with a small model of
the rules written independently here (FIFO by expiry, the reversal rule, transfers keep expiry)."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from dataclasses import dataclass

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from shequn.core import services as core
from shequn.core.errors import Conflict
from shequn.loyalty import services as loyalty
from shequn.loyalty.models import PointBalance, PointEntry, PointLot
from shequn.members import services as members

START = dt.datetime(2026, 3, 1, 4, 0, tzinfo=dt.UTC)
EXPIRY_DAYS = 10
PENDING_DAYS = 2
N_MEMBERS = 3
_slugs = itertools.count()


@dataclass
class Lot:
    id: int
    member: int
    remaining: int
    available_at: dt.datetime
    expires_at: dt.datetime
    released: bool
    earn: int | None = None  # the earn entry that created it
    expired: int = 0


class Model:
    """The rules of docs/adr/0006-points-ledger.md, on plain Python objects."""

    def __init__(self) -> None:
        self.lots: list[Lot] = []
        self.claimed: dict[int, int] = {}
        self.earned: dict[int, int] = {}
        self.lifetime = [0] * N_MEMBERS

    def settle(self, m: int, now: dt.datetime) -> None:
        for lot in self.lots:
            if lot.member != m or lot.remaining == 0:
                continue
            if lot.expires_at <= now:
                lot.expired += lot.remaining
                lot.remaining = 0
            elif not lot.released and lot.available_at <= now:
                lot.released = True

    def available(self, m: int) -> int:
        return sum(lot.remaining for lot in self.lots if lot.member == m and lot.released)

    def pending(self, m: int) -> int:
        return sum(lot.remaining for lot in self.lots if lot.member == m and not lot.released)

    def fifo(self, m: int, amount: int, now: dt.datetime, exclude: Lot | None = None) -> list[tuple[Lot, int]]:
        live = sorted((lot for lot in self.lots if lot.member == m and lot.released and lot.remaining
                       and lot.expires_at > now and lot is not exclude), key=lambda lot: (lot.expires_at, lot.id))
        plan = []
        for lot in live:
            if amount == 0:
                break
            take = min(lot.remaining, amount)
            plan.append((lot, take))
            amount -= take
        return plan


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        self.ws = core.create_workspace(f"prop-{next(_slugs)}", "Property")
        self.pt = loyalty.save_point_type(self.ws, "d", {
            "name": "d", "kind": "currency", "expiry_policy": "days", "expiry_period": EXPIRY_DAYS,
            "pending_days": PENDING_DAYS, "transferable": True}, actor="t")
        self.members = [members.upsert_member(self.ws, [{"kind": "external", "value": f"m{i}"}]).member.pk
                        for i in range(N_MEMBERS)]
        self.now = START
        self.model = Model()
        self.keys = itertools.count()

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    def key(self) -> str:
        return f"k{next(self.keys)}"

    def new_lots(self, m: int) -> list[PointLot]:
        known = {lot.id for lot in self.model.lots}
        return [lot for lot in PointLot.objects.filter(member_id=self.members[m]).order_by("pk") if lot.pk not in known]

    # --- operations -------------------------------------------------------------------------

    @rule(m=st.integers(0, N_MEMBERS - 1), amount=st.integers(1, 120))
    def earn(self, m: int, amount: int) -> None:
        self.model.settle(m, self.now)
        entry = loyalty.earn(self.ws, self.members[m], self.pt, amount, reason="e", idempotency_key=self.key(),
                             actor="t", now=self.now)
        [lot] = self.new_lots(m)
        self.model.lots.append(Lot(lot.pk, m, amount, self.now + dt.timedelta(days=PENDING_DAYS),
                                   self.now + dt.timedelta(days=EXPIRY_DAYS), released=False, earn=entry.pk))
        self.model.earned[entry.pk] = amount
        self.model.lifetime[m] += amount

    @rule(m=st.integers(0, N_MEMBERS - 1), amount=st.integers(1, 150))
    def spend(self, m: int, amount: int) -> None:
        before = copy.deepcopy(self.model)
        self.model.settle(m, self.now)
        if self.model.available(m) < amount:
            self.model = before  # a refused operation changes nothing, not even what was due
            with pytest.raises(Conflict) as exc:
                loyalty.spend(self.ws, self.members[m], self.pt, amount, reason="s", idempotency_key=self.key(),
                              actor="t", now=self.now)
            assert exc.value.code == "insufficient_points"
            return
        loyalty.spend(self.ws, self.members[m], self.pt, amount, reason="s", idempotency_key=self.key(), actor="t",
                      now=self.now)
        for lot, take in self.model.fifo(m, amount, self.now):
            lot.remaining -= take

    @rule(src=st.integers(0, N_MEMBERS - 1), step=st.integers(1, N_MEMBERS - 1), amount=st.integers(1, 100))
    def transfer(self, src: int, step: int, amount: int) -> None:
        dst = (src + step) % N_MEMBERS
        before = copy.deepcopy(self.model)
        self.model.settle(src, self.now)
        self.model.settle(dst, self.now)
        if self.model.available(src) < amount:
            self.model = before
            with pytest.raises(Conflict):
                loyalty.transfer(self.ws, self.pt, self.members[src], self.members[dst], amount, reason="t",
                                 idempotency_key=self.key(), actor="t", now=self.now)
            return
        loyalty.transfer(self.ws, self.pt, self.members[src], self.members[dst], amount, reason="t",
                         idempotency_key=self.key(), actor="t", now=self.now)
        plan = self.model.fifo(src, amount, self.now)
        created = self.new_lots(dst)
        assert len(created) == len(plan)
        for (lot, take), row in zip(plan, created, strict=True):
            lot.remaining -= take
            self.model.lots.append(Lot(row.pk, dst, take, self.now, lot.expires_at, released=True))

    @rule(pick=st.integers(0, 10**6), partial=st.none() | st.integers(1, 120))
    @precondition(lambda self: bool(self.model.earned))
    def reverse(self, pick: int, partial: int | None) -> None:
        ids = sorted(self.model.earned)
        earn_id = ids[pick % len(ids)]
        before = copy.deepcopy(self.model)
        [lot] = [lot for lot in self.model.lots if lot.earn == earn_id]
        m = lot.member
        self.model.settle(m, self.now)
        still_open = self.model.earned[earn_id] - lot.expired - self.model.claimed.get(earn_id, 0)
        call = lambda: loyalty.reverse(self.ws, entry_id=earn_id, amount=partial, reason="r",  # noqa: E731
                                       idempotency_key=self.key(), actor="t", now=self.now)
        if still_open <= 0:
            self.model = before
            with pytest.raises(Conflict) as exc:
                call()
            assert exc.value.code == "already_reversed"
            return
        want = min(still_open, partial) if partial else still_open
        entry = call()
        from_lot = min(lot.remaining, want)
        lot.remaining -= from_lot
        others = self.model.available(m) - (lot.remaining if lot.released else 0)
        rest = min(want - from_lot, others)
        for other, take in self.model.fifo(m, rest, self.now, exclude=lot):
            other.remaining -= take
        assert -entry.amount == from_lot + rest
        assert entry.shortfall == want - from_lot - rest
        self.model.claimed[earn_id] = self.model.claimed.get(earn_id, 0) + want
        self.model.lifetime[m] -= want

    @rule(m=st.integers(0, N_MEMBERS - 1), amount=st.integers(-60, 60).filter(bool))
    def adjust(self, m: int, amount: int) -> None:
        before = copy.deepcopy(self.model)
        self.model.settle(m, self.now)
        call = lambda: loyalty.adjust(self.ws, self.members[m], self.pt, amount, reason="fix",  # noqa: E731
                                      idempotency_key=self.key(), actor="t", now=self.now)
        if amount < 0 and self.model.available(m) < -amount:
            self.model = before
            with pytest.raises(Conflict):
                call()
            return
        call()
        if amount > 0:
            [row] = self.new_lots(m)
            self.model.lots.append(Lot(row.pk, m, amount, self.now, self.now + dt.timedelta(days=EXPIRY_DAYS),
                                       released=True))
        else:
            for lot, take in self.model.fifo(m, -amount, self.now):
                lot.remaining -= take

    @rule()
    def expire(self) -> None:
        loyalty.expire_due(self.ws, self.now)
        for m in range(N_MEMBERS):
            self.model.settle(m, self.now)

    @rule(hours=st.integers(1, 24 * 6))
    def advance(self, hours: int) -> None:
        self.now += dt.timedelta(hours=hours)

    # --- what must always hold ----------------------------------------------------------------

    @invariant()
    def ledger_is_consistent(self) -> None:
        report = loyalty.verify(self.ws)
        assert report.ok, report.as_dict()

    @invariant()
    def agrees_with_the_model_lot_by_lot(self) -> None:
        db = dict(PointLot.objects.filter(workspace=self.ws).values_list("pk", "remaining"))
        assert db == {lot.id: lot.remaining for lot in self.model.lots}
        rows = {b.member_id: b for b in PointBalance.objects.filter(workspace=self.ws)}
        for i, mid in enumerate(self.members):
            b = rows.get(mid)
            got = (b.available, b.pending, b.lifetime_earned) if b else (0, 0, 0)
            assert got == (self.model.available(i), self.model.pending(i), self.model.lifetime[i])
            assert min(got) >= 0

    @invariant()
    def no_spend_took_from_an_expired_or_pending_lot(self) -> None:
        for entry in PointEntry.objects.filter(workspace=self.ws, kind__in=["spend", "transfer_out"]) \
                .prefetch_related("draws__lot"):
            for draw in entry.draws.all():
                assert draw.lot.expires_at is None or draw.lot.expires_at > entry.at
                assert draw.lot.available_at <= entry.at


def test_any_sequence_of_operations_keeps_the_ledger_right(db):
    run_state_machine_as_test(LedgerMachine, settings=settings(
        max_examples=40, stateful_step_count=25, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))
