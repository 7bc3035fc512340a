"""The loyalty and stored-value API: roles, Idempotency-Key replays, pagination, errors, isolation."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from shequn.loyalty import services as loyalty
from shequn.members import services as members
from shequn.wallet.models import WalletEntry
from tests.api.helpers import error_code, make_client


@pytest.fixture(autouse=True)
def _clear_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api(ws):
    return make_client(ws, "owner")


def key(k):
    return {"headers": {"Idempotency-Key": k}}


def test_point_types_and_earn_rules(ws, api):
    assert [t["code"] for t in api.get("/api/v1/point-types").json()["items"]] == ["points", "growth"]
    r = api.put("/api/v1/point-types/coins", {"name": "金币", "transferable": True, "pending_days": 2})
    assert r.status_code == 200 and r.json()["transferable"] is True
    assert error_code(api.put("/api/v1/point-types/coins", {"kind": "contribution"})) == "immutable_field"
    r = api.post("/api/v1/earn-rules", {"name": "消费积分", "point_type": "points", "interaction_type": "purchase",
                                        "points_per_yuan": "1.5", "member_cap_day": 2000})
    assert r.status_code == 201, r.json()
    rule = r.json()
    assert (rule["point_type"], rule["points_per_yuan"], rule["member_cap_day"]) == ("points", "1.5000", 2000)
    r = api.patch(f"/api/v1/earn-rules/{rule['id']}", {"member_cap_day": None, "enabled": False})
    assert r.json()["member_cap_day"] is None and r.json()["enabled"] is False
    assert len(api.get("/api/v1/earn-rules").json()["items"]) == 1
    assert api.delete(f"/api/v1/earn-rules/{rule['id']}").status_code == 204
    assert api.get("/api/v1/earn-rules").json()["items"] == []
    assert error_code(api.post("/api/v1/earn-rules", {"name": "x", "point_type": "nope",
                                                      "interaction_type": "purchase", "points": 1})) == "unknown_point_type"


def test_member_points_operations_with_idempotency_keys(ws, api):
    m = members.upsert_member(ws, [{"kind": "external", "value": "a"}]).member
    n = members.upsert_member(ws, [{"kind": "external", "value": "b"}]).member
    base = f"/api/v1/members/{m.pk}/points"
    r = api.post(f"{base}/earn", {"amount": 300, "reason": "开业礼"}, **key("e1"))
    assert r.status_code == 200, r.json()
    earned = r.json()
    assert api.post(f"{base}/earn", {"amount": 300, "reason": "开业礼"}, **key("e1")).json()["id"] == earned["id"]
    assert error_code(api.post(f"{base}/earn", {"amount": 301}, **key("e1"))) == "idempotency_key_reused"
    assert error_code(api.post(f"{base}/earn", {"amount": 3})) == "invalid_idempotency_key"
    s = api.post(f"{base}/spend", {"amount": 100, "reason": "兑换"}, **key("s1")).json()
    assert s["amount"] == -100 and s["draws"][0]["amount"] == 100 and s["draws"][0]["lot_id"]
    assert api.post(f"{base}/spend", {"amount": 100}, **key("s1")).json()["id"] == s["id"]
    assert error_code(api.post(f"{base}/spend", {"amount": 10_000}, **key("s2"))) == "insufficient_points"
    adj = api.post(f"{base}/adjust", {"amount": -20, "reason": "更正"}, **key("a1"))
    assert adj.status_code == 200 and adj.json()["kind"] == "adjust"
    assert error_code(api.post(f"{base}/adjust", {"amount": 5, "reason": ""}, **key("a2"))) == "reason_required"
    rev = api.post(f"{base}/reverse", {"entry_id": earned["id"], "amount": 50}, **key("r1")).json()
    assert rev["amount"] == -50 and rev["related_id"] == earned["id"]
    loyalty.save_point_type(ws, "points", {"transferable": True}, actor="t")
    t = api.post(f"{base}/transfer", {"to_member_id": n.pk, "amount": 30}, **key("t1")).json()
    assert t["kind"] == "transfer_out"
    balances = {b["point_type"]: b for b in api.get(base).json()["items"]}
    assert balances["points"]["available"] == 300 - 100 - 20 - 50 - 30
    page1 = api.get(f"{base}/history", {"limit": 3}).json()
    assert [e["kind"] for e in page1["items"]] == ["transfer_out", "reverse", "adjust"]
    page2 = api.get(f"{base}/history", {"limit": 3, "after": page1["next"]}).json()
    assert [e["kind"] for e in page2["items"]] == ["spend", "earn"] and page2["next"] is None
    assert page2["items"][1]["reason"] == "开业礼" and page2["items"][1]["actor"].startswith("apikey:")


def test_history_query_count_does_not_grow_with_the_page(ws, api):
    m = members.upsert_member(ws, [{"kind": "external", "value": "a"}]).member
    for i in range(3):
        loyalty.earn(ws, m, "points", 10, reason="e", idempotency_key=f"e{i}", actor="t")
        loyalty.spend(ws, m, "points", 5, reason="s", idempotency_key=f"s{i}", actor="t")
    url = f"/api/v1/members/{m.pk}/points/history"
    api.get(url, {"limit": 1})  # the key's first use is recorded once
    with CaptureQueriesContext(connection) as small:
        api.get(url, {"limit": 2})
    with CaptureQueriesContext(connection) as big:
        assert len(api.get(url, {"limit": 6}).json()["items"]) == 6
    assert len(big) == len(small)


def test_roles(ws):
    m = members.upsert_member(ws, [{"kind": "external", "value": "a"}]).member
    loyalty.earn(ws, m, "points", 100, reason="e", idempotency_key="e", actor="t")
    clerk, agent = make_client(ws, "clerk"), make_client(ws, "agent")
    base = f"/api/v1/members/{m.pk}/points"
    assert clerk.get(base).status_code == 200 and agent.get(base).status_code == 200
    assert clerk.post(f"{base}/spend", {"amount": 10}, **key("c1")).status_code == 200
    assert error_code(agent.post(f"{base}/spend", {"amount": 10}, **key("c2"))) == "forbidden"
    assert error_code(clerk.post(f"{base}/adjust", {"amount": 10, "reason": "x"}, **key("c3"))) == "forbidden"
    assert error_code(clerk.put("/api/v1/point-types/points", {"pending_days": 1})) == "forbidden"
    assert error_code(agent.get("/api/v1/loyalty/liability")) == "forbidden"
    assert clerk.post(f"/api/v1/members/{m.pk}/wallet/top-ups", {"amount": 100}, **key("w1")).status_code == 200
    p = clerk.post(f"/api/v1/members/{m.pk}/wallet/payments", {"amount": 40}, **key("w2")).json()
    assert error_code(clerk.post(f"/api/v1/wallet/payments/{p['id']}/refunds", {}, **key("w3"))) == "forbidden"
    assert error_code(agent.post(f"/api/v1/members/{m.pk}/wallet/top-ups", {"amount": 1}, **key("w4"))) == "forbidden"


def test_stored_value_api(ws, api):
    m = members.upsert_member(ws, [{"kind": "external", "value": "a"}]).member
    base = f"/api/v1/members/{m.pk}/wallet"
    t = api.post(f"{base}/top-ups", {"amount": 10_000, "store": "前门店"}, **key("t1"))
    assert t.status_code == 200 and t.json()["balance_after"] == 10_000
    assert api.post(f"{base}/top-ups", {"amount": 10_000}, **key("t1")).json()["id"] == t.json()["id"]
    p = api.post(f"{base}/payments", {"amount": 2_500}, **key("p1")).json()
    assert p["amount"] == -2_500
    assert error_code(api.post(f"{base}/payments", {"amount": 99_999}, **key("p2"))) == "insufficient_funds"
    assert api.post(f"{base}/payments", {"amount": 12.5}, **key("p3")).status_code == 422
    assert error_code(api.post(f"{base}/payments", {"amount": -5}, **key("p4"))) == "invalid_amount"
    r = api.post(f"/api/v1/wallet/payments/{p['id']}/refunds", {"amount": 500}, **key("r1"))
    assert r.status_code == 200 and r.json()["related_id"] == p["id"]
    assert error_code(api.post(f"/api/v1/wallet/payments/{p['id']}/refunds", {"amount": 2_001}, **key("r2"))) \
        == "refund_exceeds_payment"
    body = api.get(base, {"limit": 2}).json()
    assert body["balance"] == 8_000 and [e["kind"] for e in body["items"]] == ["refund", "pay"] and body["next"]
    report = api.get("/api/v1/wallet/liability").json()
    assert report["outstanding"] == 8_000 and report["wallets"] == 1 and report["topped_up"] == 10_000
    assert WalletEntry.objects.count() == 3


def test_points_liability_api(ws, api):
    m = members.upsert_member(ws, [{"kind": "external", "value": "a"}]).member
    loyalty.earn(ws, m, "points", 100, reason="e", idempotency_key="e", actor="t")
    loyalty.spend(ws, m, "points", 30, reason="s", idempotency_key="s", actor="t")
    body = api.get("/api/v1/loyalty/liability").json()
    points = next(t for t in body["types"] if t["code"] == "points")
    assert (points["available"], points["pending"], points["members"]) == (70, 0, 1)
    weeks = body["weeks"]["points"]
    assert len(weeks) == 12 and weeks[-1]["issued"] == 100 and weeks[-1]["redeemed"] == 30


def test_another_workspace_cannot_read_or_write(ws, other_ws, api):
    stranger = members.upsert_member(other_ws, [{"kind": "external", "value": "x"}]).member
    loyalty.earn(other_ws, stranger, "points", 10, reason="e", idempotency_key="e", actor="t")
    for path in (f"/api/v1/members/{stranger.pk}/points", f"/api/v1/members/{stranger.pk}/points/history",
                 f"/api/v1/members/{stranger.pk}/wallet"):
        assert error_code(api.get(path)) == "not_found"
    assert error_code(api.post(f"/api/v1/members/{stranger.pk}/points/spend", {"amount": 1}, **key("k"))) \
        == "not_found"
    assert error_code(api.post(f"/api/v1/members/{stranger.pk}/wallet/top-ups", {"amount": 1}, **key("k"))) \
        == "not_found"
    other_api = make_client(other_ws, "owner")
    other_api.post(f"/api/v1/members/{stranger.pk}/wallet/top-ups", {"amount": 100}, **key("k"))
    pay = other_api.post(f"/api/v1/members/{stranger.pk}/wallet/payments", {"amount": 100}, **key("p")).json()
    assert error_code(api.post(f"/api/v1/wallet/payments/{pay['id']}/refunds", {}, **key("r"))) == "not_found"
