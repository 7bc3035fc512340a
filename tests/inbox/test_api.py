"""The inbox API: version with ETag/304, conversation list/detail/claim/assign/reply/note/status,
tickets, teams, canned replies; tenant isolation and roles."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from shequn.inbox import services
from shequn.inbox.models import Conversation
from tests.api.helpers import error_code, make_client

from .conftest import inbound


@pytest.fixture(autouse=True)
def _clear_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api(ws):
    return make_client(ws, "agent")


def test_version_etag(ws, api):
    first = api.get("/api/v1/inbox/version")
    assert first.status_code == 200 and first.json() == {"version": 0}
    assert api.get("/api/v1/inbox/version", HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 304
    inbound(ws)
    assert api.get("/api/v1/inbox/version", HTTP_IF_NONE_MATCH=first["ETag"]).status_code == 200


def test_conversation_flow(ws, agents, api, sent):
    inbound(ws, text="订单没收到", bot_outcome="handoff")
    conv = Conversation.objects.get(workspace=ws)
    page = api.get("/api/v1/inbox/conversations", {"view": "unassigned"}).json()
    assert [c["id"] for c in page["items"]] == [conv.pk] and page["next"] is None
    assert page["items"][0]["needs_human"] is True and page["items"][0]["waiting"] is True
    assert error_code(api.post(f"/api/v1/inbox/conversations/{conv.pk}/claim", {})) == "user_required"
    claimed = api.post(f"/api/v1/inbox/conversations/{conv.pk}/claim", {"user_id": agents["alice"].pk})
    assert claimed.status_code == 200 and claimed.json()["assignee"] == "alice"
    again = api.post(f"/api/v1/inbox/conversations/{conv.pk}/claim", {"user_id": agents["bob"].pk})
    assert again.status_code == 409 and error_code(again) == "already_claimed"
    reply = api.post(f"/api/v1/inbox/conversations/{conv.pk}/reply", {"text": "马上为您查询", "key": "r1"})
    assert reply.status_code == 201 and reply.json()["kind"] == "reply"
    assert api.post(f"/api/v1/inbox/conversations/{conv.pk}/reply", {"text": "马上为您查询", "key": "r1"}).json()["id"] \
        == reply.json()["id"]
    assert api.post(f"/api/v1/inbox/conversations/{conv.pk}/notes", {"text": "VIP 顾客"}).status_code == 201
    team = services.save_team(ws, "门店组", actor="t")
    moved = api.post(f"/api/v1/inbox/conversations/{conv.pk}/assign", {"team_id": team.pk}).json()
    assert moved["team"] == "门店组" and moved["assignee_id"] is None
    detail = api.get(f"/api/v1/inbox/conversations/{conv.pk}").json()
    assert [e["kind"] for e in detail["entries"]] == ["in", "event", "reply", "note", "event"]
    done = api.post(f"/api/v1/inbox/conversations/{conv.pk}/resolve").json()
    assert done["status"] == "resolved"
    assert sent.purposes() == ["inbox_reply", "csat"]
    assert error_code(api.post(f"/api/v1/inbox/conversations/{conv.pk}/status", {"status": "closed"})) == \
        "invalid_field"


def test_tickets_api(ws, agents, api):
    created = api.post("/api/v1/inbox/tickets", {"title": "退款", "priority": "urgent"})
    assert created.status_code == 201
    body = created.json()
    assert (body["first_response_minutes"], body["resolution_minutes"]) == services.DEFAULT_SLA["urgent"]
    tid = body["id"]
    patched = api.patch(f"/api/v1/inbox/tickets/{tid}", {"status": "pending", "assignee_id": agents["bob"].pk}).json()
    assert patched["status"] == "pending" and patched["paused_at"] and patched["assignee_id"] == agents["bob"].pk
    assert api.patch(f"/api/v1/inbox/tickets/{tid}", {"assignee_id": None}).json()["assignee_id"] is None
    assert [t["id"] for t in api.get("/api/v1/inbox/tickets").json()["items"]] == [tid]
    assert api.get("/api/v1/inbox/tickets", {"status": "resolved"}).json()["items"] == []
    assert error_code(api.post("/api/v1/inbox/tickets", {"title": "x", "priority": "asap"})) == "invalid_field"


def test_teams_and_canned(ws, agents, api):
    team = services.save_team(ws, "客服组", actor="t")
    services.set_team_members(ws, team.pk, [agents["alice"].pk], actor="t")
    services.save_canned_reply(ws, "hi", "问候", "您好！", actor="t")
    assert api.get("/api/v1/inbox/teams").json()["items"] == [
        {"id": team.pk, "name": "客服组", "escalation_team_id": None, "member_ids": [agents["alice"].pk]}]
    assert [c["shortcut"] for c in api.get("/api/v1/inbox/canned-replies").json()["items"]] == ["hi"]


def test_other_workspace_gets_404_and_clerk_403(ws, other_ws, agents):
    inbound(ws)
    conv = Conversation.objects.get(workspace=ws)
    ticket = services.create_ticket(ws, title="t", actor="t")
    other = make_client(other_ws, "owner")
    assert other.get(f"/api/v1/inbox/conversations/{conv.pk}").status_code == 404
    assert other.post(f"/api/v1/inbox/conversations/{conv.pk}/resolve").status_code == 404
    assert other.post(f"/api/v1/inbox/conversations/{conv.pk}/reply", {"text": "x"}).status_code == 404
    assert other.get(f"/api/v1/inbox/tickets/{ticket.pk}").status_code == 404
    assert other.patch(f"/api/v1/inbox/tickets/{ticket.pk}", {"status": "resolved"}).status_code == 404
    assert other.get("/api/v1/inbox/conversations").json()["items"] == []
    clerk = make_client(ws, "clerk")
    assert clerk.get("/api/v1/inbox/conversations").status_code == 403
    conv.refresh_from_db()
    assert conv.status == "open"


def test_list_query_count_is_constant(ws, api):
    api.get("/api/v1/inbox/conversations")  # stamps the key's last use (once a minute)

    def measure(n):
        for i in range(n):
            inbound(ws, openid=f"q{n}-{i}")
        with CaptureQueriesContext(connection) as ctx:
            assert api.get("/api/v1/inbox/conversations", {"view": "all"}).status_code == 200
        return len(ctx.captured_queries)

    assert measure(1) == measure(8) == 2  # the key, one page query with member, agent and team
