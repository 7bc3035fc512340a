"""The outbox: routing, idempotent sends, delivery through the task with retries, and the record."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction
from django_tasks_db.models import DBTaskResult

from shequn.core.errors import NotFound, ValidationError
from shequn.interactions.models import Interaction
from shequn.members import services as members
from shequn.outbound import services
from shequn.outbound.models import MessageAttempt, MessageStatus, OutboundMessage

from .conftest import OPENID

DELIVER = "shequn.outbound.tasks.deliver_message"


@pytest.fixture
def database_tasks(settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}


def _due(message: OutboundMessage) -> None:
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))


@pytest.mark.django_db(transaction=True)
def test_send_text_is_delivered_after_commit_by_the_worker(ws, follower, fake, wechat, database_tasks):
    with transaction.atomic():
        msg = services.send_text(ws, follower.pk, "您的积分已到账", purpose="welcome", actor="user:1")
        assert not DBTaskResult.objects.filter(task_path=DELIVER).exists(), "enqueued only after commit"
    assert (msg.status, msg.channel, msg.recipient, msg.kind) == ("queued", "wechat", OPENID, "text")
    assert [r.args_kwargs["args"] for r in DBTaskResult.objects.filter(task_path=DELIVER)] == [[msg.pk]]
    assert fake.messages == [], "nothing is sent before the worker runs"
    call_command("shequn_worker", "--batch", "--no-scheduler", stdout=StringIO())
    msg.refresh_from_db()
    assert msg.status == "sent" and msg.attempts == 1 and msg.sent_at is not None
    assert fake.messages == [{"touser": OPENID, "msgtype": "text", "text": {"content": "您的积分已到账"}}]
    interaction = Interaction.objects.get(pk=msg.interaction_id)
    assert (interaction.member_id, interaction.type, interaction.direction, interaction.channel) == \
        (follower.pk, "message", "out", "wechat")
    assert interaction.properties == {"msg_type": "text", "purpose": "welcome", "outbox_id": msg.pk,
                                      "text": "您的积分已到账"}
    [attempt] = MessageAttempt.objects.filter(message=msg)
    assert attempt.ok and attempt.response == {"errcode": 0, "errmsg": "ok"}


def test_a_second_run_of_the_task_sends_nothing(ws, follower, fake, wechat):
    msg = services.send_text(ws, follower.pk, "hi", purpose="welcome", actor="t")
    assert services.deliver(msg.pk) == "sent"
    assert services.deliver(msg.pk) == "sent"
    assert len(fake.messages) == 1
    assert Interaction.objects.filter(source="outbound").count() == 1


def test_send_with_a_key_is_idempotent(ws, follower, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        a = services.send_text(ws, follower.pk, "验证码 123456", purpose="otp", actor="t", key="otp:1")
        b = services.send_text(ws, follower.pk, "验证码 654321", purpose="otp", actor="t", key="otp:1")
    assert a.pk == b.pk and b.payload == {"text": "验证码 123456"}
    assert OutboundMessage.objects.count() == 1 and len(callbacks) == 1


def test_the_same_key_in_another_workspace_is_another_message(ws, other_ws, follower):
    other = members.upsert_member(other_ws, [{"kind": "phone", "value": "13800138000"}]).member
    a = services.send_text(ws, follower.pk, "x", purpose="otp", actor="t", key="k")
    b = services.send_text(other_ws, other.pk, "x", purpose="otp", actor="t", key="k")
    assert a.pk != b.pk


def test_transient_failures_are_retried_later_then_fail(ws, follower, fake, wechat, monkeypatch):
    monkeypatch.setattr(services, "MAX_ATTEMPTS", 3)
    msg = services.send_text(ws, follower.pk, "hi", purpose="welcome", actor="t")
    fake.fail_next(100, mode="busy")
    assert services.deliver(msg.pk) == "queued"
    msg.refresh_from_db()
    assert msg.attempts == 1 and msg.next_attempt_at is not None and "-1" in msg.last_error
    assert services.deliver(msg.pk) == "queued", "not due yet: nothing happens"
    assert MessageAttempt.objects.filter(message=msg).count() == 1
    _due(msg)
    assert services.deliver(msg.pk) == "queued"
    _due(msg)
    assert services.deliver(msg.pk) == "failed"
    msg.refresh_from_db()
    assert msg.status == "failed" and msg.attempts == 3
    assert list(MessageAttempt.objects.filter(message=msg).values_list("ok", flat=True)) == [False] * 3
    assert fake.messages == []
    fake.failures.clear()
    retried = services.retry_message(ws, msg.pk, actor="user:1")
    assert retried.status == "queued"
    assert services.deliver(msg.pk) == "sent"


def test_a_retry_recovers_after_a_transient_failure(ws, follower, fake, wechat):
    msg = services.send_text(ws, follower.pk, "hi", purpose="welcome", actor="t")
    fake.fail_next(4, mode="http500")  # the client's own 4 tries of the first delivery
    assert services.deliver(msg.pk) == "queued"
    _due(msg)
    assert services.deliver(msg.pk) == "sent"
    assert len(fake.messages) == 1


def test_a_permanent_refusal_fails_at_once(ws, follower, fake, wechat):
    msg = services.send_text(ws, follower.pk, "hi", purpose="welcome", actor="t")
    services.deliver(msg.pk)  # warm the token
    msg2 = services.send_text(ws, follower.pk, "again", purpose="welcome", actor="t")
    fake.answer_next(43004)
    assert services.deliver(msg2.pk) == "failed"
    msg2.refresh_from_db()
    assert msg2.attempts == 1 and "43004" in msg2.last_error


def test_only_failed_messages_can_be_retried(ws, follower):
    msg = services.send_text(ws, follower.pk, "hi", purpose="welcome", actor="t")
    with pytest.raises(ValidationError):
        services.retry_message(ws, msg.pk, actor="t")


def test_a_member_without_a_channel_is_recorded_as_undeliverable(ws, django_capture_on_commit_callbacks):
    m = members.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}]).member
    with django_capture_on_commit_callbacks() as callbacks:
        msg = services.send_text(ws, m.pk, "hi", purpose="inbox_reply", actor="t")
    assert msg.status == "undeliverable" and msg.channel == "none" and "openid" in msg.last_error
    assert callbacks == []


def test_an_openid_of_an_unconnected_account_is_not_a_route(ws, account):
    m = members.upsert_member(ws, [{"kind": "wechat_openid", "namespace": "wx0000000000000000", "value": "o1"}]).member
    assert services.send_text(ws, m.pk, "hi", purpose="welcome", actor="t").status == "undeliverable"


def test_news_template_and_image_payloads(ws, follower, fake, wechat):
    news = services.send_news(ws, follower.pk, [{"title": "夏日新品", "description": "杨枝甘露回归",
                                                 "url": "https://tea.example/new", "picurl": "https://tea.example/p.jpg"}],
                              purpose="campaign", actor="t")
    tpl = services.send_template(ws, follower.pk, "TPL-points", {"first": "积分到账", "points": 20},
                                 url="https://tea.example/me", purpose="points", actor="t")
    img = services.send_image(ws, follower.pk, "MEDIA-1", purpose="campaign", actor="t")
    for m in (news, tpl, img):
        assert services.deliver(m.pk) == "sent"
    assert fake.messages[0]["news"] == {"articles": [{"title": "夏日新品", "description": "杨枝甘露回归",
                                                      "url": "https://tea.example/new",
                                                      "picurl": "https://tea.example/p.jpg"}]}
    assert fake.messages[1]["data"] == {"first": {"value": "积分到账"}, "points": {"value": "20"}}
    assert fake.messages[2] == {"touser": OPENID, "msgtype": "image", "image": {"media_id": "MEDIA-1"}}


def test_one_time_codes_are_not_copied_into_the_interaction_log(ws, follower, fake, wechat):
    msg = services.send_text(ws, follower.pk, "您的登录验证码 482913", purpose="otp", actor="t")
    services.deliver(msg.pk)
    msg.refresh_from_db()
    props = Interaction.objects.get(pk=msg.interaction_id).properties
    assert "text" not in props and "482913" not in str(props)


def test_messages_are_scoped_to_the_workspace(ws, other_ws, follower):
    with pytest.raises(NotFound):
        services.send_text(other_ws, follower.pk, "hi", purpose="welcome", actor="t")
    msg = services.send_text(ws, follower.pk, "hi", purpose="welcome", actor="t")
    OutboundMessage.objects.filter(pk=msg.pk).update(status=MessageStatus.FAILED)
    with pytest.raises(NotFound):
        services.retry_message(other_ws, msg.pk, actor="t")


def test_bad_input_is_refused(ws, follower):
    with pytest.raises(ValidationError):
        services.send_text(ws, follower.pk, "  ", purpose="welcome", actor="t")
    with pytest.raises(ValidationError):
        services.send_text(ws, follower.pk, "x" * 2001, purpose="welcome", actor="t")
    with pytest.raises(ValidationError):
        services.send_text(ws, follower.pk, "x", purpose="Not A Purpose!", actor="t")
    with pytest.raises(ValidationError):
        services.send_text(ws, follower.pk, "x", purpose="welcome", actor="t", channel="sms")


def test_a_message_to_a_merged_member_goes_to_the_survivor(ws, follower):
    other = members.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}]).member
    members.merge_members(ws, follower, other, reason="same person", actor="t")
    msg = services.send_text(ws, other.pk, "hi", purpose="welcome", actor="t")
    assert msg.member_id == follower.pk and msg.channel == "wechat"


def test_the_sweep_requeues_due_retries(ws, follower, database_tasks, django_capture_on_commit_callbacks):
    msg = services.send_text(ws, follower.pk, "hi", purpose="welcome", actor="t")
    OutboundMessage.objects.filter(pk=msg.pk).update(next_attempt_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    DBTaskResult.objects.all().delete()
    with django_capture_on_commit_callbacks(execute=True):
        assert services.sweep() == {"messages": 1, "deliveries": 0}
    assert [r.args_kwargs["args"] for r in DBTaskResult.objects.filter(task_path=DELIVER)] == [[msg.pk]]


def test_a_failing_interaction_handler_does_not_make_a_sent_message_unsent(ws, follower, fake, wechat, monkeypatch):
    from shequn.interactions import services as interactions

    def broken(workspace, rows):
        raise RuntimeError("handler bug")

    monkeypatch.setattr(interactions, "INTERACTION_HANDLERS", [*interactions.INTERACTION_HANDLERS, broken])
    msg = services.send_text(ws, follower.pk, "hi", purpose="welcome", actor="t")
    assert services.deliver(msg.pk) == "sent"
    msg.refresh_from_db()
    assert msg.status == "sent" and msg.interaction_id is None
    assert services.deliver(msg.pk) == "sent" and len(fake.messages) == 1
