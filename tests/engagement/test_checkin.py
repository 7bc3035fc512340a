"""Daily check-in: one per member and local day (member's time zone), consecutive and cumulative
streaks, streak rewards through the ledger, the recorded interaction."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shequn.core.errors import Conflict, ValidationError
from shequn.engagement import queries
from shequn.engagement import services as eng
from shequn.engagement.models import CheckIn, LeaderboardScore, MemberStreak
from shequn.interactions.models import Interaction
from shequn.loyalty import queries as loyalty_queries
from shequn.loyalty.models import PointEntry
from shequn.members import services as members

from .conftest import make_member

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)


@pytest.fixture
def rewards(ws):
    eng.save_programme(ws, {"checkin_points": 5}, actor="t")
    eng.save_streak_reward(ws, 3, 20, actor="t")
    eng.save_streak_reward(ws, 7, 100, actor="t")


def test_one_check_in_per_local_day(ws, alice, now, rewards):
    first = eng.check_in(ws, alice.pk, now)
    again = eng.check_in(ws, alice.pk, now + dt.timedelta(hours=5))  # 15:00 the same day in Shanghai
    assert first.created and not again.created and again.check_in.pk == first.check_in.pk
    assert CheckIn.objects.count() == 1
    assert loyalty_queries.balance(ws, alice.pk, "points").available == 5
    # 16:30 UTC is already the next day in Shanghai
    nxt = eng.check_in(ws, alice.pk, dt.datetime(2026, 6, 1, 16, 30, tzinfo=dt.UTC))
    assert nxt.created and nxt.check_in.day == dt.date(2026, 6, 2) and nxt.current == 2


def test_member_time_zone_decides_the_day(ws, now):
    ny = make_member(ws, "ny")
    members.update_profile(ws, ny.pk, {"timezone": "America/New_York"}, actor="t")
    # 02:00 UTC on 1 June is 22:00 on 31 May in New York, 10:00 on 1 June in Shanghai
    assert eng.check_in(ws, ny.pk, now).check_in.day == dt.date(2026, 5, 31)
    assert eng.check_in(ws, ny.pk, now + dt.timedelta(hours=3)).check_in.day == dt.date(2026, 6, 1)


def test_streaks_rewards_and_breaks(ws, alice, now, rewards):
    results = [eng.check_in(ws, alice.pk, now + i * DAY) for i in range(7)]
    assert [r.current for r in results] == [1, 2, 3, 4, 5, 6, 7]
    assert results[2].rewards == [3] and results[6].rewards == [7]
    assert results[2].points == 25 and results[6].points == 105
    assert loyalty_queries.balance(ws, alice.pk, "points").available == 7 * 5 + 20 + 100
    # a replay of day 7 gives nothing more
    eng.check_in(ws, alice.pk, now + 6 * DAY + dt.timedelta(hours=1))
    assert PointEntry.objects.filter(member=alice).count() == 9
    # skip a day: the streak starts again, the total goes on
    r = eng.check_in(ws, alice.pk, now + 8 * DAY)
    assert (r.current, r.longest, r.total) == (1, 7, 8)
    summary = queries.member_summary(ws, alice.pk, at=now + 8 * DAY)["check_in"]
    assert summary == {"current": 1, "longest": 7, "total": 8, "last_day": dt.date(2026, 6, 9), "checked_in_today": True}
    # two days later the current streak is over
    assert queries.member_summary(ws, alice.pk, at=now + 10 * DAY)["check_in"]["current"] == 0


def test_records_a_check_in_interaction(ws, alice, now):
    eng.check_in(ws, alice.pk, now)
    row = Interaction.objects.get(member=alice, type="custom")
    assert row.properties == {"event": "check_in", "day": "2026-06-01", "streak": 1}
    assert (row.source, row.external_id) == ("engagement", f"checkin:{alice.pk}:2026-06-01")


def test_out_of_order_and_future_and_foreign(ws, other_ws, alice, now):
    eng.check_in(ws, alice.pk, now + 2 * DAY)
    with pytest.raises(Conflict) as exc:
        eng.check_in(ws, alice.pk, now)
    assert exc.value.code == "check_in_out_of_order"
    with pytest.raises(ValidationError):
        eng.check_in(ws, alice.pk, dt.datetime.now(dt.UTC) + DAY)
    with pytest.raises(Exception) as exc2:
        eng.check_in(other_ws, alice.pk, now)
    assert getattr(exc2.value, "code", "") == "unknown_member"


def test_streak_leaderboard_expires_without_a_timer(ws, alice, bob, now):
    for i in range(3):
        eng.check_in(ws, alice.pk, now + i * DAY)
    eng.check_in(ws, bob.pk, now + 2 * DAY)
    board = queries.leaderboard(ws, "streak", "all", at=now + 2 * DAY)
    assert [(r.member_id, r.score, r.rank) for r in board] == [(alice.pk, 3, 1), (bob.pk, 1, 2)]
    # bob checks in the next day; alice does not, and her streak drops off the board the day after
    eng.check_in(ws, bob.pk, now + 3 * DAY)
    assert [r.member_id for r in queries.leaderboard(ws, "streak", "all", at=now + 3 * DAY)] == [alice.pk, bob.pk]
    assert [r.member_id for r in queries.leaderboard(ws, "streak", "all", at=now + 4 * DAY + dt.timedelta(hours=15))] \
        == []
    assert LeaderboardScore.objects.filter(board="streak").count() == 2


def model(days):
    """The obvious model: walk the distinct days in order."""
    current = longest = 0
    prev = None
    for d in sorted(set(days)):
        current = current + 1 if prev is not None and (d - prev).days == 1 else 1
        longest = max(longest, current)
        prev = d
    return current, longest, len(set(days))


class _Rollback(Exception):
    pass


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offsets=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=14))
def test_streaks_match_a_simple_model(ws, offsets):
    """Any sequence of check-in days, in date order, each possibly repeated (replays, double taps)."""
    start = dt.datetime(2026, 3, 1, 4, 0, tzinfo=dt.UTC)
    days = sorted(offsets)
    try:
        with transaction.atomic():
            m = make_member(ws, "h")
            for d in days:
                eng.check_in(ws, m.pk, start + d * DAY + dt.timedelta(minutes=d))
            s = MemberStreak.objects.get(member=m)
            expected = model([start.date() + d * DAY for d in days])
            assert (s.current, s.longest, s.total) == expected
            assert CheckIn.objects.filter(member=m).count() == len(set(days))
            assert list(CheckIn.objects.filter(member=m).order_by("day").values_list("streak", flat=True))[-1] == expected[0]
            raise _Rollback
    except _Rollback:
        pass


@given(offsets=st.lists(st.integers(min_value=0, max_value=400), max_size=60))
def test_next_streak_matches_the_model(offsets):
    base = dt.date(2026, 1, 1)
    days = sorted({base + dt.timedelta(days=o) for o in offsets})
    current, longest, last = 0, 0, None
    for d in days:
        current = eng.next_streak(last, current, d)
        longest = max(longest, current)
        last = d
    assert (current, longest, len(days)) == model(days)
