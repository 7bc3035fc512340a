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
