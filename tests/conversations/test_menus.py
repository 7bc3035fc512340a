"""IVR menus: navigation, timeout, live data answers, handoff — through ``services.answer`` and
through the WeChat endpoint driven by wechatpy."""

from __future__ import annotations

import datetime as dt
import sys
import types

import pytest

from shequn.channels.models import InboundMessage
from shequn.conversations import services
from shequn.conversations.models import MenuSession
from shequn.core.errors import Conflict, ValidationError
from shequn.interactions import services as interactions
from shequn.interactions.models import Interaction
from shequn.loyalty import services as loyalty
from tests.channels.helpers import APP_ID, OPENID, WeChatServer, connect, text_xml

T0 = dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC)
IDENT = {"kind": "wechat_openid", "namespace": APP_ID, "value": OPENID}


@pytest.fixture
def menu(ws):
    m = services.create_menu(ws, {"name": "服务菜单", "triggers": ["菜单", "menu"], "prompt": "您好,请回复数字:",
                                  "handoff_text": "正在为您转接人工客服。", "timeout_seconds": 300}, actor="t")
    points = services.create_node(ws, m.pk, {"key": "1", "label": "查积分", "action": "live", "live": "points"}, actor="t")
    orders = services.create_node(ws, m.pk, {"key": "2", "label": "订单与活动", "action": "submenu",
                                             "text": "订单与活动,请选择:"}, actor="t")
    services.create_node(ws, m.pk, {"parent": orders.pk, "key": "1", "label": "最近订单", "action": "live",
                                     "live": "latest_purchase"}, actor="t")
    services.create_node(ws, m.pk, {"parent": orders.pk, "key": "2", "label": "活动预约", "action": "live",
                                     "live": "booking"}, actor="t")
    services.create_node(ws, m.pk, {"parent": orders.pk, "key": "3", "label": "营业时间", "action": "text",
                                     "text": "每天 9:00–21:00"}, actor="t")
    services.create_node(ws, m.pk, {"key": "3", "label": "查券", "action": "live", "live": "coupons"}, actor="t")
    services.create_node(ws, m.pk, {"key": "0", "label": "人工客服", "action": "handoff"}, actor="t")
    assert points.pk
    return m


def say(ws, text, at=T0, identity=IDENT):
    return services.answer(ws, text, channel="wechat", identity=identity, at=at)


def member_with_history(ws):
    [result] = interactions.ingest_batch(ws, [{
        "identities": [IDENT], "type": "purchase", "channel": "store", "occurred_at": "2026-05-30T06:00:00Z",
        "amount": "32.00", "currency": "CNY", "source": "pos", "external_id": "p1",
        "properties": {"items": [{"name": "桂花乌龙", "price": 16, "qty": 2}], "store": "静安店"}}], actor="t")
    member_id = Interaction.objects.get(pk=result.id).member_id
    interactions.ingest_batch(ws, [
        {"member_id": member_id, "type": "purchase", "channel": "store", "occurred_at": "2026-05-01T06:00:00Z",
         "amount": "18.00", "source": "pos", "external_id": "p0", "properties": {"items": [{"name": "旧单"}]}},
        {"member_id": member_id, "type": "custom", "channel": "miniprogram", "occurred_at": "2026-05-20T06:00:00Z",
         "source": "events", "external_id": "b1",
         "properties": {"kind": "booking", "event": "新品试饮会", "event_at": "2026-06-06T06:00:00+00:00",
                        "place": "静安店"}},
        {"member_id": member_id, "type": "custom", "channel": "miniprogram", "occurred_at": "2026-05-21T06:00:00Z",
         "source": "events", "external_id": "b2",
         "properties": {"kind": "booking", "event": "已取消的活动", "event_at": "2026-06-03T06:00:00+00:00",
                        "status": "cancelled"}},
        {"member_id": member_id, "type": "custom", "channel": "miniprogram", "occurred_at": "2026-04-21T06:00:00Z",
         "source": "events", "external_id": "b0",
         "properties": {"kind": "booking", "event": "过去的活动", "event_at": "2026-04-25T06:00:00+00:00"}},
    ], actor="t")
    loyalty.earn(ws, member_id, "points", 120, reason="test", idempotency_key="k1", actor="t",
                 earned_at=T0 - dt.timedelta(days=3), now=T0 - dt.timedelta(days=3))
    return member_id


def test_trigger_opens_the_top_level(ws, menu):
    a = say(ws, "菜单")
    assert a.source == "menu" and a.outcome == "answered" and a.menu_id == menu.pk
    assert a.content == "您好,请回复数字:\n1. 查积分\n2. 订单与活动\n3. 查券\n0. 人工客服"
    assert say(ws, " ＭＥＮＵ ").content == a.content  # normalised trigger
    session = MenuSession.objects.get(workspace=ws)
    assert session.node_id is None and session.expires_at == T0 + dt.timedelta(seconds=300)


def test_digits_back_home_and_invalid_choice(ws, menu):
    say(ws, "菜单")
    sub = say(ws, "2", T0 + dt.timedelta(seconds=10))
    assert sub.content.startswith("订单与活动,请选择:\n1. 最近订单\n2. 活动预约\n3. 营业时间")
    assert "*" in sub.content.splitlines()[-1]
    assert say(ws, "3", T0 + dt.timedelta(seconds=20)).content == "每天 9:00–21:00"
    # After an answer the member stays in the submenu: another digit of that level works.
    assert say(ws, "３", T0 + dt.timedelta(seconds=30)).content == "每天 9:00–21:00"  # full-width digit
    wrong = say(ws, "7", T0 + dt.timedelta(seconds=40))
    assert wrong.content.splitlines()[0] == "没有选项 7。"  # "There is no option 7."
    assert "1. 最近订单" in wrong.content
    back = say(ws, "*", T0 + dt.timedelta(seconds=50))
    assert back.content.startswith("您好,请回复数字:") and back.node_id is None
    say(ws, "2", T0 + dt.timedelta(seconds=60))
    home = say(ws, "#", T0 + dt.timedelta(seconds=70))
    assert home.content.startswith("您好,请回复数字:")
    # At the top level, * stays at the top.
    assert say(ws, "*", T0 + dt.timedelta(seconds=80)).content.startswith("您好,请回复数字:")


def test_session_times_out(ws, menu):
    say(ws, "菜单")
    say(ws, "2", T0 + dt.timedelta(seconds=10))
    late = say(ws, "3", T0 + dt.timedelta(seconds=10 + 301))
    assert late.source == "menu"
    assert late.content.endswith("您好,请回复数字:\n1. 查积分\n2. 订单与活动\n3. 查券\n0. 人工客服")
    assert "每天" not in late.content
    # The timeout put the member back at the top: now 2 opens the submenu again.
    assert say(ws, "2", T0 + dt.timedelta(seconds=320)).content.startswith("订单与活动")


def test_digits_without_a_session_are_not_menu_input(ws, menu, make_rule):
    assert say(ws, "1").source == "none"
    make_rule(ws, match_type="exact", patterns=["1"], reply="规则的 1")
    assert say(ws, "1").content == "规则的 1"
    say(ws, "菜单", T0 + dt.timedelta(seconds=1))
    assert say(ws, "3", T0 + dt.timedelta(seconds=2)).source == "menu"  # an open menu wins over rules
    # Other text during a session goes to the rules; the session stays.
    make_rule(ws, patterns=["营业"], reply="规则:营业时间")
    assert say(ws, "营业到几点", T0 + dt.timedelta(seconds=3)).content == "规则:营业时间"
    assert say(ws, "2", T0 + dt.timedelta(seconds=4)).content.startswith("订单与活动")


def test_sessions_are_per_member_and_per_workspace(ws, other_ws, menu):
    other = {**IDENT, "value": "oOtherMember000000000000000"}
    say(ws, "菜单")
    say(ws, "2", T0 + dt.timedelta(seconds=5))
    assert say(ws, "2", T0 + dt.timedelta(seconds=6), identity=other).source == "none"
    assert say(other_ws, "2", T0 + dt.timedelta(seconds=6)).source == "none"


def test_live_answers_with_real_rows(ws, menu):
    member_with_history(ws)
    say(ws, "菜单")
    points = say(ws, "1", T0 + dt.timedelta(seconds=1))
    assert points.outcome == "answered"
    assert "积分:可用 120" in points.content.splitlines()
    coupons = say(ws, "3", T0 + dt.timedelta(seconds=2))
    assert coupons.content  # no offers module or no coupons: a "no coupons" text
    say(ws, "2", T0 + dt.timedelta(seconds=3))
    latest = say(ws, "1", T0 + dt.timedelta(seconds=4)).content
    assert "桂花乌龙×2" in latest and "静安店" in latest and "32" in latest and "2026-05-30 14:00" in latest
    assert "旧单" not in latest
    booking = say(ws, "2", T0 + dt.timedelta(seconds=5)).content
    assert "新品试饮会" in booking and "2026-06-06 14:00" in booking and "静安店" in booking
    assert "取消" not in booking and "过去" not in booking


def test_live_answers_for_an_unknown_member_and_empty_history(ws, menu):
    say(ws, "菜单")
    unknown = say(ws, "1", T0 + dt.timedelta(seconds=1))
    assert unknown.outcome == "answered" and unknown.content == services.live.unknown_member()
    member_with_history(ws)
    say(ws, "2", T0 + dt.timedelta(seconds=2))
    later = T0 + dt.timedelta(days=30)
    say(ws, "菜单", later)
    say(ws, "2", later)
    assert "新品试饮会" not in say(ws, "2", later).content  # the booking is past by then


def test_coupons_come_from_the_offers_domain(ws, menu, monkeypatch):
    member_id = member_with_history(ws)
    seen = []

    class Offer:
        name = "第二杯半价"

    class Coupon:
        code, offer, valid_until, status = "C1", Offer(), dt.datetime(2026, 6, 30, 15, 59, tzinfo=dt.UTC), "issued"

    def redeemable_coupons(workspace, mid, *, at=None):
        seen.append((workspace.pk, mid, at))
        return [Coupon()]

    fake = types.ModuleType("shequn.offers.queries")
    fake.redeemable_coupons = redeemable_coupons
    monkeypatch.setitem(sys.modules, "shequn.offers.queries", fake)
    say(ws, "菜单")
    text = say(ws, "3", T0 + dt.timedelta(seconds=1)).content
    assert "第二杯半价" in text and "2026-06-30 23:59" in text
    assert seen == [(ws.pk, member_id, T0 + dt.timedelta(seconds=1))]


def test_handoff_option_ends_the_session(ws, menu):
    say(ws, "菜单")
    a = say(ws, "0", T0 + dt.timedelta(seconds=1))
    assert (a.outcome, a.content, a.source) == ("handoff", "正在为您转接人工客服。", "menu")
    assert not MenuSession.objects.filter(workspace=ws).exists()
    assert say(ws, "1", T0 + dt.timedelta(seconds=2)).source == "none"


def test_handoff_keywords_and_unanswered_messages(ws, menu, make_rule):
    asked = say(ws, "我要转人工")
    assert (asked.outcome, asked.source, asked.content) == ("handoff", "handoff", "正在为您转接人工客服。")
    assert say(ws, "talk to a HUMAN please").outcome == "handoff"
    nothing = say(ws, "你们家的奶茶甜吗")
    assert (nothing.outcome, nothing.source, nothing.content) == ("handoff", "none", "")
    make_rule(ws, patterns=["客服"], reply="客服在线时间 9:00–18:00")
    ruled = say(ws, "客服在吗")
    assert (ruled.outcome, ruled.source, ruled.content) == ("handoff", "rule", "客服在线时间 9:00–18:00")


def test_reply_hooks_come_first_and_get_the_member(ws, menu, monkeypatch):
    member_id = member_with_history(ws)
    calls = []

    def hook(workspace, mid, text, at):
        calls.append((mid(), text))  # the member id is asked for, so it is looked up
        return services.Answer(content="谢谢您的评分") if text == "5" else None

    monkeypatch.setattr(services, "REPLY_HOOKS", [hook])
    say(ws, "菜单")
    assert say(ws, "5", T0 + dt.timedelta(seconds=1)).content == "谢谢您的评分"
    assert say(ws, "2", T0 + dt.timedelta(seconds=2)).source == "menu"
    assert calls == [(member_id, "菜单"), (member_id, "5"), (member_id, "2")]


def test_menu_changes_apply_to_the_next_message(ws, menu):
    say(ws, "菜单")
    node = services.create_node(ws, menu.pk, {"key": "4", "label": "门店地址", "action": "text",
                                              "text": "上海市静安区"}, actor="t")
    assert say(ws, "4", T0 + dt.timedelta(seconds=1)).content == "上海市静安区"
    services.update_node(ws, node.pk, {"text": "上海市黄浦区"}, actor="t")
    assert say(ws, "4", T0 + dt.timedelta(seconds=2)).content == "上海市黄浦区"
    services.update_menu(ws, menu.pk, {"enabled": False}, actor="t")
    assert say(ws, "菜单", T0 + dt.timedelta(seconds=3)).source == "none"


def test_menu_validation(ws, menu):
    with pytest.raises(ValidationError) as e:
        services.create_menu(ws, {"name": "x", "triggers": ["1"]}, actor="t")
    assert e.value.details["field"] == "triggers"
    with pytest.raises(Conflict):
        services.create_menu(ws, {"name": "服务菜单"}, actor="t")
    with pytest.raises(Conflict):
        services.create_node(ws, menu.pk, {"key": "1", "label": "重复", "action": "text", "text": "x"}, actor="t")
    for bad in ({"key": "a", "label": "x", "action": "text", "text": "x"},
                {"key": "5", "label": "x", "action": "live", "live": "weather"},
                {"key": "5", "label": "x", "action": "text", "text": ""},
                {"key": "5", "label": "", "action": "text", "text": "x"},
                {"key": "5", "label": "x", "action": "dance"}):
        with pytest.raises(ValidationError):
            services.create_node(ws, menu.pk, bad, actor="t")
    leaf = menu.nodes.get(key="1", parent=None)
    with pytest.raises(ValidationError):  # a parent must be a submenu
        services.create_node(ws, menu.pk, {"parent": leaf.pk, "key": "1", "label": "x", "action": "text",
                                           "text": "x"}, actor="t")
    sub = menu.nodes.get(key="2", parent=None)
    with pytest.raises(ValidationError):  # cannot turn a submenu with options into a leaf
        services.update_node(ws, sub.pk, {"action": "text", "text": "x"}, actor="t")
    with pytest.raises(ValidationError):  # no cycles
        child = sub.children.first()
        services.update_node(ws, sub.pk, {"parent": child.pk}, actor="t")


def test_another_workspace_cannot_touch_the_menu(ws, other_ws, menu):
    from shequn.core.errors import NotFound

    with pytest.raises(NotFound):
        services.update_menu(other_ws, menu.pk, {"name": "x"}, actor="t")
    with pytest.raises(NotFound):
        services.create_node(other_ws, menu.pk, {"key": "5", "label": "x", "action": "text", "text": "x"}, actor="t")
    node = menu.nodes.first()
    with pytest.raises(NotFound):
        services.delete_node(other_ws, node.pk, actor="t")


# ---------------------------------------------------------------------------------------------
# end to end through the WeChat endpoint


def test_menu_through_the_wechat_endpoint(ws, menu):
    account, path = connect(ws, "safe", reply="收到,稍后回复您。")
    server = WeChatServer(path)
    member_with_history(ws)
    t = int(T0.timestamp())

    def push(text, msg_id, offset):
        response = server.push(text_xml(text, msg_id, create_time=t + offset), encrypt=True)
        return server.reply(response, encrypted=True).content

    assert push("菜单", "26000000000000001", 0).startswith("您好,请回复数字:")
    assert push("2", "26000000000000002", 5).startswith("订单与活动,请选择:")
    assert "桂花乌龙×2" in push("1", "26000000000000003", 10)
    # WeChat retries the message: the same reply, the menu state is not moved again.
    assert "桂花乌龙×2" in push("1", "26000000000000003", 10)
    assert push("*", "26000000000000004", 15).startswith("您好,请回复数字:")
    assert push("0", "26000000000000005", 20) == "正在为您转接人工客服。"
    assert push("随便说点什么", "26000000000000006", 25) == "收到,稍后回复您。"

    rows = {r.external_id: r.properties for r in Interaction.objects.filter(workspace=ws, type="message")}
    assert rows["26000000000000001"]["bot_outcome"] == "answered"
    assert rows["26000000000000001"]["menu"] == menu.pk and rows["26000000000000001"]["bot_source"] == "menu"
    assert rows["26000000000000003"]["bot_outcome"] == "answered" and rows["26000000000000003"]["menu_node"]
    assert rows["26000000000000005"]["bot_outcome"] == "handoff"
    assert rows["26000000000000006"]["bot_outcome"] == "handoff"
    assert rows["26000000000000006"]["bot_source"] == "none"
    assert InboundMessage.objects.filter(account=account).count() == 6
