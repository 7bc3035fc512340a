"""The channels API: accounts (read; owners connect), channel codes CRUD, QR image, stats — roles and
tenant isolation."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from shequn.channels import code_services
from shequn.channels.models import ChannelCode, WeChatAccount
from tests.api.helpers import error_code, make_client

from .helpers import AES_KEY, APP_ID, APP_SECRET, TOKEN, WeChatServer, connect, event_xml
from .test_codes import T0, fake_qr, make_code


@pytest.fixture(autouse=True)
def _clear_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _no_wechat(monkeypatch):
    monkeypatch.setattr(code_services, "request_qr", fake_qr)


@pytest.fixture
def account(ws):
    return connect(ws, "safe", welcome="欢迎")[0]


def test_accounts_are_listed_without_secrets_and_owners_connect(ws):
    owner = make_client(ws, "owner")
    r = owner.post("/api/v1/channels/wechat-accounts", {"app_id": APP_ID, "app_secret": APP_SECRET, "token": TOKEN,
                                                        "encoding_aes_key": AES_KEY, "mode": "safe",
                                                        "welcome_text": "欢迎关注"})
    assert r.status_code == 200, r.content
    account = WeChatAccount.objects.get(workspace=ws)
    body = r.json()
    assert body["server_url"] == f"http://testserver/wechat/{account.endpoint_key}/"
    assert (body["app_id"], body["mode"], body["welcome_text"]) == (APP_ID, "safe", "欢迎关注")
    listed = make_client(ws, "operator").get("/api/v1/channels/wechat-accounts").json()["items"]
    assert [a["id"] for a in listed] == [account.pk]
    text = r.content.decode() + str(listed)
    for secret in (APP_SECRET, TOKEN, AES_KEY):
        assert secret not in text

    r = make_client(ws, "operator").post("/api/v1/channels/wechat-accounts", {
        "app_id": APP_ID, "app_secret": APP_SECRET, "token": "x123", "mode": "plaintext"})
    assert r.status_code == 403 and error_code(r) == "forbidden"
    assert make_client(ws, "agent").get("/api/v1/channels/wechat-accounts").status_code == 403
    r = owner.post("/api/v1/channels/wechat-accounts", {"app_id": APP_ID, "app_secret": APP_SECRET, "token": "a b",
                                                        "mode": "plaintext"})
    assert r.status_code == 422 and r.json()["error"]["details"] == {"field": "token"}


def test_code_crud(ws, account):
    api = make_client(ws, "operator")
    r = api.post("/api/v1/channel-codes", {"account_id": account.pk, "kind": "event", "name": "品鉴会",
                                           "scene": "event-tasting", "welcome_text": "欢迎来品鉴", "tags": ["品鉴会"]})
    assert r.status_code == 201, r.content
    body = r.json()
    code_id = body["id"]
    assert {k: body[k] for k in ("account_id", "app_id", "kind", "name", "scene", "welcome_text", "tags", "url",
                                 "demo", "active")} == {
        "account_id": account.pk, "app_id": APP_ID, "kind": "event", "name": "品鉴会", "scene": "event-tasting",
        "welcome_text": "欢迎来品鉴", "tags": ["品鉴会"], "url": "http://weixin.qq.com/q/02event-tasting",
        "demo": False, "active": True}
    assert body["stats"] == {"scans": 0, "scanners": 0, "follows": 0, "unfollows": 0, "conversions": 0,
                             "unfollow_rate": None, "conversion_rate": None}

    r = api.post("/api/v1/channel-codes", {"account_id": account.pk, "kind": "event", "name": "again",
                                           "scene": "event-tasting"})
    assert r.status_code == 409 and error_code(r) == "scene_taken"
    r = api.post("/api/v1/channel-codes", {"account_id": account.pk, "kind": "event", "name": "x", "scene": "a b"})
    assert r.status_code == 422 and r.json()["error"]["details"] == {"field": "scene"}
    r = api.post("/api/v1/channel-codes", {"account_id": account.pk, "kind": "event", "name": "x", "scene": "s",
                                           "colour": "red"})
    assert r.status_code == 422  # unknown fields are refused

    r = api.patch(f"/api/v1/channel-codes/{code_id}", {"name": "秋季品鉴会", "active": False})
    assert r.status_code == 200 and (r.json()["name"], r.json()["active"], r.json()["scene"]) == (
        "秋季品鉴会", False, "event-tasting")
    assert api.get(f"/api/v1/channel-codes/{code_id}").json()["name"] == "秋季品鉴会"
    assert api.patch(f"/api/v1/channel-codes/{code_id}", {"scene": "new"}).status_code == 422

    make_code(ws, account, "poster-1")
    page = api.get("/api/v1/channel-codes", {"limit": 1}).json()
    assert len(page["items"]) == 1 and page["next"] is not None
    rest = api.get("/api/v1/channel-codes", {"after": page["next"]}).json()
    assert [c["id"] for c in rest["items"]] == [code_id] and rest["next"] is None
    assert [c["scene"] for c in api.get("/api/v1/channel-codes", {"active": "false"}).json()["items"]] == ["event-tasting"]


def test_qr_and_stats(ws, account):
    code = make_code(ws, account, "store-xihu", welcome="西湖欢迎")
    server = WeChatServer(connect(ws, "safe")[1])  # reconnect returns the same URL
    server.push(event_xml("subscribe", "qrscene_store-xihu", create_time=T0), encrypt=True)
    server.push(event_xml("unsubscribe", "", create_time=T0 + 3600), encrypt=True)
    api = make_client(ws, "operator")

    svg = api.get(f"/api/v1/channel-codes/{code.pk}/qr.svg")
    assert svg.status_code == 200 and svg["Content-Type"] == "image/svg+xml" and b"<svg" in svg.content
    png = api.get(f"/api/v1/channel-codes/{code.pk}/qr.png", {"download": "1"})
    assert png["Content-Type"] == "image/png" and png["Content-Disposition"] == 'attachment; filename="qr-store-xihu.png"'

    r = api.get(f"/api/v1/channel-codes/{code.pk}/stats", {"since": "2026-05-31", "until": "2026-06-02"})
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["totals"] == {"scans": 1, "scanners": 1, "follows": 1, "unfollows": 1, "conversions": 0,
                              "unfollow_rate": 1.0, "conversion_rate": 0.0}
    assert [(d["day"], d["scans"], d["unfollows"]) for d in body["days"]] == [
        ("2026-05-31", 0, 0), ("2026-06-01", 1, 1), ("2026-06-02", 0, 0)]
    assert api.get(f"/api/v1/channel-codes/{code.pk}").json()["stats"]["follows"] == 1
    bad = api.get(f"/api/v1/channel-codes/{code.pk}/stats", {"since": "2026-06-02", "until": "2026-06-01"})
    assert bad.status_code == 400 and error_code(bad) == "invalid_period"


def test_roles_and_tenant_isolation(ws, other_ws, account):
    code = make_code(ws, account, "poster-1")
    agent = make_client(ws, "agent")
    for path in ("/api/v1/channel-codes", f"/api/v1/channel-codes/{code.pk}", f"/api/v1/channel-codes/{code.pk}/qr.svg",
                 f"/api/v1/channel-codes/{code.pk}/stats"):
        assert agent.get(path).status_code == 403, path
    assert make_client(ws, "clerk").post("/api/v1/channel-codes", {
        "account_id": account.pk, "kind": "poster", "name": "x", "scene": "p2"}).status_code == 403

    theirs = make_client(other_ws, "owner")
    for path in (f"/api/v1/channel-codes/{code.pk}", f"/api/v1/channel-codes/{code.pk}/qr.svg",
                 f"/api/v1/channel-codes/{code.pk}/qr.png", f"/api/v1/channel-codes/{code.pk}/stats"):
        r = theirs.get(path)
        assert r.status_code == 404 and error_code(r) == "not_found", path
    assert theirs.patch(f"/api/v1/channel-codes/{code.pk}", {"name": "hijack"}).status_code == 404
    r = theirs.post("/api/v1/channel-codes", {"account_id": account.pk, "kind": "poster", "name": "x", "scene": "p3"})
    assert r.status_code == 404
    assert theirs.get("/api/v1/channel-codes").json()["items"] == []
    assert theirs.get("/api/v1/channels/wechat-accounts").json()["items"] == []
    code.refresh_from_db()
    assert code.name == "门店海报" and ChannelCode.objects.count() == 1


def test_a_wechat_failure_is_a_502_and_stores_nothing(ws, account, monkeypatch):
    def refuse(acc, scene):
        raise code_services.WeChatApiFailed("WeChat refused the QR code: invalid credential")

    monkeypatch.setattr(code_services, "request_qr", refuse)
    r = make_client(ws, "owner").post("/api/v1/channel-codes", {"account_id": account.pk, "kind": "poster",
                                                               "name": "x", "scene": "p1"})
    assert r.status_code == 502 and error_code(r) == "wechat_api_error"
    assert not ChannelCode.objects.exists()
