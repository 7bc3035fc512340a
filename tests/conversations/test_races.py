"""Menu state under WeChat's concurrent retries and a member typing fast, on PostgreSQL with real
threads (ADR 0014)."""

from __future__ import annotations

import datetime as dt

import pytest

from shequn.conversations import services
from shequn.conversations.models import MenuSession
from shequn.core import services as core
from tests.channels.helpers import WeChatServer, connect, text_xml
from tests.threads import run_threads

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

T = int(dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC).timestamp())


def _menu(ws):
    menu = services.create_menu(ws, {"name": "m", "triggers": ["菜单"], "prompt": "请选择:"}, actor="t")
    sub = services.create_node(ws, menu.pk, {"key": "1", "label": "子菜单", "action": "submenu", "text": "子菜单:"},
                               actor="t")
    services.create_node(ws, menu.pk, {"parent": sub.pk, "key": "1", "label": "答案", "action": "text",
                                       "text": "深处的答案"}, actor="t")
    return menu, sub


def test_concurrent_retries_of_a_menu_choice_move_the_menu_once():
    ws = core.create_workspace("menu-race", "Race")
    _, path = connect(ws, "safe", reply="收到")
    menu, sub = _menu(ws)
    server = WeChatServer(path)
    assert server.reply(server.push(text_xml("菜单", "28000000000000001", create_time=T), encrypt=True),
                        encrypted=True).content.startswith("请选择:")
    xml = text_xml("1", "28000000000000002", create_time=T + 5)

    def deliver(i):
        s = WeChatServer(path)
        return s.reply(s.push(xml, encrypt=True), encrypted=True).content

    replies = run_threads(6, deliver)
    assert len(set(replies)) == 1 and replies[0].startswith("子菜单:")
    session = MenuSession.objects.get(workspace=ws)
    assert session.node_id == sub.pk  # moved once: not into "1" of the submenu
    assert server.reply(server.push(text_xml("1", "28000000000000003", create_time=T + 9), encrypt=True),
                        encrypted=True).content == "深处的答案"


def test_first_menu_messages_of_one_member_at_once_leave_one_session():
    ws = core.create_workspace("menu-race-2", "Race")
    _, path = connect(ws, "safe", reply="收到")
    _menu(ws)

    def deliver(i):
        s = WeChatServer(path)
        return s.reply(s.push(text_xml("菜单", f"2800000000000010{i}", create_time=T + i), encrypt=True),
                       encrypted=True).content

    replies = run_threads(4, deliver)
    assert all(r.startswith("请选择:") for r in replies)
    assert MenuSession.objects.filter(workspace=ws).count() == 1
