"""Ranking metrics for the offline evaluation (pure Python).

Every function takes the ranked list a system returned and the set of items the member really bought
(or redeemed) in the test period, and looks at the first ``k`` entries only. Relevance is binary.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Sequence


def precision_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int = 10) -> float:
    """Share of the first ``k`` slots that hold a relevant item (empty slots count as misses)."""
    if k <= 0:
        raise ValueError("k must be positive")
    return sum(1 for item in ranked[:k] if item in relevant) / k


def hit_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int = 10) -> float:
    """1.0 when at least one of the first ``k`` items is relevant, else 0.0."""
    return 1.0 if any(item in relevant for item in ranked[:k]) else 0.0


def ndcg_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int = 10) -> float:
    """Normalised discounted cumulative gain with binary relevance: DCG = sum of 1/log2(rank + 1) over
    the relevant items in the first ``k`` slots, divided by the DCG of a perfect list
    (``min(k, len(relevant))`` relevant items on top). 0.0 when nothing is relevant."""
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    if ideal == 0:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in relevant)
    return dcg / ideal
