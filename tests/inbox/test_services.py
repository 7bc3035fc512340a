"""The inbox's write path: routing of inbound messages, claim/assign/transfer, replies, notes,
resolution with the CSAT question and answer, tickets with the SLA clock and escalation."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from shequn.core.errors import Conflict, NotFound, ValidationError
from shequn.core.models import AuditEntry
from shequn.inbox import queries, services
from shequn.inbox.models import Conversation, CsatSurvey, Entry, EntryKind, Status, Ticket
from shequn.interactions import services as interactions
from shequn.interactions.models import Interaction, TouchpointDay

from .conftest import inbound


def test_inbound_message_opens_a_conversation_and_later_ones_join_it(ws, agents):
    first = inbound(ws, text="你好")
    second = inbound(ws, text="有人吗？", bot_outcome="handoff")
    [conv] = Conversation.objects.filter(workspace=ws)
    assert conv.member_id == first.member_id == second.member_id
    assert conv.status == Status.OPEN and conv.needs_human and conv.assignee_id is None
    assert conv.preview == "有人吗？" and conv.channel == "wechat"
    assert [(e.kind, e.text) for e in queries.thread(ws, conv.pk)] == [("in", "你好"), ("in", "有人吗？")]
    assert queries.member_open_conversation(ws, first.member_id) == conv


def test_bot_answered_messages_are_shown_but_need_no_human(ws, agents):
    msg = inbound(ws, text="积分", bot_outcome="answered")
    conv = Conversation.objects.get(workspace=ws)
    assert conv.needs_human is False
    assert [e.bot_outcome for e in queries.thread(ws, conv.pk)] == ["answered"]
    assert queries.page(queries.conversations(ws, agents["alice"].pk, queries.ConversationFilter(view="unassigned")))[0] == []
    # the member then asks for a person: the conversation joins the unassigned queue
    inbound(ws, text="转人工", bot_outcome="handoff")
    conv.refresh_from_db()
    assert conv.needs_human is True and conv.member_id == msg.member_id
    rows, _ = queries.page(queries.conversations(ws, agents["alice"].pk, queries.ConversationFilter(view="unassigned")))
    assert [r.pk for r in rows] == [conv.pk]


def test_old_group_and_outbound_messages_do_not_open_conversations(ws, agents):
    inbound(ws, at=services.clock_now() - dt.timedelta(days=3))
    inbound(ws, channel="wechat_group")
    interactions.ingest(ws, {"identities": [{"kind": "wechat_openid", "namespace": "wx", "value": "o-x"}],
                             "type": "message", "channel": "wechat", "direction": "out",
                             "occurred_at": services.clock_now(), "properties": {"text": "hi"}})
    assert not Conversation.objects.filter(workspace=ws).exists()


def test_replayed_message_is_one_entry(ws, agents):
    inbound(ws, external_id="same")
    inbound(ws, external_id="same")
    assert Entry.objects.filter(workspace=ws).count() == 1


def test_a_batch_of_many_members_costs_a_fixed_number_of_statements(ws, agents):
    t = services.clock_now()
    events = [{"identities": [{"kind": "wechat_openid", "namespace": "wx", "value": f"o{i}"}], "type": "message",
               "channel": "wechat", "direction": "in", "occurred_at": t, "external_id": f"b{i}",
               "properties": {"content": f"问题{i}"}} for i in range(30)]
    interactions.ingest_batch(ws, events[:1])  # warm caches (member upsert path is not ours)
    captured = []
    real = services._route

    def spy(workspace, messages):
        with CaptureQueriesContext(connection) as ctx:
            real(workspace, messages)
        captured.append(len(ctx.captured_queries))

    services_route = services._route
    try:
        services._route = spy
        interactions.ingest_batch(ws, events[1:])
    finally:
        services._route = services_route
    assert Conversation.objects.filter(workspace=ws).count() == 30
    # select live, insert missing, select them, insert entries, one UPDATE for every conversation
    assert captured == [5]


def test_resolved_conversation_is_not_rejoined(ws, agents, sent):
    inbound(ws)
    conv = Conversation.objects.get(workspace=ws)
    services.resolve(ws, conv.pk, actor="user:1")
    inbound(ws, text="还有一个问题")
    assert Conversation.objects.filter(workspace=ws).count() == 2
    new = Conversation.objects.filter(workspace=ws).exclude(pk=conv.pk).get()
    assert new.status == Status.OPEN and new.preview == "还有一个问题"


def test_claim_is_exclusive_and_audited(ws, agents):
    inbound(ws)
    conv = Conversation.objects.get(workspace=ws)
    services.claim(ws, conv.pk, user=agents["alice"], actor="user:alice")
    with pytest.raises(Conflict) as err:
        services.claim(ws, conv.pk, user=agents["bob"], actor="user:bob")
    assert err.value.code == "already_claimed"
    conv.refresh_from_db()
    assert conv.assignee_id == agents["alice"].pk
    assert AuditEntry.objects.filter(workspace=ws, action="inbox.claim").count() == 1
    with pytest.raises(NotFound):
        services.claim(ws, conv.pk, user=agents["carl"], actor="user:carl")  # a clerk is no agent


def test_assign_and_transfer_to_agent_and_team(ws, agents):
    inbound(ws)
    conv = Conversation.objects.get(workspace=ws)
    team = services.save_team(ws, "门店组", actor="t")
    services.assign(ws, conv.pk, user_id=agents["bob"].pk, actor="user:olga")
    conv.refresh_from_db()
    assert conv.assignee_id == agents["bob"].pk
    services.assign(ws, conv.pk, team_id=team.pk, actor="user:bob")
    conv.refresh_from_db()
    assert conv.assignee_id is None and conv.team_id == team.pk
    actions = list(AuditEntry.objects.filter(workspace=ws, object_type="conversation").order_by("pk")
                   .values_list("action", flat=True))
    assert actions == ["inbox.assign", "inbox.transfer"]
    services.set_team_members(ws, team.pk, [agents["alice"].pk], actor="t")
    rows, _ = queries.page(queries.conversations(ws, agents["alice"].pk, queries.ConversationFilter(view="team")))
    assert [r.pk for r in rows] == [conv.pk]


def test_reply_goes_out_once_and_claims(ws, agents, sent):
    inbound(ws)
    conv = Conversation.objects.get(workspace=ws)
    entry = services.reply(ws, conv.pk, "您好，马上为您处理", user=agents["alice"], actor="user:a", key="k1")
    again = services.reply(ws, conv.pk, "您好，马上为您处理", user=agents["alice"], actor="user:a", key="k1")
    assert again.pk == entry.pk
    assert sent.purposes() == ["inbox_reply"]
    assert sent.calls[0]["member_id"] == conv.member_id and sent.calls[0]["key"] == f"inbox-reply-{entry.pk}"
    conv.refresh_from_db()
    assert conv.assignee_id == agents["alice"].pk and conv.first_response_at is not None and not conv.waiting
    services.add_note(ws, conv.pk, "客户很着急", user=agents["alice"], actor="user:a")
    assert sent.purposes() == ["inbox_reply"]  # notes are never sent
    assert [e.kind for e in queries.thread(ws, conv.pk)][-2:] == [EntryKind.REPLY, EntryKind.NOTE]
    with pytest.raises(ValidationError):
        services.reply(ws, conv.pk, "  ", user=agents["alice"], actor="user:a")


def test_resolve_asks_csat_once_and_the_answer_feeds_touchpoint_trust(ws, agents, sent):
    interactions.save_touchpoint(ws, "wechat-service", {"name": "公众号客服", "channel": "wechat"}, actor="t")
    inbound(ws, touchpoint="wechat-service")
    conv = Conversation.objects.get(workspace=ws)
    services.claim(ws, conv.pk, user=agents["alice"], actor="user:a")
    services.resolve(ws, conv.pk, actor="user:a")
    services.set_status(ws, conv.pk, Status.RESOLVED, actor="user:a")  # no change, no second question
    assert sent.purposes() == ["csat"]
    survey = CsatSurvey.objects.get(conversation=conv)
    assert survey.score is None and survey.touchpoint.code == "wechat-service"

    answer = inbound(ws, text="５", bot_outcome="answered", touchpoint="wechat-service")
    survey.refresh_from_db()
    assert survey.score == 5 and survey.answered_at is not None
    sat = Interaction.objects.get(workspace=ws, type="satisfaction")
    assert sat.pk == survey.interaction_id and sat.properties["score"] == 5
    assert sat.touchpoint.code == "wechat-service" and sat.member_id == answer.member_id
    assert interactions.trust_signal(sat) == 1
    assert sum(TouchpointDay.objects.filter(touchpoint=sat.touchpoint).values_list("positive", flat=True)) == 1
    # the answer is shown in the resolved conversation and opens no new one
    assert Conversation.objects.filter(workspace=ws).count() == 1
    assert [e.kind for e in queries.thread(ws, conv.pk)][-1] == EntryKind.CSAT
    # a second digit is an ordinary message
    inbound(ws, text="4")
    assert CsatSurvey.objects.get(pk=survey.pk).score == 5
    assert Interaction.objects.filter(workspace=ws, type="satisfaction").count() == 1
    assert Conversation.objects.filter(workspace=ws).count() == 2


def test_expired_survey_is_not_answered(ws, agents):
    inbound(ws)
    conv = Conversation.objects.get(workspace=ws)
    services.claim(ws, conv.pk, user=agents["alice"], actor="user:a")
    services.resolve(ws, conv.pk, actor="user:a")
    CsatSurvey.objects.filter(conversation=conv).update(expires_at=services.clock_now() - dt.timedelta(minutes=1))
    inbound(ws, text="1")
    assert CsatSurvey.objects.get(conversation=conv).score is None
    assert not Interaction.objects.filter(workspace=ws, type="satisfaction").exists()


def test_parse_score():
    assert [services.parse_score(t) for t in ("5", "５", " 4分 ", "3星", "1.", "6", "15", "五", "5 stars", "")] == \
        [5, 5, 4, 3, 1, None, None, None, 5, None]


def test_bot_only_conversation_is_closed_when_idle_without_csat(ws, agents, sent):
    inbound(ws, bot_outcome="answered")
    conv = Conversation.objects.get(workspace=ws)
    assert services.close_idle_bot_conversations(services.clock_now()) == 0
    assert services.close_idle_bot_conversations(services.clock_now() + dt.timedelta(hours=25)) == 1
    conv.refresh_from_db()
    assert conv.status == Status.RESOLVED and sent.calls == []


def test_ticket_sla_from_settings_pause_and_escalation_once(ws, agents, monkeypatch):
    vip = services.save_team(ws, "VIP组", actor="t")
    first_line = services.save_team(ws, "客服组", escalation_team_id=vip.pk, actor="t")
    services.save_sla(ws, None, "high", 30, 600, actor="t")
    services.save_sla(ws, first_line.pk, "high", 10, 120, actor="t")
    t0 = services.clock_now()
    ticket = services.create_ticket(ws, title="外卖少送", priority="high", team_id=first_line.pk,
                                    assignee_id=agents["alice"].pk, actor="user:o")
    assert (ticket.first_response_minutes, ticket.resolution_minutes) == (10, 120)
    other = services.create_ticket(ws, title="发票", priority="high", actor="user:o")
    assert (other.first_response_minutes, other.resolution_minutes) == (30, 600)
    low = services.create_ticket(ws, title="咨询", priority="low", actor="user:o")
    assert (low.first_response_minutes, low.resolution_minutes) == services.DEFAULT_SLA["low"]

    # pending stops the clock: 30 minutes pending move the due times by 30 minutes
    monkeypatch.setattr(services, "clock_now", lambda: t0 + dt.timedelta(minutes=5))
    services.update_ticket(ws, ticket.pk, status="pending", actor="user:a")
    monkeypatch.setattr(services, "clock_now", lambda: t0 + dt.timedelta(minutes=35))
    ticket = services.update_ticket(ws, ticket.pk, status="open", actor="user:a")
    assert ticket.paused_seconds == 30 * 60
    assert ticket.resolution_due == ticket.created_at + dt.timedelta(minutes=150)
    assert ticket.first_responded_at is not None  # going pending answered the member

    # the ticket without team: first response missed after 30 minutes, no escalation team: marked only
    assert services.escalate_overdue(t0 + dt.timedelta(minutes=31)) == [other.pk]
    other.refresh_from_db()
    assert other.breach == "first_response" and other.team_id is None
    assert services.escalate_overdue(t0 + dt.timedelta(minutes=140)) == []
    late = t0 + dt.timedelta(minutes=151)
    assert services.escalate_overdue(late) == [ticket.pk]
    assert services.escalate_overdue(late + dt.timedelta(minutes=5)) == []  # once
    ticket.refresh_from_db()
    assert ticket.team_id == vip.pk and ticket.escalated_from_id == first_line.pk and ticket.assignee_id is None
    assert ticket.breach == "resolution" and ticket.breached_at == late
    assert AuditEntry.objects.filter(workspace=ws, action="inbox.ticket.escalate").count() == 2


def test_pending_ticket_is_not_escalated(ws, agents):
    t0 = services.clock_now()
    ticket = services.create_ticket(ws, title="等待顾客回复", priority="urgent", actor="user:o")
    services.update_ticket(ws, ticket.pk, status="pending", actor="user:o")
    assert services.escalate_overdue(t0 + dt.timedelta(days=1)) == []


def test_ticket_from_conversation_takes_member_and_agent(ws, agents):
    inbound(ws)
    conv = Conversation.objects.get(workspace=ws)
    services.claim(ws, conv.pk, user=agents["bob"], actor="user:b")
    ticket = services.create_ticket(ws, title="退款", conversation_id=conv.pk, actor="user:b")
    assert ticket.member_id == conv.member_id and ticket.assignee_id == agents["bob"].pk
    assert ticket.first_responded_at is None
    services.reply(ws, conv.pk, "已为您退款", user=agents["bob"], actor="user:b")
    ticket.refresh_from_db()
    assert ticket.first_responded_at is not None


def test_every_change_moves_the_version(ws, agents):
    v0 = queries.version(ws)
    inbound(ws)
    v1 = queries.version(ws)
    conv = Conversation.objects.get(workspace=ws)
    services.claim(ws, conv.pk, user=agents["alice"], actor="a")
    v2 = queries.version(ws)
    services.add_note(ws, conv.pk, "备注", user=agents["alice"], actor="a")
    v3 = queries.version(ws)
    assert v0 < v1 < v2 < v3


def test_other_workspace_cannot_touch_conversations(ws, other_ws, agents):
    inbound(ws)
    conv = Conversation.objects.get(workspace=ws)
    with pytest.raises(NotFound):
        services.claim(other_ws, conv.pk, user=agents["alice"], actor="a")
    with pytest.raises(NotFound):
        services.reply(other_ws, conv.pk, "hi", user=None, actor="a")
    with pytest.raises(NotFound):
        services.create_ticket(other_ws, title="x", conversation_id=conv.pk, actor="a")
    assert Ticket.objects.count() == 0


def test_list_pages_with_constant_queries(ws, agents):
    for i in range(25):
        inbound(ws, openid=f"o{i}", text=f"问题 {i}")
    qs = queries.conversations(ws, agents["alice"].pk, queries.ConversationFilter(view="unassigned"))
    with CaptureQueriesContext(connection) as ctx:
        rows, cursor = queries.page(qs, limit=10)
        for r in rows:
            _ = (r.member.display_name, r.assignee, r.team)
    assert len(ctx.captured_queries) == 1 and len(rows) == 10 and cursor
    seen = [r.pk for r in rows]
    while cursor:
        rows, cursor = queries.page(qs, after=cursor, limit=10)
        seen += [r.pk for r in rows]
    assert len(seen) == len(set(seen)) == 25


def test_csat_reply_hook_answers_a_pending_survey_only(ws, agents):
    from shequn.conversations import services as conversations

    assert services.csat_reply_hook in conversations.REPLY_HOOKS
    msg = inbound(ws)
    conv = Conversation.objects.get(workspace=ws)
    at = services.clock_now()
    assert services.csat_reply_hook(ws, msg.member_id, "5", at) is None  # nothing asked yet
    services.claim(ws, conv.pk, user=agents["alice"], actor="a")
    services.resolve(ws, conv.pk, actor="a")
    at = services.clock_now()
    answer = services.csat_reply_hook(ws, msg.member_id, "4", at)
    assert isinstance(answer, conversations.Answer) and answer.outcome == "answered"
    assert "4/5" in answer.content
    assert services.csat_reply_hook(ws, msg.member_id, "我还有问题", at) is None
    assert services.csat_reply_hook(ws, None, "4", at) is None
    assert services.csat_reply_hook(ws, msg.member_id, "4", at + services.CSAT_WINDOW) is None


def test_replies_and_the_csat_question_go_through_the_outbox(ws, agents):
    from shequn.outbound.models import OutboundMessage

    inbound(ws)
    conv = Conversation.objects.get(workspace=ws)
    entry = services.reply(ws, conv.pk, "您好", user=agents["alice"], actor="user:a")
    services.resolve(ws, conv.pk, actor="user:a")
    rows = {m.purpose: m for m in OutboundMessage.objects.filter(workspace=ws)}
    assert sorted(rows) == ["csat", "inbox_reply"]
    assert rows["inbox_reply"].member_id == conv.member_id and rows["inbox_reply"].pk == entry.outbound_id
    assert rows["csat"].pk == CsatSurvey.objects.get(conversation=conv).outbound_id
