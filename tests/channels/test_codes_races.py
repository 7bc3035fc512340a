"""Channel-code stats under concurrency, on a real PostgreSQL server with real threads: retries of one
scan count once, and concurrent first scans of one member create one fact row."""

from __future__ import annotations

import pytest

from shequn.channels import code_services, queries
from shequn.channels.models import ChannelCodeMember
from shequn.core import services as core
from tests.threads import run_threads

from .helpers import WeChatServer, connect, event_xml
from .test_codes import T0, fake_qr

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _setup():
    ws = core.create_workspace("race", "Race")
    account, path = connect(ws, "safe", welcome="欢迎")
    code = code_services.create_code(ws, account.pk, kind="poster", name="海报", scene="poster-1", welcome_text="海报欢迎",
                                     tags=["海报"], actor="t", issue_qr=fake_qr)
    return ws, path, code


def test_concurrent_retries_of_one_scan_count_once():
    ws, path, code = _setup()

    def deliver(i):
        server = WeChatServer(path)
        xml = event_xml("subscribe", "qrscene_poster-1", create_time=T0)
        return server.reply(server.push(xml, encrypt=True), encrypted=True).content

    assert set(run_threads(6, deliver)) == {"海报欢迎"}
    assert queries.code_stats(ws)[code.pk] == queries.CodeStats(scans=1, scanners=1, follows=1)


def test_concurrent_scans_of_one_member_make_one_fact_row():
    ws, path, code = _setup()
    WeChatServer(path).push(event_xml("subscribe", None, create_time=T0), encrypt=True)  # a follower

    def scan(i):
        server = WeChatServer(path)
        server.push(event_xml("SCAN", "poster-1", create_time=T0 + 10 + i), encrypt=True)

    run_threads(6, scan)
    assert ChannelCodeMember.objects.filter(code=code).count() == 1
    assert ChannelCodeMember.objects.get(code=code).scans == 6
    assert queries.code_stats(ws)[code.pk] == queries.CodeStats(scans=6, scanners=1, follows=0)
