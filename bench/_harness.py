"""Shared plumbing for benchmarks: an isolated database, timing, and the JSON result lines.

A benchmark never touches the user's own database: it runs in a child process whose DATABASE_URL
points at a throw-away SQLite file (default) or at the PostgreSQL URL given with ``--postgres URL``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_isolated(module: str, argv: list[str]) -> int:
    """Re-run ``python -m module argv`` in a child with its own database (unless we are the child)."""
    if os.environ.get("SHEQUN_BENCH_CHILD") == "1":
        return -1
    env = dict(os.environ, SHEQUN_BENCH_CHILD="1")
    tmp = tempfile.mkdtemp(prefix="shequn-bench-")
    env["SHEQUN_DATA_DIR"] = tmp
    pg = None
    if "--postgres" in argv:
        pg = argv[argv.index("--postgres") + 1]
    env["DATABASE_URL"] = pg or f"sqlite:///{tmp}/bench.sqlite3"
    env.pop("SHEQUN_TASK_BROKER", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.call([sys.executable, "-m", module, *argv], env=env, cwd=str(ROOT))


def setup_django(fresh: bool = True) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shequn.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if fresh and connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    call_command("migrate", verbosity=0)


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()  # warm caches and prepared plans
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def emit(bench: str, value: float, unit: str, baseline: str, baseline_value: float, ratio: float, goal: str,
         ok: bool, **extra: Any) -> dict[str, Any]:
    row = {"bench": bench, "value": round(value, 4), "unit": unit, "baseline": baseline,
           "baseline_value": round(baseline_value, 4), "ratio": round(ratio, 3), "goal": goal, "ok": ok, **extra}
    print(json.dumps(row, ensure_ascii=False), flush=True)
    return row


def progress(label: str, done: int, total: int) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write(f"\r{label:<28} [{'#' * filled}{'.' * (width - filled)}] {done:>9,}/{total:,}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()
