"""Coupon redemption latency at the counter endpoint.

Each measured request redeems a fresh single-use coupon through ``POST /api/v1/redemptions`` (API key
auth, rate-limit check, validation, store rules, the conditional ``UPDATE`` of the coupon, the
append-only ``Redemption`` row with its idempotency key, the ``coupon_redeemed`` interaction in the
member's history with the lifecycle counters it moves, the ``COUPON_REDEEMED`` hook; one
transaction), sent with Django's test client, so the whole request/response cycle runs but no
network. The baseline, measured in the same run on the same database with the same client, is a bare
endpoint that only runs the conditional ``UPDATE … SET uses = uses + 1 WHERE code = … AND status =
'issued' AND uses < max_uses`` and checks the row count — the least a race-safe single-use redemption
can cost over HTTP. Printed: p50 and p99 of both, and the ratio baseline/ours (1.0 = as fast as the
bare update).

    python -m bench.redemption [--quick] [--requests N]
    python -m bench.redemption --postgres postgres://postgres@127.0.0.1:5432/shequn_bench

The PostgreSQL database given is emptied first (as for every benchmark): give it one of its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from django.urls import path

from bench._harness import emit, progress, run_isolated, setup_django

# The counter path is a whole request through the one write path, including the interaction write
# path (the member's history, lifecycle counters and rules, loyalty earn rules) in the same
# transaction; the baseline is one UPDATE statement. Goal: within 100× of it at p50.
GOAL_RATIO_P50 = 0.01


def bare_redeem(request: Any) -> Any:
    """The baseline endpoint: one conditional UPDATE and its row count, nothing else."""
    from django.db import connection
    from django.http import JsonResponse

    from shequn.offers.models import Coupon

    body = json.loads(request.body)
    table = connection.ops.quote_name(Coupon._meta.db_table)
    sql = (f"UPDATE {table} SET uses = uses + 1, redeemed_at = %s, "  # noqa: S608
           "status = CASE WHEN uses + 1 >= max_uses THEN 'redeemed' ELSE 'issued' END "
           "WHERE workspace_id = %s AND code = %s AND status = 'issued' AND uses < max_uses")
    from django.utils import timezone

    with connection.cursor() as cur:
        cur.execute(sql, [timezone.now(), int(body["workspace"]), str(body["code"])])
        ok = cur.rowcount == 1
    return JsonResponse({"ok": ok}, status=201 if ok else 409)


def _urls() -> list[Any]:
    from django.views.decorators.csrf import csrf_exempt

    from shequn.urls import urlpatterns as base

    return [path("bench/bare-redeem/", csrf_exempt(bare_redeem)), *base]


class _LazyUrls:
    """``ROOT_URLCONF`` for the benchmark: the real routes plus the bare baseline endpoint."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(_urls())


urlpatterns = _LazyUrls()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    code = run_isolated("bench.redemption", argv)
    if code != -1:
        return code
    parser = argparse.ArgumentParser(prog="shequn bench redemption")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=None, help="redemptions per figure (default 2,000; quick 150)")
    parser.add_argument("--postgres", default=None)
    args = parser.parse_args(argv)
    n = args.requests or (150 if args.quick else 2_000)
    setup_django()
    from django.conf import settings
    from django.db import connection
    from django.test import Client

    from shequn.core import services as core
    from shequn.members.models import Member
    from shequn.offers import services as offers

    settings.ROOT_URLCONF = "bench.redemption"
    settings.API_RATE_LIMIT_PER_MINUTE = 10**9
    settings.ALLOWED_HOSTS = ["*"]
    vendor = connection.vendor

    ws = core.create_workspace("bench", "Bench")
    offers.save_store(ws, "s1", "一号店", actor="bench")
    offer = offers.save_offer(ws, {"name": "满30减5", "kind": "amount_off", "amount_off": "5"}, actor="bench")
    members = Member.objects.bulk_create([Member(workspace=ws, display_name=f"m{i}") for i in range(2 * n + 2)])
    ids = [m.pk for m in members]
    coupons: list[str] = []
    chunk = 500
    for start in range(0, len(ids), chunk):
        result = offers.issue_to_members(ws, offer.pk, ids[start:start + chunk], batch_key=f"bench-{start}", actor="bench")
        coupons += [c.code for c in result.coupons]
        progress("issuing coupons", min(start + chunk, len(ids)), len(ids))
    ours_codes, base_codes = coupons[: n + 1], coupons[n + 1: 2 * n + 2]
    _key, secret = core.create_api_key(ws, "bench", role="owner")
    client = Client(headers={"Authorization": f"Bearer {secret}"})

    def ours(i: int) -> None:
        r = client.post("/api/v1/redemptions", {"code": ours_codes[i], "key": f"bench-{i}", "store": "s1"},
                        content_type="application/json")
        if r.status_code != 201:
            raise RuntimeError(f"counter endpoint answered {r.status_code}: {r.content[:300]!r}")

    def bare(i: int) -> None:
        r = client.post("/bench/bare-redeem/", {"workspace": ws.pk, "code": base_codes[i]},
                        content_type="application/json")
        if r.status_code != 201:
            raise RuntimeError(f"bare endpoint answered {r.status_code}")

    def measure(fn: Any, label: str) -> list[float]:
        fn(n)  # warm up on the spare coupon
        out = []
        for i in range(n):
            start = time.perf_counter()
            fn(i)
            out.append(time.perf_counter() - start)
            if i % 50 == 49 or i == n - 1:
                progress(label, i + 1, n)
        return out

    base_t = measure(bare, "bare conditional UPDATE")
    ours_t = measure(ours, "counter endpoint")

    # Anomalies: every coupon of ours used exactly once, one redemption row each.
    from shequn.offers.models import Coupon, Redemption

    used = Coupon.objects.filter(code__in=ours_codes, uses=1, status="redeemed").count()
    anomalies = abs(used - (n + 1)) + abs(Redemption.objects.filter(workspace=ws).count() - (n + 1))
    all_ok = anomalies == 0
    for q, name in ((0.5, "p50"), (0.99, "p99")):
        ours_ms = percentile(ours_t, q) * 1000
        base_ms = percentile(base_t, q) * 1000
        ratio = base_ms / ours_ms
        ok = anomalies == 0 and (name != "p50" or ratio >= GOAL_RATIO_P50)
        all_ok &= ok
        emit(f"offers.redemption.{vendor}.{name}", ours_ms, "ms", "bare endpoint: conditional UPDATE only", base_ms,
             ratio, f"ratio (baseline/ours) >= {GOAL_RATIO_P50} at p50, zero anomalies", ok, requests=n,
             anomalies=anomalies, mean_ms=round(statistics.mean(ours_t) * 1000, 3))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
