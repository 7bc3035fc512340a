"""PostgreSQL, outside a transaction: an earn or a spend and what the ``POINTS_CHANGED`` handlers
write are sent as one text and commit together (``hooks.plan``) — and every case the one text
cannot take falls to the general path without writing anything twice."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from shequn.core import clock, hooks
from shequn.core import services as core
from shequn.core.errors import Conflict
from shequn.engagement.models import LeaderboardScore
from shequn.loyalty import queries
from shequn.loyalty import services as loyalty
from shequn.loyalty.models import PointBalance, PointEntry
from shequn.members import services as members
from tests.threads import run_threads

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def setup(n=1):
    ws = core.create_workspace("trip", "Trip")
    ms = [members.upsert_member(ws, [{"kind": "external", "value": f"m{i}"}]).member for i in range(n)]
    return ws, ms


def scores(ws, member):
    return dict(LeaderboardScore.objects.filter(workspace=ws, member=member, board="points")
                .values_list("period", "score"))


def assert_clean(ws):
    report = loyalty.verify(ws)
    assert report.ok, report.as_dict()


def test_an_earn_and_its_leaderboard_upsert_are_one_statement_text():
    ws, [m] = setup()
    loyalty.earn(ws, m, "points", 10, reason="first", idempotency_key="e0", actor="t")  # creates the balance row
    pt = loyalty.get_point_type(ws, "points")
    with CaptureQueriesContext(connection) as captured:
        entry = loyalty.earn(ws, m.pk, pt, 25, reason="order", idempotency_key="e1", actor="t")
    texts = [q["sql"] for q in captured.captured_queries if not q["sql"].startswith("PREPARE")]
    assert len(texts) == 1 and texts[0].startswith("EXECUTE") and "engagement_leaderboardscore" in texts[0]
    assert scores(ws, m) == {"week": 35, "month": 35}
    assert entry.amount == 25 and queries.balance(ws, m.pk, "points").available == 35
    assert_clean(ws)


def test_a_replayed_earn_changes_no_score():
    ws, [m] = setup()
    first = loyalty.earn(ws, m, "points", 10, reason="e", idempotency_key="e0", actor="t")
    again = loyalty.earn(ws, m, "points", 10, reason="e", idempotency_key="e0", actor="t")
    other = loyalty.earn(ws, m, "points", 5, reason="e", idempotency_key="e1", actor="t")
    replay = loyalty.earn(ws, m, "points", 5, reason="e", idempotency_key="e1", actor="t")
    assert (again.pk, replay.pk) == (first.pk, other.pk)
    assert scores(ws, m) == {"week": 15, "month": 15}
    assert PointEntry.objects.filter(workspace=ws).count() == 2


def test_the_first_earn_takes_the_general_path_and_scores_once():
    ws, [m] = setup()
    assert not PointBalance.objects.filter(member=m).exists()
    loyalty.earn(ws, m, "points", 40, reason="e", idempotency_key="e0", actor="t")
    assert scores(ws, m) == {"week": 40, "month": 40}  # the one text's upsert was guarded off


def test_a_balance_changed_by_a_clock_ahead_takes_the_general_path():
    ws, [m] = setup()
    loyalty.earn(ws, m, "points", 10, reason="e", idempotency_key="e0", actor="t")
    ahead = clock.now() + dt.timedelta(seconds=30)
    PointBalance.objects.filter(member=m).update(updated_at=ahead)
    entry = loyalty.earn(ws, m, "points", 7, reason="e", idempotency_key="e1", actor="t")
    assert entry.at == ahead  # ledger time never goes back on a balance
    assert scores(ws, m) == {"week": 17, "month": 17}
    spent = loyalty.spend(ws, m, "points", 3, reason="s", idempotency_key="s1", actor="t")
    assert spent.at == ahead
    assert_clean(ws)


def test_a_spend_outside_a_transaction_is_one_statement_text():
    ws, [m] = setup()
    loyalty.earn(ws, m, "points", 50, reason="e", idempotency_key="e0", actor="t")
    pt = loyalty.get_point_type(ws, "points")
    with CaptureQueriesContext(connection) as captured:
        spent = loyalty.spend(ws, m.pk, pt, 20, reason="s", idempotency_key="s1", actor="t")
    texts = [q["sql"] for q in captured.captured_queries if not q["sql"].startswith("PREPARE")]
    assert len(texts) == 1 and texts[0].startswith("EXECUTE")
    assert loyalty.spend(ws, m, "points", 20, reason="s", idempotency_key="s1", actor="t").pk == spent.pk
    with pytest.raises(Conflict) as refused:
        loyalty.spend(ws, m, "points", 31, reason="s", idempotency_key="s2", actor="t")
    assert refused.value.code == "insufficient_points"
    assert queries.balance(ws, m.pk, "points").available == 30
    assert scores(ws, m) == {"week": 50, "month": 50}  # spending lowers no leaderboard
    assert_clean(ws)


def test_a_handler_without_a_plan_runs_in_the_operations_transaction():
    ws, [m] = setup()
    loyalty.earn(ws, m, "points", 10, reason="e", idempotency_key="e0", actor="t")
    seen = []

    def record(**kwargs):
        seen.append((kwargs["kind"], kwargs["amount"], kwargs["entry_id"]))

    hooks.on(hooks.POINTS_CHANGED, record)
    try:
        e = loyalty.earn(ws, m, "points", 5, reason="e", idempotency_key="e1", actor="t")
        s = loyalty.spend(ws, m, "points", 4, reason="s", idempotency_key="s1", actor="t")
    finally:
        hooks._handlers[hooks.POINTS_CHANGED].remove(record)
    assert seen == [("earn", 5, e.pk), ("spend", -4, s.pk)]
    assert scores(ws, m) == {"week": 15, "month": 15}


def test_concurrent_earns_and_replays_score_each_award_once():
    ws, [m] = setup()
    loyalty.earn(ws, m, "points", 1, reason="e", idempotency_key="e-seed", actor="t")

    def work(i):
        loyalty.earn(ws, m.pk, "points", 10, reason="e", idempotency_key=f"e{i % 16}", actor="t")
        if i % 2:
            try:
                loyalty.spend(ws, m.pk, "points", 3, reason="s", idempotency_key=f"s{i}", actor="t")
            except Conflict as exc:
                assert exc.code == "insufficient_points"

    run_threads(32, work)
    assert scores(ws, m) == {"week": 161, "month": 161}
    assert PointEntry.objects.filter(kind="earn").count() == 17
    assert_clean(ws)
