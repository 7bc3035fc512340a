"""Races on a real PostgreSQL server with real threads (each thread has its own connection)."""

from __future__ import annotations

import datetime as dt

import pytest

from shequn.core import services as core
from shequn.interactions import services as interactions
from shequn.interactions.models import Interaction
from shequn.members import services as members
from shequn.members.models import Identity, Member
from tests.threads import run_threads

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_concurrent_upserts_of_one_new_phone_make_one_member():
    ws = core.create_workspace("race", "Race")
    results = run_threads(8, lambda i: members.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}]).member.pk)
    assert len(set(results)) == 1
    assert Member.objects.filter(workspace=ws).count() == 1
    assert Identity.objects.filter(workspace=ws).count() == 1


def test_concurrent_replays_of_one_event_store_it_once():
    ws = core.create_workspace("race", "Race")
    m = members.upsert_member(ws, [{"kind": "external", "value": "m"}]).member
    t = dt.datetime(2026, 6, 1, tzinfo=dt.UTC).isoformat()
    event = {"member_id": m.pk, "type": "message", "channel": "wechat", "occurred_at": t, "source": "wx",
             "external_id": "MSG-1"}
    results = run_threads(8, lambda i: interactions.ingest(ws, event).status)
    assert sorted(results) == ["created"] + ["duplicate"] * 7
    assert Interaction.objects.filter(workspace=ws).count() == 1
    m.refresh_from_db()
    assert m.interaction_count == 1


def test_concurrent_events_of_one_member_lose_no_count():
    ws = core.create_workspace("race", "Race")
    m = members.upsert_member(ws, [{"kind": "external", "value": "m"}]).member
    base = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

    def send(i):
        batch = [{"member_id": m.pk, "type": "purchase", "channel": "store", "amount": "10.00",
                  "occurred_at": (base + dt.timedelta(minutes=i * 10 + k)).isoformat(), "source": "pos",
                  "external_id": f"{i}-{k}"} for k in range(10)]
        return [r.status for r in interactions.ingest_batch(ws, batch)]

    run_threads(6, send)
    m.refresh_from_db()
    assert m.interaction_count == 60 and m.purchase_count == 60
    assert str(m.purchase_total) == "600.00"
    assert m.stage.key == "using"
