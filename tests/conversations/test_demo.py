"""The demo seed builds a working bot on a workspace with members."""

from __future__ import annotations

import datetime as dt
import random

from shequn.conversations import demo, queries, services
from shequn.conversations.models import Incident
from shequn.members import services as members

NOW = dt.datetime(2026, 6, 1, 4, 0, tzinfo=dt.UTC)


def test_seed_demo_builds_menu_rules_bookings_and_a_past_incident(ws):
    ids = [members.upsert_member(ws, [{"kind": "phone", "value": f"+86139000{i:05d}"}], actor="t").member.pk
           for i in range(5)]
    demo.seed_demo(ws, random.Random(7), NOW)
    assert [m.name for m in queries.menus(ws)] == ["茶语服务菜单"]
    incident = Incident.objects.get(workspace=ws)
    assert (incident.title, incident.status) == ("外卖小程序故障", "ended")
    top = services.answer(ws, "菜单", channel="wechat", member_id=ids[0], at=NOW)
    assert "1. 查积分" in top.content and "0. 人工客服" in top.content
    booking = services.answer(ws, "4", channel="wechat", member_id=ids[0], at=NOW + dt.timedelta(seconds=5))
    assert booking.content.startswith("Your next booking: ")
    assert services.answer(ws, "小程序下单失败", channel="wechat", at=NOW).source != "incident"
    closed = services.answer(ws, "人工客服", channel="wechat", at=dt.datetime(2026, 6, 1, 15, 0, tzinfo=dt.UTC))
    assert closed.outcome == "handoff" and closed.content.startswith("现在是非营业时间")
