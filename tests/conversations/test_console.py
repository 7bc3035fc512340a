"""Console pages of the bot: roles, workspace isolation, the editors and the message tester."""

from __future__ import annotations

import sys
import types

import pytest
from django.test import Client
from django.urls import reverse

from shequn.conversations import services
from shequn.conversations.models import AutoReplyRule, Menu, MenuNode
from shequn.core import services as core

PASSWORD = "console-test-pw-1"  # noqa: S105


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def login(ws, role, name=None):
    user = core.ensure_user(name or f"{role}-{ws.slug}", PASSWORD)
    core.add_staff(ws, user, role)
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(user)
    return client


def url(ws, name, *args):
    return reverse(f"console:{name}", args=[ws.slug, *args])


@pytest.fixture
def operator(ws):
    return login(ws, "operator")


def test_pages_render_for_operators_and_are_refused_below(ws, operator, make_rule):
    rule = make_rule(ws)
    menu = services.create_menu(ws, {"name": "菜单"}, actor="t")
    node = services.create_node(ws, menu.pk, {"key": "1", "label": "积分", "action": "live", "live": "points"}, actor="t")
    incident = services.declare_incident(ws, {"title": "故障", "reply": "抢修中"}, actor="t")
    pages = [url(ws, "bots_rules"), url(ws, "bots_rule_new"), url(ws, "bots_rule_edit", rule.pk), url(ws, "bots_tester"),
             url(ws, "bots_menus"), url(ws, "bots_menu", menu.pk), url(ws, "bots_node_edit", node.pk),
             url(ws, "bots_incidents"), url(ws, "bots_incident", incident.pk)]
    for page in pages:
        assert operator.get(page).status_code == 200, page
    agent = login(ws, "agent")
    for page in pages:
        assert agent.get(page).status_code == 403, page
    assert agent.post(url(ws, "bots_rule_delete", rule.pk)).status_code == 403
    assert AutoReplyRule.objects.filter(pk=rule.pk).exists()
    nav = operator.get(url(ws, "bots_rules")).content.decode()
    assert url(ws, "bots_menus") in nav and url(ws, "bots_incidents") in nav
    assert url(ws, "bots_menus") not in agent.get(reverse("console:dashboard", args=[ws.slug])).content.decode()


def test_another_workspace_s_objects_are_not_found(ws, other_ws, make_rule):
    rule = make_rule(ws)
    menu = services.create_menu(ws, {"name": "菜单"}, actor="t")
    node = services.create_node(ws, menu.pk, {"key": "1", "label": "x", "action": "handoff"}, actor="t")
    incident = services.declare_incident(ws, {"title": "故障", "reply": "抢修中"}, actor="t")
    outsider = login(other_ws, "owner", "owner-other")
    for name, pk in (("bots_rule_edit", rule.pk), ("bots_menu", menu.pk), ("bots_node_edit", node.pk),
                     ("bots_incident", incident.pk)):
        assert outsider.get(url(other_ws, name, pk)).status_code == 404
    for name, pk in (("bots_rule_delete", rule.pk), ("bots_menu_delete", menu.pk), ("bots_node_delete", node.pk),
                     ("bots_incident_end", incident.pk)):
        assert outsider.post(url(other_ws, name, pk)).status_code == 404
    assert AutoReplyRule.objects.filter(pk=rule.pk).exists() and MenuNode.objects.filter(pk=node.pk).exists()
    incident.refresh_from_db()
    assert incident.status == "active"


def test_rule_form_creates_edits_and_reports_errors(ws, operator):
    data = {"name": "营业时间", "match_type": "contains", "patterns": "营业时间\n几点开门", "reply": "9:00–21:00",
            "priority": "10", "windows": "1-5 09:00-18:00", "outside_windows": "on", "enabled": "on", "channels": ""}
    r = operator.post(url(ws, "bots_rule_new"), data)
    assert r.status_code == 302
    rule = AutoReplyRule.objects.get(workspace=ws)
    assert rule.patterns == ["营业时间", "几点开门"] and rule.outside_windows
    assert rule.windows == [{"days": [1, 2, 3, 4, 5], "start": "09:00", "end": "18:00"}]
    page = operator.get(url(ws, "bots_rule_edit", rule.pk)).content.decode()
    assert "1-5 09:00-18:00" in page
    bad = operator.post(url(ws, "bots_rule_new"), {**data, "name": "x", "match_type": "regex", "patterns": "(a)\\1"})
    assert bad.status_code == 200 and "error-box" in bad.content.decode()
    bad = operator.post(url(ws, "bots_rule_new"), {**data, "name": "y", "windows": "monday morning"})
    assert bad.status_code == 200 and "error-box" in bad.content.decode()
    assert operator.post(url(ws, "bots_rule_delete", rule.pk)).status_code == 302
    assert not AutoReplyRule.objects.filter(workspace=ws).exists()


def test_menu_editor_and_tester(ws, operator):
    r = operator.post(url(ws, "bots_menus"), {"name": "服务", "triggers": "菜单, menu", "prompt": "请回复数字:",
                                              "timeout_seconds": "300", "enabled": "on"})
    menu = Menu.objects.get(workspace=ws)
    assert r.status_code == 302 and menu.triggers == ["菜单", "menu"]
    detail = url(ws, "bots_menu", menu.pk)
    assert operator.post(detail, {"form": "node", "parent": "", "key": "1", "label": "帮助", "action": "submenu",
                                  "text": "", "live": ""}).status_code == 302
    sub = MenuNode.objects.get(menu=menu)
    assert operator.post(detail, {"form": "node", "parent": str(sub.pk), "key": "1", "label": "营业时间",
                                  "action": "text", "text": "9:00–21:00", "live": ""}).status_code == 302
    dup = operator.post(detail, {"form": "node", "parent": "", "key": "1", "label": "x", "action": "handoff"})
    assert dup.status_code == 200 and "error-box" in dup.content.decode()
    page = operator.get(detail).content.decode()
    assert "营业时间" in page and 'id="menu-preview"' in page and "1. 帮助" in page
    assert operator.post(detail, {"form": "menu", "name": "服务", "triggers": "菜单", "prompt": "您好",
                                  "timeout_seconds": "120", "enabled": "on"}).status_code == 302
    menu.refresh_from_db()
    assert (menu.prompt, menu.timeout_seconds, menu.triggers) == ("您好", 120, ["菜单"])
    tester = url(ws, "bots_tester")
    assert "您好\n1. 帮助" in operator.post(tester, {"text": "菜单"}).content.decode()
    operator.post(tester, {"text": "1"})
    out = operator.post(tester, {"text": "1"}).content.decode()
    assert "9:00–21:00" in out and "answered by the bot" in out
    assert "handed over to a person" in operator.post(tester, {"text": "转人工"}).content.decode()
    leaf = MenuNode.objects.get(menu=menu, parent=sub)
    assert operator.post(url(ws, "bots_node_edit", leaf.pk), {"parent": str(sub.pk), "key": "2", "label": "营业",
                                                               "action": "text", "text": "10:00", "live": ""}
                         ).status_code == 302
    leaf.refresh_from_db()
    assert (leaf.key, leaf.text) == ("2", "10:00")
    assert operator.post(url(ws, "bots_node_delete", sub.pk)).status_code == 302
    assert not MenuNode.objects.filter(menu=menu).exists()


def test_incident_pages_declare_notify_and_end(ws, operator, monkeypatch):
    sent = []
    module = types.ModuleType("shequn.outbound.services")
    module.send_text = lambda *a, **kw: sent.append(kw["key"])
    monkeypatch.setitem(sys.modules, "shequn.outbound.services", module)
    from shequn.members import services as members

    mid = members.upsert_member(ws, [{"kind": "phone", "value": "+8613800000000"}], actor="t").member.pk
    members.add_tags(ws, mid, ["外卖"], actor="t")
    r = operator.post(url(ws, "bots_incidents"), {"title": "外卖小程序故障", "keywords": "小程序, 下单",
                                                  "reply": "抢修中", "starts_at": "2026-01-01T10:00", "ends_at": ""})
    assert r.status_code == 302
    incident = services.queries.incidents(ws)[0]
    assert incident.keywords == ["小程序", "下单"]
    page = url(ws, "bots_incident", incident.pk)
    r = operator.post(page, {"form": "notify", "target": "filter", "f_tag": "外卖", "text": "小程序故障,请稍候"})
    assert r.status_code == 302
    n = services.queries.notifications(ws, incident.pk)[0]
    assert n.total == 1 and n.target == {"filter": {"tag": "外卖"}}
    body = operator.get(page).content.decode()
    assert 'http-equiv="refresh"' in body and "0</span> / <span class=\"total\">1" in body
    services.run_notification(ws, n.pk)
    body = operator.get(page).content.decode()
    assert 'http-equiv="refresh"' not in body and "1</span> / <span class=\"total\">1" in body
    assert sent == [f"incident:{incident.pk}:{mid}"]
    empty = operator.post(page, {"form": "notify", "target": "filter", "text": "x"})
    assert empty.status_code == 200 and "error-box" in empty.content.decode()
    assert operator.post(url(ws, "bots_incident_end", incident.pk)).status_code == 302
    incident.refresh_from_db()
    assert incident.status == "ended"
