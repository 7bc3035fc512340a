"""Connecting an Official Account: validation, the server URL, reconnecting, the management command."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command

from shequn.channels import services
from shequn.channels.models import WeChatAccount
from shequn.core.errors import NotFound, ValidationError
from shequn.core.models import AuditEntry

from .helpers import AES_KEY, APP_ID, APP_SECRET, TOKEN


def test_connect_returns_the_account_and_an_unguessable_server_path(ws):
    account, path = services.connect_account(ws, APP_ID, APP_SECRET, TOKEN, AES_KEY, "safe", "user:1")
    assert path == f"/wechat/{account.endpoint_key}/"
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", account.endpoint_key)
    assert (account.workspace, account.app_id, account.app_secret, account.token, account.encoding_aes_key,
            account.mode) == (ws, APP_ID, APP_SECRET, TOKEN, AES_KEY, "safe")
    entry = AuditEntry.objects.get(workspace=ws, action="wechat.connect")
    assert entry.actor == "user:1" and entry.data == {"app_id": APP_ID, "mode": "safe"}
    assert APP_SECRET not in str(entry.data) and AES_KEY not in str(entry.data)


def test_reconnect_keeps_the_url_and_replies(ws):
    account, path = services.connect_account(ws, APP_ID, APP_SECRET, TOKEN, AES_KEY, "safe", "t")
    services.set_auto_replies(ws, account.pk, welcome_text="欢迎", reply_text="收到", actor="t")
    again, path2 = services.connect_account(ws, APP_ID, APP_SECRET, "newToken9", "", "plaintext", "t",
                                            timestamp_tolerance=300)
    assert again.pk == account.pk and path2 == path
    assert (again.token, again.mode, again.encoding_aes_key, again.timestamp_tolerance) == ("newToken9", "plaintext", "", 300)
    assert (again.welcome_text, again.reply_text) == ("欢迎", "收到")
    assert WeChatAccount.objects.count() == 1


def test_two_workspaces_may_connect_the_same_app_with_different_urls(ws, other_ws):
    a, path_a = services.connect_account(ws, APP_ID, APP_SECRET, TOKEN, AES_KEY, "safe", "t")
    b, path_b = services.connect_account(other_ws, APP_ID, APP_SECRET, TOKEN, AES_KEY, "safe", "t")
    assert a.pk != b.pk and path_a != path_b


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"app_id": "3c8e1f2a9b7d6e54"}, "app_id"),
    ({"app_id": "wx<script>"}, "app_id"),
    ({"app_secret": "short"}, "app_secret"),
    ({"token": "a b"}, "token"),
    ({"token": "x" * 33}, "token"),
    ({"aes_key": AES_KEY[:-1]}, "encoding_aes_key"),
    ({"aes_key": AES_KEY[:-1] + "!"}, "encoding_aes_key"),
    ({"aes_key": ""}, "encoding_aes_key"),
    ({"aes_key": "", "mode": "compatible"}, "encoding_aes_key"),
    ({"mode": "secure"}, "mode"),
])
def test_connect_validates_every_field(ws, kwargs, field):
    args = {"app_id": APP_ID, "app_secret": APP_SECRET, "token": TOKEN, "aes_key": AES_KEY, "mode": "safe", **kwargs}
    with pytest.raises(ValidationError) as exc:
        services.connect_account(ws, args["app_id"], args["app_secret"], args["token"], args["aes_key"], args["mode"], "t")
    assert exc.value.details == {"field": field}
    assert not WeChatAccount.objects.exists()


def test_plaintext_mode_needs_no_aes_key(ws):
    account, _ = services.connect_account(ws, APP_ID, APP_SECRET, TOKEN, "", "plaintext", "t")
    assert account.encoding_aes_key == ""


def test_tolerance_bounds(ws):
    with pytest.raises(ValidationError):
        services.connect_account(ws, APP_ID, APP_SECRET, TOKEN, AES_KEY, "safe", "t", timestamp_tolerance=-1)


def test_auto_replies_are_validated_and_scoped(ws, other_ws):
    account, _ = services.connect_account(ws, APP_ID, APP_SECRET, TOKEN, AES_KEY, "safe", "t")
    with pytest.raises(ValidationError):
        services.set_auto_replies(ws, account.pk, reply_text="字" * 700, actor="t")  # 2,100 bytes
    with pytest.raises(ValidationError):
        services.set_auto_replies(ws, account.pk, reply_text="bell\x07", actor="t")
    with pytest.raises(NotFound):
        services.set_auto_replies(other_ws, account.pk, reply_text="hijack", actor="t")
    updated = services.set_auto_replies(ws, account.pk, reply_text="  收到  ", actor="t")
    assert updated.reply_text == "收到" and updated.welcome_text == ""


def test_management_command_prints_the_server_url(ws):
    out = io.StringIO()
    call_command("shequn_wechat_connect", "--workspace", ws.slug, "--app-id", APP_ID, "--app-secret", APP_SECRET,
                 "--token", TOKEN, "--aes-key", AES_KEY, "--welcome-text", "欢迎", "--base-url", "https://crm.example.com/",
                 stdout=out)
    account = WeChatAccount.objects.get(workspace=ws)
    assert f"https://crm.example.com/wechat/{account.endpoint_key}/" in out.getvalue().splitlines()
    assert account.mode == "safe" and account.welcome_text == "欢迎"

    out = io.StringIO()
    call_command("shequn_wechat_connect", "--workspace", ws.slug, "--app-id", APP_ID, "--app-secret", APP_SECRET,
                 "--token", TOKEN, "--mode", "plaintext", stdout=out)
    assert f"/wechat/{account.endpoint_key}/" in out.getvalue().splitlines()


def test_management_command_errors(ws):
    with pytest.raises(CommandError, match="nope"):
        call_command("shequn_wechat_connect", "--workspace", "nope", "--app-id", APP_ID, "--app-secret", APP_SECRET,
                     "--token", TOKEN, "--aes-key", AES_KEY)
    with pytest.raises(CommandError):
        call_command("shequn_wechat_connect", "--workspace", ws.slug, "--app-id", APP_ID, "--app-secret", APP_SECRET,
                     "--token", TOKEN, "--aes-key", "short")
    assert not WeChatAccount.objects.exists()
