"""Tiers: upgrade at once on contribution and influence, downgrade only at the review after the grace
period, every change recorded, the multiplier on spendable awards, spending never lowers a tier."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from shequn.core import hooks
from shequn.core.errors import Conflict, ValidationError
from shequn.engagement import queries
from shequn.engagement import services as eng
from shequn.engagement.models import ActivityDay, MemberStatus, TierChange
from shequn.interactions import services as interactions
from shequn.loyalty import queries as loyalty_queries
from shequn.loyalty import services as loyalty

pytestmark = pytest.mark.django_db
DAY = dt.timedelta(days=1)


@pytest.fixture
def changes(monkeypatch):
    seen = []
    monkeypatch.setitem(hooks._handlers, hooks.TIER_CHANGED,
                        [*hooks.handlers(hooks.TIER_CHANGED), lambda **kw: seen.append(kw)])
    return seen


def tier_of(ws, member):
    return queries.member_summary(ws, member.pk)["tier"]["code"]


def growth(ws, member, n, key, at):
    return loyalty.earn(ws, member, "growth", n, reason="r", idempotency_key=key, actor="t", now=at)


def invite(ws, member, at, n=1, kind="referral"):
    for i in range(n):
        interactions.ingest(ws, {"member_id": member.pk, "type": kind, "channel": "miniprogram", "occurred_at": at,
                                 "external_id": f"{kind}-{member.pk}-{at.isoformat()}-{i}"})


def test_contribution_upgrades_at_once_and_records_the_change(ws, alice, tiers, now, changes):
    assert tier_of(ws, alice) == "sprout"
    growth(ws, alice, 99, "g1", now)
    assert tier_of(ws, alice) == "sprout" and changes == []
    growth(ws, alice, 1, "g2", now)
    assert tier_of(ws, alice) == "leaf"
    [change] = TierChange.objects.all()
    assert (change.old_tier, change.new_tier, change.direction, change.cause, change.contribution) == \
        ("sprout", "leaf", "up", "points", 100)
    assert [(c["old_tier"], c["new_tier"], c["direction"], c["member_id"]) for c in changes] == \
        [("sprout", "leaf", "up", alice.pk)]
    status = MemberStatus.objects.get(member=alice)
    assert status.review_at == now + 365 * DAY
    # a replay of the same earn changes nothing
    growth(ws, alice, 1, "g2", now)
    assert TierChange.objects.count() == 1
    assert ActivityDay.objects.get(member=alice).contribution == 100


def test_gold_needs_contribution_and_influence(ws, alice, tiers, now):
    growth(ws, alice, 600, "g", now)
    assert tier_of(ws, alice) == "leaf"
    invite(ws, alice, now, 1)
    invite(ws, alice, now, 5, kind="share")
    s = queries.member_summary(ws, alice.pk, at=now)
    assert (s["progress"]["invites"], s["progress"]["shares"], s["progress"]["influence"]) == (1, 5, 15)
    assert s["tier"]["code"] == "leaf" and s["next_tier"]["code"] == "gold" and s["progress"]["influence_needed"] == 5
    invite(ws, alice, now + dt.timedelta(minutes=1), 1)
    assert tier_of(ws, alice) == "gold"
    assert TierChange.objects.order_by("pk").last().cause == "interaction"


def test_either_requirement(ws, alice, now):
    eng.save_tier(ws, {"code": "base", "name": "B", "rank": 0}, actor="t")
    eng.save_tier(ws, {"code": "kol", "name": "KOL", "rank": 1, "min_contribution": 1000, "min_influence": 20,
                       "requires": "any"}, actor="t")
    invite(ws, alice, now, 2)
    assert tier_of(ws, alice) == "kol"


def test_spending_never_lowers_a_tier(ws, alice, tiers, now):
    growth(ws, alice, 150, "g", now)
    loyalty.earn(ws, alice, "points", 500, reason="r", idempotency_key="p", actor="t", now=now)
    loyalty.spend(ws, alice, "points", 500, reason="gift", idempotency_key="s", actor="t", now=now + DAY)
    assert tier_of(ws, alice) == "leaf"
    assert eng.window_figures(ws, [alice.pk], now + DAY)[alice.pk].contribution == 150
    # contribution points are not spendable at all
    with pytest.raises(ValidationError):
        loyalty.spend(ws, alice, "growth", 10, reason="x", idempotency_key="s2", actor="t")


def test_refund_lowers_the_window_but_not_the_tier_until_review(ws, alice, tiers, now):
    entry = growth(ws, alice, 150, "g", now)
    loyalty.reverse(ws, entry_id=entry.pk, reason="refund", actor="t", now=now + DAY)
    assert eng.window_figures(ws, [alice.pk], now + DAY)[alice.pk].contribution == 0
    assert tier_of(ws, alice) == "leaf"


def test_review_grace_then_downgrade(ws, alice, bob, tiers, now, changes):
    growth(ws, alice, 150, "a", now)
    growth(ws, bob, 150, "b", now)
    # nothing is due before the review date
    assert eng.review_due(ws, now + 300 * DAY).reviewed == 0
    # bob earns again within the window: he keeps the tier at review
    growth(ws, bob, 120, "b2", now + 200 * DAY)
    review = now + 366 * DAY
    run = eng.review_due(ws, review)
    assert (run.reviewed, run.kept, run.grace, run.downgraded) == (2, 1, 1, 0)
    a = MemberStatus.objects.get(member=alice)
    assert a.grace_until == review + 30 * DAY and a.review_at == a.grace_until and a.tier.code == "leaf"
    assert MemberStatus.objects.get(member=bob).review_at == review + 365 * DAY
    # a second run at the same moment changes nothing (idempotent)
    assert eng.review_due(ws, review).reviewed == 0
    # grace runs out: the tier falls to what she qualifies for, and the change is recorded
    run = eng.review_due(ws, review + 31 * DAY)
    assert (run.reviewed, run.downgraded) == (1, 1)
    assert tier_of(ws, alice) == "sprout"
    last = TierChange.objects.filter(member=alice).order_by("pk").last()
    assert (last.old_tier, last.new_tier, last.direction, last.cause) == ("leaf", "sprout", "down", "review")
    assert changes[-1]["direction"] == "down"
    assert MemberStatus.objects.get(member=alice).review_at is None


def test_qualifying_again_during_grace_ends_it(ws, alice, tiers, now):
    growth(ws, alice, 150, "a", now)
    review = now + 366 * DAY
    eng.review_due(ws, review)
    assert MemberStatus.objects.get(member=alice).grace_until is not None
    growth(ws, alice, 100, "a2", review + DAY)
    status = MemberStatus.objects.get(member=alice)
    assert status.grace_until is None and status.review_at == review + DAY + 365 * DAY
    assert eng.review_due(ws, review + 40 * DAY).downgraded == 0
    assert tier_of(ws, alice) == "leaf"


def test_multiplier_scales_spendable_awards_only(ws, alice, bob, tiers, now):
    loyalty.save_earn_rule(ws, {"name": "buy", "point_type": "points", "interaction_type": "purchase",
                                "points_per_yuan": "1"}, actor="t")
    loyalty.save_earn_rule(ws, {"name": "grow", "point_type": "growth", "interaction_type": "purchase",
                                "points_per_yuan": "1"}, actor="t")
    growth(ws, alice, 100, "a", now)  # leaf: ×1.2
    for m in (alice, bob):
        interactions.ingest(ws, {"member_id": m.pk, "type": "purchase", "channel": "store", "amount": "100",
                                 "occurred_at": now, "external_id": f"buy-{m.pk}"})
    assert loyalty_queries.balance(ws, alice.pk, "points").available == 120
    assert loyalty_queries.balance(ws, bob.pk, "points").available == 100
    assert loyalty_queries.balance(ws, alice.pk, "growth").available == 200  # growth is never multiplied


def test_operator_sets_a_tier_and_placement_after_new_tiers(ws, alice, bob, now):
    eng.save_tier(ws, {"code": "base", "name": "B", "rank": 0}, actor="t")
    growth(ws, alice, 300, "a", now)
    eng.save_tier(ws, {"code": "silver", "name": "S", "rank": 1, "min_contribution": 200}, actor="t")
    assert tier_of(ws, alice) == "base"  # defined after the points: placed by evaluate_all
    assert eng.evaluate_all(ws, now) == 1
    assert tier_of(ws, alice) == "silver"
    assert TierChange.objects.get().cause == "placement"
    eng.set_tier(ws, bob.pk, "silver", actor="user:1", at=now)
    assert tier_of(ws, bob) == "silver"
    assert TierChange.objects.filter(member=bob).get().cause == "operator"


def test_tier_validation(ws, tiers):
    with pytest.raises(Conflict):
        eng.save_tier(ws, {"code": "other", "name": "x", "rank": 1}, actor="t")
    with pytest.raises(ValidationError):
        eng.save_tier(ws, {"code": "x", "name": "x", "rank": 5, "multiplier": "0"}, actor="t")
    with pytest.raises(ValidationError):
        eng.save_tier(ws, {"code": "Bad Code", "name": "x", "rank": 5}, actor="t")
    with pytest.raises(ValidationError):
        eng.save_tier(ws, {"code": "y", "name": "y", "rank": 6, "colour": "red"}, actor="t")
    t = eng.save_tier(ws, {"code": "z", "name": "z", "rank": 9, "multiplier": "2.5"}, actor="t")
    assert t.multiplier == Decimal("2.50")


def test_tier_distribution(ws, alice, bob, tiers, now):
    growth(ws, alice, 150, "a", now)
    dist = {r["code"]: r["members"] for r in queries.tier_distribution(ws)}
    assert dist == {"sprout": 1, "leaf": 1, "gold": 0}


def test_a_tier_in_use_cannot_be_deleted(ws, alice, tiers, now):
    growth(ws, alice, 150, "a", now)
    with pytest.raises(Conflict):
        eng.delete_tier(ws, tiers[1].pk, actor="t")
    eng.delete_tier(ws, tiers[2].pk, actor="t")
