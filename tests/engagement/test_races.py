"""Races on a real PostgreSQL server with real threads, each with its own connection."""

from __future__ import annotations

import datetime as dt

import pytest

from shequn.core import services as core
from shequn.engagement import queries
from shequn.engagement import services as eng
from shequn.engagement.models import BadgeAward, CheckIn, LeaderboardScore, MemberCounter, TaskProgress
from shequn.interactions import services as interactions
from shequn.loyalty import queries as loyalty_queries
from shequn.loyalty import services as loyalty
from shequn.loyalty.models import PointEntry
from shequn.members import services as members
from tests.threads import run_threads

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def setup(n_members=1):
    ws = core.create_workspace("race", "Race")
    ms = [members.upsert_member(ws, [{"kind": "external", "value": f"m{i}"}]).member for i in range(n_members)]
    return ws, ms


def test_concurrent_check_ins_of_one_member_make_one_row_and_one_reward():
    ws, [m] = setup()
    eng.save_programme(ws, {"checkin_points": 5}, actor="t")
    eng.save_streak_reward(ws, 1, 50, actor="t")
    at = dt.datetime.now(dt.UTC)
    results = run_threads(16, lambda i: eng.check_in(ws, m.pk, at).check_in.pk)
    assert len(set(results)) == 1
    assert CheckIn.objects.count() == 1
    assert loyalty_queries.balance(ws, m.pk, "points").available == 55
    assert PointEntry.objects.count() == 2
    assert MemberCounter.objects.get(key="check_in").value == 1
    assert loyalty.verify(ws).ok


def test_concurrent_points_lose_no_leaderboard_increment():
    ws, ms = setup(4)
    at = dt.datetime.now(dt.UTC)

    def earn(i):
        loyalty.earn(ws, ms[i % 4].pk, "points", i + 1, reason="r", idempotency_key=f"k{i}", actor="t", now=at)

    run_threads(32, earn)
    expected = {ms[j].pk: sum(i + 1 for i in range(32) if i % 4 == j) for j in range(4)}
    board = queries.leaderboard(ws, "points", "week", at=at)
    assert {r.member_id: r.score for r in board} == expected
    assert {r.member_id: r.score for r in queries.leaderboard(ws, "points", "month", at=at)} == expected
    assert LeaderboardScore.objects.count() == 8


def test_concurrent_interactions_count_once_and_complete_a_task_once():
    ws, [m] = setup()
    at = dt.datetime.now(dt.UTC)
    eng.save_task(ws, {"code": "share5", "name": "分享5次", "metric": "share", "target": 5, "points": 10,
                       "starts_at": at - dt.timedelta(days=1)}, actor="t")
    eng.save_badge(ws, {"code": "sharer", "name": "分享达人", "metric": "share", "threshold": 5}, actor="t")

    def share(i):
        interactions.ingest(ws, {"member_id": m.pk, "type": "share", "channel": "wechat", "occurred_at": at,
                                 "external_id": f"s{i}"})

    run_threads(12, share)
    assert MemberCounter.objects.get(key="share").value == 12
    assert TaskProgress.objects.get().progress == 12
    assert loyalty_queries.balance(ws, m.pk, "points").available == 10
    assert BadgeAward.objects.count() == 1
    assert queries.member_summary(ws, m.pk)["progress"]["shares"] == 12
