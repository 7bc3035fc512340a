"""The WeChat API client against the fake WeChat server (a real local HTTP server)."""

from __future__ import annotations

import datetime as dt

import pytest

from shequn.core import clock
from shequn.outbound.models import AccessToken
from shequn.outbound.wechat_api import TokenBucket, WeChatApiError, WeChatRateLimited, WeChatUnreachable

from .conftest import APP_ID, OPENID, client

TEXT = {"msgtype": "text", "text": {"content": "您好，欢迎光临茶语"}}
CUSTOM = "/cgi-bin/message/custom/send"
TOKEN = "/cgi-bin/token"


@pytest.fixture
def api(settings, fake, account):
    settings.SHEQUN_WECHAT_API_BASE = fake.base_url
    return account


def test_sends_a_text_with_a_cached_token(fake, api):
    c = client(api)
    assert c.send_custom(OPENID, TEXT) == {"errcode": 0, "errmsg": "ok"}
    client(api).send_custom(OPENID, TEXT)
    assert len(fake.calls(TOKEN)) == 1, "the token is cached in the database between clients"
    assert fake.calls(TOKEN)[0].query == {"grant_type": "client_credential", "appid": APP_ID,
                                          "secret": "5f0e1d2c3b4a59687766554433221100"}
    assert [m["text"]["content"] for m in fake.messages] == ["您好，欢迎光临茶语"] * 2
    assert fake.messages[0]["touser"] == OPENID
    row = AccessToken.objects.get(account=api)
    assert row.token == fake.calls(CUSTOM)[0].query["access_token"]
    assert row.refresh_count == 1 and row.lease_until is None
    assert dt.timedelta(seconds=7190) < row.expires_at - clock.now() <= dt.timedelta(seconds=7200)


def test_token_is_refreshed_when_less_than_five_minutes_are_left(fake, api):
    client(api).send_custom(OPENID, TEXT)
    issued = AccessToken.objects.get(account=api).expires_at - dt.timedelta(seconds=7200)
    client(api, now=lambda: issued + dt.timedelta(seconds=7200 - 301)).send_custom(OPENID, TEXT)
    assert len(fake.calls(TOKEN)) == 1, "301 s left: still used"
    client(api, now=lambda: issued + dt.timedelta(seconds=7200 - 299)).send_custom(OPENID, TEXT)
    assert len(fake.calls(TOKEN)) == 2, "299 s left: refreshed before use"
    tokens = [r.query["access_token"] for r in fake.calls(CUSTOM)]
    assert tokens[0] == tokens[1] != tokens[2]


@pytest.mark.parametrize("break_tokens", ["invalidate_tokens", "expire_tokens"])
def test_a_rejected_token_is_refreshed_once_and_the_call_retried(fake, api, break_tokens):
    client(api).send_custom(OPENID, TEXT)
    getattr(fake, break_tokens)()
    client(api).send_custom(OPENID, TEXT)
    answers = [r.answer["errcode"] for r in fake.calls(CUSTOM)]
    assert answers == [0, 40001 if break_tokens == "invalidate_tokens" else 42001, 0]
    assert len(fake.calls(TOKEN)) == 2
    assert len(fake.messages) == 2


def test_a_token_rejected_twice_is_an_error_not_a_loop(fake, api):
    fake.answer_next(40014, 2)
    with pytest.raises(WeChatApiError) as err:
        client(api).send_custom(OPENID, TEXT)
    assert err.value.code == "wechat_token_rejected" and err.value.errcode == 40014
    assert len(fake.calls(CUSTOM)) == 2 and len(fake.calls(TOKEN)) == 2


def test_busy_and_server_errors_are_retried_with_backoff_and_jitter(fake, api):
    client(api).access_token()
    fake.fail_next(2, mode="busy")
    fake.fail_next(1, mode="http500")
    c = client(api)
    assert c.send_custom(OPENID, TEXT)["errcode"] == 0
    assert len(fake.calls(CUSTOM)) == 4 and len(fake.messages) == 1
    assert len(c.sleeps) == 3
    for n, slept in enumerate(c.sleeps, start=1):
        ceiling = 0.5 * 2 ** (n - 1)
        assert ceiling / 2 <= slept <= ceiling


def test_network_errors_are_retried(fake, api):
    client(api).access_token()
    fake.fail_next(1, mode="drop")
    c = client(api)
    assert c.send_custom(OPENID, TEXT)["errcode"] == 0
    assert len(c.sleeps) == 1


def test_retries_stop_after_max_attempts(fake, api):
    client(api).access_token()
    fake.fail_next(10, mode="http500")
    c = client(api, max_attempts=3)
    with pytest.raises(WeChatApiError) as err:
        c.send_custom(OPENID, TEXT)
    assert err.value.retryable and err.value.code == "wechat_http_error"
    assert len(fake.calls(CUSTOM)) == 3 and len(c.sleeps) == 2


@pytest.mark.parametrize(("errcode", "code"), [(43004, "not_following"), (45015, "reply_window_closed"),
                                               (40003, "invalid_openid")])
def test_business_errors_are_not_retried(fake, api, errcode, code):
    client(api).access_token()
    fake.answer_next(errcode)
    c = client(api)
    with pytest.raises(WeChatUnreachable) as err:
        c.send_custom(OPENID, TEXT)
    assert err.value.code == code and not err.value.retryable
    assert len(fake.calls(CUSTOM)) == 1 and c.sleeps == []


@pytest.mark.parametrize(("errcode", "code"), [(45009, "api_quota_exceeded"), (45047, "customer_service_limit")])
def test_wechat_rate_limits_become_clear_errors(fake, api, errcode, code):
    client(api).access_token()
    fake.rate_limit_next(1, errcode)
    with pytest.raises(WeChatRateLimited) as err:
        client(api).send_custom(OPENID, TEXT)
    assert err.value.code == code and err.value.status == 429 and err.value.retryable
    assert str(errcode) in err.value.message
    assert len(fake.calls(CUSTOM)) == 1


def test_wrong_secret_is_reported(fake, api):
    api.app_secret = "0" * 32
    with pytest.raises(WeChatApiError) as err:
        client(api).send_custom(OPENID, TEXT)
    assert err.value.errcode == 40125 and fake.calls(CUSTOM) == []
    assert AccessToken.objects.get(account=api).lease_until is None, "a failed refresh releases the lease"


def test_token_bucket_limits_the_call_rate():
    now = [100.0]
    bucket = TokenBucket(rate=2, capacity=2, monotonic=lambda: now[0])
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    for _ in range(6):
        bucket.acquire(sleep)
    assert now[0] == pytest.approx(102.0), "2 at once (the burst), then 4 more at 2 per second"
    assert len(waits) == 4


def test_the_client_waits_for_the_rate_limit(fake, api):
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    bucket = TokenBucket(rate=5, capacity=1, monotonic=lambda: now[0])
    c = client(api, bucket=bucket, sleep=sleep)
    for _ in range(3):
        c.send_custom(OPENID, TEXT)
    assert len(fake.calls(CUSTOM)) == 3
    assert sum(waits) == pytest.approx(0.2 * 3), "4 calls (token + 3 sends) at 5/s after a burst of 1"


def test_template_and_qr_codes(fake, api):
    c = client(api)
    answer = c.send_template(OPENID, "TPL-1", {"first": "积分到账", "points": {"value": "20"}}, url="https://x.example/p")
    assert answer["msgid"] > 0
    assert fake.messages[-1] == {"touser": OPENID, "template_id": "TPL-1", "url": "https://x.example/p",
                                 "data": {"first": {"value": "积分到账"}, "points": {"value": "20"}}}
    permanent = c.create_qr_scene("store-101")
    assert permanent["ticket"] and permanent["url"].startswith("http://weixin.qq.com/q/")
    assert permanent["expire_seconds"] is None
    temporary = c.create_qr_scene("poster-7", permanent=False, expire_seconds=600)
    assert temporary["expire_seconds"] == 600
    assert [q["action_name"] for q in fake.qrcodes] == ["QR_LIMIT_STR_SCENE", "QR_STR_SCENE"]
    assert fake.qrcodes[0]["action_info"] == {"scene": {"scene_str": "store-101"}}


def test_while_another_worker_refreshes_a_still_valid_token_is_used(fake, api):
    now = clock.now()
    AccessToken.objects.create(workspace=api.workspace, account=api, token="OLD", expires_at=now + dt.timedelta(minutes=2),
                               lease_until=now + dt.timedelta(seconds=20))
    assert client(api).access_token() == "OLD"
    assert fake.calls(TOKEN) == []


def test_an_expired_token_is_never_used_while_waiting_for_the_refresher(fake, api):
    now = clock.now()
    row = AccessToken.objects.create(workspace=api.workspace, account=api, token="OLD",
                                     expires_at=now + dt.timedelta(seconds=5), lease_until=now + dt.timedelta(seconds=20))
    waited: list[float] = []

    def other_worker_finishes(seconds: float) -> None:
        waited.append(seconds)
        AccessToken.objects.filter(pk=row.pk).update(token="NEW", expires_at=now + dt.timedelta(hours=2),
                                                     lease_until=None)

    assert client(api, sleep=other_worker_finishes).access_token() == "NEW"
    assert len(waited) == 1 and fake.calls(TOKEN) == []


def test_a_stale_lease_is_taken_over(fake, api):
    now = clock.now()
    AccessToken.objects.create(workspace=api.workspace, account=api, token="OLD", expires_at=now - dt.timedelta(seconds=1),
                               lease_until=now - dt.timedelta(seconds=1))
    token = client(api).access_token()
    assert token.startswith("FAKE_") and len(fake.calls(TOKEN)) == 1
