from __future__ import annotations

import datetime as dt
import random

from shequn.members import services as members
from shequn.outbound import demo
from shequn.outbound.models import OutboundMessage, WebhookEndpoint, WebhookSubscription


def test_seed_demo_is_deterministic_and_offline(ws, django_capture_on_commit_callbacks):
    for i in range(30):
        members.upsert_member(ws, [{"kind": "wechat_openid", "namespace": "wx7c3e9a5b1d2f4608", "value": f"o{i:04d}"}])
    now = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    with django_capture_on_commit_callbacks() as callbacks:
        demo.seed_demo(ws, random.Random(1), now)
    assert callbacks == [], "no task is enqueued: the demo never calls the network"
    rows = list(OutboundMessage.objects.filter(workspace=ws).order_by("key").values_list("key", "status", "purpose"))
    assert len(rows) == 33 and {r[1] for r in rows} <= {"sent", "failed"}
    assert sum(1 for r in rows if r[2] == "otp") == 3
    assert not WebhookSubscription.objects.get(workspace=ws).active
    assert WebhookEndpoint.objects.filter(workspace=ws).count() == 1
    assert all(m.created_at <= now for m in OutboundMessage.objects.filter(workspace=ws))
