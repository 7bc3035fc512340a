"""Tasks with progress, completion once per period, rewards through the ledger, XP and levels;
badges with criteria, awarded once."""

from __future__ import annotations

import datetime as dt

import pytest

from shequn.core import hooks
from shequn.core.errors import ValidationError
from shequn.engagement import queries
from shequn.engagement import services as eng
from shequn.engagement.models import BadgeAward, Task, TaskProgress
from shequn.interactions import services as interactions
from shequn.loyalty import queries as loyalty_queries
from shequn.loyalty.models import PointEntry

from .conftest import make_member

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)


@pytest.fixture
def events(monkeypatch):
    seen = []
    for event in (hooks.TASK_COMPLETED, hooks.BADGE_AWARDED):
        monkeypatch.setitem(hooks._handlers, event,
                            [*hooks.handlers(event), lambda event=event, **kw: seen.append((event, kw["member_id"],
                                                                                             kw.get("task") or kw["badge"]))])
    return seen


def act(ws, member, kind, at, n=1, **extra):
    for i in range(n):
        interactions.ingest(ws, {"member_id": member.pk, "type": kind, "channel": "miniprogram", "occurred_at": at,
                                 "external_id": f"{kind}-{member.pk}-{at.isoformat()}-{i}", **extra})


def test_write_a_review_once_with_points_xp_and_badge(ws, alice, now, events):
    eng.save_task(ws, {"code": "review", "name": "写一条评价", "metric": "review", "target": 1, "points": 50, "xp": 120,
                       "starts_at": now - DAY}, actor="t")
    eng.save_badge(ws, {"code": "critic", "name": "品鉴师", "metric": "task", "ref": "review"}, actor="t")
    act(ws, alice, "review", now)
    act(ws, alice, "review", now + DAY)
    assert loyalty_queries.balance(ws, alice.pk, "points").available == 50
    entry = PointEntry.objects.get(member=alice)
    assert entry.idempotency_key.startswith("task:") and entry.actor.startswith("task:")
    assert events == [(hooks.TASK_COMPLETED, alice.pk, "review"), (hooks.BADGE_AWARDED, alice.pk, "critic")]
    s = queries.member_summary(ws, alice.pk, at=now + DAY)
    assert s["level"] == {"number": 2, "name": "Lv2", "xp": 120, "next_min_xp": 300}
    [task] = s["tasks"]
    assert (task["progress"], task["target"], task["completed"]) == (1, 1, True)
    assert [b["code"] for b in s["badges"]] == ["critic"]


def test_invite_three_friends(ws, alice, now):
    eng.save_task(ws, {"code": "invite3", "name": "邀请3位好友", "metric": "referral", "target": 3, "points": 100,
                       "starts_at": now - DAY}, actor="t")
    act(ws, alice, "referral", now, n=2)
    assert queries.member_summary(ws, alice.pk, at=now)["tasks"][0]["progress"] == 2
    act(ws, alice, "referral", now + DAY, n=2)
    tp = TaskProgress.objects.get()
    assert tp.progress == 4 and tp.completed_at is not None
    assert loyalty_queries.balance(ws, alice.pk, "points").available == 100


def test_weekly_task_repeats_each_week(ws, alice, now):
    # now is a Monday
    eng.save_task(ws, {"code": "attend", "name": "参加活动", "metric": "event_attendance", "repeat": "weekly",
                       "points": 10, "starts_at": now - DAY}, actor="t")
    act(ws, alice, "event_attendance", now)
    act(ws, alice, "event_attendance", now + 2 * DAY)
    act(ws, alice, "event_attendance", now + 7 * DAY)
    assert TaskProgress.objects.filter(completed_at__isnull=False).count() == 2
    assert loyalty_queries.balance(ws, alice.pk, "points").available == 20


def test_tasks_count_only_from_their_start(ws, alice, now):
    act(ws, alice, "review", now - DAY)
    eng.save_task(ws, {"code": "review", "name": "评价", "metric": "review", "starts_at": now}, actor="t")
    act(ws, alice, "review", now - dt.timedelta(hours=1))
    assert not TaskProgress.objects.exists()


def test_complete_your_profile(ws, now):
    eng.save_task(ws, {"code": "profile", "name": "完善资料", "metric": "profile", "xp": 10, "starts_at": now - DAY},
                  actor="t")
    partial = make_member(ws, "p")
    full = make_member(ws, "f", gender="female", city="上海", birthday="1995-04-01")
    for m in (partial, full):
        act(ws, m, "message", now)
    done = {tp.member_id: (tp.progress, tp.completed_at is not None) for tp in TaskProgress.objects.all()}
    assert done == {partial.pk: (1, False), full.pk: (4, True)}


def test_check_in_tasks_and_streak_tasks(ws, alice, now):
    eng.save_task(ws, {"code": "ci5", "name": "本周签到5天", "metric": "check_in", "target": 5, "repeat": "weekly",
                       "xp": 5, "starts_at": now - DAY}, actor="t")
    eng.save_task(ws, {"code": "s3", "name": "连续签到3天", "metric": "streak", "target": 3, "points": 30,
                       "starts_at": now - DAY}, actor="t")
    for i in range(5):
        eng.check_in(ws, alice.pk, now + i * DAY)
    by_code = {t["code"]: t for t in queries.member_summary(ws, alice.pk, at=now + 4 * DAY)["tasks"]}
    assert by_code["ci5"]["completed"] and by_code["s3"]["completed"]
    assert loyalty_queries.balance(ws, alice.pk, "points").available == 30


def test_count_badges_once_and_for_existing_counters(ws, alice, bob, now, events):
    eng.save_badge(ws, {"code": "sharer", "name": "分享达人", "metric": "share", "threshold": 3}, actor="t")
    act(ws, alice, "share", now, n=3)
    act(ws, alice, "share", now + DAY, n=2)
    act(ws, bob, "share", now, n=2)
    assert list(BadgeAward.objects.values_list("member_id", "badge__code")) == [(alice.pk, "sharer")]
    assert events == [(hooks.BADGE_AWARDED, alice.pk, "sharer")]
    # a badge defined later is awarded from the counters kept so far
    eng.save_badge(ws, {"code": "two", "name": "二次分享", "metric": "share", "threshold": 2}, actor="t")
    assert set(BadgeAward.objects.filter(badge__code="two").values_list("member_id", flat=True)) == {alice.pk, bob.pk}


def test_streak_and_tier_badges(ws, alice, tiers, now):
    eng.save_badge(ws, {"code": "week", "name": "坚持一周", "metric": "streak", "threshold": 3}, actor="t")
    eng.save_badge(ws, {"code": "leafy", "name": "青叶会员", "metric": "tier", "ref": "leaf"}, actor="t")
    for i in range(3):
        eng.check_in(ws, alice.pk, now + i * DAY)
    from shequn.loyalty import services as loyalty

    loyalty.earn(ws, alice, "growth", 600, reason="r", idempotency_key="g", actor="t", now=now)
    assert set(BadgeAward.objects.values_list("badge__code", flat=True)) == {"week", "leafy"}


def test_definition_validation(ws):
    with pytest.raises(ValidationError):
        eng.save_task(ws, {"code": "x", "name": "x", "metric": "dance"}, actor="t")
    with pytest.raises(ValidationError):
        eng.save_task(ws, {"code": "x", "name": "x", "metric": "review", "point_type": "nope", "points": 3}, actor="t")
    with pytest.raises(ValidationError):
        eng.save_badge(ws, {"code": "t", "name": "t", "metric": "tier", "ref": "none"}, actor="t")
    t = eng.save_task(ws, {"code": "c", "name": "c", "metric": "custom:poster_scan", "target": 2}, actor="t")
    assert t.metric == "custom:poster_scan"


def test_custom_event_metric(ws, alice, now):
    eng.save_task(ws, {"code": "c", "name": "c", "metric": "custom:quiz", "starts_at": now - DAY, "xp": 1}, actor="t")
    act(ws, alice, "custom", now, properties={"event": "quiz"})
    assert TaskProgress.objects.get().completed_at is not None


def test_definitions_cache_follows_changes_and_rollbacks(ws, now):
    from django.db import transaction

    def codes():
        return [t.code for t in eng.definitions(ws).tasks]

    eng.save_task(ws, {"code": "a", "name": "a", "metric": "review"}, actor="t")
    assert codes() == ["a"]

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        eng.save_task(ws, {"code": "b", "name": "b", "metric": "share"}, actor="t")
        assert codes() == ["a", "b"]
        raise Rollback
    assert codes() == ["a"]
    eng.delete_task(ws, Task.objects.get(code="a").pk, actor="t")
    assert codes() == []
