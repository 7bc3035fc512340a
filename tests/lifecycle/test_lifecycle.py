from __future__ import annotations

import datetime as dt

from shequn.interactions import services as interactions
from shequn.lifecycle import services, strength
from shequn.lifecycle.models import StageChange
from shequn.members.models import Member


def ev(t, type_, direction="in", **kw):
    return {"identities": [{"kind": "external", "value": "m1"}], "type": type_, "channel": "wechat",
            "direction": direction, "occurred_at": t.isoformat(), **kw}


def test_default_pipeline_moves_forward_only(ws, t0):
    interactions.ingest_batch(ws, [
        ev(t0, "follow"),
        ev(t0 + dt.timedelta(days=1), "purchase", amount="20"),
        ev(t0 + dt.timedelta(days=2), "message"),  # would be 认知: never backwards
        ev(t0 + dt.timedelta(days=3), "purchase", amount="22"),
    ])
    m = Member.objects.get()
    assert m.stage.key == "using"
    changes = list(StageChange.objects.filter(member=m).order_by("at").values_list("to_stage__key", "cause"))
    assert changes == [("aware", "rule"), ("purchased", "rule"), ("using", "rule")]


def test_second_purchase_counts_purchases_from_earlier_batches(ws, t0):
    interactions.ingest(ws, ev(t0, "purchase", amount="10"))
    assert Member.objects.get().stage.key == "purchased"
    interactions.ingest(ws, ev(t0 + dt.timedelta(days=5), "purchase", amount="10"))
    assert Member.objects.get().stage.key == "using"


def test_operator_rule_with_min_amount(ws, t0):
    services.save_rule(ws, {"name": "大单 → 口碑", "interaction_type": "purchase", "min_amount": "500",
                            "target_stage": "advocate", "priority": 1}, actor="t")
    interactions.ingest(ws, ev(t0, "purchase", amount="99"))
    assert Member.objects.get().stage.key == "purchased"
    interactions.ingest(ws, ev(t0, "purchase", amount="800"))
    assert Member.objects.get().stage.key == "advocate"


def test_strength_levels():
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    day = dt.timedelta(days=1)
    E = strength.Engagement
    assert strength.strength(E(0, 0, None, None, 0, None), now) == 0
    assert strength.strength(E(0, 10, now - 5 * day, now - day, 5, now - day), now) == 1  # only outbound
    assert strength.strength(E(10, 0, now - 5 * day, now - day, 5, now - day), now) == 2  # one-way inbound
    assert strength.strength(E(5, 5, now - 30 * day, now - day, 3, now - day), now) == 3  # balanced
    assert strength.strength(E(5, 5, now - 300 * day, now - day, 3, now - day), now) == 4  # long
    assert strength.strength(E(30, 25, now - 300 * day, now - day, 12, now - day), now) == 5  # fervent
    assert strength.strength(E(5, 5, now - 300 * day, now - 120 * day, 3, now - 120 * day), now) == 1  # quiet


def test_decayed_counter_is_order_independent():
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    times = [t + dt.timedelta(days=d) for d in (0, 40, 10, 70, 5)]
    s1, a1 = 0.0, None
    for x in times:
        s1, a1 = strength.add_event(s1, a1, x)
    s2, a2 = 0.0, None
    for x in sorted(times):
        s2, a2 = strength.add_event(s2, a2, x)
    assert a1 == a2 and abs(s1 - s2) < 1e-9
