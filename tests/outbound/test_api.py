"""The outbound API: outbox, send text, subscriptions, deliveries, endpoints — scoped and role-checked."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from shequn.interactions import services as interactions
from shequn.members import services as members
from shequn.outbound import services
from shequn.outbound.models import OutboundMessage, WebhookDelivery
from tests.api.helpers import error_code, make_client

EVENT = {"identities": [{"kind": "phone", "value": "13800138000"}], "type": "visit", "channel": "store",
         "occurred_at": "2026-06-01T10:00:00+08:00", "external_id": "v1"}


@pytest.fixture(autouse=True)
def _clear_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api(ws):
    return make_client(ws, "owner")


def test_send_text_and_list_the_outbox(api, ws, follower, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        r = api.post("/api/v1/outbox/text", {"member_id": follower.pk, "text": "您好", "purpose": "inbox_reply",
                                             "key": "reply-1"})
    assert r.status_code == 201, r.content
    body = r.json()
    assert (body["status"], body["channel"], body["purpose"], body["payload"]) == \
        ("queued", "wechat", "inbox_reply", {"text": "您好"})
    assert body["actor"].startswith("apikey:") and len(callbacks) == 1
    again = api.post("/api/v1/outbox/text", {"member_id": follower.pk, "text": "您好", "purpose": "inbox_reply",
                                             "key": "reply-1"})
    assert again.json()["id"] == body["id"]
    for i in range(3):
        services.send_text(ws, follower.pk, f"m{i}", purpose="welcome", actor="t")
    page = api.get("/api/v1/outbox", {"limit": 2, "purpose": "welcome"}).json()
    assert [m["payload"]["text"] for m in page["items"]] == ["m2", "m1"] and page["next"]
    rest = api.get("/api/v1/outbox", {"limit": 2, "purpose": "welcome", "after": page["next"]}).json()
    assert [m["payload"]["text"] for m in rest["items"]] == ["m0"] and rest["next"] is None
    assert api.get(f"/api/v1/outbox/{body['id']}").json()["key"] == "reply-1"


def test_outbox_list_has_no_n_plus_one(api, ws, follower, django_assert_max_num_queries):
    for i in range(30):
        services.send_text(ws, follower.pk, f"m{i}", purpose="welcome", actor="t")
    api.get("/api/v1/workspace")
    with django_assert_max_num_queries(2):
        r = api.get("/api/v1/outbox", {"limit": 30})
    assert len(r.json()["items"]) == 30


def test_errors_use_the_error_format(api, ws, follower):
    r = api.post("/api/v1/outbox/text", {"member_id": follower.pk, "text": "  ", "purpose": "x"})
    assert r.status_code == 422 and error_code(r) == "invalid_field"
    r = api.post(f"/api/v1/outbox/{999999}/retry")
    assert r.status_code == 404 and error_code(r) == "not_found"


def test_another_workspace_sees_nothing(ws, other_ws, follower):
    msg = services.send_text(ws, follower.pk, "hi", purpose="welcome", actor="t")
    sub = services.create_subscription(ws, "仓库", "https://example.com/h", ["interaction.created"], actor="t")
    interactions.ingest_batch(ws, [EVENT])
    delivery = WebhookDelivery.objects.get()
    endpoint = services.create_endpoint(ws, "POS", actor="t")
    other = make_client(other_ws, "owner")
    assert other.get("/api/v1/outbox").json()["items"] == []
    assert other.get(f"/api/v1/outbox/{msg.pk}").status_code == 404
    assert other.post("/api/v1/outbox/text", {"member_id": follower.pk, "text": "x"}).status_code == 404
    assert other.get("/api/v1/webhooks/subscriptions").json()["items"] == []
    assert other.get(f"/api/v1/webhooks/subscriptions/{sub.pk}").status_code == 404
    assert other.patch(f"/api/v1/webhooks/subscriptions/{sub.pk}", {"active": False}).status_code == 404
    assert other.delete(f"/api/v1/webhooks/subscriptions/{sub.pk}").status_code == 404
    assert other.get("/api/v1/webhooks/deliveries").json()["items"] == []
    assert other.get(f"/api/v1/webhooks/deliveries/{delivery.pk}").status_code == 404
    assert other.post(f"/api/v1/webhooks/deliveries/{delivery.pk}/replay").status_code == 404
    assert other.delete(f"/api/v1/webhooks/endpoints/{endpoint.pk}").status_code == 404
    assert OutboundMessage.objects.filter(workspace=other_ws).count() == 0


def test_subscription_crud_deliveries_and_replay(api, ws):
    r = api.post("/api/v1/webhooks/subscriptions", {"name": "仓库", "url": "https://example.com/h",
                                                    "events": ["interaction.created"]})
    assert r.status_code == 201 and r.json()["secret"].startswith("whsec_")
    sid = r.json()["id"]
    assert "secret" not in api.get("/api/v1/webhooks/subscriptions").json()["items"][0]
    interactions.ingest_batch(ws, [EVENT])
    [d] = api.get("/api/v1/webhooks/deliveries").json()["items"]
    assert d["event"] == "interaction.created" and d["status"] == "pending"
    detail = api.get(f"/api/v1/webhooks/deliveries/{d['id']}").json()
    assert detail["payload"]["event"] == "interaction.created" and detail["attempt_log"] == []
    WebhookDelivery.objects.filter(pk=d["id"]).update(status="failed", attempts=6)
    replay = api.post(f"/api/v1/webhooks/deliveries/{d['id']}/replay")
    assert replay.status_code == 200 and replay.json()["status"] == "pending" and replay.json()["attempts"] == 0
    patched = api.patch(f"/api/v1/webhooks/subscriptions/{sid}", {"events": ["*"], "rotate_secret": True})
    assert patched.json()["events"] == ["*"] and patched.json()["secret"] != r.json()["secret"]
    assert api.post(f"/api/v1/webhooks/subscriptions/{sid}/test").json()["event"] == "webhook.test"
    assert api.patch(f"/api/v1/webhooks/subscriptions/{sid}", {"url": "nope"}).status_code == 422
    assert api.delete(f"/api/v1/webhooks/subscriptions/{sid}").status_code == 204
    assert api.get("/api/v1/webhooks/subscriptions").json()["items"] == []


def test_endpoints_api(api):
    r = api.post("/api/v1/webhooks/endpoints", {"name": "POS"})
    assert r.status_code == 201 and r.json()["path"].startswith("/hooks/in/") and r.json()["source"] == "webhook:pos"
    assert "secret" not in api.get("/api/v1/webhooks/endpoints").json()["items"][0]
    assert api.delete(f"/api/v1/webhooks/endpoints/{r.json()['id']}").status_code == 204


def test_roles(ws, follower):
    agent = make_client(ws, "agent")
    clerk = make_client(ws, "clerk")
    assert agent.post("/api/v1/outbox/text", {"member_id": follower.pk, "text": "您好"}).status_code == 201
    assert agent.get("/api/v1/webhooks/subscriptions").status_code == 403
    assert clerk.get("/api/v1/outbox").status_code == 403
    m = members.upsert_member(ws, [{"kind": "phone", "value": "13900139000"}]).member
    assert agent.post("/api/v1/outbox/text", {"member_id": m.pk, "text": "x"}).json()["status"] == "undeliverable"
