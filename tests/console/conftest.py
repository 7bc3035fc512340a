"""Console fixtures: staff of every role in workspace ``ws`` ("tea"), an owner of ``other_ws``
("phone"), and a small but real data set built through the services."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from shequn.core import services as core
from shequn.interactions import services as interactions
from shequn.members import services as members

PASSWORD = "console-test-pw-1"  # noqa: S105


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff(ws, other_ws) -> dict[str, Any]:
    users = {}
    for role in ("owner", "operator", "agent", "clerk"):
        user = core.ensure_user(f"{role}-tea", PASSWORD)
        core.add_staff(ws, user, role)
        users[role] = user
    outsider = core.ensure_user("owner-phone", PASSWORD)
    core.add_staff(other_ws, outsider, "owner")
    users["outsider"] = outsider
    users["nobody"] = core.ensure_user("nobody", PASSWORD)
    return users


def login(user: Any) -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
    client.force_login(user)
    return client


@pytest.fixture
def owner(staff) -> Client:
    return login(staff["owner"])


@pytest.fixture
def operator(staff) -> Client:
    return login(staff["operator"])


@pytest.fixture
def agent(staff) -> Client:
    return login(staff["agent"])


@pytest.fixture
def clerk(staff) -> Client:
    return login(staff["clerk"])


@pytest.fixture
def outsider(staff) -> Client:
    return login(staff["outsider"])


@dataclass
class Data:
    wang: Any
    li: Any
    zhao: Any
    foreign: Any
    ids: dict[str, int] = field(default_factory=dict)


def build_data(ws, other_ws) -> Data:
    """Three members in ``ws`` with tags, keywords, attributes, touchpoints and interactions, and
    one member in ``other_ws``."""
    now = timezone.now()
    actor = "test"
    interactions.save_touchpoint(ws, "wx-menu", {"name": "公众号菜单", "channel": "wechat", "function": "service",
                                                 "importance": 4, "complexity": 2}, actor=actor)
    interactions.save_touchpoint(ws, "store-counter", {"name": "门店收银台", "channel": "store", "function": "sales",
                                                       "importance": 5, "complexity": 4}, actor=actor)
    interactions.save_touchpoint(ws, "hotline", {"name": "客服热线", "channel": "phone", "importance": 2,
                                                 "complexity": 3}, actor=actor)
    members.define_attribute(ws, "vip_level", "会员等级", "number", actor=actor)

    wang = members.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}],
                                 {"display_name": "王小明", "city": "杭州", "source_channel": "wechat"},
                                 {"vip_level": 3}).member
    li = members.upsert_member(ws, [{"kind": "email", "value": "li.na@example.com"}],
                               {"display_name": "李娜", "source_channel": "store"}).member
    zhao = members.upsert_member(ws, [{"kind": "wechat_openid", "value": "oZHAO", "namespace": "wx1"}],
                                 {"display_name": "赵云"}, referrer=wang).member
    members.add_tags(ws, wang.pk, ["VIP", "奶茶控"], actor=actor)
    members.add_tags(ws, li.pk, ["奶茶控"], actor=actor)
    members.add_keywords(ws, wang.pk, ["饮品/奶茶"], actor=actor)
    members.add_keywords(ws, zhao.pk, ["饮品/咖啡"], actor=actor)

    def at(days: float) -> str:
        return (now - dt.timedelta(days=days)).isoformat()

    events = [
        {"member_id": wang.pk, "type": "follow", "channel": "wechat", "occurred_at": at(40), "touchpoint": "wx-menu"},
        {"member_id": wang.pk, "type": "message", "channel": "wechat", "occurred_at": at(28), "touchpoint": "wx-menu",
         "properties": {"text": "有新品吗？"}},
        {"member_id": wang.pk, "type": "message", "channel": "wechat", "direction": "out", "occurred_at": at(27),
         "touchpoint": "wx-menu", "properties": {"text": "本周上新：桂花乌龙"}},
        {"member_id": wang.pk, "type": "purchase", "channel": "store", "occurred_at": at(20), "amount": "28.00",
         "currency": "CNY", "touchpoint": "store-counter", "source": "pos", "external_id": "o-1"},
        {"member_id": wang.pk, "type": "review", "channel": "store", "occurred_at": at(19), "touchpoint": "store-counter",
         "properties": {"rating": 1}},
        {"member_id": li.pk, "type": "support_contact", "channel": "store", "occurred_at": at(10),
         "touchpoint": "store-counter", "properties": {"complaint": True}},
        {"member_id": li.pk, "type": "visit", "channel": "store", "occurred_at": at(9), "touchpoint": "store-counter"},
        {"member_id": zhao.pk, "type": "scan", "channel": "wechat", "occurred_at": at(5), "touchpoint": "hotline",
         "properties": {"sentiment": "positive"}},
    ]
    results = interactions.ingest_batch(ws, events, actor=actor)
    assert all(r.status == "created" for r in results), results

    foreign = members.upsert_member(other_ws, [{"kind": "phone", "value": "13900139000"}],
                                    {"display_name": "外部会员"}).member
    members.add_tags(other_ws, foreign.pk, ["VIP"], actor=actor)
    for m in (wang, li, zhao, foreign):
        m.refresh_from_db()
    return Data(wang=wang, li=li, zhao=zhao, foreign=foreign)


@pytest.fixture
def data(ws, other_ws) -> Data:
    return build_data(ws, other_ws)
