"""Console pages of the channels: the Official Account connection and channel codes — roles, tenant
isolation, secrets never shown, the QR image, and a constant number of queries per page."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from shequn.channels import code_services
from shequn.channels.models import ChannelCode, WeChatAccount
from tests.console.conftest import _fast_passwords, login, staff  # noqa: F401 - fixtures

from .helpers import AES_KEY, APP_ID, APP_SECRET, TOKEN, WeChatServer, connect, event_xml
from .test_codes import fake_qr, make_code

RANK = {"clerk": 1, "agent": 2, "operator": 3, "owner": 4}


@pytest.fixture
def setup(ws, other_ws, staff):  # noqa: F811
    account, path = connect(ws, "safe", welcome="欢迎关注茶语!")
    code = make_code(ws, account, "store-xihu", name="西湖店海报", welcome="西湖欢迎", tags=["西湖店"])
    their_account, _ = connect(other_ws, "safe", app_id="wx9f8e7d6c5b4a3921")
    theirs = make_code(other_ws, their_account, "their-poster", name="别家海报")
    return {"account": account, "path": path, "code": code, "their_account": their_account, "theirs": theirs}


def pages(s) -> list[tuple[str, str]]:
    a, c = s["account"].pk, s["code"].pk
    return [
        ("channels/wechat/", "operator"),
        (f"channels/wechat/{a}/", "owner"),
        ("channels/codes/", "operator"),
        ("channels/codes/new/", "operator"),
        (f"channels/codes/{c}/", "operator"),
        (f"channels/codes/{c}/edit/", "operator"),
        (f"channels/codes/{c}/qr.svg", "operator"),
        (f"channels/codes/{c}/qr.png", "operator"),
    ]


@pytest.mark.parametrize("role", ["owner", "operator", "agent", "clerk"])
def test_role_matrix(staff, setup, role):  # noqa: F811
    client = login(staff[role])
    for path, lowest in pages(setup):
        response = client.get("/w/tea/" + path)
        expected = 200 if RANK[role] >= RANK[lowest] else 403
        assert response.status_code == expected, (role, path, response.status_code)


def test_another_workspace_sees_nothing(staff, setup):  # noqa: F811
    outsider = login(staff["outsider"])
    for path, _lowest in pages(setup):
        assert outsider.get("/w/tea/" + path).status_code == 404, path
    owner = login(staff["owner"])
    theirs, their_account = setup["theirs"], setup["their_account"]
    for path in (f"channels/codes/{theirs.pk}/", f"channels/codes/{theirs.pk}/edit/", f"channels/codes/{theirs.pk}/qr.svg",
                 f"channels/wechat/{their_account.pk}/"):
        assert owner.get("/w/tea/" + path).status_code == 404, path
    assert owner.post(f"/w/tea/channels/codes/{theirs.pk}/active/", {"active": "0"}).status_code == 404
    assert owner.post(f"/w/tea/channels/codes/{theirs.pk}/edit/", {"kind": "poster", "name": "x"}).status_code == 404
    assert owner.post(f"/w/tea/channels/wechat/{their_account.pk}/replies/",
                      {f"a{their_account.pk}-welcome_text": "hijack"}).status_code == 404
    theirs.refresh_from_db()
    their_account.refresh_from_db()
    assert theirs.active and theirs.name == "别家海报" and their_account.welcome_text == ""
    page = owner.get("/w/tea/channels/codes/").content.decode()
    assert "西湖店海报" in page and "别家海报" not in page


def test_account_page_shows_the_absolute_server_url_and_never_the_secrets(staff, setup):  # noqa: F811
    page = login(staff["operator"]).get("/w/tea/channels/wechat/").content.decode()
    assert f"http://testserver{setup['path']}" in page
    for secret in (APP_SECRET, TOKEN, AES_KEY):
        assert secret not in page
    assert "5f••••••00" in page  # the AppSecret's hint
    assert 'id="connect-form"' not in page  # only owners connect
    owner_page = login(staff["owner"]).get("/w/tea/channels/wechat/").content.decode()
    assert 'id="connect-form"' in owner_page


def test_owner_connects_an_account_in_the_console(staff, ws):  # noqa: F811
    owner = login(staff["owner"])
    response = owner.post("/w/tea/channels/wechat/", {"app_id": APP_ID, "app_secret": APP_SECRET, "token": TOKEN,
                                                      "encoding_aes_key": AES_KEY, "mode": "safe"})
    account = WeChatAccount.objects.get(workspace=ws)
    assert response.status_code == 302 and response["Location"].endswith(f"/channels/wechat/#account-{account.pk}")
    page = owner.get("/w/tea/channels/wechat/").content.decode()
    assert f"http://testserver/wechat/{account.endpoint_key}/" in page
    # The URL works: WeChat's verification is answered.
    assert WeChatServer(f"/wechat/{account.endpoint_key}/").verify("42").content == b"42"

    bad = owner.post("/w/tea/channels/wechat/", {"app_id": "wx123", "app_secret": APP_SECRET, "token": TOKEN,
                                                 "encoding_aes_key": AES_KEY, "mode": "safe"})
    assert bad.status_code == 200 and 'class="form-row has-error"' in bad.content.decode()
    assert WeChatAccount.objects.filter(workspace=ws).count() == 1
    # An operator may not connect.
    assert login(staff["operator"]).post("/w/tea/channels/wechat/", {"app_id": APP_ID}).status_code == 403


def test_editing_a_connection_keeps_secrets_left_empty(staff, setup):  # noqa: F811
    account = setup["account"]
    owner = login(staff["owner"])
    response = owner.post(f"/w/tea/channels/wechat/{account.pk}/", {"mode": "compatible", "token": "newToken42",
                                                                    "timestamp_tolerance": "300"})
    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.mode, account.token, account.app_secret, account.encoding_aes_key, account.timestamp_tolerance) == (
        "compatible", "newToken42", APP_SECRET, AES_KEY, 300)
    assert login(staff["operator"]).post(f"/w/tea/channels/wechat/{account.pk}/", {"mode": "plaintext"}).status_code == 403


def test_operator_sets_the_reply_texts(staff, setup):  # noqa: F811
    account = setup["account"]
    response = login(staff["operator"]).post(f"/w/tea/channels/wechat/{account.pk}/replies/", {
        f"a{account.pk}-welcome_text": "新欢迎语", f"a{account.pk}-reply_text": "稍后回复"})
    assert response.status_code == 302
    account.refresh_from_db()
    assert (account.welcome_text, account.reply_text) == ("新欢迎语", "稍后回复")


def test_create_edit_and_deactivate_a_code(staff, setup, ws, monkeypatch):  # noqa: F811
    monkeypatch.setattr(code_services, "request_qr", fake_qr)
    operator = login(staff["operator"])
    response = operator.post("/w/tea/channels/codes/new/", {
        "account": setup["account"].pk, "kind": "clerk", "name": "店员 小王", "scene": "clerk-wang",
        "welcome_text": "我是小王", "tags": "小王, 到店"})
    code = ChannelCode.objects.get(workspace=ws, scene="clerk-wang")
    assert response.status_code == 302 and response["Location"] == f"/w/tea/channels/codes/{code.pk}/"
    assert (code.kind, code.name, code.tags, code.url, code.created_by) == (
        "clerk", "店员 小王", ["小王", "到店"], "http://weixin.qq.com/q/02clerk-wang", f"user:{staff['operator'].pk}")

    taken = operator.post("/w/tea/channels/codes/new/", {
        "account": setup["account"].pk, "kind": "poster", "name": "x", "scene": "clerk-wang"})
    assert taken.status_code == 200 and "has-error" in taken.content.decode()

    operator.post(f"/w/tea/channels/codes/{code.pk}/edit/", {"kind": "event", "name": "小王的品鉴会",
                                                               "welcome_text": "", "tags": "", "scene": "changed"})
    code.refresh_from_db()
    assert (code.kind, code.name, code.welcome_text, code.tags, code.scene) == ("event", "小王的品鉴会", "", [], "clerk-wang")

    operator.post(f"/w/tea/channels/codes/{code.pk}/active/", {"active": "0"})
    code.refresh_from_db()
    assert code.active is False
    operator.post(f"/w/tea/channels/codes/{code.pk}/active/", {"active": "1"})
    code.refresh_from_db()
    assert code.active is True


def test_qr_images(staff, setup):  # noqa: F811
    operator = login(staff["operator"])
    code = setup["code"]
    svg = operator.get(f"/w/tea/channels/codes/{code.pk}/qr.svg")
    assert svg["Content-Type"] == "image/svg+xml" and svg.content.startswith(b"<?xml") and b"<svg" in svg.content
    assert "Content-Disposition" not in svg
    png = operator.get(f"/w/tea/channels/codes/{code.pk}/qr.png?download=1")
    assert png["Content-Type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert png["Content-Disposition"] == 'attachment; filename="qr-store-xihu.png"'


def test_code_pages_show_the_stats(staff, setup, ws):  # noqa: F811
    server = WeChatServer(setup["path"])
    stamp = int(time.time()) - 3600
    for n in range(3):
        server.push(event_xml("subscribe", "qrscene_store-xihu", openid=f"oXIHU{n}", create_time=stamp + n), encrypt=True)
    operator = login(staff["operator"])
    page = operator.get(f"/w/tea/channels/codes/{setup['code'].pk}/").content.decode()
    assert 'id="stat-scans">3<' in page and 'id="stat-follows">3<' in page
    assert 'id="code-figure"' in page
    listing = operator.get("/w/tea/channels/codes/?days=7").content.decode()
    assert 'id="total-scans">3<' in listing


def test_code_list_costs_the_same_for_many_codes(staff, setup, ws):  # noqa: F811
    operator = login(staff["operator"])
    operator.get("/w/tea/channels/codes/")  # warm the session

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert operator.get("/w/tea/channels/codes/").status_code == 200
        return len(ctx.captured_queries)

    few = count()
    for i in range(15):
        code_services.create_code(ws, setup["account"].pk, kind="poster", name=f"海报 {i}", scene=f"poster-{i}",
                                  actor="t", issue_qr=fake_qr)
    assert count() == few
