from __future__ import annotations

import math

import pytest

from shequn.recommend import metrics
from shequn.recommend.evaluate import roc_auc


def test_precision_counts_hits_over_k_including_empty_slots():
    assert metrics.precision_at_k(["a", "b", "c", "d"], {"a", "c", "x"}, k=4) == 0.5
    # Three items listed, k = 10: the seven empty slots are misses.
    assert metrics.precision_at_k(["a", "b", "c"], {"a", "b", "c"}, k=10) == pytest.approx(0.3)
    # Only the first k count.
    assert metrics.precision_at_k(["x", "a"], {"a"}, k=1) == 0.0
    with pytest.raises(ValueError):
        metrics.precision_at_k(["a"], {"a"}, k=0)


def test_hit_rate():
    assert metrics.hit_at_k(["x", "y", "a"], {"a"}, k=3) == 1.0
    assert metrics.hit_at_k(["x", "y", "a"], {"a"}, k=2) == 0.0
    assert metrics.hit_at_k([], {"a"}, k=10) == 0.0


def test_ndcg_by_hand():
    # Relevant at ranks 1 and 3 of 3; two relevant items exist → ideal has them at ranks 1 and 2.
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert metrics.ndcg_at_k(["a", "x", "b"], {"a", "b"}, k=3) == pytest.approx(dcg / idcg)
    assert metrics.ndcg_at_k(["a", "b"], {"a", "b"}, k=10) == pytest.approx(1.0)
    # More relevant items than slots: the ideal list is k relevant items.
    assert metrics.ndcg_at_k(["x", "a"], {"a", "b", "c"}, k=2) == pytest.approx(
        (1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert metrics.ndcg_at_k(["x"], set(), k=10) == 0.0


def test_roc_auc_by_hand():
    # Positives at 0.9 and 0.4, negatives at 0.5 and 0.1: 3 of the 4 pairs ordered right.
    assert roc_auc([0.9, 0.5, 0.4, 0.1], [True, False, True, False]) == pytest.approx(0.75)
    # A tie between a positive and a negative counts half.
    assert roc_auc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    assert math.isnan(roc_auc([0.1, 0.2], [False, False]))
