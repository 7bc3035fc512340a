"""Console pages of the outbound domain: outbox, message detail and retry, SMTP, webhooks, deliveries."""

from __future__ import annotations

import pytest
from django.test import Client

from shequn.core import services as core
from shequn.interactions import services as interactions
from shequn.members import services as members
from shequn.outbound import services
from shequn.outbound.models import (
    MessageStatus,
    OutboundMessage,
    SmtpSettings,
    WebhookDelivery,
    WebhookEndpoint,
)

EVENT = {"identities": [{"kind": "phone", "value": "13800138000"}], "type": "visit", "channel": "store",
         "occurred_at": "2026-06-01T10:00:00+08:00", "external_id": "v1"}


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _login(ws, role: str, lang: str = "zh-hans") -> Client:
    user = core.ensure_user(f"{role}-{ws.slug}", "pw-123456-x")
    core.add_staff(ws, user, role)
    client = Client(HTTP_ACCEPT_LANGUAGE=lang)
    client.force_login(user)
    return client


def test_outbox_lists_filters_and_sends(ws, follower, django_assert_max_num_queries):
    for i in range(25):
        services.send_text(ws, follower.pk, f"欢迎 {i}", purpose="welcome", actor="t")
    otp = services.send_text(ws, follower.pk, "您的登录验证码 482913", purpose="otp", actor="portal")
    agent = _login(ws, "agent")
    agent.get(f"/w/{ws.slug}/outbound/outbox/")
    with django_assert_max_num_queries(12):
        r = agent.get(f"/w/{ws.slug}/outbound/outbox/")
    assert r.status_code == 200 and r.content.decode().count("<tr data-purpose=") == 26
    r = agent.get(f"/w/{ws.slug}/outbound/outbox/", {"purpose": "otp"})
    body = r.content.decode()
    assert "482913" in body and "欢迎 3" not in body, "the demo reads one-time codes here"
    detail = agent.get(f"/w/{ws.slug}/outbound/outbox/{otp.pk}/")
    assert detail.status_code == 200 and "482913" in detail.content.decode()
    r = agent.post(f"/w/{ws.slug}/outbound/outbox/", {"member_id": follower.pk, "text": "您好，有什么可以帮您？"})
    assert r.status_code == 302
    sent = OutboundMessage.objects.filter(purpose="operator").get()
    assert sent.actor.startswith("user:") and sent.payload == {"text": "您好，有什么可以帮您？"}


def test_english_outbox(ws, follower):
    services.send_text(ws, follower.pk, "hi", purpose="welcome", actor="t")
    r = _login(ws, "owner", "en").get(f"/w/{ws.slug}/outbound/outbox/")
    assert "Outbox" in r.content.decode() and "Queued" in r.content.decode()


def test_retry_a_failed_message(ws, follower):
    msg = services.send_text(ws, follower.pk, "hi", purpose="welcome", actor="t")
    OutboundMessage.objects.filter(pk=msg.pk).update(status=MessageStatus.FAILED, last_error="WeChat is busy (-1)")
    operator = _login(ws, "operator")
    assert 'id="retry"' in operator.get(f"/w/{ws.slug}/outbound/outbox/{msg.pk}/").content.decode()
    assert _login(ws, "agent").post(f"/w/{ws.slug}/outbound/outbox/{msg.pk}/retry/").status_code == 403
    r = operator.post(f"/w/{ws.slug}/outbound/outbox/{msg.pk}/retry/")
    assert r.status_code == 302
    msg.refresh_from_db()
    assert msg.status == "queued"


def test_smtp_settings_are_edited_by_owners(ws):
    url = f"/w/{ws.slug}/outbound/smtp/"
    form = {"host": "smtp.exmail.qq.com", "port": 465, "security": "ssl", "username": "crm@chayu.example",
            "password": "s3cret", "from_address": "crm@chayu.example", "from_name": "茶语", "timeout": 15}
    assert _login(ws, "operator").post(url, form).status_code == 403
    owner = _login(ws, "owner")
    assert owner.post(url, form).status_code == 302
    smtp = SmtpSettings.objects.get(workspace=ws)
    assert (smtp.host, smtp.port, smtp.password) == ("smtp.exmail.qq.com", 465, "s3cret")
    page = owner.get(url).content.decode()
    assert "s3cret" not in page and "smtp.exmail.qq.com" in page
    assert owner.post(url, {**form, "password": ""}).status_code == 302
    assert SmtpSettings.objects.get(workspace=ws).password == "s3cret"
    r = owner.post(url, {**form, "from_address": "nope"})
    assert r.status_code == 200 and "has-error" in r.content.decode()


def test_webhooks_page_creates_reveals_and_replays(ws):
    operator = _login(ws, "operator")
    url = f"/w/{ws.slug}/outbound/webhooks/"
    r = operator.post(url, {"form": "endpoint", "ep-name": "POS 收银系统", "ep-source": ""})
    endpoint = WebhookEndpoint.objects.get(workspace=ws)
    assert r.status_code == 200 and endpoint.secret in r.content.decode()
    assert endpoint.secret not in operator.get(url).content.decode(), "a secret is shown once"
    r = operator.post(url, {"form": "subscription", "sub-name": "仓库", "sub-url": "https://example.com/h",
                            "sub-events": "interaction.created, message.sent"})
    assert r.status_code == 200
    interactions.ingest_batch(ws, [EVENT])
    delivery = WebhookDelivery.objects.get()
    page = operator.get(f"/w/{ws.slug}/outbound/webhooks/deliveries/").content.decode()
    assert "interaction.created" in page
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed", attempts=6)
    r = operator.post(f"/w/{ws.slug}/outbound/webhooks/deliveries/{delivery.pk}/")
    assert r.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.replay_actor.startswith("user:")
    assert operator.post(url, {"action": "endpoint-disable", "id": endpoint.pk}).status_code == 302
    endpoint.refresh_from_db()
    assert not endpoint.active


def test_pages_are_scoped_and_role_checked(ws, other_ws, follower):
    msg = services.send_text(ws, follower.pk, "hi", purpose="welcome", actor="t")
    sub = services.create_subscription(ws, "仓库", "https://example.com/h", ["interaction.created"], actor="t")
    interactions.ingest_batch(ws, [EVENT])
    delivery = WebhookDelivery.objects.get()
    outsider = _login(other_ws, "owner")
    assert outsider.get(f"/w/{other_ws.slug}/outbound/outbox/{msg.pk}/").status_code == 404
    assert outsider.get(f"/w/{other_ws.slug}/outbound/webhooks/deliveries/{delivery.pk}/").status_code == 404
    assert outsider.post(f"/w/{other_ws.slug}/outbound/webhooks/deliveries/{delivery.pk}/").status_code == 404
    assert outsider.post(f"/w/{other_ws.slug}/outbound/webhooks/", {"action": "sub-delete", "id": sub.pk}).status_code == 404
    assert outsider.get(f"/w/{ws.slug}/outbound/outbox/").status_code == 404
    clerk = _login(ws, "clerk")
    assert clerk.get(f"/w/{ws.slug}/outbound/outbox/").status_code == 403
    assert _login(ws, "agent").get(f"/w/{ws.slug}/outbound/webhooks/").status_code == 403
    m = members.upsert_member(other_ws, [{"kind": "phone", "value": "13800138001"}]).member
    assert m.pk
