"""Interaction ingestion throughput through the one write path.

``interactions.services.ingest_batch`` (validation, idempotency check, storage, member counters,
stage rules, strength, touchpoint roll-ups — everything a real event costs) is fed batches of 1,000
events, as the batch API and the file importer do. The baseline, measured in the same run on the same
database, is the bare insert of the same rows into the same table: ``executemany`` in one transaction
per 1,000 rows on SQLite, ``COPY`` on PostgreSQL. Goal: ratio ≥ 0.1 (the full path stays within 10× of
the bare insert although it does several times more work per event).

    python -m bench.ingest [--quick] [--postgres URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import time

from bench._harness import emit, progress, run_isolated, setup_django

TYPES = [("message", "in", 30), ("message", "out", 25), ("purchase", "in", 15), ("visit", "in", 8), ("scan", "in", 6),
         ("review", "in", 4), ("share", "in", 4), ("support_contact", "in", 4), ("follow", "in", 4)]


def make_events(member_ids: list[int], n: int, tag: str) -> list[dict]:
    rnd = random.Random(7)
    start = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    kinds = [t for t in TYPES for _ in range(t[2])]
    out = []
    for i in range(n):
        itype, direction, _ = rnd.choice(kinds)
        ev = {"member_id": rnd.choice(member_ids), "type": itype, "channel": rnd.choice(["wechat", "store", "app"]),
              "direction": direction, "occurred_at": (start + dt.timedelta(seconds=i * 97)).isoformat(),
              "source": f"bench-{tag}", "external_id": f"{tag}-{i}", "touchpoint": rnd.choice(["counter", "menu", ""]),
              "properties": {"text": "想问下新品什么时候上"} if itype == "message" else {}}
        if itype == "purchase":
            ev["amount"] = f"{rnd.randint(12, 45)}.00"
        if itype == "review":
            ev["properties"] = {"rating": rnd.randint(1, 5)}
        out.append(ev)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    code = run_isolated("bench.ingest", argv)
    if code != -1:
        return code
    parser = argparse.ArgumentParser(prog="shequn bench ingest")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--postgres", default=None)
    args = parser.parse_args(argv)
    n = args.events or (5_000 if args.quick else 100_000)
    setup_django()
    from django.db import connection, transaction

    from shequn.core import services as core
    from shequn.interactions import services as interactions
    from shequn.interactions.models import Interaction
    from shequn.members.models import Member

    ws = core.create_workspace("bench", "Bench")
    for code_ in ("counter", "menu"):
        interactions.save_touchpoint(ws, code_, {"name": code_, "channel": "store"}, actor="bench")
    members = Member.objects.bulk_create([Member(workspace=ws, display_name=f"m{i}") for i in range(2_000)])
    ids = [m.pk for m in members]

    ours_events = make_events(ids, n, "ours")
    start = time.perf_counter()
    for i in range(0, n, 1000):
        results = interactions.ingest_batch(ws, ours_events[i:i + 1000], actor="bench")
        assert all(r.status == "created" for r in results), [r for r in results if r.status != "created"][:3]
        progress("ingest_batch", min(i + 1000, n), n)
    t_ours = time.perf_counter() - start

    base_events = make_events(ids, n, "base")
    table = Interaction._meta.db_table
    cols = ["workspace_id", "member_id", "origin_member_id", "type", "channel", "direction", "touchpoint_id",
            "occurred_at", "received_at", "source", "external_id", "amount", "currency", "properties"]
    now = dt.datetime.now(dt.UTC)
    rows = [(ws.pk, e["member_id"], e["member_id"], e["type"], e["channel"], e["direction"], None,
             dt.datetime.fromisoformat(e["occurred_at"]), now, e["source"], e["external_id"], e.get("amount"), "",
             json.dumps(e["properties"], ensure_ascii=False)) for e in base_events]
    start = time.perf_counter()
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cur:
            with cur.connection.cursor().copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        baseline = "raw COPY"
    else:
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
        for i in range(0, n, 1000):
            with transaction.atomic(), connection.cursor() as cur:
                cur.executemany(sql, rows[i:i + 1000])
        baseline = "raw executemany, 1,000 rows per transaction"
    t_base = time.perf_counter() - start
    assert Interaction.objects.filter(workspace=ws).count() == 2 * n

    ours_rate, base_rate = n / t_ours, n / t_base
    ratio = ours_rate / base_rate
    emit(f"ingest.batch.{connection.vendor}", ours_rate, "rows/s", baseline, base_rate, ratio, ">= 0.1",
         ratio >= 0.1, events=n)
    return 0 if ratio >= 0.1 else 1


if __name__ == "__main__":
    sys.exit(main())
