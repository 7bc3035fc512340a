"""Incidents (outage notices): the incident reply wins while active, and affected members are told
once each."""

from __future__ import annotations

import datetime as dt
import sys
import types

import pytest
from django.test.utils import override_settings

from shequn.conversations import services
from shequn.conversations.models import IncidentNotification, NotificationStatus
from shequn.core.errors import Conflict, NotFound, ValidationError
from shequn.members import services as members
from tests.channels.helpers import APP_ID, OPENID, WeChatServer, connect, text_xml

T0 = dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC)
IDENT = {"kind": "wechat_openid", "namespace": APP_ID, "value": OPENID}
OUTAGE = {"title": "外卖小程序故障", "keywords": ["小程序", "下单失败", "打不开"],
          "reply": "外卖小程序暂时无法下单,工程师正在抢修,预计 30 分钟内恢复。", "starts_at": T0}


def say(ws, text, at=T0 + dt.timedelta(minutes=1)):
    return services.answer(ws, text, channel="wechat", identity=IDENT, at=at)


class FakeOutbound:
    """Stands in for shequn.outbound.services (built in parallel): records send_text calls and, like
    the real outbox, stores one message per key."""

    def __init__(self):
        self.calls = []
        self.keys = set()

    def send_text(self, workspace, member_id, text, *, purpose, actor, channel=None, key=None):
        self.calls.append((workspace.pk, member_id, text, purpose, key))
        self.keys.add(key)
        return types.SimpleNamespace(id=len(self.calls))


@pytest.fixture
def outbound(monkeypatch):
    fake = FakeOutbound()
    module = types.ModuleType("shequn.outbound.services")
    module.send_text = fake.send_text
    monkeypatch.setitem(sys.modules, "shequn.outbound.services", module)
    return fake


def test_an_active_incident_answers_matching_messages_first(ws, make_rule):
    make_rule(ws, patterns=["小程序"], reply="小程序使用指南", priority=0)
    incident = services.declare_incident(ws, OUTAGE, actor="t")
    a = say(ws, "小程序打不开了!")
    assert (a.source, a.outcome, a.incident_id, a.content) == ("incident", "answered", incident.pk, OUTAGE["reply"])
    assert say(ws, "ＸＹＺ下单失败").source == "incident"  # normalised
    assert say(ws, "积分多少").source == "none"  # not about the outage
    assert say(ws, "小程序", at=T0 - dt.timedelta(minutes=1)).source == "rule"  # before it started
    services.end_incident(ws, incident.pk, actor="t")
    assert say(ws, "小程序打不开了!").content == "小程序使用指南"


def test_an_incident_without_keywords_answers_everything_until_its_planned_end(ws):
    services.declare_incident(ws, {"title": "全线故障", "reply": "系统维护中", "starts_at": T0,
                                   "ends_at": T0 + dt.timedelta(hours=1)}, actor="t")
    assert say(ws, "你好").content == "系统维护中"
    assert say(ws, "你好", at=T0 + dt.timedelta(hours=1)).source == "none"


def test_the_latest_incident_wins_and_hooks_come_before(ws, monkeypatch):
    services.declare_incident(ws, {**OUTAGE, "reply": "旧的"}, actor="t")
    services.declare_incident(ws, {**OUTAGE, "reply": "新的", "starts_at": T0 + dt.timedelta(seconds=1)}, actor="t")
    assert say(ws, "小程序").content == "新的"
    monkeypatch.setattr(services, "REPLY_HOOKS", [lambda w, m, t, at: services.Answer(content="hook")])
    assert say(ws, "小程序").content == "hook"


def test_incident_reply_through_the_wechat_endpoint(ws):
    _, path = connect(ws, "plaintext", aes_key="", reply="收到")
    server = WeChatServer(path)
    incident = services.declare_incident(ws, {**OUTAGE, "starts_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
                                         actor="t")
    reply = server.reply(server.push(text_xml("小程序下单失败怎么办", "27000000000000001")))
    assert reply.content == OUTAGE["reply"]
    from shequn.interactions.models import Interaction

    props = Interaction.objects.get(workspace=ws).properties
    assert (props["bot_outcome"], props["bot_source"], props["incident"]) == ("answered", "incident", incident.pk)


def test_incident_validation_and_isolation(ws, other_ws):
    with pytest.raises(ValidationError):
        services.declare_incident(ws, {"title": "", "reply": "x"}, actor="t")
    with pytest.raises(ValidationError):
        services.declare_incident(ws, {"title": "x", "reply": ""}, actor="t")
    with pytest.raises(ValidationError):
        services.declare_incident(ws, {"title": "x", "reply": "y", "starts_at": T0, "ends_at": T0}, actor="t")
    with pytest.raises(ValidationError):
        services.declare_incident(ws, {"title": "x", "reply": "y", "starts_at": "2026-06-01 10:00"}, actor="t")
    incident = services.declare_incident(ws, OUTAGE, actor="t")
    with pytest.raises(NotFound):
        services.end_incident(other_ws, incident.pk, actor="t")
    assert services.answer(other_ws, "小程序", channel="wechat", at=T0 + dt.timedelta(minutes=1)).source == "none"


def _members(ws, n, tag=None):
    ids = []
    for i in range(n):
        result = members.upsert_member(ws, [{"kind": "phone", "value": f"+86138000{i:05d}"}], actor="t")
        ids.append(result.member.pk)
        if tag:
            members.add_tags(ws, result.member.pk, [tag], actor="t")
    return ids


def test_notify_a_segment_in_batches_once_per_member(ws, outbound, django_capture_on_commit_callbacks):
    tagged = _members(ws, 7, tag="外卖用户")
    _members(ws, 3)
    incident = services.declare_incident(ws, OUTAGE, actor="t")
    with override_settings(TASKS={"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}):
        with django_capture_on_commit_callbacks(execute=True):
            row = services.notify_incident(ws, incident.pk, {"filter": {"tag": "外卖用户"}}, actor="user:1")
    row.refresh_from_db()
    assert (row.status, row.total, row.processed) == (NotificationStatus.DONE, 7, 7)
    assert sorted(c[1] for c in outbound.calls) == sorted(tagged)
    assert {c[3] for c in outbound.calls} == {"incident"}
    assert outbound.keys == {f"incident:{incident.pk}:{m}" for m in tagged}
    # Notifying again (or a rerun of the task) sends with the same keys: the outbox stores each once.
    again = services.notify_incident(ws, incident.pk, {"filter": {"tag": "外卖用户"}}, actor="user:1",
                                     text="更新:已恢复一半门店")
    services.run_notification(ws, again.pk, batch=3)
    assert len(outbound.keys) == 7
    assert services.run_notification(ws, again.pk).processed == 7  # done: a rerun does nothing


def test_notification_progress_and_resume(ws, outbound):
    ids = _members(ws, 5)
    incident = services.declare_incident(ws, OUTAGE, actor="t")
    row = services.notify_incident(ws, incident.pk, {"member_ids": ids[:4]}, actor="t")
    assert (row.status, row.total, row.processed) == (NotificationStatus.QUEUED, 4, 0)

    class Boom(Exception):
        pass

    sent = []

    def flaky(workspace, member_id, text, **kw):
        if len(sent) == 3:
            raise Boom
        sent.append(member_id)
        outbound.send_text(workspace, member_id, text, **kw)

    sys.modules["shequn.outbound.services"].send_text = flaky
    with pytest.raises(Boom):
        services.run_notification(ws, row.pk, batch=2)
    row.refresh_from_db()
    assert (row.status, row.processed, row.cursor) == (NotificationStatus.RUNNING, 2, ids[1])  # one batch committed
    sys.modules["shequn.outbound.services"].send_text = outbound.send_text
    done = services.run_notification(ws, row.pk, batch=2)
    assert (done.status, done.processed) == (NotificationStatus.DONE, 4)
    assert outbound.keys == {f"incident:{incident.pk}:{m}" for m in ids[:4]}


def test_notify_by_phone_list_and_target_validation(ws, outbound):
    ids = _members(ws, 2)
    incident = services.declare_incident(ws, OUTAGE, actor="t")
    row = services.notify_incident(ws, incident.pk, {"phones": ["13800000000", "+8613800000001", "13999999999"]},
                                   actor="t")
    assert row.target == {"member_ids": sorted(ids), "unknown_phones": ["13999999999"]} and row.total == 2
    for bad in ({}, {"filter": {}}, {"filter": {"colour": "red"}}, {"member_ids": []}, {"member_ids": ["x"]},
                {"segment": 1}):
        with pytest.raises(ValidationError):
            services.notify_incident(ws, incident.pk, bad, actor="t")


def test_cannot_notify_an_ended_incident_or_without_outbound(ws, monkeypatch):
    incident = services.declare_incident(ws, OUTAGE, actor="t")
    monkeypatch.setitem(sys.modules, "shequn.outbound.services", None)  # the module is absent
    with pytest.raises(Conflict) as e:
        services.notify_incident(ws, incident.pk, {"member_ids": [1]}, actor="t")
    assert e.value.code == "outbound_unavailable"
    services.end_incident(ws, incident.pk, actor="t")
    with pytest.raises(Conflict):
        services.notify_incident(ws, incident.pk, {"member_ids": [1]}, actor="t")
    assert not IncidentNotification.objects.exists()


def test_notify_through_the_real_outbox_is_idempotent(ws):
    """With shequn.outbound installed: one outbox message per member and incident, however often."""
    pytest.importorskip("shequn.outbound.services")
    from shequn.outbound.models import OutboundMessage

    ids = _members(ws, 3, tag="外卖用户")
    incident = services.declare_incident(ws, OUTAGE, actor="t")
    for _ in range(2):
        row = services.notify_incident(ws, incident.pk, {"filter": {"tag": "外卖用户"}}, actor="t")
        assert services.run_notification(ws, row.pk).status == NotificationStatus.DONE
    sent = OutboundMessage.objects.filter(workspace=ws, purpose="incident")
    assert sorted(sent.values_list("member_id", flat=True)) == sorted(ids)
    assert set(sent.values_list("key", flat=True)) == {f"incident:{incident.pk}:{m}" for m in ids}
