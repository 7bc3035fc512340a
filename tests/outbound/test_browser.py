"""The outbound console pages in a real headless Chromium (screenshots in test-artifacts/screenshots/)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shequn.core import services as core
from shequn.interactions import services as interactions
from shequn.outbound import services
from shequn.outbound.models import WebhookDelivery
from tests.browser import TIMEOUT_MS, shot

pytestmark = pytest.mark.browser

PASSWORD = "outbound-browser-pw-1"  # noqa: S105


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def page(browser, live_server, ws) -> Iterator[Any]:
    core.add_staff(ws, core.ensure_user("owner-tea", PASSWORD), "owner")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.base = live_server.url  # type: ignore[attr-defined]
    pg.goto(pg.base + "/login/")
    pg.fill("#id_username", "owner-tea")
    pg.fill("#id_password", PASSWORD)
    pg.click("button[type=submit].primary")
    pg.wait_for_url(pg.base + "/w/tea/")
    yield pg
    context.close()


def test_outbox_and_webhooks_in_a_browser(page, ws, follower):
    for text, purpose in (("欢迎加入茶语会员！首单立减 5 元", "welcome"), ("您的登录验证码 482913", "otp"),
                          ("亲，昨天的杨枝甘露还满意吗？", "care")):
        services.send_text(ws, follower.pk, text, purpose=purpose, actor="demo")
    services.create_subscription(ws, "数据仓库", "https://dw.example.com/shequn", ["interaction.created"], actor="t")
    interactions.ingest_batch(ws, [{"identities": [{"kind": "phone", "value": "13800138000"}], "type": "visit",
                                    "channel": "store", "occurred_at": "2026-06-01T10:00:00+08:00",
                                    "external_id": "v1"}])
    delivery = WebhookDelivery.objects.get()
    pg = page
    assert pg.locator("nav.sidenav a[href$='/outbound/outbox/']").count() == 1
    pg.goto(pg.base + "/w/tea/outbound/outbox/")
    pg.wait_for_selector("#outbox-table")
    assert pg.locator("#outbox-table tbody tr").count() == 3
    shot(pg, "outbound-01-outbox")
    pg.select_option("select[name=purpose]", "otp")
    pg.click("#outbox-filters button[type=submit]")
    pg.wait_for_url("**purpose=otp**")
    assert "482913" in pg.locator("#outbox-table").inner_text()
    assert pg.locator("#outbox-table tbody tr").count() == 1
    pg.fill("#id_member_id", str(follower.pk))
    pg.fill("#id_text", "您好，您的订单已备好，请到西湖店取餐。")
    pg.click("#send-form button[type=submit]")
    pg.wait_for_selector("#outbox-table")
    assert "西湖店取餐" in pg.locator("#outbox-table").inner_text()

    pg.goto(pg.base + "/w/tea/outbound/webhooks/")
    pg.fill("#id_ep-name", "POS 收银系统")
    pg.click("#endpoint-form button[type=submit]")
    pg.wait_for_selector("#revealed-secret")
    assert pg.locator("#revealed-secret").inner_text().startswith("whsec_")
    shot(pg, "outbound-02-webhooks")

    pg.goto(pg.base + f"/w/tea/outbound/webhooks/deliveries/{delivery.pk}/")
    pg.click("#replay")
    pg.wait_for_selector("#attempt-table")
    shot(pg, "outbound-03-delivery")
    delivery.refresh_from_db()
    assert delivery.replay_actor.startswith("user:")

    pg.goto(pg.base + "/w/tea/outbound/smtp/")
    pg.fill("#id_host", "smtp.exmail.qq.com")
    pg.fill("#id_port", "465")
    pg.select_option("#id_security", "ssl")
    pg.fill("#id_from_address", "crm@chayu.example")
    pg.click("#smtp-form button[type=submit]")
    pg.wait_for_selector("text=smtp.exmail.qq.com:465")
    shot(pg, "outbound-04-smtp")
