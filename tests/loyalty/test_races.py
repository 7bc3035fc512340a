"""Races on a real PostgreSQL server with real threads, each with its own connection."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import connection, transaction

from shequn.core import services as core
from shequn.core.errors import Conflict
from shequn.interactions import services as interactions
from shequn.loyalty import queries
from shequn.loyalty import services as loyalty
from shequn.loyalty.models import EarnCapUsage, PointEntry, PointLotDraw
from shequn.members import services as members
from tests.threads import run_threads

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DAY = dt.timedelta(days=1)


def setup(n_members=1):
    ws = core.create_workspace("race", "Race")
    ms = [members.upsert_member(ws, [{"kind": "external", "value": f"m{i}"}]).member for i in range(n_members)]
    return ws, ms


def assert_clean(ws):
    report = loyalty.verify(ws)
    assert report.ok, report.as_dict()


def test_64_concurrent_spends_never_overdraw_and_lose_no_update():
    ws, [m] = setup()
    loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 60}, actor="t")
    start = dt.datetime.now(dt.UTC)
    for i, n in enumerate((200, 155, 200)):  # three lots with different expiries: 555 points
        loyalty.earn(ws, m, "d", n, reason="e", idempotency_key=f"e{i}", actor="t", earned_at=start - i * DAY)

    def attempt(i):
        try:
            loyalty.spend(ws, m.pk, "d", 10, reason="coffee", idempotency_key=f"s{i}", actor="t")
            return "ok"
        except Conflict as exc:
            return exc.code

    results = run_threads(64, attempt)
    assert results.count("ok") == 55 and results.count("insufficient_points") == 9
    b = queries.balance(ws, m.pk, "d")
    assert (b.available, b.pending) == (5, 0)
    assert PointEntry.objects.filter(kind="spend").count() == 55
    assert sum(PointLotDraw.objects.values_list("amount", flat=True)) == 550
    assert_clean(ws)


def test_16_concurrent_replays_of_one_key_make_one_entry():
    ws, [m] = setup()
    earned = run_threads(16, lambda i: loyalty.earn(ws, m.pk, "points", 30, reason="order", idempotency_key="order-1",
                                                     actor="t").pk)
    assert len(set(earned)) == 1
    spent = run_threads(16, lambda i: loyalty.spend(ws, m.pk, "points", 30, reason="gift", idempotency_key="spend-1",
                                                    actor="t").pk)
    assert len(set(spent)) == 1
    assert list(PointEntry.objects.order_by("pk").values_list("kind", "amount")) == [("earn", 30), ("spend", -30)]
    assert queries.balance(ws, m.pk, "points").available == 0
    assert_clean(ws)


def test_concurrent_replays_of_a_key_for_different_members_keep_the_first():
    ws, ms = setup(8)

    def attempt(i):
        try:
            return loyalty.earn(ws, ms[i].pk, "points", 5, reason="x", idempotency_key="shared", actor="t").member_id
        except Conflict as exc:
            return exc.code

    results = run_threads(8, attempt)
    assert PointEntry.objects.count() == 1
    assert results.count("idempotency_key_reused") == 7
    assert_clean(ws)


def test_transfers_in_both_directions_do_not_deadlock_and_conserve_points():
    ws, [a, b] = setup(2)
    loyalty.save_point_type(ws, "coins", {"name": "c", "transferable": True}, actor="t")
    for m in (a, b):
        loyalty.earn(ws, m, "coins", 100, reason="e", idempotency_key=f"e{m.pk}", actor="t")

    def move(i):
        src, dst = (a, b) if i % 2 else (b, a)
        try:
            loyalty.transfer(ws, "coins", src.pk, dst.pk, 7, reason="t", idempotency_key=f"t{i}", actor="t")
            return "ok"
        except Conflict as exc:
            return exc.code

    results = run_threads(32, move)
    assert set(results) <= {"ok", "insufficient_points"}
    total = sum(queries.balance(ws, m.pk, "coins").available for m in (a, b))
    assert total == 200
    assert PointEntry.objects.filter(kind="transfer_out").count() == results.count("ok")
    assert_clean(ws)


def test_ingested_purchases_racing_counter_spends_and_a_global_cap():
    ws, ms = setup(8)
    loyalty.save_earn_rule(ws, {"name": "每日前100分", "point_type": "points", "interaction_type": "purchase",
                                "points_per_yuan": "1", "global_cap_day": 100}, actor="t")
    for m in ms:
        loyalty.earn(ws, m, "points", 50, reason="seed", idempotency_key=f"seed-{m.pk}", actor="t")
    now = dt.datetime.now(dt.UTC)

    def work(i):
        m = ms[i % 8]
        if i < 16:
            event = {"member_id": m.pk, "type": "purchase", "channel": "store", "amount": "20", "source": "pos",
                     "occurred_at": now.isoformat(), "external_id": f"o{i}"}
            return interactions.ingest(ws, event).status
        try:
            loyalty.spend(ws, m.pk, "points", 10, reason="counter", idempotency_key=f"s{i}", actor="t")
            return "spent"
        except Conflict as exc:
            return exc.code

    results = run_threads(32, work)
    assert results.count("created") == 16 and results.count("spent") == 16
    awarded = sum(PointEntry.objects.filter(kind="earn", source_interaction_id__isnull=False)
                  .values_list("amount", flat=True))
    assert awarded == 100
    assert EarnCapUsage.objects.get().points == 100
    assert sum(queries.balance(ws, m.pk, "points").available for m in ms) == 8 * 50 + 100 - 16 * 10
    assert_clean(ws)


def test_concurrent_expiry_runs_expire_each_lot_once():
    ws, ms = setup(6)
    loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 5}, actor="t")
    start = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    for m in ms:
        loyalty.earn(ws, m, "d", 10, reason="e", idempotency_key=f"e{m.pk}", actor="t", now=start)
    runs = run_threads(8, lambda i: loyalty.expire_due(ws, start + 6 * DAY, chunk=2).expired)
    assert sum(runs) == 60
    assert PointEntry.objects.filter(kind="expire").count() == 6
    assert_clean(ws)


def test_a_spend_that_waited_for_the_balance_lock_draws_from_lots_written_meanwhile():
    """The one-statement spend reads lots from its snapshot, taken before it waits for the balance
    lock; when the row changed meanwhile it must give way to the general path. Here the holder of
    the lock adds a lot that expires sooner, and the waiting spend must take that one."""
    ws, [m] = setup()
    loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 60}, actor="t")
    now = dt.datetime.now(dt.UTC)
    loyalty.earn(ws, m, "d", 100, reason="e", idempotency_key="late", actor="t")
    holding = threading.Event()

    def act(i):
        if i == 0:
            with transaction.atomic():
                soon = loyalty.earn(ws, m.pk, "d", 10, reason="e", idempotency_key="soon", actor="t",
                                    earned_at=now - 30 * DAY)
                holding.set()
                with connection.cursor() as cur:
                    for _ in range(500):  # until the spend waits for the lock this transaction holds
                        cur.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
                        if cur.fetchone()[0]:
                            break
                        time.sleep(0.01)
            return soon.pk
        holding.wait()
        return loyalty.spend(ws, m.pk, "d", 10, reason="s", idempotency_key="s", actor="t").pk

    results = run_threads(2, act)
    soon_id, spend_id = sorted(results, key=lambda pk: PointEntry.objects.get(pk=pk).kind)
    assert [(d.lot.entry_id, d.amount) for d in queries.entry_draws(ws, spend_id)] == [(soon_id, 10)]
    assert_clean(ws)
