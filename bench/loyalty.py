"""Points ledger throughput: operations per second through the one write path, by concurrency.

Each worker is a thread with its own database connection. It runs a mix of earns and spends
(``loyalty.services.earn`` / ``spend``, half each: balance lock, idempotent entry, lot or lot draws,
the conditional balance update — one transaction each) against balances picked at random among
``--members`` members. The baseline, measured in the same run on the same database with the same
threads, balances and mix, is the bare conditional ``UPDATE`` on a balance row
(``SET available = available - x WHERE id = … AND available >= x``, autocommit) — the least any
race-safe balance can cost. Baseline and ours are measured in turn ``--rounds`` times (default 3):
the figure is the median of each side, and each round's ratio is printed with it, so one quiet or busy
spell of the machine cannot favour one side. Goal: ratio ≥ 0.3 at 8 workers, and zero anomalies: no
unexpected error, and ``verify()`` finds every balance equal to its entries and lots at the end.

PostgreSQL runs 1, 8 and 32 workers; SQLite (the default) 1 worker, as SQLite has one writer.

Points operations announce ``hooks.POINTS_CHANGED`` to whatever other domains subscribe (tiers,
leaderboards), in the same transaction; their work is part of the figure. ``--without-subscribers``
detaches them for the run, to measure the ledger alone (the figure's name then ends in ``.ledger``).

A second figure per worker count: stored-value payments (``wallet.services.pay``: idempotent entry
and conditional balance update) against the same bare conditional ``UPDATE`` (debits only).

Then, in a child of its own on the same database, the counter's redemption latency: p50 and p99
of ``POST /api/v1/redemptions`` against a bare conditional ``UPDATE`` endpoint (``bench/redemption.py``;
``--without-redemption`` leaves it out).

    python -m bench.loyalty [--quick] [--ops N] [--members N]
    python -m bench.loyalty --postgres postgres://postgres@127.0.0.1:5432/shequn_bench [--prepared] [--without-subscribers]

The PostgreSQL database given is emptied first (as for every benchmark): give it one of its own.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable

from bench._harness import emit, progress, run_isolated, setup_django

GOAL_WORKERS = 8
GOAL_RATIO = 0.3
START_BALANCE = 1_000


def run_workers(workers: int, per_worker: int, op: Callable[[random.Random, int, int], str]) -> tuple[float, dict[str, int]]:
    """Run ``op(rnd, worker, i)`` ``per_worker`` times in each of ``workers`` threads; return the wall
    time from the common start and the count of each outcome ("error:<text>" for anything unexpected)."""
    from django.db import connection

    barrier = threading.Barrier(workers + 1)
    outcomes: dict[str, int] = {}
    lock = threading.Lock()

    def body(w: int) -> None:
        rnd = random.Random(w)
        local: dict[str, int] = {}
        try:
            connection.ensure_connection()
            barrier.wait()
            for i in range(per_worker):
                try:
                    result = op(rnd, w, i)
                except Exception as exc:  # noqa: BLE001 - every unexpected error is an anomaly
                    result = f"error:{type(exc).__name__}: {exc}"
                local[result] = local.get(result, 0) + 1
        finally:
            connection.close()
            with lock:
                for k, v in local.items():
                    outcomes[k] = outcomes.get(k, 0) + v

    threads = [threading.Thread(target=body, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - start, outcomes


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    code = run_isolated("bench.loyalty", argv)
    if code != -1:
        if "--without-redemption" in argv or "-h" in argv or "--help" in argv:
            return code
        # The counter's side of the programme: redemption latency at the counter endpoint
        # (``bench/redemption.py``), on the same database, in a child of its own.
        extra = ["--quick"] if "--quick" in argv else []
        if "--postgres" in argv:
            extra += ["--postgres", argv[argv.index("--postgres") + 1]]
        return max(code, run_isolated("bench.redemption", extra))
    parser = argparse.ArgumentParser(prog="shequn bench loyalty")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ops", type=int, default=None, help="operations per worker count (default 20,000; quick 1,000)")
    parser.add_argument("--members", type=int, default=None, help="balances to spread the load on (default 5,000)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="baseline and ours measured in turn this many times, medians reported (default 3; quick 1)")
    parser.add_argument("--postgres", default=None)
    parser.add_argument("--prepared", action="store_true",
                        help="PostgreSQL: server-side parameter binding with prepared statements "
                             "(OPTIONS server_side_binding and prepare_threshold), for both figures")
    parser.add_argument("--without-subscribers", action="store_true",
                        help="detach POINTS_CHANGED subscribers of other domains for the run")
    parser.add_argument("--without-redemption", action="store_true",
                        help="leave out the counter redemption latency (bench/redemption.py) that follows")
    args = parser.parse_args(argv)
    total_ops = args.ops or (1_000 if args.quick else 20_000)
    n_members = args.members or (300 if args.quick else 5_000)
    rounds = max(1, args.rounds or (1 if args.quick else 3))
    if args.prepared:
        # Only this benchmark's own process and database: the deployment's settings are untouched.
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shequn.settings")
        from django.conf import settings

        settings.DATABASES["default"].setdefault("OPTIONS", {}).update(
            {"server_side_binding": True, "prepare_threshold": 2})
    setup_django()
    from django.db import connection

    from shequn.core import services as core
    from shequn.core.errors import Conflict
    from shequn.loyalty import services as loyalty
    from shequn.loyalty.models import PointBalance
    from shequn.members.models import Member
    from shequn.wallet import services as wallet
    from shequn.wallet.models import Wallet

    if args.without_subscribers:
        from shequn.core import hooks

        hooks._handlers[hooks.POINTS_CHANGED].clear()
    vendor = connection.vendor
    worker_counts = [1, 8, 32] if vendor == "postgresql" else [1]

    ws = core.create_workspace("bench", "Bench")
    pt = loyalty.save_point_type(ws, "coins", {"name": "金币", "expiry_policy": "days", "expiry_period": 365},
                                 actor="bench")
    member_ids = [m.pk for m in Member.objects.bulk_create([Member(workspace=ws, display_name=f"m{i}")
                                                            for i in range(n_members)])]
    for i, mid in enumerate(member_ids):
        loyalty.earn(ws, mid, pt, START_BALANCE, reason="opening balance", idempotency_key=f"open-{mid}", actor="bench")
        if i % 200 == 199 or i == n_members - 1:
            progress("opening balances", i + 1, n_members)

    # The baseline's balance rows: the same table, another workspace (so the ledger check of the
    # bench workspace only sees ledger rows).
    base_ws = core.create_workspace("bench-baseline", "Baseline")
    base_pt = loyalty.get_point_type(base_ws, "points")
    base_members = Member.objects.bulk_create([Member(workspace=base_ws, display_name=f"b{i}") for i in range(n_members)])
    base_ids = [b.pk for b in PointBalance.objects.bulk_create([
        PointBalance(workspace=base_ws, member=m, point_type=base_pt, available=START_BALANCE,
                     updated_at=ws.created_at) for m in base_members])]
    table = connection.ops.quote_name(PointBalance._meta.db_table)
    credit_sql = f"UPDATE {table} SET available = available + %s WHERE id = %s"  # noqa: S608
    debit_sql = f"UPDATE {table} SET available = available - %s WHERE id = %s AND available >= %s"  # noqa: S608

    def ours(tag: str) -> Callable[[random.Random, int, int], str]:
        def op(rnd: random.Random, w: int, i: int) -> str:
            mid = rnd.choice(member_ids)
            key = f"{tag}-{w}-{i}"
            if rnd.random() < 0.5:
                loyalty.earn(ws, mid, pt, rnd.randint(1, 50), reason="bench", idempotency_key=key, actor="bench")
                return "earn"
            try:
                loyalty.spend(ws, mid, pt, rnd.randint(1, 50), reason="bench", idempotency_key=key, actor="bench")
                return "spend"
            except Conflict as exc:
                if exc.code == "insufficient_points":
                    return "refused"
                raise
        return op

    def baseline(rnd: random.Random, w: int, i: int) -> str:
        bid = rnd.choice(base_ids)
        amount = rnd.randint(1, 50)
        with connection.cursor() as cur:
            if rnd.random() < 0.5:
                cur.execute(credit_sql, [amount, bid])
                return "earn" if cur.rowcount == 1 else "error:credit missed its row"
            cur.execute(debit_sql, [amount, bid, amount])
            return "spend" if cur.rowcount == 1 else "refused"

    # Stored value: every bench member gets a wallet large enough that payments are rarely refused.
    for i, mid in enumerate(member_ids):
        wallet.top_up(ws, mid, 10_000_000, idempotency_key=f"open-{mid}", actor="bench")
        if i % 500 == 499 or i == n_members - 1:
            progress("opening wallets", i + 1, n_members)

    def pays(tag: str) -> Callable[[random.Random, int, int], str]:
        def op(rnd: random.Random, w: int, i: int) -> str:
            try:
                wallet.pay(ws, rnd.choice(member_ids), rnd.randint(1, 50), idempotency_key=f"{tag}-{w}-{i}",
                           actor="bench")
                return "pay"
            except Conflict as exc:
                if exc.code == "insufficient_funds":
                    return "refused"
                raise
        return op

    def debits(rnd: random.Random, w: int, i: int) -> str:
        bid = rnd.choice(base_ids)
        amount = rnd.randint(1, 50)
        with connection.cursor() as cur:
            cur.execute(debit_sql, [amount, bid, amount])
            return "pay" if cur.rowcount == 1 else "refused"

    measured = []
    wallet_measured = []

    def paired(label: str, workers: int, per_worker: int, base_op: Callable[[random.Random, int, int], str],
               our_op: Callable[[str], Callable[[random.Random, int, int], str]],
               refill: Callable[[], None]) -> tuple[float, float, list[float], int, dict[str, int]]:
        """Baseline and ours measured in turn, ``rounds`` times: the medians of both rates, each round's
        ratio, the unexpected errors and our outcome counts. Alternating keeps a spell of a quieter
        or busier machine from landing on one side only."""
        base_rates, our_rates, ratios = [], [], []
        errors = 0
        mix: dict[str, int] = {}
        for r in range(rounds):
            refill()
            t_base, base_out = run_workers(workers, per_worker, base_op)
            t_ours, our_out = run_workers(workers, per_worker, our_op(f"{label}{workers}r{r}"))
            n = per_worker * workers
            base_rates.append(n / t_base)
            our_rates.append(n / t_ours)
            ratios.append(round(our_rates[-1] / base_rates[-1], 3))
            for k, v in {**base_out, **our_out}.items():
                if k.startswith("error:"):
                    sys.stderr.write(f"{v} × {k}\n")
                    errors += v
            for k, v in our_out.items():
                if not k.startswith("error:"):
                    mix[k] = mix.get(k, 0) + v
        return statistics.median(our_rates), statistics.median(base_rates), ratios, errors, mix

    def reset_balances() -> None:
        PointBalance.objects.filter(pk__in=base_ids).update(available=START_BALANCE)

    def fill_balances() -> None:
        # The debit-only baseline is refilled so it is not refused more than the wallets.
        PointBalance.objects.filter(pk__in=base_ids).update(available=10_000_000)

    for workers in worker_counts:
        per_worker = max(1, total_ops // workers)
        n = per_worker * workers
        ours_rate, base_rate, ratios, errors, mix = paired("w", workers, per_worker, baseline, ours, reset_balances)
        measured.append((workers, n, ours_rate, base_rate, errors, mix, ratios))
        pay_rate, base_rate, ratios, errors, mix = paired("p", workers, per_worker, debits, pays, fill_balances)
        wallet_measured.append((workers, n, pay_rate, base_rate, errors, mix, ratios))
    reset_balances()

    # Anomalies: unexpected errors, any discrepancy the ledger check finds, a negative baseline row.
    report = loyalty.verify(ws)
    for d in report.discrepancies[:20]:
        sys.stderr.write(f"ledger discrepancy: {d.as_dict()}\n")
    negative = PointBalance.objects.filter(pk__in=base_ids, available__lt=0).count()
    wallet_report = wallet.verify(ws)
    for d in wallet_report.discrepancies[:20]:
        sys.stderr.write(f"wallet discrepancy: {d.as_dict()}\n")
    all_ok = True
    for workers, n, ours_rate, base_rate, errors, mix, ratios in measured:
        ratio = ours_rate / base_rate
        anomalies = errors + len(report.discrepancies) + negative
        ok = anomalies == 0 and (workers != GOAL_WORKERS or ratio >= GOAL_RATIO)
        all_ok &= ok
        emit(f"loyalty.ledger_ops.{vendor}{'.prepared' if args.prepared else ''}"
             f"{'.ledger' if args.without_subscribers else ''}.{workers}w", ours_rate, "ops/s",
             "bare conditional UPDATE on a balance row",
             base_rate, ratio, f">= {GOAL_RATIO} at {GOAL_WORKERS} workers, zero anomalies", ok, workers=workers,
             ops_per_round=n, rounds=rounds, round_ratios=ratios, members=n_members, anomalies=anomalies,
             verified_balances=report.balances, mix=mix)
    negative_wallets = Wallet.objects.filter(balance__lt=0).count()
    for workers, n, ours_rate, base_rate, errors, mix, ratios in wallet_measured:
        ratio = ours_rate / base_rate
        anomalies = errors + len(wallet_report.discrepancies) + negative_wallets
        ok = anomalies == 0 and (workers != GOAL_WORKERS or ratio >= GOAL_RATIO)
        all_ok &= ok
        emit(f"wallet.pay_ops.{vendor}{'.prepared' if args.prepared else ''}.{workers}w", ours_rate, "ops/s",
             "bare conditional UPDATE on a balance row (debits)", base_rate, ratio,
             f">= {GOAL_RATIO} at {GOAL_WORKERS} workers, zero anomalies", ok, workers=workers, ops_per_round=n,
             rounds=rounds, round_ratios=ratios, members=n_members, anomalies=anomalies,
             verified_wallets=wallet_report.wallets, mix=mix)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
