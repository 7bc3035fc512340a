"""The engagement API: definitions CRUD for operators, summary, check-in, leaderboards; tenant
scoping and the error format."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache

from shequn.loyalty import services as loyalty
from tests.api.helpers import error_code, make_client

from .conftest import make_member

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _clear_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api(ws):
    return make_client(ws, "owner")


def test_definitions_crud(api, ws):
    r = api.post("/api/v1/engagement/tiers", {"code": "sprout", "name": "新芽", "rank": 0})
    assert r.status_code == 201, r.content
    r = api.post("/api/v1/engagement/tiers", {"code": "leaf", "name": "青叶", "rank": 1, "min_contribution": 100,
                                              "multiplier": "1.2", "grace_days": 30})
    leaf = r.json()
    assert r.status_code == 201 and leaf["multiplier"] == "1.20"
    r = api.patch(f"/api/v1/engagement/tiers/{leaf['id']}", {"min_contribution": 150})
    assert r.status_code == 200 and r.json()["min_contribution"] == 150
    r = api.post("/api/v1/engagement/tiers", {"code": "dup", "name": "x", "rank": 1})
    assert r.status_code == 409 and error_code(r) == "tier_exists"
    r = api.post("/api/v1/engagement/tiers", {"code": "x", "name": "x", "rank": 3, "colour": "red"})
    assert r.status_code == 422
    assert [t["code"] for t in api.get("/api/v1/engagement/tiers").json()["items"]] == ["sprout", "leaf"]

    r = api.post("/api/v1/engagement/badges", {"code": "sharer", "name": "分享达人", "metric": "share", "threshold": 3})
    assert r.status_code == 201
    r = api.post("/api/v1/engagement/tasks", {"code": "review", "name": "写评价", "metric": "review", "points": 20,
                                              "badge": "sharer"})
    assert r.status_code == 201 and r.json()["badge"] == "sharer"
    task_id = r.json()["id"]
    r = api.patch(f"/api/v1/engagement/tasks/{task_id}", {"badge": None, "target": 2})
    assert r.json()["badge"] is None and r.json()["target"] == 2
    r = api.post("/api/v1/engagement/tasks", {"code": "bad", "name": "x", "metric": "dance"})
    assert r.status_code == 422 and error_code(r) == "invalid_metric"
    assert api.put("/api/v1/engagement/levels/6", {"name": "Lv6", "min_xp": 2000}).status_code == 200
    assert len(api.get("/api/v1/engagement/levels").json()["items"]) == 6
    r = api.put("/api/v1/engagement/streak-rewards/7", {"points": 100})
    assert r.status_code == 200 and r.json() == {"days": 7, "points": 100, "point_type": "points", "badge": None}
    assert api.delete(f"/api/v1/engagement/tasks/{task_id}").status_code == 204
    assert api.patch("/api/v1/engagement/programme", {"checkin_points": 5}).json()["checkin_points"] == 5


def test_check_in_summary_and_leaderboard(api, ws):
    m = make_member(ws, "alice")
    r = api.post(f"/api/v1/members/{m.pk}/check-in?channel=miniprogram")
    assert r.status_code == 201 and r.json()["created"] and r.json()["current"] == 1
    r2 = api.post(f"/api/v1/members/{m.pk}/check-in")
    assert r2.status_code == 200 and not r2.json()["created"] and r2.json()["id"] == r.json()["id"]
    s = api.get(f"/api/v1/members/{m.pk}/engagement").json()
    assert s["check_in"]["checked_in_today"] and s["check_in"]["total"] == 1
    loyalty.earn(ws, m, "points", 30, reason="r", idempotency_key="k", actor="t")
    b = api.get("/api/v1/leaderboards/points", {"period": "week", "member_id": m.pk}).json()
    assert [(i["member_id"], i["score"], i["rank"]) for i in b["items"]] == [(m.pk, 30, 1)]
    assert b["member"]["rank"] == 1 and "reached_at" in b["tie_break"]
    assert api.get("/api/v1/leaderboards/streak", {"period": "all"}).json()["items"][0]["score"] == 1
    r = api.get("/api/v1/leaderboards/streak", {"period": "week"})
    assert r.status_code == 422 and error_code(r) == "invalid_period"
    assert error_code(api.get("/api/v1/leaderboards/money")) == "invalid_board"


def test_tenant_isolation(api, ws, other_ws):
    stranger = make_member(other_ws, "stranger")
    other = make_client(other_ws, "owner")
    tier = other.post("/api/v1/engagement/tiers", {"code": "t", "name": "t", "rank": 0}).json()
    for r in (api.post(f"/api/v1/members/{stranger.pk}/check-in"),
              api.get(f"/api/v1/members/{stranger.pk}/engagement"),
              api.get(f"/api/v1/members/{stranger.pk}/tier-changes"),
              api.patch(f"/api/v1/engagement/tiers/{tier['id']}", {"name": "hacked"}),
              api.delete(f"/api/v1/engagement/tiers/{tier['id']}")):
        assert r.status_code == 404, r.content
        error_code(r)
    assert other.get("/api/v1/engagement/tiers").json()["items"][0]["name"] == "t"


def test_roles(ws):
    clerk = make_client(ws, "clerk")
    m = make_member(ws, "a")
    assert clerk.post(f"/api/v1/members/{m.pk}/check-in").status_code == 201
    r = clerk.post("/api/v1/engagement/tiers", {"code": "t", "name": "t", "rank": 0})
    assert r.status_code == 403 and error_code(r) == "forbidden"


def test_set_tier_and_history(api, ws):
    m = make_member(ws, "a")
    api.post("/api/v1/engagement/tiers", {"code": "base", "name": "B", "rank": 0})
    api.post("/api/v1/engagement/tiers", {"code": "vip", "name": "V", "rank": 1, "min_contribution": 1000})
    r = api.post(f"/api/v1/members/{m.pk}/tier", {"tier": "vip"})
    assert r.status_code == 200 and r.json()["tier"]["code"] == "vip"
    [change] = api.get(f"/api/v1/members/{m.pk}/tier-changes").json()["items"]
    assert (change["old_tier"], change["new_tier"], change["cause"]) == ("base", "vip", "operator")
    assert change["actor"].startswith("apikey:")
    assert error_code(api.post(f"/api/v1/members/{m.pk}/tier", {"tier": "nope"})) == "unknown_tier"
    assert dt.datetime.fromisoformat(api.get(f"/api/v1/members/{m.pk}/engagement").json()["review_at"])
