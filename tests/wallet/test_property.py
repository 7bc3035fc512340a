"""Any sequence of top-ups, payments and refunds (replays included) keeps every wallet equal to the sum
of its entries and never below zero, and agrees with a plain model: refused operations change nothing."""

from __future__ import annotations

import itertools

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
from shequn.members import services as members
from shequn.wallet import queries, services

N = 2
_slugs = itertools.count()


class WalletMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        self.ws = core.create_workspace(f"wprop-{next(_slugs)}", "Property")
        self.members = [members.upsert_member(self.ws, [{"kind": "external", "value": f"m{i}"}]).member.pk
                        for i in range(N)]
        self.balance = [0] * N
        self.payments: dict[int, tuple[int, int]] = {}  # id -> (member index, left to refund)
        self.done: list[tuple[str, tuple]] = []  # (key, call) of successful operations, for replays
        self.keys = itertools.count()

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)

    @rule(m=st.integers(0, N - 1), fen=st.integers(1, 5_000))
    def top_up(self, m: int, fen: int) -> None:
        key = f"k{next(self.keys)}"
        services.top_up(self.ws, self.members[m], fen, idempotency_key=key, actor="t")
        self.balance[m] += fen
        self.done.append((key, ("top_up", m, fen)))

    @rule(m=st.integers(0, N - 1), fen=st.integers(1, 6_000))
    def pay(self, m: int, fen: int) -> None:
        key = f"k{next(self.keys)}"
        try:
            entry = services.pay(self.ws, self.members[m], fen, idempotency_key=key, actor="t")
        except Conflict as exc:
            assert exc.code == "insufficient_funds" and self.balance[m] < fen
            return
        assert self.balance[m] >= fen
        self.balance[m] -= fen
        self.payments[entry.pk] = (m, fen)
        self.done.append((key, ("pay", m, fen)))

    @rule(pick=st.integers(0, 10**6), fen=st.none() | st.integers(1, 3_000))
    @precondition(lambda self: bool(self.payments))
    def refund(self, pick: int, fen: int | None) -> None:
        pid = sorted(self.payments)[pick % len(self.payments)]
        m, left = self.payments[pid]
        try:
            entry = services.refund(self.ws, pid, fen, idempotency_key=f"k{next(self.keys)}", actor="t")
        except Conflict as exc:
            assert exc.code == ("already_refunded" if left == 0 else "refund_exceeds_payment")
            assert left == 0 or (fen is not None and fen > left)
            return
        give = left if fen is None else fen
        assert entry.amount == give <= left
        self.balance[m] += give
        self.payments[pid] = (m, left - give)

    @rule(pick=st.integers(0, 10**6))
    @precondition(lambda self: bool(self.done))
    def replay(self, pick: int) -> None:
        key, (kind, m, fen) = self.done[pick % len(self.done)]
        call = services.top_up if kind == "top_up" else services.pay
        entry = call(self.ws, self.members[m], fen, idempotency_key=key, actor="t")
        assert entry.idempotency_key == key  # the first entry, nothing changed (the invariants check it)

    @invariant()
    def ledger_is_consistent(self) -> None:
        report = services.verify(self.ws)
        assert report.ok, report.as_dict()
        assert [queries.balance(self.ws, mid) for mid in self.members] == self.balance
        assert min(self.balance) >= 0


def test_any_sequence_keeps_balance_equal_to_entries(db):
    run_state_machine_as_test(WalletMachine, settings=settings(
        max_examples=30, stateful_step_count=30, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))
