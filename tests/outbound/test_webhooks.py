"""Webhooks in (signed requests record interactions) and out (signed, retried, replayable)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shequn.core.errors import NotFound, ValidationError
from shequn.interactions import services as interactions
from shequn.interactions.models import Interaction
from shequn.outbound import services, signing
from shequn.outbound.models import DeliveryAttempt, WebhookDelivery
from shequn.outbound.tasks import deliver_webhooks

T0 = "2026-06-01T10:00:00+08:00"


# ---------------------------------------------------------------------------------------------
# inbound


@pytest.fixture
def endpoint(ws):
    return services.create_endpoint(ws, "POS 收银系统", actor="t")


def _event(ext: str = "order-1001", **extra):
    return {"identities": [{"kind": "phone", "value": "13800138000"}], "type": "purchase", "channel": "store",
            "occurred_at": T0, "external_id": ext, "amount": "32.00", "currency": "CNY",
            "properties": {"store": "西湖店", "items": [{"name": "杨枝甘露", "price": 16, "qty": 2}]}, **extra}


def _post(client, endpoint, body: bytes, *, secret: str | None = None, ts: int | None = None, header: str | None = None):
    ts = int(time.time()) if ts is None else ts
    sig = header if header is not None else signing.header_value(secret or endpoint.secret, ts, body)
    return client.post(f"/hooks/in/{endpoint.key}/", data=body, content_type="application/json",
                       headers={"X-Shequn-Signature": sig})


def test_a_signed_webhook_records_interactions_once(client, ws, endpoint):
    body = json.dumps({"events": [_event(), _event("order-1002")]}, ensure_ascii=False).encode()
    r = _post(client, endpoint, body)
    assert r.status_code == 200, r.content
    assert (r.json()["created"], r.json()["duplicate"], r.json()["error"]) == (2, 0, 0)
    rows = Interaction.objects.filter(workspace=ws).order_by("external_id")
    assert [(i.source, i.external_id, str(i.amount)) for i in rows] == [
        ("webhook:pos", "order-1001", "32.00"), ("webhook:pos", "order-1002", "32.00")]
    again = _post(client, endpoint, body)
    assert again.json()["duplicate"] == 2 and Interaction.objects.filter(workspace=ws).count() == 2
    endpoint.refresh_from_db()
    assert endpoint.received_count == 2 and endpoint.last_received_at is not None


def test_the_source_is_the_endpoints_whatever_the_body_says(client, ws, endpoint):
    r = _post(client, endpoint, json.dumps(_event(source="wechat:wx123")).encode())
    assert r.status_code == 200 and Interaction.objects.get().source == endpoint.source


@pytest.mark.parametrize("case", ["wrong secret", "tampered body", "no header", "garbage header"])
def test_a_bad_signature_is_401_and_records_nothing(client, ws, endpoint, case):
    body = json.dumps(_event()).encode()
    if case == "wrong secret":
        r = _post(client, endpoint, body, secret="whsec_wrong")
    elif case == "tampered body":
        ts = int(time.time())
        r = _post(client, endpoint, body.replace(b"32.00", b"0.01"), header=signing.header_value(endpoint.secret, ts, body))
    elif case == "no header":
        r = client.post(f"/hooks/in/{endpoint.key}/", data=body, content_type="application/json")
    else:
        r = _post(client, endpoint, body, header="sha256=abc")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_signature"
    assert Interaction.objects.count() == 0


def test_a_replay_outside_the_tolerance_is_refused(client, ws, endpoint):
    body = json.dumps(_event()).encode()
    r = _post(client, endpoint, body, ts=int(time.time()) - endpoint.tolerance - 5)
    assert r.status_code == 401 and r.json()["error"]["code"] == "signature_expired"
    assert _post(client, endpoint, body, ts=int(time.time()) + endpoint.tolerance + 5).status_code == 401
    assert Interaction.objects.count() == 0


def test_a_rotated_secret_and_multiple_signatures(client, ws, endpoint):
    old = endpoint.secret
    endpoint = services.rotate_endpoint_secret(ws, endpoint.pk, actor="t")
    body = json.dumps(_event()).encode()
    assert _post(client, endpoint, body, secret=old).status_code == 401
    ts = int(time.time())
    both = f"t={ts},v1={signing.compute(old, ts, body)},v1={signing.compute(endpoint.secret, ts, body)}"
    assert _post(client, endpoint, body, header=both).status_code == 200


@pytest.mark.parametrize(("body", "code"), [(b"{not json", "malformed_body"), (b"[]", "malformed_body"),
                                            (b'"text"', "malformed_body"), (b"\xff\xfe", "malformed_body")])
def test_a_malformed_body_is_400(client, endpoint, body, code):
    r = _post(client, endpoint, body)
    assert r.status_code == 400 and r.json()["error"]["code"] == code
    assert Interaction.objects.count() == 0


def test_bad_events_are_reported_per_row(client, endpoint):
    no_ext = _event()
    del no_ext["external_id"]
    r = _post(client, endpoint, json.dumps([_event(), no_ext, _event("x", type="nonsense"), 5]).encode())
    assert r.status_code == 200
    assert [row["status"] for row in r.json()["results"]] == ["created", "error", "error", "error"]
    assert r.json()["results"][1]["error"]["code"] == "missing_external_id"
    assert r.json()["results"][2]["error"]["code"] == "invalid_type"


def test_unknown_or_disabled_endpoints_and_other_methods(client, ws, endpoint):
    body = json.dumps(_event()).encode()
    assert client.post("/hooks/in/AAAAAAAAAAAAAAAAAAAAAAAA/", data=body, content_type="application/json",
                       headers={"X-Shequn-Signature": "t=1,v1=00"}).status_code == 404
    assert client.get(f"/hooks/in/{endpoint.key}/").status_code == 405
    services.set_endpoint_active(ws, endpoint.pk, False, actor="t")
    assert _post(client, endpoint, body).status_code == 404


def test_endpoints_are_scoped(ws, other_ws, endpoint):
    with pytest.raises(NotFound):
        services.rotate_endpoint_secret(other_ws, endpoint.pk, actor="t")
    with pytest.raises(NotFound):
        services.delete_endpoint(other_ws, endpoint.pk, actor="t")
    with pytest.raises(ValidationError):
        services.create_endpoint(ws, "POS 收银系统", actor="t")


# ---------------------------------------------------------------------------------------------
# outbound


class Receiver:
    """A local HTTP server that records webhook posts and answers with the configured statuses."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.posts.append(({k: v for k, v in self.headers.items()}, body))
                status = outer.statuses.pop(0) if outer.statuses else 200
                payload = b"thanks" if status < 400 else b"boom " * 300
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def sub(ws, receiver):
    return services.create_subscription(ws, "数据仓库", receiver.url, ["interaction.created"], actor="t")


def _due(delivery: WebhookDelivery) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))


def test_new_interactions_are_posted_signed_to_subscribers(ws, sub, receiver, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        [res] = interactions.ingest_batch(ws, [_event()])
    [delivery] = WebhookDelivery.objects.filter(subscription=sub)
    assert delivery.event == "interaction.created" and delivery.event_id == f"interaction.created:{res.id}"
    assert len(callbacks) == 1, "one task per batch of deliveries, after commit"
    assert deliver_webhooks.call([delivery.pk]) == {str(delivery.pk): "delivered"}
    [(headers, body)] = receiver.posts
    assert headers["X-Shequn-Event"] == "interaction.created"
    assert headers["X-Shequn-Event-Id"] == delivery.event_id
    ts = signing.verify(sub.secret, headers["X-Shequn-Signature"], body, now=time.time(), tolerance=300)
    assert abs(ts - time.time()) < 60
    doc = json.loads(body)
    assert doc["event"] == "interaction.created" and doc["workspace"] == "tea"
    assert doc["data"]["id"] == res.id and doc["data"]["amount"] == "32.00"
    assert doc["data"]["properties"]["items"][0]["name"] == "杨枝甘露"
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 1 and delivery.last_status_code == 200
    [attempt] = DeliveryAttempt.objects.filter(delivery=delivery)
    assert attempt.ok and attempt.status_code == 200 and attempt.response_excerpt == "thanks"


def test_no_subscriber_means_no_delivery_and_one_query(ws, django_assert_num_queries):
    from shequn.outbound.services import on_interactions

    with django_assert_num_queries(2):  # cold: the settings versions, then the subscriptions
        on_interactions(ws, [])
    with django_assert_num_queries(1):  # warm: only the versions (ADR 0015)
        on_interactions(ws, [])
    interactions.ingest_batch(ws, [_event()])
    assert WebhookDelivery.objects.count() == 0


def test_subscriptions_only_get_their_events(ws, receiver):
    services.create_subscription(ws, "只要消息", receiver.url, ["message.sent"], actor="t")
    interactions.ingest_batch(ws, [_event()])
    assert WebhookDelivery.objects.count() == 0
    paused = services.create_subscription(ws, "暂停", receiver.url, ["*"], actor="t")
    services.update_subscription(ws, paused.pk, active=False, actor="t")
    interactions.ingest_batch(ws, [_event("o2")])
    assert WebhookDelivery.objects.count() == 0


def test_failed_posts_are_retried_then_marked_failed(ws, sub, receiver, monkeypatch):
    monkeypatch.setattr(services, "WEBHOOK_MAX_ATTEMPTS", 3)
    interactions.ingest_batch(ws, [_event()])
    delivery = WebhookDelivery.objects.get()
    receiver.statuses = [500, 503, 502]
    assert services.deliver_webhook(delivery.pk) == "pending"
    assert services.deliver_webhook(delivery.pk) == "pending", "not due yet"
    _due(delivery)
    assert services.deliver_webhook(delivery.pk) == "pending"
    _due(delivery)
    assert services.deliver_webhook(delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 3 and delivery.last_status_code == 502
    attempts = list(DeliveryAttempt.objects.filter(delivery=delivery))
    assert [a.status_code for a in attempts] == [500, 503, 502]
    assert len(attempts[0].response_excerpt) == services.RESPONSE_EXCERPT
    bodies = {body for _h, body in receiver.posts}
    assert len(bodies) == 1, "every attempt posts the same body"
    assert len({h["X-Shequn-Event-Id"] for h, _b in receiver.posts}) == 1


def test_an_unreachable_subscriber_is_retried(ws, receiver):
    dead = Receiver()
    url = dead.url
    dead.close()
    sub = services.create_subscription(ws, "down", url, ["interaction.created"], actor="t")
    interactions.ingest_batch(ws, [_event()])
    delivery = WebhookDelivery.objects.get(subscription=sub)
    assert services.deliver_webhook(delivery.pk) == "pending"
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    assert attempt.status_code is None and "Connect" in attempt.error


def test_an_operator_can_replay_a_delivery(ws, sub, receiver, django_capture_on_commit_callbacks):
    interactions.ingest_batch(ws, [_event()])
    delivery = WebhookDelivery.objects.get()
    services.deliver_webhook(delivery.pk)
    with django_capture_on_commit_callbacks() as callbacks:
        replayed = services.replay_delivery(ws, delivery.pk, actor="user:7")
    assert replayed.status == "pending" and replayed.attempts == 0 and len(callbacks) == 1
    assert services.deliver_webhook(delivery.pk) == "delivered"
    assert len(receiver.posts) == 2
    assert receiver.posts[0][1] == receiver.posts[1][1]
    assert receiver.posts[0][0]["X-Shequn-Event-Id"] == receiver.posts[1][0]["X-Shequn-Event-Id"]
    attempts = list(DeliveryAttempt.objects.filter(delivery=delivery))
    assert [(a.replay, a.actor) for a in attempts] == [(False, ""), (True, "user:7")]
    with pytest.raises(NotFound):
        services.replay_delivery(_other(ws), delivery.pk, actor="t")


def _other(ws):
    from shequn.core import services as core

    return core.create_workspace("other2", "Other")


def test_publish_is_idempotent_by_event_id(ws, sub, receiver):
    services.update_subscription(ws, sub.pk, events=["member.merged"], actor="t")
    a = services.publish(ws, "member.merged", {"survivor": 1, "absorbed": 2}, event_id="merge-9")
    b = services.publish(ws, "member.merged", {"survivor": 1, "absorbed": 2}, event_id="merge-9")
    assert len(a) == 1 and b == []
    assert WebhookDelivery.objects.count() == 1


def test_outbox_results_are_published(ws, follower, fake, wechat, receiver):
    sub = services.create_subscription(ws, "消息回执", receiver.url, ["message.sent", "message.failed"], actor="t")
    msg = services.send_text(ws, follower.pk, "hi", purpose="welcome", actor="t")
    services.deliver(msg.pk)
    [delivery] = WebhookDelivery.objects.filter(subscription=sub)
    assert delivery.event == "message.sent" and delivery.payload["data"]["id"] == msg.pk
    assert delivery.payload["data"]["status"] == "sent"


def test_test_event_and_subscription_validation(ws, sub, receiver):
    delivery = services.send_test_event(ws, sub.pk, actor="user:1")
    assert delivery.event == "webhook.test"
    assert services.deliver_webhook(delivery.pk) == "delivered"
    for bad in ({"url": "ftp://x"}, {"events": []}, {"events": ["Not An Event"]}, {"name": ""}):
        args = {"name": "n", "url": "https://example.com/h", "events": ["interaction.created"], **bad}
        with pytest.raises(ValidationError):
            services.create_subscription(ws, args["name"], args["url"], args["events"], actor="t")
    with pytest.raises(NotFound):
        services.update_subscription(_other(ws), sub.pk, active=False, actor="t")


def test_private_targets_are_refused(ws, sub, receiver, settings):
    settings.SHEQUN_WEBHOOK_ALLOW_PRIVATE = False
    interactions.ingest_batch(ws, [_event()])
    delivery = WebhookDelivery.objects.get()
    assert services.deliver_webhook(delivery.pk) == "failed"
    assert receiver.posts == []
    attempt = DeliveryAttempt.objects.get(delivery=delivery)
    assert "127.0.0.1" in attempt.error and attempt.status_code is None
