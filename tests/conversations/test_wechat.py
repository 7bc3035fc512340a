"""Keyword rules answering real WeChat pushes, driven by wechatpy playing WeChat's servers."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from shequn.channels import replies
from shequn.channels.models import InboundMessage
from shequn.channels.wechat import WeChatMessage
from shequn.conversations import services
from shequn.interactions.models import Interaction
from shequn.members.models import MemberTag
from tests.channels.helpers import APP_ID, OPENID, ORIGINAL_ID, WeChatServer, connect, text_xml

DEFAULT = "收到,稍后回复您。"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def sent_at(y, m, d, hh, mm) -> int:
    """CreateTime of a message sent at this Shanghai local time."""
    return int(dt.datetime(y, m, d, hh, mm, tzinfo=SHANGHAI).timestamp())


def voice_xml(recognition: str, msg_id: str) -> str:
    return (f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName>"
            f"<CreateTime>1780000000</CreateTime><MsgType><![CDATA[voice]]></MsgType>"
            f"<MediaId><![CDATA[media1]]></MediaId><Format><![CDATA[amr]]></Format>"
            f"<Recognition><![CDATA[{recognition}]]></Recognition><MsgId>{msg_id}</MsgId></xml>")


@pytest.fixture
def plain(ws):
    account, path = connect(ws, "plaintext", aes_key="", reply=DEFAULT)
    return account, WeChatServer(path)


@pytest.fixture
def safe(ws):
    account, path = connect(ws, "safe", reply=DEFAULT)
    return account, WeChatServer(path)


def test_a_matching_text_message_gets_the_rule_s_reply(ws, plain, make_rule):
    account, server = plain
    rule = make_rule(ws, patterns=["积分", "points"], reply="回复 1 查积分,2 查订单,3 人工客服")
    reply = server.reply(server.push(text_xml("我的积分还有多少?", "25000000000000001")))
    assert (reply.type, reply.content, reply.target, reply.source) == (
        "text", "回复 1 查积分,2 查订单,3 人工客服", OPENID, ORIGINAL_ID)
    stored = InboundMessage.objects.get(account=account, dedup_key="25000000000000001")
    assert (stored.reply_type, stored.reply_content) == ("text", "回复 1 查积分,2 查订单,3 人工客服")
    recorded = Interaction.objects.get(workspace=ws)
    assert recorded.properties["content"] == "我的积分还有多少?"
    assert recorded.properties["auto_reply_rule"] == rule.pk  # which rule answered is on the record

    # No rule matches: the account's default reply, and no rule on the record.
    assert server.reply(server.push(text_xml("你好", "25000000000000002"))).content == DEFAULT
    assert "auto_reply_rule" not in Interaction.objects.get(workspace=ws, external_id="25000000000000002").properties
    # Normalised input: full-width letters and odd spacing.
    assert server.reply(server.push(text_xml("ＰＯＩＮＴＳ　please", "25000000000000003"))).content.startswith("回复 1")
    assert rule.pk


def test_safe_mode_reply_from_a_rule_is_encrypted(ws, safe, make_rule):
    _, server = safe
    make_rule(ws, patterns=["营业时间"], reply="每天 9:00–21:00 营业 <欢迎>]]>光临")
    response = server.push(text_xml("请问营业时间", "25000000000000010"), encrypt=True)
    assert "营业" not in response.content.decode()
    assert server.reply(response, encrypted=True).content == "每天 9:00–21:00 营业 <欢迎>]]>光临"


def test_compute_reply_carries_the_rule_id(ws, plain, make_rule):
    account, _ = plain
    rule = make_rule(ws, patterns=["积分"])
    message = WeChatMessage(to_user=ORIGINAL_ID, from_user=OPENID, create_time=1780000000, msg_type="text",
                            msg_id="1", fields={"Content": "积分"})
    assert replies.compute_reply(account, message) == replies.Reply(
        kind="text", content=rule.reply["content"], rule_id=rule.pk, bot_outcome="answered",
        props=(("bot_source", "rule"),))
    other = WeChatMessage(to_user=ORIGINAL_ID, from_user=OPENID, create_time=1780000000, msg_type="text",
                          msg_id="2", fields={"Content": "hello"})
    # Nothing answers: the default reply, and a person must take over.
    assert replies.compute_reply(account, other) == replies.Reply(kind="text", content=DEFAULT, bot_outcome="handoff",
                                                                  props=(("bot_source", "none"),))


def test_voice_recognition_is_matched(ws, plain, make_rule):
    _, server = plain
    make_rule(ws, patterns=["人工客服"], reply="正在为您转接人工客服")
    assert server.reply(server.push(voice_xml("转人工客服", "25000000000000020"))).content == "正在为您转接人工客服"


def test_opening_hours_by_the_message_s_create_time(ws, plain, make_rule):
    _, server = plain
    weekdays = [{"days": [1, 2, 3, 4, 5], "start": "09:00", "end": "18:00"}]
    make_rule(ws, name="在线", patterns=["客服"], reply="客服在线,请稍候", windows=weekdays, priority=10)
    make_rule(ws, name="下班", patterns=["客服"], reply="现在是非工作时间,我们明早 9 点回复您", windows=weekdays,
              outside_windows=True, priority=10)
    monday_morning = text_xml("客服", "25000000000000030", create_time=sent_at(2026, 6, 1, 10, 15))
    monday_night = text_xml("客服", "25000000000000031", create_time=sent_at(2026, 6, 1, 21, 0))
    sunday = text_xml("客服", "25000000000000032", create_time=sent_at(2026, 6, 7, 11, 0))
    assert server.reply(server.push(monday_morning)).content == "客服在线,请稍候"
    assert server.reply(server.push(monday_night)).content.startswith("现在是非工作时间")
    assert server.reply(server.push(sunday)).content.startswith("现在是非工作时间")


def test_rules_for_another_channel_do_not_answer_on_wechat(ws, plain, make_rule):
    _, server = plain
    make_rule(ws, patterns=["积分"], reply="短信专用", channels=["sms"], priority=1)
    make_rule(ws, patterns=["积分"], reply="微信回复", channels=["wechat"], priority=2)
    assert server.reply(server.push(text_xml("积分", "25000000000000040"))).content == "微信回复"


def test_a_retry_gets_the_stored_reply_even_after_the_rules_change(ws, plain, make_rule):
    _, server = plain
    rule = make_rule(ws, patterns=["积分"], reply="第一版")
    xml = text_xml("积分", "25000000000000050")
    assert server.reply(server.push(xml)).content == "第一版"
    services.update_rule(ws, rule.pk, {"reply": "第二版"}, actor="t")
    assert server.reply(server.push(xml)).content == "第一版"
    assert server.reply(server.push(text_xml("积分", "25000000000000051"))).content == "第二版"
    assert Interaction.objects.filter(workspace=ws).count() == 2


def test_the_rule_s_tag_is_applied_once_after_commit(ws, plain, make_rule, django_capture_on_commit_callbacks):
    _, server = plain
    make_rule(ws, patterns=["新品"], reply="本周新品:桂花乌龙", tag="关注新品")
    xml = text_xml("有新品吗", "25000000000000060")
    with override_settings(TASKS={"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}):
        with django_capture_on_commit_callbacks(execute=True):
            assert server.reply(server.push(xml)).content == "本周新品:桂花乌龙"
        with django_capture_on_commit_callbacks(execute=True) as retry_callbacks:
            server.push(xml)  # WeChat's retry: replayed, nothing enqueued again
    assert retry_callbacks == []
    member = Interaction.objects.get(workspace=ws).member
    assert list(MemberTag.objects.filter(member=member).values_list("tag__name", flat=True)) == ["关注新品"]


def test_a_pathological_regex_rule_cannot_stall_the_endpoint(ws, plain, make_rule):
    _, server = plain
    make_rule(ws, match_type="regex", patterns=[r"(a+)+$", r"^(a|aa)+$"], reply="全是 a", priority=1)
    make_rule(ws, patterns=["b"], reply="有 b", priority=2)
    start = time.perf_counter()
    reply = server.reply(server.push(text_xml("a" * 1999 + "b", "25000000000000070")))
    assert time.perf_counter() - start < 1.0  # a backtracking engine would need longer than the universe's age
    assert reply.content == "有 b"
    assert server.reply(server.push(text_xml("a" * 500, "25000000000000071"))).content == "全是 a"


def test_another_workspace_s_rules_never_answer(ws, other_ws, plain, make_rule):
    _, server = plain
    make_rule(other_ws, patterns=["积分"], reply="别家的回复", priority=0)
    assert server.reply(server.push(text_xml("积分", "25000000000000080"))).content == DEFAULT
    make_rule(ws, patterns=["积分"], reply="自家的回复", priority=500)
    assert server.reply(server.push(text_xml("积分", "25000000000000081"))).content == "自家的回复"


def test_the_bot_adds_one_query_per_message_once_compiled(ws, plain, make_rule):
    _, server = plain
    services.import_rules(ws, [{"name": f"r{i}", "match_type": "contains", "patterns": [f"词{i}"],
                                "reply": f"答{i}"} for i in range(300)], actor="t")
    server.push(text_xml("词7", "25000000000000090"))  # compiles
    with CaptureQueriesContext(connection) as ctx:
        assert server.reply(server.push(text_xml("你好 词9 词7", "25000000000000091"), record=False)).content == "答7"
    ours = [q["sql"] for q in ctx.captured_queries if "conversations_" in q["sql"]]
    assert len(ours) == 1 and "conversations_rulesetversion" in ours[0]
    assert APP_ID
