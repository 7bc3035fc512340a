from __future__ import annotations

import datetime as dt

import pytest
from django.test import override_settings

from shequn.interactions import services as interactions
from shequn.interactions.models import Interaction, Touchpoint
from shequn.members import services as members
from shequn.members.models import Member

from .helpers import error_code


def ev(t, **kw):
    base = {"identities": [{"kind": "phone", "value": "13800138000"}], "type": "message", "channel": "wechat",
            "occurred_at": t.isoformat()}
    base.update(kw)
    return base


def test_one_interaction_then_its_duplicate(api, ws, t0):
    r = api.post("/api/v1/interactions", ev(t0, source="pos", external_id="o-1", type="purchase", amount="25.50"))
    assert r.status_code == 201, r.content
    first = r.json()
    assert first["duplicate"] is False and first["id"] and first["member_id"]
    r = api.post("/api/v1/interactions", ev(t0, source="pos", external_id="o-1", type="purchase", amount="25.50"))
    assert r.status_code == 200
    assert r.json() == {"id": first["id"], "member_id": first["member_id"], "duplicate": True}
    assert Interaction.objects.count() == 1
    member = Member.objects.get()
    assert (member.purchase_count, str(member.purchase_total), member.stage.key) == (1, "25.50", "purchased")


def test_one_interaction_bad_input(api, ws, t0):
    cases = [
        (ev(t0, type="teleport"), "invalid_type"),
        (ev(t0, occurred_at="2026-06-01T10:00:00"), "invalid_time"),
        ({"type": "message", "channel": "wechat", "occurred_at": t0.isoformat()}, "no_member"),
        (ev(t0, touchpoint="nowhere"), "unknown_touchpoint"),
        (ev(t0, member_id=999999, identities=None), "unknown_member"),
        (ev(t0, amount="abc"), "validation_error"),
        (ev(t0, colour="red"), "validation_error"),
    ]
    for body, code in cases:
        body = {k: v for k, v in body.items() if v is not None}
        r = api.post("/api/v1/interactions", body)
        assert r.status_code == 422, (body, r.content)
        assert error_code(r) == code, body
    assert Interaction.objects.count() == 0 and Member.objects.count() == 0


def test_batch_reports_every_row(api, ws, t0):
    rows = [
        ev(t0, external_id="a"),
        ev(t0, type="teleport"),
        ev(t0, external_id="a"),
        "not an object",
        ev(t0, type="purchase", amount="12.00", external_id="o1"),
    ]
    r = api.post("/api/v1/interactions/batch", {"events": rows})
    assert r.status_code == 200, r.content
    body = r.json()
    assert [x["status"] for x in body["results"]] == ["created", "error", "duplicate", "error", "created"]
    assert [x["index"] for x in body["results"]] == [0, 1, 2, 3, 4]
    assert body["results"][1]["error"]["code"] == "invalid_type"
    assert body["results"][3]["error"]["code"] == "invalid_event"
    assert body["results"][2]["id"] == body["results"][0]["id"]
    assert body["counts"] == {"created": 2, "duplicate": 1, "error": 2}
    assert Interaction.objects.count() == 2

    again = api.post("/api/v1/interactions/batch", {"events": rows[:1]})
    assert again.json()["counts"] == {"created": 0, "duplicate": 1, "error": 0}


@override_settings(API_MAX_BATCH=3)
def test_batch_limits(api, ws, t0):
    r = api.post("/api/v1/interactions/batch", {"events": [ev(t0)] * 4})
    assert r.status_code == 422 and error_code(r) == "batch_too_large"
    assert r.json()["error"]["details"] == {"max": 3, "received": 4}
    r = api.post("/api/v1/interactions/batch", {"events": []})
    assert r.status_code == 422 and error_code(r) == "empty_batch"
    r = api.post("/api/v1/interactions/batch", {"rows": []})
    assert r.status_code == 422 and error_code(r) == "validation_error"
    assert Interaction.objects.count() == 0
    r = api.post("/api/v1/interactions/batch", {"events": [ev(t0)] * 3})
    assert r.status_code == 200 and r.json()["counts"]["created"] == 3


def test_list_filters_and_cursor(api, ws, t0):
    a = members.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}]).member
    b = members.upsert_member(ws, [{"kind": "phone", "value": "13900139000"}]).member
    interactions.save_touchpoint(ws, "counter", {"name": "收银台", "channel": "store"}, actor="t")
    rows = interactions.ingest_batch(ws, [
        {"member_id": a.pk, "type": "message", "channel": "wechat", "occurred_at": t0.isoformat()},
        {"member_id": a.pk, "type": "purchase", "channel": "store", "touchpoint": "counter", "amount": "9.90",
         "occurred_at": (t0 + dt.timedelta(days=1)).isoformat()},
        {"member_id": b.pk, "type": "message", "channel": "wechat",
         "occurred_at": (t0 + dt.timedelta(days=2)).isoformat()},
    ])
    ids = [r.id for r in rows]

    def listed(**params):
        r = api.get("/api/v1/interactions", params)
        assert r.status_code == 200, r.content
        return [i["id"] for i in r.json()["items"]]

    assert listed() == ids[::-1]
    assert listed(type="message") == [ids[2], ids[0]]
    assert listed(channel="store") == [ids[1]]
    assert listed(member_id=a.pk) == [ids[1], ids[0]]
    assert listed(since=(t0 + dt.timedelta(days=1)).isoformat()) == [ids[2], ids[1]]
    assert listed(until=(t0 + dt.timedelta(days=1)).isoformat()) == [ids[0]]
    page = api.get("/api/v1/interactions", {"limit": 2}).json()
    assert [i["id"] for i in page["items"]] == [ids[2], ids[1]] and page["next"] == ids[1]
    page = api.get("/api/v1/interactions", {"limit": 2, "after": page["next"]}).json()
    assert [i["id"] for i in page["items"]] == [ids[0]] and page["next"] is None

    purchase = api.get("/api/v1/interactions", {"type": "purchase"}).json()["items"][0]
    assert (purchase["touchpoint"], purchase["amount"], purchase["member_id"]) == ("counter", "9.90", a.pk)
    r = api.get("/api/v1/interactions", {"since": "2026-06-01T10:00:00"})
    assert r.status_code == 422 and error_code(r) == "invalid_time"
    r = api.get("/api/v1/interactions", {"since": "yesterday"})
    assert r.status_code == 422 and error_code(r) == "validation_error"


def test_touchpoints(api, ws):
    r = api.post("/api/v1/touchpoints", {"code": "mini-program", "name": "小程序", "channel": "wechat", "importance": 5})
    assert r.status_code == 201, r.content
    assert (r.json()["code"], r.json()["importance"], r.json()["complexity"]) == ("mini-program", 5, 3)
    r = api.post("/api/v1/touchpoints", {"code": "mini-program", "name": "x", "channel": "web"})
    assert r.status_code == 409 and error_code(r) == "touchpoint_exists"
    r = api.post("/api/v1/touchpoints", {"code": "Bad Code", "name": "x", "channel": "web"})
    assert r.status_code == 422 and error_code(r) == "invalid_field"
    r = api.post("/api/v1/touchpoints", {"code": "x", "name": "x", "channel": "web", "importance": 9})
    assert r.status_code == 422 and r.json()["error"]["details"] == {"field": "importance"}

    assert [t["code"] for t in api.get("/api/v1/touchpoints").json()["items"]] == ["mini-program"]
    assert api.get("/api/v1/touchpoints/mini-program").json()["name"] == "小程序"
    r = api.patch("/api/v1/touchpoints/mini-program", {"consistency": 2, "function": "service"})
    assert r.status_code == 200 and (r.json()["consistency"], r.json()["function"], r.json()["name"]) == (2, "service", "小程序")
    r = api.patch("/api/v1/touchpoints/mini-program", {"consistency": 0})
    assert r.status_code == 422 and error_code(r) == "invalid_field"
    assert Touchpoint.objects.get().consistency == 2
    r = api.get("/api/v1/touchpoints/nowhere")
    assert r.status_code == 404 and error_code(r) == "not_found"
    r = api.patch("/api/v1/touchpoints/nowhere", {"name": "x"})
    assert r.status_code == 404 and Touchpoint.objects.count() == 1


def test_touchpoint_map(api, ws, t0):
    from shequn.interactions import touchpoint_map

    interactions.save_touchpoint(ws, "hotline", {"name": "客服热线", "channel": "phone", "importance": 5}, actor="t")
    interactions.save_touchpoint(ws, "tasting", {"name": "品鉴会", "channel": "store", "complexity": 4}, actor="t")
    now = dt.datetime.now(dt.UTC)
    rows = [ev(now, touchpoint="hotline", type="support_contact", properties={"complaint": True}) for _ in range(4)]
    rows.append(ev(now, touchpoint="tasting", type="review", properties={"rating": 5}))
    interactions.ingest_batch(ws, rows)

    r = api.get("/api/v1/touchpoints/map", {"days": 30})
    assert r.status_code == 200, r.content
    body = r.json()
    expected = touchpoint_map.compute(ws, days=30)
    assert body["window_days"] == 30 and body["until"] == expected.until.isoformat()
    assert body["flagged"] == [p.code for p in expected.flagged] == ["hotline"]
    assert body["quiet_trusted"] == [p.code for p in expected.quiet_trusted] == ["tasting"]
    hotline = body["points"][0]
    assert (hotline["code"], hotline["conversations"], hotline["negative"], hotline["flagged"]) == ("hotline", 4, 4, True)
    assert hotline["trust"] == pytest.approx(1 / 6)
    r = api.get("/api/v1/touchpoints/map", {"days": 0})
    assert r.status_code == 422 and error_code(r) == "validation_error"


def test_touchpoint_code_map_is_reserved(api, ws):
    r = api.post("/api/v1/touchpoints", {"code": "map", "name": "x", "channel": "web"})
    assert r.status_code == 422 and error_code(r) == "reserved_code"
    assert Touchpoint.objects.count() == 0


def test_interaction_lists_have_no_n_plus_one(api, ws, t0, django_assert_max_num_queries):
    interactions.save_touchpoint(ws, "counter", {"name": "收银台", "channel": "store"}, actor="t")
    m = members.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}]).member
    interactions.ingest_batch(ws, [{"member_id": m.pk, "type": "visit", "channel": "store", "touchpoint": "counter",
                                    "occurred_at": (t0 + dt.timedelta(minutes=i)).isoformat()} for i in range(40)])
    api.get("/api/v1/workspace")  # the key's last-use stamp is written once a minute, not per request
    with django_assert_max_num_queries(2):  # key, interactions with their touchpoints
        r = api.get("/api/v1/interactions", {"limit": 40})
    assert len(r.json()["items"]) == 40 and r.json()["items"][0]["touchpoint"] == "counter"
    with django_assert_max_num_queries(3):  # key, the member check, interactions
        r = api.get(f"/api/v1/members/{m.pk}/timeline", {"limit": 40})
    assert len(r.json()["items"]) == 40


def test_answers_are_utf8_json(api, ws):
    members.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}], {"display_name": "王小明"})
    r = api.get("/api/v1/members")
    assert r["Content-Type"] == "application/json; charset=utf-8"
    assert "王小明".encode() in r.content
