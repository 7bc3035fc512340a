"""Console pages of the points programme and stored value: they render for the right roles, their forms
write through the services (idempotently), and the reports show the figures."""

from __future__ import annotations

import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from shequn.loyalty import queries
from shequn.loyalty import services as loyalty
from shequn.loyalty.models import EarnRule, PointEntry
from shequn.members import services as members
from shequn.wallet import queries as wallet_queries
from shequn.wallet import services as wallet
from shequn.wallet.models import WalletEntry


@pytest.fixture
def member(ws):
    return members.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}], {"display_name": "王小明"}).member


def failed(response):
    html = response.content.decode()
    return "has-error" in html or "error-box" in html


def url(path):
    return f"/w/tea/{path}"


def form_key(html, form_id):
    block = html.split(f'id="{form_id}"', 1)[1]
    return re.search(r'name="key" value="([0-9a-f]+)"', block).group(1)


def test_programme_settings_and_earn_rules(operator, ws):
    r = operator.get(url("loyalty/point-types/"))
    assert r.status_code == 200 and "积分" in r.content.decode()
    r = operator.post(url("loyalty/point-types/"), {"code": "coins", "name": "金币", "kind": "currency",
                                                    "expiry_policy": "days", "expiry_period": 90, "pending_days": 3,
                                                    "transferable": "on"})
    assert r.status_code == 302
    coins = loyalty.get_point_type(ws, "coins")
    assert (coins.expiry_period, coins.pending_days, coins.transferable) == (90, 3, True)
    r = operator.post(url("loyalty/point-types/"), {"code": "bad", "name": "x", "kind": "currency",
                                                    "expiry_policy": "days", "expiry_period": 0, "pending_days": 0})
    assert r.status_code == 200 and failed(r)

    r = operator.post(url("loyalty/rules/new/"), {"name": "消费积分", "point_type": "points",
                                                  "interaction_type": "purchase", "direction": "in", "points": 0,
                                                  "points_per_yuan": "1", "member_cap_day": 500, "priority": 100,
                                                  "enabled": "on"})
    assert r.status_code == 302, r.content.decode()[:2000]
    rule = EarnRule.objects.get()
    assert rule.member_cap_day == 500 and rule.points_per_yuan == 1
    page = operator.get(url("loyalty/rules/")).content.decode()
    assert "消费积分" in page
    r = operator.post(url(f"loyalty/rules/{rule.pk}/"), {"name": "消费积分", "point_type": "points",
                                                         "interaction_type": "purchase", "points": 0,
                                                         "points_per_yuan": "2", "priority": 10})
    assert r.status_code == 302
    rule.refresh_from_db()
    assert (rule.points_per_yuan, rule.enabled, rule.member_cap_day) == (2, False, None)
    assert operator.post(url(f"loyalty/rules/{rule.pk}/delete/")).status_code == 302
    assert not EarnRule.objects.exists()


def test_member_points_panel_and_adjust(operator, agent, ws, member):
    loyalty.earn(ws, member, "points", 120, reason="消费 ¥120", idempotency_key="e", actor="t")
    loyalty.spend(ws, member, "points", 20, reason="兑换 拿铁", idempotency_key="s", actor="t")
    page = operator.get(url(f"loyalty/members/{member.pk}/")).content.decode()
    assert "消费 ¥120" in page and "兑换 拿铁" in page and 'id="adjust-form"' in page
    key = form_key(page, "adjust-form")
    body = {"point_type": "points", "amount": -30, "reason": "重复积分更正", "key": key}
    assert operator.post(url(f"loyalty/members/{member.pk}/"), body).status_code == 302
    assert operator.post(url(f"loyalty/members/{member.pk}/"), body).status_code == 302  # double submit
    assert queries.balance(ws, member.pk, "points").available == 70
    assert PointEntry.objects.filter(kind="adjust").count() == 1
    r = operator.post(url(f"loyalty/members/{member.pk}/"), {**body, "amount": -1000, "key": "other"})
    assert r.status_code == 200 and failed(r)
    agent_page = agent.get(url(f"loyalty/members/{member.pk}/")).content.decode()
    assert "重复积分更正" in agent_page and 'id="adjust-form"' not in agent_page
    assert agent.post(url(f"loyalty/members/{member.pk}/"), {**body, "key": "x"}).status_code == 403


def test_stored_value_pages(clerk, operator, ws, member):
    page = clerk.get(url(f"wallet/members/{member.pk}/")).content.decode()
    key = form_key(page, "money-form")
    assert clerk.post(url(f"wallet/members/{member.pk}/"), {"op": "top_up", "amount": "100.50", "store": "前门店",
                                                            "key": key}).status_code == 302
    assert clerk.post(url(f"wallet/members/{member.pk}/"), {"op": "top_up", "amount": "100.50",
                                                            "key": key}).status_code == 302  # replay
    r = clerk.post(url(f"wallet/members/{member.pk}/"), {"op": "pay", "amount": "500", "key": "k2"})
    assert r.status_code == 200 and failed(r)
    r = clerk.post(url(f"wallet/members/{member.pk}/"), {"op": "pay", "amount": "12.345", "key": "k3"})
    assert r.status_code == 200 and WalletEntry.objects.count() == 1
    assert clerk.post(url(f"wallet/members/{member.pk}/"), {"op": "pay", "amount": "30", "key": "k4"}).status_code == 302
    assert wallet_queries.balance(ws, member.pk) == 7_050
    pay_entry = WalletEntry.objects.get(kind="pay")
    assert clerk.post(url(f"wallet/members/{member.pk}/payments/{pay_entry.pk}/refund/"),
                      {"amount": "10", "key": "r"}).status_code == 403
    page = operator.get(url(f"wallet/members/{member.pk}/")).content.decode()
    assert "¥70.50" in page and "前门店" in page and "退款" in page
    assert operator.post(url(f"wallet/members/{member.pk}/payments/{pay_entry.pk}/refund/"),
                         {"amount": "10", "key": "r"}).status_code == 302
    assert wallet_queries.balance(ws, member.pk) == 8_050
    lookup = clerk.get(url("loyalty/members/"), {"q": "13800138000"}).content.decode()
    assert "王小明" in lookup and "¥80.50" in lookup


def test_liability_reports_render_with_charts(operator, clerk, ws, member):
    loyalty.earn(ws, member, "points", 300, reason="e", idempotency_key="e", actor="t")
    loyalty.spend(ws, member, "points", 100, reason="s", idempotency_key="s", actor="t")
    wallet.top_up(ws, member, 50_000, idempotency_key="t", actor="t")
    wallet.pay(ws, member, 12_000, idempotency_key="p", actor="t")
    page = operator.get(url("loyalty/liability/")).content.decode()
    figure = json.loads(re.search(r'<script id="outstanding-figure" type="application/json">(.*?)</script>',
                                  page, re.S).group(1))
    assert figure["data"][0]["y"][0] == 200
    flow = json.loads(re.search(r'<script id="flow-figure" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert flow["data"][0]["y"][-1] == 300 and flow["data"][1]["y"][-1] == 100
    page = operator.get(url("wallet/liability/")).content.decode()
    assert "¥380.00" in page
    assert clerk.get(url("loyalty/liability/")).status_code == 403
    assert clerk.get(url("wallet/liability/")).status_code == 403


def test_history_page_query_count_is_flat(operator, ws, member):
    loyalty.earn(ws, member, "points", 100, reason="e", idempotency_key="e0", actor="t")
    operator.get(url(f"loyalty/members/{member.pk}/"))
    with CaptureQueriesContext(connection) as few:
        operator.get(url(f"loyalty/members/{member.pk}/"))
    for i in range(1, 8):
        loyalty.earn(ws, member, "points", 10, reason="e", idempotency_key=f"e{i}", actor="t")
        loyalty.spend(ws, member, "points", 5, reason="s", idempotency_key=f"s{i}", actor="t")
    with CaptureQueriesContext(connection) as many:
        operator.get(url(f"loyalty/members/{member.pk}/"))
    assert len(many) == len(few)


def test_other_workspace_members_are_not_found(operator, other_ws):
    stranger = members.upsert_member(other_ws, [{"kind": "external", "value": "x"}]).member
    assert operator.get(url(f"loyalty/members/{stranger.pk}/")).status_code == 404
    assert operator.get(url(f"wallet/members/{stranger.pk}/")).status_code == 404
