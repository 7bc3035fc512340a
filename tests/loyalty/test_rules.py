"""Earn rules, driven through the real interaction write path (``ingest_batch``)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from shequn.core.errors import NotFound, ValidationError
from shequn.interactions import services as interactions
from shequn.loyalty import queries
from shequn.loyalty import services as loyalty
from shequn.loyalty.models import EarnCapUsage, PointEntry
from shequn.members.models import Member

T = dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC)  # 10:00 in Shanghai


def ev(who, t, type="purchase", **kw):
    row = {"identities": [{"kind": "external", "value": who}], "type": type, "channel": "store",
           "occurred_at": t.isoformat(), "source": "pos"}
    row.update(kw)
    return row


def points(ws, who, code="points"):
    m = Member.objects.get(identities__value=who)
    b = queries.balance(ws, m.pk, code)
    return b.available + b.pending


def ingest(ws, rows):
    results = interactions.ingest_batch(ws, rows)
    assert all(r.status in ("created", "duplicate") for r in results), [r.error for r in results]
    return results


def assert_clean(ws):
    report = loyalty.verify(ws)
    assert report.ok, report.as_dict()


@pytest.fixture
def per_yuan(ws):
    return loyalty.save_earn_rule(ws, {"name": "消费积分 1/¥", "point_type": "points", "interaction_type": "purchase",
                                       "points_per_yuan": "1"}, actor="t")


def test_points_per_yuan_and_fixed_points(ws, per_yuan):
    loyalty.save_earn_rule(ws, {"name": "成长值 2/¥ + 10", "point_type": "growth", "interaction_type": "purchase",
                                "points": 10, "points_per_yuan": "2"}, actor="t")
    loyalty.save_earn_rule(ws, {"name": "评价 +5", "point_type": "points", "interaction_type": "review", "points": 5},
                           actor="t")
    results = ingest(ws, [ev("a", T, amount="88.50", external_id="o1"), ev("a", T, type="review"),
                          ev("b", T, amount="9.99", external_id="o2"), ev("b", T, type="visit")])
    assert points(ws, "a") == 88 + 5 and points(ws, "a", "growth") == 10 + 177
    assert points(ws, "b") == 9 and points(ws, "b", "growth") == 10 + 19
    first = queries.awards_of_interaction(ws, results[0].id)
    assert sorted((e.point_type.code, e.amount, e.idempotency_key) for e in first) == [
        ("growth", 187, f"interaction:{results[0].id}:rule:{per_yuan.pk + 1}"),
        ("points", 88, f"interaction:{results[0].id}:rule:{per_yuan.pk}")]
    assert {e.reason for e in first} == {"消费积分 1/¥", "成长值 2/¥ + 10"}
    assert {e.actor for e in first} == {f"rule:{per_yuan.pk}", f"rule:{per_yuan.pk + 1}"}
    assert_clean(ws)


def test_duplicate_interactions_earn_nothing_more(ws, per_yuan):
    ingest(ws, [ev("a", T, amount="50", external_id="o1")])
    results = ingest(ws, [ev("a", T, amount="50", external_id="o1"), ev("a", T, amount="50", external_id="o1")])
    assert [r.status for r in results] == ["duplicate", "duplicate"]
    assert points(ws, "a") == 50
    assert PointEntry.objects.count() == 1


def test_rules_filter_by_channel_touchpoint_direction_and_minimum(ws):
    interactions.save_touchpoint(ws, "counter", {"name": "收银台", "channel": "store"}, actor="t")
    loyalty.save_earn_rule(ws, {"name": "门店收银台", "point_type": "points", "interaction_type": "purchase",
                                "touchpoint": "counter", "points": 7, "min_amount": "20"}, actor="t")
    loyalty.save_earn_rule(ws, {"name": "公众号消息", "point_type": "points", "interaction_type": "message",
                                "channel": "wechat", "points": 1}, actor="t")
    ingest(ws, [ev("a", T, amount="25", touchpoint="counter"), ev("a", T, amount="19.99", touchpoint="counter"),
                ev("a", T, amount="99"), ev("a", T, type="message", channel="wechat"),
                ev("a", T, type="message", channel="wechat", direction="out"), ev("a", T, type="message", channel="sms")])
    assert points(ws, "a") == 7 + 1


def test_member_caps_per_local_day(ws):
    loyalty.save_earn_rule(ws, {"name": "capped", "point_type": "points", "interaction_type": "purchase",
                                "points_per_yuan": "1", "member_cap_day": 100}, actor="t")
    day_end = dt.datetime(2026, 6, 1, 15, 59, tzinfo=dt.UTC)  # 23:59 on 1 June in Shanghai
    ingest(ws, [ev("a", day_end - dt.timedelta(hours=3), amount="60"), ev("a", day_end, amount="60"),
                ev("a", day_end, amount="60"), ev("b", day_end, amount="60")])
    assert points(ws, "a") == 100 and points(ws, "b") == 60
    ingest(ws, [ev("a", day_end, amount="5"),  # the same day, another batch: still capped
                ev("a", day_end + dt.timedelta(minutes=2), amount="70")])  # 00:01 on 2 June: a new day
    assert points(ws, "a") == 170
    assert [e.amount for e in PointEntry.objects.filter(member__identities__value="a").order_by("pk")] == [60, 40, 70]
    usage = sorted(EarnCapUsage.objects.values_list("member__identities__value", "period_start", "points"))
    assert usage == [("a", dt.date(2026, 6, 1), 100), ("a", dt.date(2026, 6, 2), 70), ("b", dt.date(2026, 6, 1), 60)]
    assert_clean(ws)


def test_global_and_weekly_and_monthly_caps(ws):
    loyalty.save_earn_rule(ws, {"name": "first come", "point_type": "points", "interaction_type": "share",
                                "points": 10, "global_cap_day": 25}, actor="t")
    loyalty.save_earn_rule(ws, {"name": "weekly", "point_type": "growth", "interaction_type": "visit",
                                "points": 10, "member_cap_week": 20, "member_cap_month": 30}, actor="t")
    ingest(ws, [ev("a", T, type="share"), ev("b", T, type="share"), ev("c", T, type="share"),
                ev("d", T, type="share")])
    assert [points(ws, w) for w in "abcd"] == [10, 10, 5, 0]
    monday = dt.datetime(2026, 6, 1, 2, tzinfo=dt.UTC)  # 1 June 2026 is a Monday
    visits = [ev("a", monday + dt.timedelta(days=d), type="visit") for d in (0, 1, 2, 7, 8, 14, 21)]
    ingest(ws, visits)
    # week of 1 June: 20 (cap), week of 8 June: 10 more reaches the month cap of 30; then nothing in June
    assert points(ws, "a", "growth") == 30
    ingest(ws, [ev("a", dt.datetime(2026, 7, 1, 2, tzinfo=dt.UTC), type="visit")])
    assert points(ws, "a", "growth") == 40


def test_rules_apply_only_inside_their_dates(ws):
    loyalty.save_earn_rule(ws, {"name": "六月双倍", "point_type": "points", "interaction_type": "purchase",
                                "points_per_yuan": "2", "starts_at": "2026-06-01T00:00:00+08:00",
                                "ends_at": "2026-07-01T00:00:00+08:00"}, actor="t")
    ingest(ws, [ev("a", dt.datetime(2026, 5, 31, 15, 59, tzinfo=dt.UTC), amount="10"),
                ev("a", dt.datetime(2026, 5, 31, 16, 0, tzinfo=dt.UTC), amount="10"),
                ev("a", dt.datetime(2026, 6, 30, 15, 59, tzinfo=dt.UTC), amount="10"),
                ev("a", dt.datetime(2026, 6, 30, 16, 0, tzinfo=dt.UTC), amount="10")])
    assert points(ws, "a") == 40


def test_disabled_rules_give_nothing(ws, per_yuan):
    loyalty.save_earn_rule(ws, {"enabled": False}, rule_id=per_yuan.pk, actor="t")
    ingest(ws, [ev("a", T, amount="10")])
    assert points(ws, "a") == 0


def test_multipliers_from_other_domains(ws, per_yuan):
    def vip(workspace, rule, row):
        return Decimal("1.5") if row.properties.get("vip") else Decimal(1)

    loyalty.EARN_MULTIPLIERS.append(vip)
    try:
        ingest(ws, [ev("a", T, amount="33", properties={"vip": True}), ev("b", T, amount="33")])
    finally:
        loyalty.EARN_MULTIPLIERS.remove(vip)
    assert points(ws, "a") == 49 and points(ws, "b") == 33


def test_a_refund_reverses_the_purchase_awards(ws, per_yuan):
    loyalty.save_earn_rule(ws, {"name": "成长值", "point_type": "growth", "interaction_type": "purchase",
                                "points_per_yuan": "1"}, actor="t")
    ingest(ws, [ev("a", T, amount="120", external_id="o1"), ev("a", T, amount="30", external_id="o2")])
    assert points(ws, "a") == 150 and points(ws, "a", "growth") == 150
    results = ingest(ws, [ev("a", T + dt.timedelta(hours=1), type="refund", amount="120", external_id="r1",
                             properties={"refund_of": "o1"})])
    assert points(ws, "a") == 30 and points(ws, "a", "growth") == 30
    reversals = queries.awards_of_interaction(ws, results[0].id)
    assert sorted((e.kind, e.amount, e.point_type.code) for e in reversals) == [
        ("reverse", -120, "growth"), ("reverse", -120, "points")]
    ingest(ws, [ev("a", T + dt.timedelta(hours=1), type="refund", amount="120", external_id="r1",
                   properties={"refund_of": "o1"})])  # the refund again: a duplicate, nothing happens
    ingest(ws, [ev("a", T + dt.timedelta(hours=2), type="refund", external_id="r2", properties={"refund_of": "o1"})])
    assert points(ws, "a") == 30  # a second refund of the same purchase finds nothing left to reverse
    assert PointEntry.objects.filter(kind="reverse").count() == 2
    assert_clean(ws)


def test_a_partial_refund_reverses_its_share(ws, per_yuan):
    ingest(ws, [ev("a", T, amount="100", external_id="o1")])
    ingest(ws, [ev("a", T, type="refund", amount="25", external_id="r1", properties={"refund_of": "o1"}),
                ev("a", T, type="refund", amount="-25", external_id="r2", properties={"refund_of": "o1"})])
    assert points(ws, "a") == 50
    ingest(ws, [ev("a", T, type="refund", amount="100", external_id="r3", properties={"refund_of": "o1"})])
    assert points(ws, "a") == 0
    assert_clean(ws)


def test_a_refund_of_spent_points_takes_what_is_there(ws, per_yuan):
    ingest(ws, [ev("a", T, amount="100", external_id="o1")])
    m = Member.objects.get()
    loyalty.spend(ws, m, "points", 90, reason="兑换", idempotency_key="s", actor="t")
    ingest(ws, [ev("a", T, amount="20", external_id="o2")])
    ingest(ws, [ev("a", T, type="refund", external_id="r1", properties={"refund_of": "o1"})])
    r = PointEntry.objects.get(kind="reverse")
    assert (r.amount, r.shortfall) == (-30, 70)
    assert points(ws, "a") == 0
    assert_clean(ws)


def test_a_refund_inside_the_pending_window_cancels_pending_points(ws, per_yuan):
    loyalty.save_point_type(ws, "points", {"pending_days": 7}, actor="t")
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    ingest(ws, [ev("a", recent, amount="80", external_id="o1"), ev("a", recent, amount="10", external_id="o2")])
    m = Member.objects.get()
    assert (queries.balance(ws, m.pk, "points").available, queries.balance(ws, m.pk, "points").pending) == (0, 90)
    ingest(ws, [ev("a", recent, type="refund", external_id="r1", properties={"refund_of": "o1"})])
    b = queries.balance(ws, m.pk, "points")
    assert (b.available, b.pending) == (0, 10)
    assert PointEntry.objects.get(kind="reverse").shortfall == 0
    assert_clean(ws)


def test_refund_and_purchase_in_one_batch_and_unknown_purchases(ws, per_yuan):
    ingest(ws, [ev("a", T, amount="40", external_id="o1"),
                ev("a", T, type="refund", external_id="r1", properties={"refund_of": "o1"}),
                ev("a", T, type="refund", external_id="r2", properties={"refund_of": "nope"}),
                ev("a", T, type="refund", external_id="r3", properties={"refund_of": "o1", "refund_source": "web"})])
    assert points(ws, "a") == 0
    assert PointEntry.objects.filter(kind="reverse").count() == 1


def test_rule_settings_are_validated(ws, other_ws):
    base = {"name": "r", "point_type": "points", "interaction_type": "purchase", "points": 1}
    bad = [
        ({**base, "point_type": "gold"}, NotFound),
        ({**base, "interaction_type": "teleport"}, ValidationError),
        ({**base, "points": -1}, ValidationError),
        ({**base, "points": 0}, ValidationError),
        ({**base, "points_per_yuan": "0.12345"}, ValidationError),
        ({**base, "member_cap_day": 0}, ValidationError),
        ({**base, "starts_at": "2026-06-01"}, ValidationError),
        ({**base, "starts_at": "2026-07-01T00:00:00+08:00", "ends_at": "2026-06-01T00:00:00+08:00"}, ValidationError),
        ({**base, "touchpoint": "nowhere"}, ValidationError),
        ({**base, "colour": "red"}, ValidationError),
        ({**base, "direction": "sideways"}, ValidationError),
    ]
    for data, error in bad:
        with pytest.raises(error):
            loyalty.save_earn_rule(ws, data, actor="t")
    rule = loyalty.save_earn_rule(ws, base, actor="t")
    with pytest.raises(NotFound):
        loyalty.save_earn_rule(other_ws, {"points": 2}, rule_id=rule.pk, actor="t")
    with pytest.raises(NotFound):
        loyalty.delete_earn_rule(other_ws, rule.pk, actor="t")
    loyalty.delete_earn_rule(ws, rule.pk, actor="t")
    assert queries.earn_rules(ws) == []
