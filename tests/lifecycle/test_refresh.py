from __future__ import annotations

import datetime as dt
from unittest import mock

from shequn.interactions import services as interactions
from shequn.lifecycle import services, tasks
from shequn.members.models import Member


def test_strength_decays_when_nothing_happens(ws):
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=60)
    events = []
    for d in range(0, 60, 3):
        t = start + dt.timedelta(days=d)
        events.append({"identities": [{"kind": "external", "value": "x"}], "type": "message", "channel": "wechat",
                       "direction": "in" if d % 2 == 0 else "out", "occurred_at": t.isoformat()})
    interactions.ingest_batch(ws, events)
    m = Member.objects.get()
    assert m.strength == 3
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=100)
    with mock.patch("shequn.lifecycle.services.now", return_value=later):
        assert services.refresh_strength(ws) == 1
        assert services.refresh_strength(ws) == 0  # idempotent
    m.refresh_from_db()
    assert m.strength == 1


def test_refresh_task_is_registered_as_periodic():
    from shequn.core.tasks import PERIODIC_REGISTRY

    names = {d.name for d in (PERIODIC_REGISTRY.values() if isinstance(PERIODIC_REGISTRY, dict) else PERIODIC_REGISTRY)}
    assert "lifecycle.refresh_strength" in names
    assert tasks.refresh_strength_all.name == "refresh_strength_all"
