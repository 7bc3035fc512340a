"""Inbox races on a real PostgreSQL server with real threads (each thread has its own connection)."""

from __future__ import annotations

import pytest

from shequn.core import services as core
from shequn.core.errors import Conflict
from shequn.inbox import services
from shequn.inbox.models import Conversation, Ticket
from tests.threads import run_threads

from .conftest import PASSWORD, inbound

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _agents(ws, n):
    users = []
    for i in range(n):
        user = core.ensure_user(f"agent{i}", PASSWORD)
        core.add_staff(ws, user, "agent")
        users.append(user)
    return users


def test_eight_agents_claim_at_once_exactly_one_wins():
    ws = core.create_workspace("race", "Race")
    users = _agents(ws, 8)
    inbound(ws)
    conv = Conversation.objects.get(workspace=ws)

    def claim(i):
        try:
            services.claim(ws, conv.pk, user=users[i], actor=f"user:{users[i].pk}")
            return ("won", users[i].pk)
        except Conflict as exc:
            return (exc.code, None)

    results = run_threads(8, claim)
    winners = [uid for status, uid in results if status == "won"]
    assert len(winners) == 1
    assert sorted(status for status, _ in results) == ["already_claimed"] * 7 + ["won"]
    conv.refresh_from_db()
    assert conv.assignee_id == winners[0]


def test_concurrent_first_messages_of_one_member_open_one_conversation():
    ws = core.create_workspace("race", "Race")
    results = run_threads(6, lambda i: inbound(ws, text=f"消息{i}", external_id=f"m{i}").status)
    assert results == ["created"] * 6
    [conv] = Conversation.objects.filter(workspace=ws)
    assert conv.entries.count() == 6


def test_concurrent_sweeps_escalate_a_ticket_once():
    ws = core.create_workspace("race", "Race")
    vip = services.save_team(ws, "VIP", actor="t")
    team = services.save_team(ws, "客服组", escalation_team_id=vip.pk, actor="t")
    ticket = services.create_ticket(ws, title="超时", priority="urgent", team_id=team.pk, actor="t")
    late = ticket.resolution_due
    results = run_threads(6, lambda i: services.escalate_overdue(late))
    assert sorted(len(r) for r in results) == [0] * 5 + [1]
    ticket = Ticket.objects.get(pk=ticket.pk)
    assert ticket.team_id == vip.pk and ticket.escalated_from_id == team.pk
