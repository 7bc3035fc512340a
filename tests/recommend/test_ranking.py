"""The ranking core on small hand-made histories, with exact expected orderings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from shequn.recommend import ranking
from shequn.recommend.ranking import Affinity, Weights

# Half-life 30 days: a purchase 30 days ago weighs 0.5, 60 days ago 0.25.
W = Weights(half_life_days=30, repeat_exponent=1.0, neighbour_weight=0.5, category_weight=0.2,
            popularity_weight=0.001)


def test_repeat_score_is_recency_weighted_frequency():
    own = ranking.repeat_scores([("milk", 0), ("milk", 30), ("tea", 60), ("tea", 60), ("tea", 60)], W)
    assert own["milk"] == pytest.approx(1.5)
    assert own["tea"] == pytest.approx(0.75)


def test_frequent_recent_beats_frequent_old_beats_single_old():
    history = [("oolong", 1), ("oolong", 8), ("oolong", 15),  # weekly, recent
               ("mango", 90), ("mango", 97), ("mango", 104), ("mango", 111),  # stopped three months ago
               ("grape", 2),  # once, recently
               ("lychee", 120)]  # once, long ago
    ranked = ranking.rank_items(history, Affinity(), limit=10, weights=W)
    assert [s.item for s in ranked] == ["oolong", "grape", "mango", "lychee"]
    assert {s.reason for s in ranked} == {ranking.REASON_BUY_AGAIN}


def test_repeat_rate_demotes_items_nobody_buys_twice():
    # Equal own history; the turkey is rarely bought again by anyone.
    history = [("turkey", 5), ("turkey", 6), ("milk", 5), ("milk", 6)]
    affinity = Affinity(repeat_rate={"turkey": 0.05, "milk": 0.8})
    assert [s.item for s in ranking.rank_items(history, affinity, weights=W)] == ["milk", "turkey"]
    # Without the repeat factor they tie and the name decides (deterministic).
    flat = Weights(half_life_days=30, repeat_exponent=0.0, neighbour_weight=0.0)
    assert [s.item for s in ranking.rank_items(history, affinity, weights=flat)] == ["turkey", "milk"]


def test_neighbours_fill_slots_after_strong_own_items_and_popular_fills_the_rest():
    history = [("jasmine", 0), ("jasmine", 1), ("jasmine", 2)]  # own score ≈ 2.93
    affinity = Affinity(
        neighbours={"jasmine": [("oolong", 0.6), ("jasmine-cheese", 0.2)]},
        popularity={"cola": 0.9, "oolong": 0.5, "jasmine": 0.4},
    )
    ranked = ranking.rank_items(history, affinity, limit=4, weights=W)
    assert [s.item for s in ranked] == ["jasmine", "oolong", "jasmine-cheese", "cola"]
    assert [s.reason for s in ranked] == [ranking.REASON_BUY_AGAIN, ranking.REASON_SIMILAR,
                                          ranking.REASON_SIMILAR, ranking.REASON_POPULAR]
    own = sum(0.5 ** (d / 30) for d in (0, 1, 2))
    assert ranked[1].score == pytest.approx(0.5 * own * 0.6)


def test_a_strong_neighbour_outranks_a_weak_own_item():
    history = [("a", 0)] * 4 + [("b", 300)]  # b: once, ten months ago (weight 0.001)
    affinity = Affinity(neighbours={"a": [("c", 0.5)]})
    assert [s.item for s in ranking.rank_items(history, affinity, weights=W)] == ["a", "c", "b"]


def test_cold_start_gets_the_most_popular_items():
    affinity = Affinity(popularity={"x": 0.1, "y": 0.7, "z": 0.3})
    ranked = ranking.rank_items([], affinity, limit=2, weights=W)
    assert [(s.item, s.reason) for s in ranked] == [("y", ranking.REASON_POPULAR), ("z", ranking.REASON_POPULAR)]


@dataclass
class FakeOffer:
    name: str
    items: list[str]
    categories: list[str] = field(default_factory=list)


def test_rank_candidates_orders_offers_by_best_item_then_category_then_popularity():
    offers = [
        FakeOffer("cola deal", ["cola"]),
        FakeOffer("fruit tea 20% off", ["grape tea", "mango tea"], ["fruit tea"]),
        FakeOffer("milk tea bundle", ["jasmine milk"], ["milk tea"]),
        FakeOffer("new fruit tea", ["lychee tea"], ["fruit tea"]),
        FakeOffer("cheese foam", ["cheese foam"]),
    ]
    history = [("jasmine milk", 1), ("jasmine milk", 3), ("grape tea", 40), ("peach tea", 2)]
    categories = {"peach tea": ["fruit tea"]}
    affinity = Affinity(neighbours={"jasmine milk": [("cheese foam", 0.4)]}, popularity={"cola": 0.9})
    ranked = ranking.rank_candidates(history, offers, affinity, item_categories=categories, limit=5, weights=W)
    names = [offer.name for offer, _, _ in ranked]
    # jasmine milk (own ≈ 1.90) > grape tea (own 0.40 + fruit-tea share) > cheese foam (neighbour
    # 0.5 × 1.90 × 0.4 = 0.38) > lychee (category only) > cola (popularity only).
    assert names == ["milk tea bundle", "fruit tea 20% off", "cheese foam", "new fruit tea", "cola deal"]
    reasons = [reason for _, _, reason in ranked]
    assert reasons == [ranking.REASON_BUY_AGAIN, ranking.REASON_BUY_AGAIN, ranking.REASON_SIMILAR,
                       ranking.REASON_CATEGORY, ranking.REASON_POPULAR]
    jasmine = 0.5 ** (1 / 30) + 0.5 ** (3 / 30)
    grape, peach = 0.5 ** (40 / 30), 0.5 ** (2 / 30)
    fruit_share = (grape + peach) / (grape + peach + jasmine)  # jasmine milk is "milk tea"
    assert ranked[1][1] == pytest.approx(grape + 0.2 * fruit_share)
    assert ranked[3][1] == pytest.approx(0.2 * fruit_share)
    assert ranked[4][1] == pytest.approx(0.001 * 0.9)


def test_rank_candidates_keeps_candidate_order_on_ties_and_limits():
    offers = [FakeOffer("b", ["x"]), FakeOffer("a", ["y"]), FakeOffer("c", ["z"])]
    ranked = ranking.rank_candidates([], offers, Affinity(), limit=2, weights=W)
    assert [o.name for o, _, _ in ranked] == ["b", "a"]


def test_build_affinity_by_hand():
    baskets = {
        1: [["tea", "cake"], ["tea"]],  # tea twice, cake once
        2: [["tea"], ["coffee"]],
        3: [["cake", "coffee"]],
    }
    aff = ranking.build_affinity(baskets, top_k=5, min_buyers=1, smoothing=0.0)
    assert aff.popularity == pytest.approx({"tea": 2 / 3, "cake": 2 / 3, "coffee": 2 / 3})
    assert aff.repeat_rate == pytest.approx({"tea": 0.5, "cake": 0.0, "coffee": 0.0})
    # tea & cake: member 1 → 1 / sqrt(2 × 2); tea & coffee: member 2; cake & coffee: member 3.
    assert dict(aff.neighbours["tea"]) == pytest.approx({"cake": 0.5, "coffee": 0.5})
    smoothed = ranking.build_affinity(baskets, smoothing=2.0, min_buyers=1)
    overall = 1 / 6  # one repeater among six (member, item) pairs
    assert smoothed.repeat_rate["cake"] == pytest.approx(2 * overall / 4)
    assert math.isclose(smoothed.repeat_rate["tea"], (1 + 2 * overall) / 4)
    # min_buyers drops rare items from the neighbour lists only.
    assert ranking.build_affinity({1: [["a", "b"]]}, min_buyers=2).neighbours == {}
