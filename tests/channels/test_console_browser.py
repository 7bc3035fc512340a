"""The channel-code pages in a real headless Chromium (Debian's chromium, driven by Playwright), against
the live test server. Screenshots go to test-artifacts/screenshots/ (channels-*.png)."""

from __future__ import annotations

import time

import pytest

from shequn.channels import code_services
from tests.browser import image_width
from tests.console.conftest import _fast_passwords, staff  # noqa: F401 - fixtures
from tests.console.test_browser import log_in, page, shot  # noqa: F401 - fixtures

from .helpers import WeChatServer, connect, event_xml
from .test_codes import fake_qr, make_code

pytestmark = pytest.mark.browser


def _scans(path: str) -> None:
    server = WeChatServer(path)
    stamp = int(time.time()) - 3 * 86400
    for n in range(5):
        server.push(event_xml("subscribe", "qrscene_store-xihu", openid=f"oXIHU{n:03d}", create_time=stamp + n * 600),
                    encrypt=True)
    server.push(event_xml("unsubscribe", "", openid="oXIHU000", create_time=stamp + 86400), encrypt=True)
    for n in range(2):
        server.push(event_xml("subscribe", "qrscene_campaign-1111", openid=f"oCAMP{n:03d}", create_time=stamp + n),
                    encrypt=True)


def test_codes_list_create_and_detail(page, ws, other_ws, monkeypatch):  # noqa: F811
    account, path = connect(ws, "safe", welcome="欢迎关注茶语!")
    make_code(ws, account, "store-xihu", name="门店海报 · 西湖店", welcome="欢迎来到西湖店", tags=["西湖店"])
    make_code(ws, account, "campaign-1111", name="双十一活动", kind="campaign", welcome="双十一快乐", tags=["双十一"])
    _scans(path)
    monkeypatch.setattr(code_services, "request_qr", fake_qr)

    pg = page
    log_in(pg)
    pg.goto(pg.base + "/w/tea/channels/codes/")
    pg.wait_for_selector("#comparison-chart .plot-container svg.main-svg")
    rows = pg.locator("#code-table tbody tr")
    assert rows.count() == 2
    assert pg.locator("#total-scans").inner_text() == "7"
    assert pg.locator("#total-follows").inner_text() == "7"
    xihu = pg.locator("#code-table tbody tr[data-scene=store-xihu] td")
    assert [xihu.nth(i).inner_text().split()[0] for i in (3, 4, 5, 6)] == ["5", "5", "5", "1"]
    shot(pg, "channels-01-codes")

    # A new code through the form.
    pg.click("#new-code")
    pg.select_option("#id_kind", "clerk")
    pg.fill("#id_name", "店员 小王")
    pg.fill("#id_scene", "clerk-wang")
    pg.fill("#id_welcome_text", "我是小王,有问题随时问我")
    pg.fill("#id_tags", "小王, 到店")
    shot(pg, "channels-02-new-code")
    pg.click("#code-form button[type=submit]")
    pg.wait_for_selector("#qr-image")
    assert pg.locator("#code-scene").inner_text() == "clerk-wang"
    assert pg.locator(".msg.success").count() == 1
    # The QR image is loaded (an SVG served by the console).
    assert image_width(pg, "#qr-image") > 100

    # The detail page of the busy code: its stats and chart.
    pg.goto(pg.base + "/w/tea/channels/codes/")
    pg.click("#code-table tr[data-scene=store-xihu] a.code-link")
    pg.wait_for_selector("#code-chart .plot-container svg.main-svg")
    assert pg.locator("#stat-scans").inner_text() == "5"
    assert pg.locator("#stat-unfollows").inner_text() == "1"
    assert pg.locator("#code-chart .barlayer .point").count() >= 1
    with pg.expect_download() as download:
        pg.click("#download-png")
    assert download.value.suggested_filename == "qr-store-xihu.png"
    shot(pg, "channels-03-code-detail")

    # Deactivate (confirmed in the browser's dialog).
    pg.once("dialog", lambda dialog: dialog.accept())
    pg.click("#deactivate")
    pg.wait_for_selector("#activate")
    shot(pg, "channels-04-code-deactivated")


def test_official_account_page(page, ws, other_ws):  # noqa: F811
    connect(ws, "safe", welcome="欢迎关注茶语!")
    pg = page
    log_in(pg)
    pg.goto(pg.base + "/w/tea/channels/wechat/")
    url = pg.locator("code.server-url").first.inner_text()
    assert url.startswith(pg.base + "/wechat/") and url.endswith("/")
    assert pg.locator("#connect-form").count() == 1
    shot(pg, "channels-05-official-account")
