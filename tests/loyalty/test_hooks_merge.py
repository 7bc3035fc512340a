"""``hooks.POINTS_CHANGED`` for every entry, and what a member merge (and its undoing) does to points."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest

from shequn.core import hooks
from shequn.core.errors import Conflict
from shequn.loyalty import queries
from shequn.loyalty import services as loyalty
from shequn.loyalty.models import PointEntry, PointLot, PointMerge
from shequn.members import services as members

DAY = dt.timedelta(days=1)


@pytest.fixture
def events():
    seen: list[dict] = []

    def record(**kwargs):
        seen.append(kwargs)

    hooks.on(hooks.POINTS_CHANGED, record)
    yield seen
    hooks._handlers[hooks.POINTS_CHANGED].remove(record)


def assert_clean(ws):
    report = loyalty.verify(ws)
    assert report.ok, report.as_dict()


def test_every_entry_that_changes_a_balance_is_announced_once(ws, alice, bob, coins, now, events):
    e = loyalty.earn(ws, alice, "coins", 100, reason="e", idempotency_key="e1", actor="t", now=now)
    loyalty.earn(ws, alice, "coins", 100, reason="e", idempotency_key="e1", actor="t", now=now)  # replay: silent
    s = loyalty.spend(ws, alice, "coins", 30, reason="s", idempotency_key="s1", actor="t", now=now)
    loyalty.spend(ws, alice, "coins", 30, reason="s", idempotency_key="s1", actor="t", now=now)
    out = loyalty.transfer(ws, "coins", alice, bob, 20, reason="gift", idempotency_key="t1", actor="t", now=now)
    a = loyalty.adjust(ws, bob, "coins", -5, reason="fix", idempotency_key="a1", actor="t", now=now)
    r = loyalty.reverse(ws, entry_id=e.pk, amount=10, reason="refund", idempotency_key="r1", actor="t", now=now)
    incoming = PointEntry.objects.get(kind="transfer_in")
    assert [(x["kind"], x["amount"], x["member_id"], x["entry_id"]) for x in events] == [
        ("earn", 100, alice.pk, e.pk), ("spend", -30, alice.pk, s.pk), ("transfer_out", -20, alice.pk, out.pk),
        ("transfer_in", 20, bob.pk, incoming.pk), ("adjust", -5, bob.pk, a.pk), ("reverse", -10, alice.pk, r.pk)]
    assert {x["point_type"] for x in events} == {"coins"} and {x["workspace"] for x in events} == {ws}
    assert all(x["at"] == now for x in events)


def test_expiry_is_announced_and_releases_are_not(ws, alice, now, events):
    loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 10, "pending_days": 2},
                            actor="t")
    loyalty.earn(ws, alice, "d", 40, reason="e", idempotency_key="e", actor="t", now=now)
    loyalty.expire_due(ws, now + 3 * DAY)  # released: no entry, nothing announced
    assert [x["kind"] for x in events] == ["earn"]
    loyalty.expire_due(ws, now + 11 * DAY)
    assert [(x["kind"], x["amount"]) for x in events] == [("earn", 40), ("expire", -40)]


def test_earn_rule_awards_are_announced(ws, alice, events):
    from shequn.interactions import services as interactions

    loyalty.save_earn_rule(ws, {"name": "buy", "point_type": "points", "interaction_type": "purchase",
                                "points_per_yuan": "1"}, actor="t")
    interactions.ingest(ws, {"member_id": alice.pk, "type": "purchase", "channel": "store", "amount": "25",
                             "source": "pos", "external_id": "o1", "occurred_at": "2026-06-01T10:00:00+08:00"})
    assert [(x["kind"], x["amount"], x["point_type"]) for x in events] == [("earn", 25, "points")]


def test_a_failing_handler_rolls_the_operation_back(ws, alice, coins, now):
    def boom(**kwargs):
        raise RuntimeError("subscriber failed")

    hooks.on(hooks.POINTS_CHANGED, boom)
    try:
        with pytest.raises(RuntimeError):
            loyalty.earn(ws, alice, "coins", 10, reason="e", idempotency_key="e", actor="t", now=now)
    finally:
        hooks._handlers[hooks.POINTS_CHANGED].remove(boom)
    assert PointEntry.objects.count() == 0 and queries.balance(ws, alice.pk, "coins").available == 0


# ---------------------------------------------------------------------------------------------
# merge / unmerge (the ledger reads the clock for a merge: it is held at the fixtures' ``now``)


@pytest.fixture
def frozen(now):
    with mock.patch("shequn.core.clock.now", return_value=now):
        yield now


def test_merge_combines_points_and_unmerge_restores_them_exactly(frozen, ws, alice, bob, now, events):
    loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 30, "pending_days": 3},
                            actor="t")
    loyalty.earn(ws, alice, "d", 100, reason="e", idempotency_key="a1", actor="t", now=now - 5 * DAY)
    loyalty.earn(ws, bob, "d", 30, reason="e", idempotency_key="b1", actor="t", now=now - 10 * DAY)
    loyalty.earn(ws, bob, "d", 20, reason="e", idempotency_key="b2", actor="t", now=now - DAY)  # pending
    loyalty.earn(ws, bob, "growth", 7, reason="e", idempotency_key="g", actor="t", now=now)
    before_lots = sorted(PointLot.objects.filter(member=bob, remaining__gt=0)
                         .values_list("remaining", "earned_at", "available_at", "expires_at"))
    events.clear()

    record = members.merge_members(ws, alice, bob, reason="same person", actor="t")
    b = queries.balance(ws, alice.pk, "d")
    assert (b.available, b.pending, b.lifetime_earned) == (130, 20, 150)
    assert queries.balance(ws, alice.pk, "growth").available == 7
    assert (queries.balance(ws, bob.pk, "d").available, queries.balance(ws, bob.pk, "d").pending) == (0, 0)
    assert queries.balance(ws, bob.pk, "d").lifetime_earned == 0
    moved = sorted(PointLot.objects.filter(member=alice, entry__kind="merge_in")
                   .values_list("remaining", "earned_at", "available_at", "expires_at"))
    assert moved == before_lots  # same dates: nothing expires earlier or becomes available later
    assert sorted((x["kind"], x["amount"], x["point_type"]) for x in events) == [
        ("merge_in", 7, "growth"), ("merge_in", 50, "d"), ("merge_out", -50, "d"), ("merge_out", -7, "growth")]
    assert_clean(ws)
    loyalty.merge_points(ws, record, actor="t")  # a second call moves nothing
    assert PointMerge.objects.count() == 2
    assert_clean(ws)

    members.unmerge(ws, record.pk, actor="t")
    for m, expected in ((alice, (100, 0, 100)), (bob, (30, 20, 50))):
        b = queries.balance(ws, m.pk, "d")
        assert (b.available, b.pending, b.lifetime_earned) == expected
    assert queries.balance(ws, bob.pk, "growth").lifetime_earned == 7
    assert queries.balance(ws, alice.pk, "growth").available == 0
    restored = sorted(PointLot.objects.filter(member=bob, remaining__gt=0)
                      .values_list("remaining", "earned_at", "available_at", "expires_at"))
    assert restored == before_lots
    assert_clean(ws)


def test_unmerge_after_the_survivor_spent_returns_what_is_left_of_the_moved_lots(frozen, ws, alice, bob, coins, now):
    loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 30}, actor="t")
    loyalty.earn(ws, alice, "d", 100, reason="e", idempotency_key="a1", actor="t", now=now)
    loyalty.earn(ws, bob, "d", 50, reason="e", idempotency_key="b1", actor="t", now=now - 20 * DAY)
    record = members.merge_members(ws, alice, bob, reason="same", actor="t")
    # The moved lot expires first, so a spend takes it first.
    loyalty.spend(ws, alice, "d", 60, reason="s", idempotency_key="s", actor="t")
    members.unmerge(ws, record.pk, actor="t")
    assert queries.balance(ws, bob.pk, "d").available == 0
    assert queries.balance(ws, alice.pk, "d").available == 90
    assert queries.balance(ws, bob.pk, "d").lifetime_earned == 50
    assert_clean(ws)


def test_a_refund_after_a_merge_takes_the_points_back_from_the_survivor(frozen, ws, alice, bob, coins, now):
    earned = loyalty.earn(ws, bob, "coins", 40, reason="e", idempotency_key="b1", actor="t", now=now)
    members.merge_members(ws, alice, bob, reason="same", actor="t")
    r = loyalty.reverse(ws, entry_id=earned.pk, reason="refund", actor="t")
    assert (r.member_id, r.amount, r.shortfall) == (alice.pk, -40, 0)
    assert queries.balance(ws, alice.pk, "coins").available == 0
    assert queries.balance(ws, alice.pk, "coins").lifetime_earned == 0
    with pytest.raises(Conflict):
        loyalty.reverse(ws, entry_id=earned.pk, reason="refund", idempotency_key="again", actor="t")
    assert loyalty.reverse(ws, entry_id=earned.pk, reason="refund", actor="t").pk == r.pk  # replay
    assert_clean(ws)


def test_merging_a_member_without_points_writes_nothing(frozen, ws, alice, bob, now):
    loyalty.earn(ws, alice, "points", 10, reason="e", idempotency_key="a", actor="t", now=now)
    record = members.merge_members(ws, alice, bob, reason="same", actor="t")
    assert PointMerge.objects.count() == 0 and PointEntry.objects.count() == 1
    members.unmerge(ws, record.pk, actor="t")
    assert queries.balance(ws, alice.pk, "points").available == 10
    assert_clean(ws)
