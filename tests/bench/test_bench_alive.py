"""Benchmarks are not tests, but their code must keep working: run each at a tiny size and check it
prints well-formed result lines. Ratios are not asserted here (absolute speed is not stable)."""

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
@pytest.mark.parametrize("module,args", [
    ("bench.members_list", ["--quick", "--members", "1500", "--small", "300"]),
    ("bench.ingest", ["--quick", "--events", "1500"]),
    ("bench.loyalty", ["--quick", "--ops", "300", "--members", "50"]),
    ("bench.wechat", ["--quick", "--rules", "300", "--texts", "500", "--messages", "30", "--rounds", "2"]),
])
def test_benchmark_runs_and_reports(module, args):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SHEQUN_BENCH_CHILD"}}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    for row in lines:
        assert {"bench", "value", "unit", "baseline", "baseline_value", "ratio", "goal", "ok"} <= set(row)
        assert row["value"] > 0 and row["baseline_value"] > 0
