from __future__ import annotations

import datetime as dt

import pytest

from shequn.core.errors import ValidationError
from shequn.interactions import services
from shequn.interactions.models import Interaction, TouchpointDay
from shequn.members.models import Member


def ev(t, **kw):
    base = {"identities": [{"kind": "phone", "value": "13800138000"}], "type": "message", "channel": "wechat",
            "occurred_at": t.isoformat()}
    base.update(kw)
    return base


def test_same_source_key_is_stored_once(ws, t0):
    first = services.ingest(ws, ev(t0, source="wx", external_id="msg-1"))
    again = services.ingest(ws, ev(t0, source="wx", external_id="msg-1"))
    assert first.status == "created" and again.status == "duplicate" and again.id == first.id
    assert Interaction.objects.count() == 1
    assert Member.objects.get().interaction_count == 1


def test_batch_keeps_good_rows_and_reports_bad_ones(ws, t0):
    rows = [
        ev(t0, external_id="a"),
        ev(t0, type="teleport"),
        ev(t0, occurred_at="2026-06-01T10:00:00"),  # naive
        ev(t0, external_id="a"),  # repeat inside the batch
        {"type": "message", "channel": "wechat", "occurred_at": t0.isoformat()},  # no member
        ev(t0, type="purchase", amount="abc"),
        ev(t0, type="purchase", amount="25.50", external_id="o1"),
    ]
    results = services.ingest_batch(ws, rows)
    assert [r.status for r in results] == ["created", "error", "error", "duplicate", "error", "error", "created"]
    assert results[1].error["code"] == "invalid_type"
    assert results[2].error["code"] == "invalid_time"
    assert results[4].error["code"] == "no_member"
    assert results[5].error["details"] == {"field": "amount"}
    assert results[3].id == results[0].id
    assert Interaction.objects.count() == 2


def test_unknown_member_id_and_foreign_member(ws, other_ws, t0):
    foreign = services.ingest(other_ws, ev(t0)).member_id
    with pytest.raises(ValidationError) as exc:
        services.ingest(ws, {"member_id": foreign, "type": "message", "channel": "wechat", "occurred_at": t0.isoformat()})
    assert exc.value.code == "unknown_member"


def test_touchpoint_rollup_and_trust_signals(ws, t0):
    services.save_touchpoint(ws, "store-counter", {"name": "门店收银台", "channel": "store"}, actor="t")
    services.ingest_batch(ws, [
        ev(t0, touchpoint="store-counter", type="review", properties={"rating": 5}),
        ev(t0, touchpoint="store-counter", type="review", properties={"rating": 1}),
        ev(t0, touchpoint="store-counter", type="support_contact", properties={"complaint": True}),
        ev(t0 + dt.timedelta(days=2), type="unfollow"),
    ])
    day = TouchpointDay.objects.get()
    assert (day.conversations, day.positive, day.negative) == (3, 1, 3)


def test_unknown_touchpoint(ws, t0):
    with pytest.raises(ValidationError) as exc:
        services.ingest(ws, ev(t0, touchpoint="nowhere"))
    assert exc.value.code == "unknown_touchpoint"
