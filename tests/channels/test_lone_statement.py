"""On PostgreSQL a message whose reply wrote nothing is stored by one statement outside any
transaction (``core.inserts.single_statement_suffices``): no ``BEGIN``/``COMMIT`` round trips, the
stored message waiting for the drains (no task row), a redelivery still answered once."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django_tasks_db.models import DBTaskResult

from shequn.channels.models import InboundMessage
from shequn.conversations import services as conversations
from shequn.core import inserts as core_inserts

from .helpers import WeChatServer, connect, text_xml

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server(ws):
    _account, path = connect(ws, "safe", reply="收到")
    conversations.create_rule(ws, {"name": "奶茶", "match_type": "contains", "patterns": ["奶茶"],
                                   "reply": "今日奶茶第二杯半价"}, actor="test")
    return WeChatServer(path)


def _spy(monkeypatch) -> list[bool]:
    seen: list[bool] = []
    real = core_inserts.single_statement_suffices

    def spy() -> bool:
        seen.append(real())
        return seen[-1]

    monkeypatch.setattr(core_inserts, "single_statement_suffices", spy)
    return seen


def test_a_keyword_reply_is_stored_by_one_statement_and_a_redelivery_replays_it(server, monkeypatch):
    server.push(text_xml("你好", msg_id="1"), encrypt=True, record=False)  # caches warm, follower known
    seen = _spy(monkeypatch)
    query = server.query()
    first = server.reply(server.push(text_xml("我要奶茶", msg_id="2"), encrypt=True, query=dict(query), record=False),
                         encrypted=True)
    assert first.content == "今日奶茶第二杯半价" and seen == [True]
    again = server.reply(server.push(text_xml("我要奶茶", msg_id="2"), encrypt=True, query=dict(query), record=False),
                         encrypted=True)
    assert again.content == first.content
    [stored] = InboundMessage.objects.filter(dedup_key="2")
    assert (stored.recorded_at, stored.record_error) == (None, ""), "waiting for a drain"
    assert not DBTaskResult.objects.filter(task_path__startswith="shequn.channels").exists(), "no task row"


def test_the_check_says_no_once_anything_was_sent_or_is_due_on_commit(ws):
    with transaction.atomic():
        assert core_inserts.single_statement_suffices()
        with transaction.atomic():  # a savepoint would hold the write
            assert not core_inserts.single_statement_suffices()
    with transaction.atomic():
        transaction.on_commit(lambda: None)
        assert not core_inserts.single_statement_suffices()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert not core_inserts.single_statement_suffices()
    assert not core_inserts.single_statement_suffices()  # not in a block of the caller's


def test_the_reply_is_rendered_while_its_message_is_stored_and_a_redelivery_renders_the_stored_one(server,
                                                                                                monkeypatch):
    from shequn.channels import services as channel_services
    from shequn.channels import views

    server.push(text_xml("你好", msg_id="1"), encrypt=True, record=False)  # caches warm, follower known
    made: list[bool] = []
    real_receive = channel_services.receive_message

    def receive(*args, **kwargs):
        processed = real_receive(*args, **kwargs)
        made.append(processed.made is not None)
        return processed

    rendered: list[str] = []
    real_xml = views._reply_xml

    def reply_xml(*args, **kwargs):
        rendered.append(real_xml(*args, **kwargs))
        return rendered[-1]

    monkeypatch.setattr(channel_services, "receive_message", receive)
    monkeypatch.setattr(views, "_reply_xml", reply_xml)
    query = server.query()
    response = server.push(text_xml("我要奶茶", msg_id="2"), encrypt=True, query=dict(query), record=False)
    assert made == [True] and response.content.decode() == rendered[0]
    assert server.reply(response, encrypted=True).content == "今日奶茶第二杯半价"
    again = server.push(text_xml("我要奶茶", msg_id="2"), encrypt=True, query=dict(query), record=False)
    assert made[-1] is False, "a redelivery is answered from the stored reply, rendered after"
    assert server.reply(again, encrypted=True).content == "今日奶茶第二杯半价"
