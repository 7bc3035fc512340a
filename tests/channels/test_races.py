"""WeChat retries a message while the first delivery is still being processed: deliveries of one
MsgId arrive at once, on a real PostgreSQL server with real threads (each has its own connection)."""

from __future__ import annotations

import pytest

from shequn.channels.models import InboundMessage
from shequn.core import services as core
from shequn.interactions.models import Interaction
from shequn.members.models import Member
from tests.threads import run_threads

from .helpers import WeChatServer, connect, event_xml, text_xml

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("xml", [text_xml("在吗", "24000000000000099"), event_xml("subscribe", "qrscene_s1")])
def test_concurrent_deliveries_of_one_message_record_it_once_with_one_reply(xml):
    ws = core.create_workspace("race", "Race")
    _, path = connect(ws, "safe", welcome="欢迎", reply="收到")

    def deliver(i):
        server = WeChatServer(path)
        return server.reply(server.push(xml, encrypt=True), encrypted=True).content

    replies = run_threads(6, deliver)
    assert len(set(replies)) == 1 and replies[0] in {"欢迎", "收到"}
    assert Interaction.objects.filter(workspace=ws).count() == 1
    assert InboundMessage.objects.filter(workspace=ws).count() == 1
    member = Member.objects.get(workspace=ws)
    assert member.interaction_count == 1


def test_drains_in_several_workers_record_every_message_once():
    """Four drains at once over 60 stored messages of 6 followers: each worker skips what another holds
    (``FOR UPDATE SKIP LOCKED``), every message is recorded exactly once, every count is exact."""
    from shequn.channels import services

    ws = core.create_workspace("drains", "Drains")
    _, path = connect(ws, "safe", reply="收到")
    server = WeChatServer(path)
    for i in range(60):
        server.push(text_xml(f"第{i}条", str(25000000000000000 + i), openid=f"oDrain{i % 6:02d}xxxxxxxxxxxxxxxxxxxx"),
                    encrypt=True, record=False)
    assert InboundMessage.objects.filter(workspace=ws, recorded_at__isnull=True).count() == 60

    def drain(_i):
        settled = 0
        while True:
            done = services.record_waiting(limit=7)
            if not done and not InboundMessage.objects.filter(workspace=ws, recorded_at__isnull=True).exists():
                return settled
            settled += done

    settled = run_threads(4, drain)
    assert sum(settled) >= 60
    assert InboundMessage.objects.filter(workspace=ws, recorded_at__isnull=True).count() == 0
    assert Interaction.objects.filter(workspace=ws).count() == 60
    assert sorted(Member.objects.filter(workspace=ws).values_list("interaction_count", flat=True)) == [10] * 6
