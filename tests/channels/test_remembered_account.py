"""A message is answered from the account as this process last read it, and the
message's insert confirms that account is still current — its row and its workspace's row not
updated since (PostgreSQL: the same ``xmin``; SQLite: the same values), the same settings versions
— or inserts nothing, and the message is answered
again from a fresh read (``queries.remembered_account``, ADR 0005). Edits here are made by "another
process": plain ``UPDATE`` statements in transactions of their own, which send no signals."""

from __future__ import annotations

import pytest

from shequn.channels import queries, services
from shequn.channels.models import InboundMessage, WeChatAccount
from shequn.channels.wechat import message_from_fields, parse_xml
from shequn.conversations import services as conversations

from .helpers import WeChatServer, connect, text_xml

pytestmark = pytest.mark.django_db(transaction=True)

NEW_TOKEN = "rotatedToken2026"


@pytest.fixture
def setup(ws):
    account, path = connect(ws, "safe", reply="收到")
    conversations.create_rule(ws, {"name": "奶茶", "match_type": "contains", "patterns": ["奶茶"],
                                   "reply": "今日奶茶第二杯半价"}, actor="test")
    return account, WeChatServer(path)


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The endpoint keys read from the database (``account_for_message``), in order."""
    seen: list[str] = []
    real = queries.account_for_message

    def spy(endpoint_key: str, **kwargs):
        seen.append(endpoint_key)
        return real(endpoint_key, **kwargs)

    monkeypatch.setattr(queries, "account_for_message", spy)
    return seen


def _say(server: WeChatServer, text: str, msg_id: str):
    response = server.push(text_xml(text, msg_id=msg_id), encrypt=True, record=False)
    return response, (server.reply(response, encrypted=True) if response.status_code == 200 else None)


def test_messages_after_the_first_are_answered_without_reading_the_account(setup, reads):
    account, server = setup
    for i in range(4):
        _response, reply = _say(server, "我要奶茶", f"90{i}")
        assert reply.content == "今日奶茶第二杯半价"
    assert reads == [account.endpoint_key]  # the first message's read only
    assert InboundMessage.objects.filter(account=account).count() == 4


def test_a_token_rotated_elsewhere_is_used_at_once_and_the_old_one_refused(setup, reads):
    account, server = setup
    _say(server, "你好", "1001")
    WeChatAccount.objects.filter(pk=account.pk).update(token=NEW_TOKEN)

    old = _say(server, "你好", "1002")[0]
    assert old.status_code == 403, old.content
    assert not InboundMessage.objects.filter(dedup_key="1002").exists()

    rotated = WeChatServer(server.path, token=NEW_TOKEN)
    response, reply = _say(rotated, "我要奶茶", "1003")
    assert response.status_code == 200 and reply.content == "今日奶茶第二杯半价"
    assert InboundMessage.objects.filter(dedup_key="1003").count() == 1
    # and the request signed with the old token, sent again after the rotation was read, stays refused
    assert _say(server, "你好", "1004")[0].status_code == 403
    assert not InboundMessage.objects.filter(dedup_key__in=["1002", "1004"]).exists()


def test_an_account_setting_changed_elsewhere_answers_the_next_message(setup, reads):
    account, server = setup
    assert _say(server, "随便问问", "2001")[1].content == "收到"
    WeChatAccount.objects.filter(pk=account.pk).update(reply_text="客服稍后联系您")
    assert _say(server, "随便问问", "2002")[1].content == "客服稍后联系您"
    stored = InboundMessage.objects.get(dedup_key="2002")
    assert stored.reply_content == "客服稍后联系您"
    assert reads == [account.endpoint_key] * 2  # the refused insert led to one fresh read
    assert _say(server, "随便问问", "2003")[1].content == "客服稍后联系您"
    assert reads == [account.endpoint_key] * 2  # remembered again from that read


def test_a_rule_added_elsewhere_answers_the_next_message(setup, reads, ws):
    """The rule's edit changes the workspace's settings version (not the account row): the insert's
    condition compares the versions too."""
    _account, server = setup
    assert _say(server, "咖啡有吗", "3001")[1].content == "收到"
    remembered = len(reads)
    conversations.create_rule(ws, {"name": "咖啡", "match_type": "contains", "patterns": ["咖啡"],
                                   "reply": "咖啡买一送一"}, actor="elsewhere")
    assert _say(server, "咖啡有吗", "3003")[1].content == "咖啡买一送一"
    assert len(reads) == remembered + 1


def test_a_redelivery_answered_from_a_remembered_account_replays_the_stored_reply(setup, reads):
    account, server = setup
    first = _say(server, "我要奶茶", "4001")[1]
    for _retry in range(3):
        assert _say(server, "我要奶茶", "4001")[1].content == first.content
    assert InboundMessage.objects.filter(account=account, dedup_key="4001").count() == 1


def test_an_account_deleted_elsewhere_answers_404_and_stores_nothing(setup, reads):
    account, server = setup
    _say(server, "你好", "5001")
    WeChatAccount.objects.filter(pk=account.pk).delete()
    response = _say(server, "你好", "5002")[0]
    assert response.status_code == 404
    assert not InboundMessage.objects.filter(dedup_key="5002").exists()
    assert queries.remembered_account(account.endpoint_key) is None


def test_a_remembered_account_is_read_again_after_a_while(setup, reads, monkeypatch):
    account, server = setup
    monkeypatch.setattr(queries, "REMEMBER_FOR", -1.0)  # already expired when remembered
    for i in range(3):
        _say(server, "你好", f"600{i}")
    assert reads == [account.endpoint_key] * 3


def test_an_unconfirmed_answer_writes_nothing(setup, ws):
    account, server = setup
    _say(server, "你好", "7001")
    remembered = queries.remembered_account(account.endpoint_key)
    WeChatAccount.objects.filter(pk=account.pk).update(welcome_text="欢迎回来")
    message = message_from_fields(parse_xml(text_xml("我要奶茶", msg_id="7002").encode()))
    with pytest.raises(services.Unconfirmed):
        services.receive_message(remembered.account, message, confirm=remembered.confirm)
    assert not InboundMessage.objects.filter(dedup_key="7002").exists()
    # a stored message is not replayed from an unconfirmed account either: the fresh read does that
    fresh = queries.account_for_message(account.endpoint_key)
    services.receive_message(fresh, message)
    again = queries.remembered_account(account.endpoint_key)
    with pytest.raises(services.Unconfirmed):
        services.receive_message(again.account, message, confirm=again.confirm)
    assert InboundMessage.objects.filter(dedup_key="7002").count() == 1

