"""The inbox console pages: lists with the version poll, a conversation with its actions, tickets,
the report and the settings; roles, tenant isolation and query counts."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from shequn.core import services as core
from shequn.inbox import queries, services
from shequn.inbox.models import Conversation, CsatSurvey, Ticket

from .conftest import PASSWORD, inbound


def login(user) -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
    client.force_login(user)
    return client


@pytest.fixture
def alice(agents) -> Client:
    return login(agents["alice"])


def test_version_answers_304_until_something_changes(ws, agents, alice):
    url = "/w/tea/inbox/version/"
    first = alice.get(url)
    assert first.status_code == 200 and first.json() == {"version": 0}
    etag = first["ETag"]
    assert alice.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304
    inbound(ws)
    changed = alice.get(url, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed.json()["version"] > 0 and changed["ETag"] != etag
    with CaptureQueriesContext(connection) as ctx:
        assert alice.get(url, HTTP_IF_NONE_MATCH=changed["ETag"]).status_code == 304
    assert len(ctx.captured_queries) <= 4  # session, user, membership, version


def test_roles_and_tenants(ws, other_ws, agents):
    inbound(ws)
    conv = Conversation.objects.get(workspace=ws)
    assert login(agents["carl"]).get("/w/tea/inbox/").status_code == 403  # a clerk
    assert login(agents["carl"]).get("/w/tea/inbox/version/").status_code == 403
    assert login(agents["alice"]).get("/w/tea/inbox/settings/teams/").status_code == 403
    assert login(agents["olga"]).get("/w/tea/inbox/settings/teams/").status_code == 200
    outsider = core.ensure_user("owner-phone", PASSWORD)
    core.add_staff(other_ws, outsider, "owner")
    client = login(outsider)
    assert client.get("/w/tea/inbox/").status_code == 404
    assert client.get(f"/w/phone/inbox/c/{conv.pk}/").status_code == 404
    assert client.post(f"/w/phone/inbox/c/{conv.pk}/claim/").status_code == 404
    conv.refresh_from_db()
    assert conv.assignee_id is None


def test_list_views_and_query_count(ws, agents, alice):
    for i in range(12):
        inbound(ws, openid=f"o{i}", text=f"问题{i}")
    team = services.save_team(ws, "客服组", actor="t")
    services.set_team_members(ws, team.pk, [agents["alice"].pk], actor="t")
    first = Conversation.objects.filter(workspace=ws).order_by("pk").first()
    services.claim(ws, first.pk, user=agents["alice"], actor="a")
    services.assign(ws, first.pk, user_id=agents["alice"].pk, team_id=team.pk, actor="a")

    page = alice.get("/w/tea/inbox/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count('class="conv-row') == 11 and 'id="count-mine">1<' in html
    mine = alice.get("/w/tea/inbox/?view=mine").content.decode()
    assert mine.count('class="conv-row') == 1 and "alice" in mine
    assert alice.get("/w/tea/inbox/?view=team").content.decode().count('class="conv-row') == 1
    assert alice.get("/w/tea/inbox/?view=all").content.decode().count('class="conv-row') == 12

    def count(n_more):
        for i in range(n_more):
            inbound(ws, openid=f"x{n_more}-{i}")
        with CaptureQueriesContext(connection) as ctx:
            assert alice.get("/w/tea/inbox/?view=all&partial=1").status_code == 200
        return len(ctx.captured_queries)

    assert count(1) == count(10)  # no N+1


def test_conversation_page_actions(ws, agents, alice, sent):
    services.save_canned_reply(ws, "sorry", "致歉", "非常抱歉给您带来不便", actor="t")
    inbound(ws, text="我的外卖少了一杯", bot_outcome="handoff")
    conv = Conversation.objects.get(workspace=ws)
    url = f"/w/tea/inbox/c/{conv.pk}/"
    page = alice.get(url).content.decode()
    assert "我的外卖少了一杯" in page and 'id="claim"' in page and "/sorry" in page and 'id="member-context"' in page
    assert alice.post(url + "claim/").status_code == 302
    conv.refresh_from_db()
    assert conv.assignee_id == agents["alice"].pk
    alice.post(url + "reply/", {"text": "非常抱歉，马上补送", "key": "k-1"})
    alice.post(url + "reply/", {"text": "非常抱歉，马上补送", "key": "k-1"})  # a double submit
    assert sent.purposes() == ["inbox_reply"]
    alice.post(url + "note/", {"text": "已联系门店"})
    alice.post(url + "ticket/", {"title": "补送饮品", "priority": "high"})
    ticket = Ticket.objects.get(workspace=ws)
    assert ticket.conversation_id == conv.pk and ticket.priority == "high"
    fragment = alice.get(url + "?partial=1").content.decode()
    assert "已联系门店" in fragment and "补送饮品" in fragment and "<html" not in fragment
    alice.post(url + "status/", {"status": "resolved"})
    conv.refresh_from_db()
    assert conv.status == "resolved" and CsatSurvey.objects.filter(conversation=conv).exists()
    assert sent.purposes() == ["inbox_reply", "csat"]
    with CaptureQueriesContext(connection) as ctx:
        assert alice.get(url).status_code == 200
    for i in range(6):
        services.add_note(ws, conv.pk, f"备注{i}", user=agents["bob"], actor="b")
        inbound(ws, text=f"追问{i}")
    with CaptureQueriesContext(connection) as more:
        assert alice.get(url).status_code == 200
    assert len(more.captured_queries) == len(ctx.captured_queries)  # no query per thread line


def test_claim_of_a_claimed_conversation_shows_a_message(ws, agents):
    inbound(ws)
    conv = Conversation.objects.get(workspace=ws)
    services.claim(ws, conv.pk, user=agents["alice"], actor="a")
    bob = login(agents["bob"])
    response = bob.post(f"/w/tea/inbox/c/{conv.pk}/claim/", follow=True)
    assert response.status_code == 200
    assert "already claimed" in response.content.decode() or "已被" in response.content.decode()


def test_tickets_report_and_settings_pages(ws, agents):
    olga = login(agents["olga"])
    assert olga.post("/w/tea/inbox/settings/teams/", {"name": "VIP组"}).status_code == 302
    [vip] = queries.teams(ws)
    olga.post("/w/tea/inbox/settings/teams/", {"name": "客服组", "escalation_team": vip.pk})
    team = [t for t in queries.teams(ws) if t.name == "客服组"][0]
    assert team.escalation_team_id == vip.pk
    olga.post("/w/tea/inbox/settings/teams/", {"action": "members", "team_id": team.pk,
                                               "users": [agents["alice"].pk, agents["bob"].pk]})
    members = {t.name: {m.user_id for m in t.members.all()} for t in queries.teams(ws)}
    assert members == {"客服组": {agents["alice"].pk, agents["bob"].pk}, "VIP组": set()}
    olga.post("/w/tea/inbox/settings/sla/", {"team": team.pk, "priority": "urgent", "first_response_minutes": 5,
                                             "resolution_minutes": 60})
    assert services.sla_minutes(ws, team.pk, "urgent") == (5, 60)
    olga.post("/w/tea/inbox/settings/canned/", {"shortcut": "/Refund", "title": "退款", "text": "已为您退款"})
    assert [c.shortcut for c in queries.canned_replies(ws)] == ["refund"]
    assert olga.get("/w/tea/inbox/settings/sla/").status_code == 200
    assert olga.get("/w/tea/inbox/settings/canned/").status_code == 200

    response = olga.post("/w/tea/inbox/tickets/", {"title": "发票重开", "priority": "urgent", "team": team.pk})
    ticket = Ticket.objects.get(workspace=ws)
    assert response.status_code == 302 and ticket.first_response_minutes == 5
    page = olga.get("/w/tea/inbox/tickets/").content.decode()
    assert "发票重开" in page
    olga.post(f"/w/tea/inbox/tickets/{ticket.pk}/", {"status": "pending", "priority": "urgent", "team": team.pk,
                                                      "assignee": agents["bob"].pk})
    ticket.refresh_from_db()
    assert ticket.status == "pending" and ticket.paused_at is not None and ticket.assignee_id == agents["bob"].pk
    assert "inbox.ticket.update" in olga.get(f"/w/tea/inbox/tickets/{ticket.pk}/").content.decode()
    report = olga.get("/w/tea/inbox/report/")
    assert report.status_code == 200 and b"volume-figure" in report.content and b"csat-figure" in report.content
