"""Concurrent refreshes of one workspace on a real PostgreSQL server, with real threads."""

from __future__ import annotations

import datetime as dt

import pytest

from shequn.core import services as core
from shequn.interactions import services as interactions
from shequn.members import services as members
from shequn.recommend import services as recommend
from shequn.recommend.models import ItemAffinity, ItemStat
from tests.threads import run_threads

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_8_concurrent_refreshes_leave_one_consistent_set_of_rows():
    ws = core.create_workspace("race", "Race")
    now = dt.datetime.now(dt.UTC)
    events = []
    for i in range(30):
        m = members.upsert_member(ws, [{"kind": "external", "value": f"m{i}"}]).member
        for d in range(3):
            items = [{"name": f"drink-{(i + d) % 7}"}, {"name": f"drink-{(i * d) % 5}"}]
            events.append({"member_id": m.pk, "type": "purchase", "channel": "store", "source": "pos",
                           "external_id": f"{i}-{d}", "occurred_at": (now - dt.timedelta(days=d + 1)).isoformat(),
                           "properties": {"items": items}})
    interactions.ingest_batch(ws, events, actor="t")
    expected = recommend.refresh_affinity(ws, at=now)
    rows = sorted(ItemAffinity.objects.filter(workspace=ws).values_list("item", "other", "similarity"))

    results = run_threads(8, lambda i: recommend.refresh_affinity(ws, at=now))
    assert results == [expected] * 8
    assert ItemStat.objects.filter(workspace=ws).count() == expected["items"]
    assert sorted(ItemAffinity.objects.filter(workspace=ws).values_list("item", "other", "similarity")) == rows
