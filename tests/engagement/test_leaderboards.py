"""Leaderboards kept as events arrive, with the documented tie-break."""

from __future__ import annotations

import datetime as dt

import pytest

from shequn.core.errors import ValidationError
from shequn.engagement import queries
from shequn.engagement.models import LeaderboardScore
from shequn.interactions import services as interactions
from shequn.loyalty import services as loyalty

from .conftest import make_member

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)


def earn(ws, m, n, key, at, pt="points"):
    return loyalty.earn(ws, m, pt, n, reason="r", idempotency_key=key, actor="t", now=at)


def test_points_week_and_month_with_tie_break(ws, now):
    a, b, c = (make_member(ws, n) for n in "abc")
    earn(ws, a, 100, "a1", now + dt.timedelta(hours=2))
    earn(ws, b, 60, "b1", now)
    earn(ws, b, 40, "b2", now + dt.timedelta(hours=1))  # b reached 100 an hour before a
    earn(ws, c, 30, "c1", now)
    earn(ws, c, 500, "c0", now - 10 * DAY)  # last month
    week = queries.leaderboard(ws, "points", "week", at=now + DAY)
    assert [(r.rank, r.member_id, r.score) for r in week] == [(1, b.pk, 100), (2, a.pk, 100), (3, c.pk, 30)]
    for r in week:
        assert queries.member_rank(ws, "points", "week", r.member_id, at=now + DAY).rank == r.rank
    month = queries.leaderboard(ws, "points", "month", at=now + DAY)
    assert [r.member_id for r in month] == [b.pk, a.pk, c.pk]
    may = queries.leaderboard(ws, "points", "month", at=now - 10 * DAY)
    assert [(r.member_id, r.score) for r in may] == [(c.pk, 500)]
    # contribution points and spending do not count
    earn(ws, c, 1000, "g", now, pt="growth")
    loyalty.spend(ws, b, "points", 50, reason="x", idempotency_key="s", actor="t", now=now + DAY)
    assert [(r.member_id, r.score) for r in queries.leaderboard(ws, "points", "week", at=now + DAY)][0] == (b.pk, 100)


def test_equal_score_and_time_falls_back_to_member_id(ws, now):
    a, b = make_member(ws, "a"), make_member(ws, "b")
    earn(ws, b, 10, "b", now)
    earn(ws, a, 10, "a", now)
    assert [r.member_id for r in queries.leaderboard(ws, "points", "week", at=now)] == sorted([a.pk, b.pk])


def test_refund_takes_points_off_never_below_zero(ws, alice, now):
    e = earn(ws, alice, 100, "a", now)
    loyalty.reverse(ws, entry_id=e.pk, amount=40, reason="r", idempotency_key="r1", actor="t", now=now + DAY)
    assert queries.leaderboard(ws, "points", "week", at=now + DAY)[0].score == 60
    earn(ws, alice, 10, "b", now + 8 * DAY)
    loyalty.reverse(ws, entry_id=e.pk, reason="r", idempotency_key="r2", actor="t", now=now + 8 * DAY)
    row = LeaderboardScore.objects.get(board="points", period="week", period_start=dt.date(2026, 6, 8))
    assert row.score == 0
    assert queries.leaderboard(ws, "points", "week", at=now + 8 * DAY) == []


def test_weeks_are_in_the_workspace_time_zone(ws, alice, now):
    sunday_late = dt.datetime(2026, 5, 31, 15, 30, tzinfo=dt.UTC)  # 23:30 Sunday in Shanghai
    earn(ws, alice, 5, "a", sunday_late)
    assert LeaderboardScore.objects.get(period="week").period_start == dt.date(2026, 5, 25)
    assert queries.leaderboard(ws, "points", "week", at=now) == []


def test_invites_board(ws, alice, bob, now):
    for i, (m, at) in enumerate([(alice, now), (bob, now), (bob, now + DAY), (alice, now + 40 * DAY)]):
        interactions.ingest(ws, {"member_id": m.pk, "type": "referral", "channel": "miniprogram", "occurred_at": at,
                                 "external_id": f"r{i}"})
    assert [(r.member_id, r.score) for r in queries.leaderboard(ws, "invites", "week", at=now + DAY)] == \
        [(bob.pk, 2), (alice.pk, 1)]
    top = queries.leaderboard(ws, "invites", "all", at=now + 40 * DAY)
    assert [(r.member_id, r.score) for r in top] == [(bob.pk, 2), (alice.pk, 2)]  # bob reached 2 first


def test_bad_board_or_period(ws):
    with pytest.raises(ValidationError):
        queries.leaderboard(ws, "money", "week")
    with pytest.raises(ValidationError):
        queries.leaderboard(ws, "streak", "week")


def test_leaderboard_query_count(ws, now, django_assert_max_num_queries):
    for i in range(30):
        earn(ws, make_member(ws, f"m{i}"), i + 1, f"k{i}", now)
    with django_assert_max_num_queries(1):
        rows = queries.leaderboard(ws, "points", "week", at=now, limit=50)
    assert [r.score for r in rows] == list(range(30, 0, -1))
