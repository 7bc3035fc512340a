from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from shequn.interactions import services
from shequn.interactions import touchpoint_map as tmap

SH = ZoneInfo("Asia/Shanghai")
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=SH)  # window of 90 local days: 2026-03-04 … 2026-06-01


def at(y, m, d, h=10, mi=0):
    return dt.datetime(y, m, d, h, mi, tzinfo=SH)


def ev(who, when, type_, tp=None, direction="in", **props):
    row = {"identities": [{"kind": "external", "value": who}], "type": type_, "channel": "test",
           "direction": direction, "occurred_at": when, "properties": props}
    if tp:
        row["touchpoint"] = tp
    return row


def touchpoints(ws, specs):
    for code, importance, complexity in specs:
        services.save_touchpoint(ws, code, {"name": code.title(), "channel": "store", "function": "sales",
                                            "segment": "白领", "lifecycle_stage": "using", "importance": importance,
                                            "complexity": complexity, "consistency": 2}, actor="t")


@pytest.fixture
def mapped(ws):
    touchpoints(ws, [("delivery", 4, 4), ("counter", 5, 3), ("event", 3, 5), ("poster", 1, 1), ("hotline", 2, 4),
                     ("menu", 5, 2)])
    day = at(2026, 5, 20)
    rows = []
    # delivery: 10 conversations (8 inbound), 2 positive, 6 negative
    rows += [ev("a1", day, "review", "delivery", rating=1) for _ in range(6)]
    rows += [ev("a1", day, "review", "delivery", rating=5) for _ in range(2)]
    rows += [ev("a1", day, "message", "delivery", direction="out") for _ in range(2)]
    rows += [ev("a1", at(2026, 2, 1), "review", "delivery", rating=5) for _ in range(5)]  # before the window
    rows += [ev("a1", at(2026, 6, 2, 0, 30), "review", "delivery", rating=5)]  # local 2 June: after the window
    # counter: 8 conversations, 5 positive, 1 negative
    rows += [ev("b1", day, "satisfaction", "counter", score=5) for _ in range(5)]
    rows += [ev("b1", day, "support_contact", "counter", complaint=True)]
    rows += [ev("b1", day, "purchase", "counter") for _ in range(2)]
    # event: 2 conversations, both positive; one at 00:30 local on the first day of the window
    rows += [ev("c1", at(2026, 3, 4, 0, 30), "event_attendance", "event", sentiment="positive"),
             ev("c1", day, "event_attendance", "event", sentiment="positive")]
    # poster: 4 conversations; a complaint and two unfollows within 7 days of a scan → 3 negative
    rows += [ev("d1", day, "scan", "poster"), ev("d1", day + dt.timedelta(days=1), "unfollow"),
             ev("d2", day, "scan", "poster"), ev("d2", day + dt.timedelta(days=2), "unfollow"),
             ev("d3", day, "scan", "poster"), ev("d3", day, "support_contact", "poster", complaint=True)]
    # hotline: only outside the window
    rows += [ev("e1", at(2026, 2, 15), "support_contact", "hotline", complaint=True) for _ in range(3)]
    # menu: 6 conversations, no trust signal
    rows += [ev("f1", day, "message", "menu") for _ in range(6)]
    results = services.ingest_batch(ws, rows)
    assert {r.status for r in results} == {"created"}
    return ws


def test_map_numbers(mapped, django_assert_num_queries):
    with django_assert_num_queries(1):
        m = tmap.compute(mapped, days=90, now=NOW)
    assert (m.value_threshold, m.complexity_threshold, m.window_days) == (0.5, 3, 90)
    assert (m.since, m.until) == (dt.date(2026, 3, 4), dt.date(2026, 6, 1))
    assert m.conversation_median == 6
    got = {p.code: p for p in m.points}
    assert [p.code for p in m.points] == ["delivery", "counter", "menu", "poster", "event", "hotline"]
    expected = {
        # code: conversations, inbound, positive, negative, trust, value, quadrant, flagged, quiet_trusted
        "delivery": (10, 8, 2, 6, 0.3, 0.875, "high_value_high_complexity", True, False),
        "counter": (8, 8, 5, 1, 0.75, 0.9, "high_value_high_complexity", False, False),
        "menu": (6, 6, 0, 0, 0.5, 0.8, "high_value_low_complexity", False, False),
        "poster": (4, 4, 0, 3, 0.2, 0.2, "low_value_low_complexity", False, False),
        "event": (2, 2, 2, 0, 0.75, 0.35, "low_value_high_complexity", False, True),
        "hotline": (0, 0, 0, 0, 0.5, 0.125, "low_value_high_complexity", False, False),
    }
    for code, (conv, inbound, pos, neg, trust, value, quadrant, flagged, quiet) in expected.items():
        p = got[code]
        assert (p.conversations, p.inbound, p.positive, p.negative) == (conv, inbound, pos, neg), code
        assert p.trust == pytest.approx(trust) and p.value == pytest.approx(value), code
        assert (p.quadrant_key, p.flagged, p.quiet_trusted) == (quadrant, flagged, quiet), code
        assert p.quadrant == tmap.quadrant_labels()[quadrant]
    d = got["delivery"]
    assert (d.name, d.channel, d.function, d.segment, d.lifecycle_stage) == ("Delivery", "store", "sales", "白领", "using")
    assert (d.importance, d.complexity, d.consistency, d.conversation_share) == (4, 4, 2, 1.0)
    assert [p.code for p in m.flagged] == ["delivery"]
    assert [p.code for p in m.quiet_trusted] == ["event"]


def test_window_length_changes_the_sums(mapped):
    m = tmap.compute(mapped, days=120, now=NOW)  # from 2026-02-02: the hotline complaints count, not 1 Feb
    got = {p.code: p for p in m.points}
    assert got["hotline"].conversations == 3 and got["hotline"].negative == 3
    assert got["delivery"].conversations == 10
    m = tmap.compute(mapped, days=1, now=at(2026, 6, 2, 9))
    assert [(p.code, p.conversations, p.positive) for p in m.points if p.conversations] == [("delivery", 1, 1)]


def test_flagged_are_sorted_by_conversations(ws, other_ws):
    touchpoints(ws, [("x", 3, 3), ("y", 3, 3), ("z", 3, 3)])
    touchpoints(other_ws, [("x", 3, 3)])
    day = at(2026, 5, 30)
    rows = [ev("m", day, "review", "x", rating=1) for _ in range(3)] + [ev("m", day, "purchase", "x") for _ in range(2)]
    rows += [ev("m", day, "review", "y", rating=1) for _ in range(5)] + [ev("m", day, "purchase", "y") for _ in range(4)]
    rows += [ev("m", day, "review", "z", rating=5)]
    services.ingest_batch(ws, rows)
    services.ingest_batch(other_ws, [ev("m", day, "review", "x", rating=5) for _ in range(50)])
    m = tmap.compute(ws, now=NOW)
    assert m.conversation_median == 5
    assert [p.code for p in m.flagged] == ["y", "x"]
    assert [p.code for p in m.quiet_trusted] == ["z"]
    assert {p.code: p.conversations for p in m.points} == {"x": 5, "y": 9, "z": 1}
    other = tmap.compute(other_ws, now=NOW)
    assert [(p.code, p.conversations, p.positive) for p in other.points] == [("x", 50, 50)]


def test_empty_workspace(ws):
    m = tmap.compute(ws, now=NOW)
    assert m.points == [] and m.flagged == [] and m.conversation_median == 0


def test_trust_and_quadrant_rules():
    assert tmap.trust_score(0, 0) == 0.5
    assert tmap.trust_score(3, 3) == 0.5
    assert tmap.trust_score(1, 0) == pytest.approx(2 / 3)
    assert tmap.trust_score(0, 1) == pytest.approx(1 / 3)
    assert tmap.quadrant_key(0.5, 3) == "high_value_high_complexity"
    assert tmap.quadrant_key(0.49, 2) == "low_value_low_complexity"
    assert tmap.quadrant_key(0.9, 1) == "high_value_low_complexity"
    assert tmap.quadrant_key(0.1, 5) == "low_value_high_complexity"
