"""bench.redemption must keep working: run it tiny and check its JSON result lines (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(os.environ.get("DATABASE_URL", "").startswith("postgres"),
                    reason="benchmarks use their own SQLite database: run once, in the SQLite pass")
def test_redemption_benchmark_runs_and_reports():
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SHEQUN_BENCH_CHILD"}}
    proc = subprocess.run([sys.executable, "-m", "bench.redemption", "--quick", "--requests", "20"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [row["bench"] for row in lines] == ["offers.redemption.sqlite.p50", "offers.redemption.sqlite.p99"], \
        proc.stdout + proc.stderr
    for row in lines:
        assert {"bench", "value", "unit", "baseline", "baseline_value", "ratio", "goal", "ok"} <= set(row)
        assert row["value"] > 0 and row["baseline_value"] > 0 and row["anomalies"] == 0
