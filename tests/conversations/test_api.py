"""The bots API: rules, menus, incidents, simulator — roles and workspace isolation."""

from __future__ import annotations

import sys
import types

import pytest
from django.core.cache import cache

from shequn.conversations import services
from tests.api.helpers import error_code, make_client


@pytest.fixture(autouse=True)
def _clear_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def owner(ws):
    return make_client(ws, "owner")


def test_rules_crud_and_simulate(ws, owner):
    r = owner.post("/api/v1/bots/rules", {"name": "积分", "match_type": "contains", "patterns": ["积分"],
                                          "reply": "回复 菜单 查看积分", "priority": 5})
    assert r.status_code == 201, r.content
    rule_id = r.json()["id"]
    assert owner.get("/api/v1/bots/rules").json()["items"][0]["id"] == rule_id
    r = owner.patch(f"/api/v1/bots/rules/{rule_id}", {"reply": "新回复"})
    assert r.status_code == 200 and r.json()["reply"] == {"content": "新回复"}
    sim = owner.post("/api/v1/bots/simulate", {"text": "我的积分"}).json()
    assert (sim["content"], sim["source"], sim["rule_id"], sim["outcome"]) == ("新回复", "rule", rule_id, "answered")
    assert owner.post("/api/v1/bots/simulate", {"text": "人工"}).json()["outcome"] == "handoff"
    bad = owner.post("/api/v1/bots/rules", {"name": "x", "match_type": "regex", "patterns": ["(a)\\1"], "reply": "x"})
    assert bad.status_code == 422 and error_code(bad) == "invalid_regex"
    assert owner.delete(f"/api/v1/bots/rules/{rule_id}").status_code == 204
    assert owner.get(f"/api/v1/bots/rules/{rule_id}").status_code == 404


def test_menus_crud_and_walk_with_the_simulator(ws, owner):
    r = owner.post("/api/v1/bots/menus", {"name": "主菜单", "triggers": ["菜单"], "prompt": "请回复数字:"})
    assert r.status_code == 201, r.content
    menu_id = r.json()["id"]
    sub = owner.post(f"/api/v1/bots/menus/{menu_id}/nodes", {"key": "1", "label": "帮助", "action": "submenu"}).json()
    leaf = owner.post(f"/api/v1/bots/menus/{menu_id}/nodes", {"parent": sub["id"], "key": "1", "label": "营业时间",
                                                               "action": "text", "text": "9:00–21:00"})
    assert leaf.status_code == 201 and leaf.json()["parent"] == sub["id"]
    detail = owner.get(f"/api/v1/bots/menus/{menu_id}").json()
    assert [n["label"] for n in detail["nodes"]] == ["帮助", "营业时间"]
    dup = owner.post(f"/api/v1/bots/menus/{menu_id}/nodes", {"key": "1", "label": "x", "action": "handoff"})
    assert dup.status_code == 409 and error_code(dup) == "menu_key_taken"
    assert owner.post("/api/v1/bots/simulate", {"text": "菜单"}).json()["content"] == "请回复数字:\n1. 帮助"
    assert owner.post("/api/v1/bots/simulate", {"text": "1"}).json()["source"] == "menu"
    assert owner.post("/api/v1/bots/simulate", {"text": "1"}).json()["content"] == "9:00–21:00"
    assert owner.patch(f"/api/v1/bots/menu-nodes/{leaf.json()['id']}", {"text": "10:00–22:00"}).status_code == 200
    assert owner.post("/api/v1/bots/simulate", {"text": "1"}).json()["content"] == "10:00–22:00"
    assert owner.delete(f"/api/v1/bots/menu-nodes/{sub['id']}").status_code == 204
    assert owner.get(f"/api/v1/bots/menus/{menu_id}").json()["nodes"] == []
    assert owner.delete(f"/api/v1/bots/menus/{menu_id}").status_code == 204


def test_incidents_declare_end_and_notify(ws, owner, monkeypatch):
    r = owner.post("/api/v1/bots/incidents", {"title": "小程序故障", "keywords": ["小程序"], "reply": "抢修中"})
    assert r.status_code == 201, r.content
    incident_id = r.json()["id"]
    assert owner.post("/api/v1/bots/simulate", {"text": "小程序坏了"}).json()["content"] == "抢修中"
    sent = []
    module = types.ModuleType("shequn.outbound.services")
    module.send_text = lambda *a, **kw: sent.append(kw["key"])
    monkeypatch.setitem(sys.modules, "shequn.outbound.services", module)
    from shequn.members import services as members

    mid = members.upsert_member(ws, [{"kind": "phone", "value": "+8613800000000"}], actor="t").member.pk
    n = owner.post(f"/api/v1/bots/incidents/{incident_id}/notify", {"member_ids": [mid]})
    assert n.status_code == 202, n.content
    assert (n.json()["total"], n.json()["status"]) == (1, "queued")
    services.run_notification(ws, n.json()["id"])
    progress = owner.get(f"/api/v1/bots/incidents/{incident_id}/notifications").json()["items"][0]
    assert (progress["status"], progress["processed"]) == ("done", 1) and sent == [f"incident:{incident_id}:{mid}"]
    assert owner.post(f"/api/v1/bots/incidents/{incident_id}/end").json()["status"] == "ended"
    assert owner.post("/api/v1/bots/simulate", {"text": "小程序坏了"}).json()["source"] == "none"
    ended = owner.post(f"/api/v1/bots/incidents/{incident_id}/notify", {"member_ids": [mid]})
    assert ended.status_code == 409 and error_code(ended) == "incident_ended"


@pytest.mark.parametrize("role", ["agent", "clerk"])
def test_lower_roles_cannot_use_the_bot_api(ws, role):
    api = make_client(ws, role)
    assert api.get("/api/v1/bots/rules").status_code == 403
    assert api.post("/api/v1/bots/incidents", {"title": "x", "reply": "y"}).status_code == 403
    assert api.post("/api/v1/bots/simulate", {"text": "x"}).status_code == 403


def test_operator_may_and_workspaces_are_isolated(ws, other_ws):
    operator = make_client(ws, "operator")
    other = make_client(other_ws, "owner")
    rule = operator.post("/api/v1/bots/rules", {"name": "r", "match_type": "exact", "patterns": ["1"], "reply": "x"})
    assert rule.status_code == 201
    menu = operator.post("/api/v1/bots/menus", {"name": "m"}).json()
    incident = operator.post("/api/v1/bots/incidents", {"title": "t", "reply": "r"}).json()
    for path in (f"/api/v1/bots/rules/{rule.json()['id']}", f"/api/v1/bots/menus/{menu['id']}",
                 f"/api/v1/bots/incidents/{incident['id']}"):
        assert other.get(path).status_code == 404
        assert other.delete(path).status_code == 404
    assert other.post(f"/api/v1/bots/menus/{menu['id']}/nodes", {"key": "1", "label": "x", "action": "handoff"}
                      ).status_code == 404
    assert other.post(f"/api/v1/bots/incidents/{incident['id']}/end").status_code == 404
    assert other.get("/api/v1/bots/rules").json()["items"] == []
    assert other.post("/api/v1/bots/simulate", {"text": "1"}).json()["source"] == "none"
    from shequn.members import services as members

    mine = members.upsert_member(ws, [{"kind": "phone", "value": "+8613800000009"}], actor="t").member.pk
    assert other.post("/api/v1/bots/simulate", {"text": "1", "member_id": mine}).status_code == 404
