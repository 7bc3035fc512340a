"""Races on PostgreSQL with real threads: one token refresh, one send per message, one row per key."""

from __future__ import annotations

import pytest

from shequn.outbound import services, wechat_api
from shequn.outbound.models import AccessToken, OutboundMessage
from tests.threads import run_threads

from .conftest import client

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def real_sleep(settings, fake, monkeypatch):
    settings.SHEQUN_WECHAT_API_BASE = fake.base_url
    monkeypatch.setattr(services, "CLIENT_OPTIONS", {"bucket": wechat_api.TokenBucket(1000)})


def test_many_workers_refresh_the_token_once(fake, account, real_sleep):
    import time

    tokens = run_threads(8, lambda i: client(account, sleep=time.sleep).access_token())
    assert len(set(tokens)) == 1
    assert len(fake.calls("/cgi-bin/token")) == 1
    assert AccessToken.objects.get(account=account).refresh_count == 1


def test_a_message_delivered_by_many_workers_is_sent_once(ws, follower, fake, real_sleep):
    msg = services.send_text(ws, follower.pk, "只发一次", purpose="welcome", actor="t")
    results = run_threads(6, lambda i: services.deliver(msg.pk))
    assert set(results) <= {"sending", "sent"} and "sent" in results
    assert len(fake.messages) == 1
    msg.refresh_from_db()
    assert msg.status == "sent" and msg.attempts == 1


def test_concurrent_sends_with_one_key_make_one_row(ws, follower):
    ids = run_threads(6, lambda i: services.send_text(ws, follower.pk, f"码 {i}", purpose="otp", actor="t",
                                                      key="otp:race").pk)
    assert len(set(ids)) == 1 and OutboundMessage.objects.filter(key="otp:race").count() == 1
