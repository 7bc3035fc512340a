"""On PostgreSQL a message whose reply wrote nothing is stored by one statement outside any
transaction (``core.tasks.single_statement_suffices``): no ``BEGIN``/``COMMIT`` round trips, the
message and its recording task still stored together, a redelivery still answered once."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django_tasks_db.models import DBTaskResult

from shequn.channels.models import InboundMessage
from shequn.conversations import services as conversations
from shequn.core import tasks as core_tasks

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
    real = core_tasks.single_statement_suffices

    def spy() -> bool:
        seen.append(real())
        return seen[-1]

    monkeypatch.setattr(core_tasks, "single_statement_suffices", spy)
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
    tasks = DBTaskResult.objects.filter(task_path="shequn.channels.tasks.record_inbound",
                                        args_kwargs__args=[stored.pk])
    assert tasks.count() == 1


def test_the_check_says_no_once_anything_was_sent_or_is_due_on_commit(ws):
    with transaction.atomic():
        assert core_tasks.single_statement_suffices()
        with transaction.atomic():  # a savepoint would hold the write
            assert not core_tasks.single_statement_suffices()
    with transaction.atomic():
        transaction.on_commit(lambda: None)
        assert not core_tasks.single_statement_suffices()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert not core_tasks.single_statement_suffices()
    assert not core_tasks.single_statement_suffices()  # not in a block of the caller's
