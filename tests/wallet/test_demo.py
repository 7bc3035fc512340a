from __future__ import annotations

import datetime as dt
import random

from shequn.members.models import Member
from shequn.wallet import demo, queries, services
from shequn.wallet.models import WalletEntry


def test_demo_seed_is_deterministic_idempotent_and_consistent(ws):
    Member.objects.bulk_create([Member(workspace=ws, display_name=f"m{i}") for i in range(150)])
    now = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
    demo.seed_demo(ws, random.Random(7), now)
    first = list(WalletEntry.objects.order_by("pk").values_list("member_id", "kind", "amount", "at"))
    assert len({m for m, *_ in first}) == 100 and len(first) > 300
    assert {k for _m, k, *_ in first} == {"top_up", "pay", "refund"}
    demo.seed_demo(ws, random.Random(7), now)  # same keys: nothing added
    assert WalletEntry.objects.count() == len(first)
    assert services.verify(ws).ok
    assert queries.liability(ws, now=now).outstanding > 0
