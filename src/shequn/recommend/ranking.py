"""The ranking core: which items (and so which offers) a member is most likely to buy next.

Pure Python and the standard library only: the same code ranks offers for a live member from the
database and products for a household of The Complete Journey in the offline evaluation
(``shequn.recommend.evaluate``), so the numbers we publish are the numbers of the code we serve.

A member's score for an item blends two signals (see docs/adr/0013-personalised-offer-ranking.md):

* **own repeat score** ("buy again", sharpened): each past purchase occasion of the item counts
  ``0.5 ** (age / half_life)`` — frequent *and* recent items rank first, items the member stopped
  buying fade — multiplied by the item's repeat propensity across all members (``repeat_rate ** γ``:
  milk is bought again, a Christmas turkey is not);
* **neighbourhood score** (what similar members buy): for an item the member has never bought, the
  sum over their own items ``j`` of ``own(j) × similarity(j, item)``, with the item-item cosine
  similarity of co-purchase across members. It is scaled down by ``neighbour_weight`` so it fills the
  slots the member's own history cannot fill with confidence, and only ranks above an item already
  bought when that item is weak.

Members without history get the most popular items.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

Item = Hashable

# Why an item ranks where it does (stable keys; the service turns them into translated text).
REASON_BUY_AGAIN = "buy_again"
REASON_SIMILAR = "similar_members"
REASON_CATEGORY = "category"
REASON_POPULAR = "popular"


@dataclass(frozen=True)
class Weights:
    """Tuned on The Complete Journey (weeks 1–43 → 44–48, then frozen and reported on 49–53)."""

    half_life_days: float = 90.0
    repeat_exponent: float = 0.5
    neighbour_weight: float = 0.01
    category_weight: float = 0.1
    popularity_weight: float = 0.001


DEFAULT_WEIGHTS = Weights()


@dataclass
class Affinity:
    """What the whole workspace's purchase history says about items (computed periodically).

    ``neighbours[item]``: the most similar items, best first, as (item, cosine similarity).
    ``popularity[item]``: share of members who bought it. ``repeat_rate[item]``: smoothed share of its
    buyers who bought it on two or more occasions.
    """

    neighbours: Mapping[Item, Sequence[tuple[Item, float]]] = field(default_factory=dict)
    popularity: Mapping[Item, float] = field(default_factory=dict)
    repeat_rate: Mapping[Item, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Scored:
    item: Item
    score: float
    reason: str


class Candidate(Protocol):
    """What ``rank_candidates`` needs from an offer."""

    @property
    def items(self) -> Sequence[str]: ...

    @property
    def categories(self) -> Sequence[str]: ...


def repeat_scores(occasions: Iterable[tuple[Item, float]], weights: Weights = DEFAULT_WEIGHTS,
                  repeat_rate: Mapping[Item, float] | None = None) -> dict[Item, float]:
    """Own score per item from purchase occasions ``(item, age in days)``: one occasion per basket
    (several units in one basket are one occasion)."""
    decay = math.log(2) / weights.half_life_days
    scores: dict[Item, float] = defaultdict(float)
    for item, age in occasions:
        scores[item] += math.exp(-decay * max(age, 0.0))
    if repeat_rate and weights.repeat_exponent:
        gamma = weights.repeat_exponent
        for item in scores:
            scores[item] *= repeat_rate.get(item, 0.5) ** gamma
    return dict(scores)


def neighbour_scores(own: Mapping[Item, float], neighbours: Mapping[Item, Sequence[tuple[Item, float]]]
                     ) -> dict[Item, float]:
    """Score of the items the member has not bought, from the items they have."""
    scores: dict[Item, float] = defaultdict(float)
    for item, weight in own.items():
        for other, similarity in neighbours.get(item, ()):
            if other not in own:
                scores[other] += weight * similarity
    return dict(scores)


def score_items(occasions: Iterable[tuple[Item, float]], affinity: Affinity,
                weights: Weights = DEFAULT_WEIGHTS) -> dict[Item, Scored]:
    """Every item with a positive score for this member, with the reason of its score."""
    own = repeat_scores(occasions, weights, affinity.repeat_rate)
    out = {item: Scored(item, score, REASON_BUY_AGAIN) for item, score in own.items()}
    if weights.neighbour_weight:
        for item, score in neighbour_scores(own, affinity.neighbours).items():
            out[item] = Scored(item, weights.neighbour_weight * score, REASON_SIMILAR)
    return out


def top_items(scored: Mapping[Item, Scored], affinity: Affinity, limit: int = 10,
              weights: Weights = DEFAULT_WEIGHTS) -> list[Scored]:
    """The ``limit`` best items; popular items fill the slots the member's history leaves empty."""
    best = heapq.nlargest(limit, scored.values(), key=lambda s: (s.score, str(s.item)))
    if len(best) < limit and affinity.popularity:
        taken = {s.item for s in best}
        fill = heapq.nlargest(limit + len(taken), affinity.popularity.items(), key=lambda kv: (kv[1], str(kv[0])))
        for item, share in fill:
            if len(best) >= limit:
                break
            if item not in taken:
                best.append(Scored(item, weights.popularity_weight * share, REASON_POPULAR))
    return best


def rank_items(occasions: Iterable[tuple[Item, float]], affinity: Affinity, limit: int = 10,
               weights: Weights = DEFAULT_WEIGHTS) -> list[Scored]:
    return top_items(score_items(occasions, affinity, weights), affinity, limit, weights)


def category_shares(occasions: Iterable[tuple[str, float]], weights: Weights = DEFAULT_WEIGHTS) -> dict[str, float]:
    """Share (0–1) of the member's recency-weighted purchase occasions in each category, from
    ``(category, age in days)`` pairs."""
    decay = math.log(2) / weights.half_life_days
    totals: dict[str, float] = defaultdict(float)
    for category, age in occasions:
        if category:
            totals[category] += math.exp(-decay * max(age, 0.0))
    whole = sum(totals.values())
    return {c: v / whole for c, v in totals.items()} if whole else {}


def rank_candidates(history: Sequence[tuple[str, float]], candidates: Sequence[Candidate], affinity: Affinity, *,
                    item_categories: Mapping[str, Sequence[str]] | None = None, limit: int = 10,
                    weights: Weights = DEFAULT_WEIGHTS) -> list[tuple[Candidate, float, str]]:
    """Rank offers for one member.

    ``history``: the member's purchase occasions as ``(item name, age in days)``. An item's categories
    (for the category term) are those ``item_categories`` gives plus those of the offers listing it. An offer scores as its best item (own
    repeat score, else neighbourhood score), plus ``category_weight`` × the member's share of purchases
    in the offer's categories, plus a tiny popularity term that orders offers nobody has history for.
    Ties keep the candidates' order. Returns ``(candidate, score, reason)`` best first.
    """
    history = list(history)
    scored = score_items(history, affinity, weights)
    categories: dict[str, set[str]] = defaultdict(set)
    for item, cats in (item_categories or {}).items():
        categories[item].update(cats)
    for candidate in candidates:  # an offer's items belong to the offer's categories
        for item in candidate.items:
            categories[item].update(candidate.categories)
    shares = category_shares(((c, age) for item, age in history for c in categories.get(item, ())), weights)
    ranked: list[tuple[float, int, Candidate, str]] = []
    for position, candidate in enumerate(candidates):
        best: Scored | None = None
        for item in candidate.items:
            hit = scored.get(item)
            if hit is not None and (best is None or hit.score > best.score):
                best = hit
        item_score = best.score if best else 0.0
        category_score = weights.category_weight * sum(shares.get(c, 0.0) for c in set(candidate.categories))
        popular = weights.popularity_weight * max((affinity.popularity.get(i, 0.0) for i in candidate.items),
                                                  default=0.0)
        if best is not None and item_score >= category_score:
            reason = best.reason
        elif category_score > 0:
            reason = REASON_CATEGORY
        else:
            reason = REASON_POPULAR
        ranked.append((item_score + category_score + popular, position, candidate, reason))
    ranked.sort(key=lambda row: (-row[0], row[1]))
    return [(candidate, score, reason) for score, _, candidate, reason in ranked[:limit]]


def build_affinity(baskets_by_member: Mapping[Hashable, Iterable[Iterable[Item]]], *, top_k: int = 20,
                   min_buyers: int = 2, smoothing: float = 2.0) -> Affinity:
    """Item statistics and item-item neighbours from each member's baskets (pure Python: fine for a
    catalogue of hundreds of items; the offline evaluation computes the same thing with sparse
    matrices for 90,000 products).

    Similarity is the cosine of the two items' buyer sets: ``both / sqrt(buyers_a × buyers_b)``.
    ``repeat_rate`` is ``(repeaters + smoothing × global rate) / (buyers + smoothing)``.
    """
    buyers: dict[Item, int] = defaultdict(int)
    repeaters: dict[Item, int] = defaultdict(int)
    pairs: dict[tuple[Item, Item], int] = defaultdict(int)
    members = 0
    for baskets in baskets_by_member.values():
        counts: dict[Item, int] = defaultdict(int)
        for basket in baskets:
            for item in set(basket):
                counts[item] += 1
        if not counts:
            continue
        members += 1
        items = sorted(counts, key=str)
        for item in items:
            buyers[item] += 1
            if counts[item] >= 2:
                repeaters[item] += 1
        for i, a in enumerate(items):
            for b in items[i + 1:]:
                pairs[(a, b)] += 1
    if not members:
        return Affinity()
    overall = sum(repeaters.values()) / max(sum(buyers.values()), 1)
    repeat_rate = {i: (repeaters[i] + smoothing * overall) / (n + smoothing) for i, n in buyers.items()}
    popularity = {i: n / members for i, n in buyers.items()}
    lists: dict[Item, list[tuple[float, str, Item]]] = defaultdict(list)
    for (a, b), both in pairs.items():
        if buyers[a] < min_buyers or buyers[b] < min_buyers:
            continue
        similarity = both / math.sqrt(buyers[a] * buyers[b])
        lists[a].append((similarity, str(b), b))
        lists[b].append((similarity, str(a), a))
    neighbours = {item: [(other, sim) for sim, _, other in heapq.nlargest(top_k, rows)]
                  for item, rows in lists.items()}
    return Affinity(neighbours=neighbours, popularity=popularity, repeat_rate=repeat_rate)
