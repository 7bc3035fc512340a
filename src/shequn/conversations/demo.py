"""Demo data of the bot: the service menu (IVR), keyword rules with opening hours, event bookings the
menu can answer with, and one past outage (外卖小程序故障)."""

from __future__ import annotations

import datetime as dt
import random

from shequn.core.models import Workspace
from shequn.core.tenancy import scoped

from . import services

ACTOR = "demo"
HOURS = [{"days": [1, 2, 3, 4, 5, 6, 7], "start": "09:00", "end": "21:00"}]


def seed_demo(workspace: Workspace, rng: random.Random, now: dt.datetime) -> None:
    """Add the bot's configuration and a few event bookings to the demo workspace (deterministic)."""
    _rules(workspace)
    _menu(workspace)
    _bookings(workspace, rng, now)
    _past_incident(workspace, now)


def _rules(workspace: Workspace) -> None:
    services.import_rules(workspace, [
        {"name": "营业时间", "match_type": "contains", "patterns": ["营业时间", "几点开门", "几点关门", "开门"],
         "reply": "茶语各门店每天 9:00–21:00 营业,外卖 10:00–20:30。回复「菜单」查看更多服务。", "priority": 20},
        {"name": "人工客服(营业中)", "match_type": "contains", "patterns": ["人工", "客服"],
         "reply": "客服小茶在线,请直接留言,我们马上回复您。", "windows": HOURS, "priority": 10},
        {"name": "人工客服(已打烊)", "match_type": "contains", "patterns": ["人工", "客服"],
         "reply": "现在是非营业时间,您的留言我们会在明早 9 点后第一时间回复。", "windows": HOURS,
         "outside_windows": True, "priority": 10},
        {"name": "会员积分", "match_type": "contains", "patterns": ["积分", "会员卡", "成长值"],
         "reply": "回复「菜单」再回复 1 即可查询积分;每消费 1 元得 1 积分,100 积分可抵 1 元。", "priority": 50},
        {"name": "新品", "match_type": "contains", "patterns": ["新品", "上新", "新款"],
         "reply": "本周新品:桂花乌龙、杨枝甘露 2.0,门店和小程序同步上架~", "priority": 60, "tag": "关注新品"},
        {"name": "订单号查询", "match_type": "regex", "patterns": [r"^(订单|单号)\s*\d{6,}$"],
         "reply": "已收到您的订单号,客服会核实后回复您。", "priority": 30},
        {"name": "打招呼", "match_type": "exact", "patterns": ["你好", "您好", "hi", "hello", "在吗"],
         "reply": "您好,这里是茶语~ 回复「菜单」查积分、查券、查订单和活动预约。", "priority": 90},
    ], actor=ACTOR)


def _menu(workspace: Workspace) -> None:
    menu = services.create_menu(workspace, {
        "name": "茶语服务菜单", "triggers": ["菜单", "menu", "服务"],
        "prompt": "您好,欢迎来到茶语!请回复数字:",
        "handoff_text": "正在为您转接人工客服,请稍候~(营业时间 9:00–21:00)", "timeout_seconds": 300}, actor=ACTOR)
    for data in (
        {"key": "1", "label": "查积分", "action": "live", "live": "points"},
        {"key": "2", "label": "查券", "action": "live", "live": "coupons"},
        {"key": "3", "label": "最近订单", "action": "live", "live": "latest_purchase"},
        {"key": "4", "label": "活动预约", "action": "live", "live": "booking"},
        {"key": "0", "label": "人工客服", "action": "handoff"},
    ):
        services.create_node(workspace, menu.pk, data, actor=ACTOR)
    more = services.create_node(workspace, menu.pk, {"key": "5", "label": "门店与营业时间", "action": "submenu",
                                                     "text": "门店信息,请回复数字:"}, actor=ACTOR)
    services.create_node(workspace, menu.pk, {"parent": more.pk, "key": "1", "label": "营业时间", "action": "text",
                                              "text": "每天 9:00–21:00,外卖 10:00–20:30。"}, actor=ACTOR)
    services.create_node(workspace, menu.pk, {"parent": more.pk, "key": "2", "label": "门店地址", "action": "text",
                                              "text": "静安店:南京西路 1266 号;徐汇店:天钥桥路 133 号;"
                                                      "浦东店:世纪大道 8 号。"}, actor=ACTOR)


def _bookings(workspace: Workspace, rng: random.Random, now: dt.datetime) -> None:
    """Bookings of the next tasting events (interaction type ``custom``, ``properties.kind = "booking"``)."""
    from shequn.interactions import services as interactions
    from shequn.members.models import Member

    ids = list(scoped(Member, workspace).order_by("pk").values_list("pk", flat=True)[:2000])
    if not ids:
        return
    events = [("新品试饮会 · 静安店", 3, "静安店"), ("手作茶饮课堂", 8, "徐汇店"), ("会员日品鉴会", 12, "浦东店")]
    rows = []
    for n, member_id in enumerate(sorted(rng.sample(ids, min(60, len(ids))))):
        name, days, place = events[n % len(events)]
        event_at = (now + dt.timedelta(days=days)).replace(hour=6, minute=0, second=0, microsecond=0)
        booked_at = now - dt.timedelta(days=rng.randint(1, 10), minutes=rng.randint(0, 600))
        rows.append({"member_id": member_id, "type": "custom", "channel": "miniprogram", "source": "events",
                     "external_id": f"booking-{member_id}-{days}", "occurred_at": booked_at,
                     "properties": {"kind": "booking", "event": name, "event_at": event_at.isoformat(),
                                    "place": place, "seats": rng.choice((1, 1, 2))}})
    interactions.ingest_batch(workspace, rows, actor=ACTOR)


def _past_incident(workspace: Workspace, now: dt.datetime) -> None:
    start = (now - dt.timedelta(days=18)).replace(hour=4, minute=10, second=0, microsecond=0)
    incident = services.declare_incident(workspace, {
        "title": "外卖小程序故障", "keywords": ["小程序", "下单失败", "付不了款", "外卖"],
        "reply": "抱歉!茶语外卖小程序暂时无法下单,工程师正在抢修,预计 1 小时内恢复。期间可到店购买或使用美团外卖。",
        "starts_at": start}, actor=ACTOR)
    services.end_incident(workspace, incident.pk, actor=ACTOR, at=start + dt.timedelta(hours=1, minutes=25))
