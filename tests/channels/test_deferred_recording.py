"""Recording off the fast path (ADR 0005): the endpoint answers from one insert and writes nothing
else, a real worker's drain records the interaction after commit, a retry before the worker ran is
answered the same and stores nothing more, the sweep records what no drain got to, a message whose
recording raises is held back while the others are recorded, and a message the interaction log
refuses keeps its reason and is not retried."""

from __future__ import annotations

import datetime as dt
import time
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
    assert not DBTaskResult.objects.exists(), "the stored row is its own queue entry: no task row"

    # WeChat retries before the worker ran: the same answer, no second row.
    again = server.reply(server.push(xml, encrypt=True, record=False), encrypted=True)
    assert again.content == "收到"
    assert InboundMessage.objects.filter(workspace=ws).count() == 1

    work()
    record.refresh_from_db()
    [interaction] = Interaction.objects.filter(workspace=ws)
    assert record.recorded_at is not None and record.interaction_id == interaction.pk
    assert (interaction.type, interaction.direction, interaction.external_id) == ("message", "in", "26000000000000001")
    assert interaction.properties["content"] == "在吗"
    assert Member.objects.get(workspace=ws).interaction_count == 1

    # Recording it again (another worker, the sweep) changes nothing.
    assert services.record_inbound(record.pk) == services.ALREADY
    assert services.record_waiting() == 0 and services.record_pending(older_than=dt.timedelta(0)) == {}
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


def test_the_sweep_records_what_no_drain_got_to(deferred):
    ws, server = deferred
    server.push(text_xml("有人吗", "26000000000000002"), encrypt=True, record=False)
    call_command("shequn_worker", "--batch", "--no-scheduler", "--no-drains", stdout=StringIO())
    assert InboundMessage.objects.get(workspace=ws).recorded_at is None, "a worker without drains leaves it"
    assert services.record_pending() == {}, "a fresh message still has its minute for the drains"
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


def test_a_message_whose_recording_raises_is_held_back_and_the_others_are_recorded(deferred, monkeypatch, caplog):
    ws, server = deferred
    monkeypatch.setattr(services, "_held", {})
    server.push(text_xml("第一条", "26000000000000004"), encrypt=True, record=False)
    server.push(text_xml("第二条", "26000000000000005"), encrypt=True, record=False)
    first, second = InboundMessage.objects.filter(workspace=ws).order_by("received_at", "pk")
    real = services.record_inbound

    def flaky(record_id: int, **kwargs) -> str:
        if record_id == first.pk:
            raise RuntimeError("the member service is down")
        return real(record_id, **kwargs)

    monkeypatch.setattr(services, "record_inbound", flaky)
    assert services.record_pending(older_than=dt.timedelta(0)) == {"failed": 1, "recorded": 1}
    assert "recording message" in caplog.text
    assert services.record_waiting() == 0, "held back: the drain does not spin on it"
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.recorded_at is None and first.record_error == "" and second.recorded_at is not None

    monkeypatch.setattr(services, "record_inbound", real)
    services._held[first.pk] = (0.0, 1)  # its hold has run out
    assert services.record_waiting() == 1
    first.refresh_from_db()
    assert first.recorded_at is not None and first.pk not in services._held
    assert Interaction.objects.filter(workspace=ws).count() == 2


def test_holds_grow_and_stay_bounded(monkeypatch):
    monkeypatch.setattr(services, "_held", {})
    waits = []
    for _ in range(12):
        services._hold(7)
        until, failures = services._held[7]
        waits.append(round(until - time.monotonic()))
    assert waits[:4] == [5, 10, 20, 40] and waits[-1] == services.HOLD_MAX.total_seconds()
    assert services._held_ids() == [7]
    services._release(7)
    assert services._held_ids() == []
