"""The inbox demo seed on a small demo workspace: deterministic, through the services, and it fills
every part of the inbox (queues, threads, tickets with an escalation, CSAT answers, the report)."""

from __future__ import annotations

import time

from django.db import connection

from shequn import demo
from shequn.core.clock import now
from shequn.inbox import queries
from shequn.inbox.models import Conversation, CsatSurvey, Entry, Team, Ticket
from shequn.interactions.models import Interaction


def test_seed_demo(db, monkeypatch):
    """build_demo calls the inbox seed last (src/shequn/demo.py); it is timed on its own here."""
    from shequn.inbox import demo as inbox_demo

    spent = []
    real = inbox_demo.seed_demo

    def timed_seed(workspace, rng, at):
        start = time.monotonic()
        real(workspace, rng, at)
        spent.append(time.monotonic() - start)

    monkeypatch.setattr(inbox_demo, "seed_demo", timed_seed)
    moment = now()
    ws = demo.build_demo("demo", members=150, interactions=4000, seed=3, now=moment)
    # < 10 s asked of every demo seed; PostgreSQL round trips on a loaded CI machine get some slack
    assert len(spent) == 1 and spent[0] < (10 if connection.vendor == "sqlite" else 20)
    assert sorted(Team.objects.filter(workspace=ws).values_list("name", flat=True)) == ["客服组", "门店组"]
    convs = Conversation.objects.filter(workspace=ws)
    assert convs.filter(status="resolved").count() >= 10
    assert convs.filter(status="open", assignee__isnull=True, needs_human=True).count() >= 1
    assert convs.filter(status="open", assignee__isnull=False).count() >= 1
    assert Entry.objects.filter(workspace=ws, kind="reply").exists()
    answered = CsatSurvey.objects.filter(workspace=ws, score__isnull=False)
    assert answered.count() >= 1
    assert Interaction.objects.filter(workspace=ws, type="satisfaction", source="inbox").count() == answered.count()
    assert Ticket.objects.filter(workspace=ws).count() == 5
    escalated = Ticket.objects.get(workspace=ws, breached_at__isnull=False)
    assert escalated.team.name == "客服组" and escalated.escalated_from.name == "门店组"
    report = queries.report(ws, days=30, now=moment)
    assert sum(report["opened"]) == convs.count() and sum(report["breached"]) == 1
    assert len([n for n in report["opened"] if n]) > 5  # spread over the month
