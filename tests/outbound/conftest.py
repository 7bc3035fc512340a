from __future__ import annotations

import random

import pytest

from shequn.channels import services as channels
from shequn.members import services as members
from shequn.outbound import services, wechat_api
from shequn.outbound.fake_wechat import FakeWeChatServer

APP_ID = "wx3c8e1f2a9b7d6e54"
APP_SECRET = "5f0e1d2c3b4a59687766554433221100"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


@pytest.fixture(autouse=True)
def _local_webhooks(settings):
    """Test receivers listen on 127.0.0.1, which production refuses (see test_private_targets_are_refused)."""
    settings.SHEQUN_WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def fake():
    with FakeWeChatServer(accounts={APP_ID: APP_SECRET}) as server:
        yield server


@pytest.fixture
def wechat(settings, fake, monkeypatch):
    """Point the API client at the fake server; no real sleeping, no process-wide rate limit."""
    settings.SHEQUN_WECHAT_API_BASE = fake.base_url
    sleeps: list[float] = []
    monkeypatch.setattr(services, "CLIENT_OPTIONS", {"sleep": sleeps.append, "rng": random.Random(7),
                                                     "bucket": wechat_api.TokenBucket(1000)})
    return sleeps


@pytest.fixture
def account(ws):
    acc, _path = channels.connect_account(ws, APP_ID, APP_SECRET, "shequnToken", "", "plaintext", actor="t")
    return acc


@pytest.fixture
def follower(ws, account):
    return members.upsert_member(ws, [{"kind": "wechat_openid", "namespace": APP_ID, "value": OPENID}],
                                 {"display_name": "王小明"}).member


def client(account, **options):
    options.setdefault("sleep", lambda s: None)
    options.setdefault("rng", random.Random(1))
    options.setdefault("bucket", wechat_api.TokenBucket(1000))
    return wechat_api.client_for(account, **options)
