"""Recording off the fast path (ADR 0005): the endpoint answers from one insert, the real database
queue and worker record the interaction after commit, a retry before the worker ran is answered the
same and enqueues nothing more, the sweep records a message whose task was lost, and a message the
interaction log refuses keeps its reason and is not retried."""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import call_command
from django_tasks_db.models import DBTaskResult

from shequn.channels import services
from shequn.channels.models import InboundMessage
from shequn.core import services as core
from shequn.interactions.models import Interaction
from shequn.members.models import Member

from .helpers import WeChatServer, connect, event_xml, text_xml

RECORD = "shequn.channels.tasks.record_inbound"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def database_tasks(settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}


@pytest.fixture
def deferred(database_tasks):
    ws = core.create_workspace("deferred", "Deferred")
    _, path = connect(ws, "safe", welcome="欢迎光临", reply="收到")
    return ws, WeChatServer(path)


def work() -> None:
    call_command("shequn_worker", "--batch", "--no-scheduler", stdout=StringIO())


def test_the_answer_comes_first_and_the_worker_records_the_message(deferred):
    ws, server = deferred
    xml = text_xml("在吗", "26000000000000001")
    reply = server.reply(server.push(xml, encrypt=True, record=False), encrypted=True)
    assert reply.content == "收到"
    record = InboundMessage.objects.get(workspace=ws)
    assert (record.recorded_at, record.interaction_id, record.reply_content) == (None, None, "收到")
    assert not Interaction.objects.filter(workspace=ws).exists()
    assert [r.args_kwargs["args"] for r in DBTaskResult.objects.filter(task_path=RECORD)] == [[record.pk]]

    # WeChat retries before the worker ran: the same answer, no second row, no second task.
    again = server.reply(server.push(xml, encrypt=True, record=False), encrypted=True)
    assert again.content == "收到"
    assert InboundMessage.objects.filter(workspace=ws).count() == 1
    assert DBTaskResult.objects.filter(task_path=RECORD).count() == 1

    work()
    record.refresh_from_db()
    [interaction] = Interaction.objects.filter(workspace=ws)
    assert record.recorded_at is not None and record.interaction_id == interaction.pk
    assert (interaction.type, interaction.direction, interaction.external_id) == ("message", "in", "26000000000000001")
    assert interaction.properties["content"] == "在吗"
    assert Member.objects.get(workspace=ws).interaction_count == 1

    # Running the task again (at-least-once delivery) changes nothing.
    assert services.record_inbound(record.pk) == services.ALREADY
    assert Interaction.objects.filter(workspace=ws).count() == 1


def test_a_new_follower_from_a_qr_code_is_recorded_with_the_source(deferred):
    ws, server = deferred
    reply = server.reply(server.push(event_xml("subscribe", "qrscene_poster-7"), encrypt=True, record=False),
                         encrypted=True)
    assert reply.content == "欢迎光临"
    assert not Member.objects.filter(workspace=ws).exists()
    work()
    member = Member.objects.get(workspace=ws)
    assert (member.source_channel, member.source_code) == ("wechat_qr", "poster-7")
    assert Interaction.objects.get(workspace=ws).type == "follow"


def test_the_sweep_records_a_message_whose_task_was_lost(deferred):
    ws, server = deferred
    server.push(text_xml("有人吗", "26000000000000002"), encrypt=True, record=False)
    DBTaskResult.objects.all().delete()  # the broker lost it
    assert services.record_pending() == {}, "a fresh message still has its task's minute"
    InboundMessage.objects.filter(workspace=ws).update(received_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert services.record_pending() == {"recorded": 1}
    assert services.record_pending() == {}
    assert Interaction.objects.filter(workspace=ws).count() == 1


def test_a_message_the_log_refuses_keeps_its_reason_and_is_not_retried(deferred, caplog):
    ws, server = deferred
    server.push(text_xml("你好", "26000000000000003"), encrypt=True, record=False)
    record = InboundMessage.objects.get(workspace=ws)
    # A stored message whose sender is not a valid identity (written by hand: the parser refuses it).
    InboundMessage.objects.filter(pk=record.pk).update(payload={**record.payload, "from_user": ""})
    work()
    record.refresh_from_db()
    assert record.recorded_at is None and record.record_error
    assert "not recorded" in caplog.text
    assert not Interaction.objects.filter(workspace=ws).exists()
    InboundMessage.objects.filter(pk=record.pk).update(received_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert services.record_pending() == {}
