"""The member portal in headless Chromium at a phone's viewport; screenshots in
test-artifacts/screenshots/portal-*.png."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import image_width
from tests.browser import shot as browser_shot

from .conftest import PHONE, last_code

pytestmark = pytest.mark.browser

PHONE_VIEWPORT = {"width": 390, "height": 844}


@pytest.fixture
def phone(browser, live_server) -> Iterator[Any]:
    context = browser.new_context(viewport=PHONE_VIEWPORT, is_mobile=True, has_touch=True, locale="zh-CN",
                                  device_scale_factor=2)
    context.set_default_timeout(20_000)
    pg = context.new_page()
    pg.base = live_server.url  # type: ignore[attr-defined]
    yield pg
    context.close()


def shot(pg: Any, name: str) -> None:
    browser_shot(pg, f"portal-{name}")


def test_member_signs_in_and_uses_the_portal_on_a_phone(phone, ws, portal_data):
    pg = phone
    pg.goto(pg.base + "/m/tea/")
    assert pg.url.startswith(pg.base + "/m/tea/login/")
    assert pg.locator("h1").inner_text() == "会员登录"
    pg.fill("#phone", PHONE)
    shot(pg, "01-sign-in")
    pg.click("button.primary")
    pg.wait_for_url("**/login/code/**")
    pg.fill("#code", last_code(ws))
    shot(pg, "02-code")
    pg.click("button.primary")
    pg.wait_for_url(pg.base + "/m/tea/")

    # the card fits the phone: no sideways scrolling
    assert pg.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]
    assert pg.locator(".member-card .name").inner_text() == "林小满"
    assert pg.locator("[data-point-type=points] b").inner_text() == "320"
    assert image_width(pg, ".member-card img.qr") > 0
    shot(pg, "03-card")

    pg.click("#check-in button.primary")
    pg.wait_for_selector(".msg")
    assert "1" in pg.locator(".msg").inner_text()
    assert pg.locator("#check-in button.primary").is_disabled()

    pg.click("nav.tabs >> text=券")
    pg.wait_for_selector(f"[data-coupon='{portal_data.coupon.code}']")
    assert image_width(pg, ".coupon img") > 0
    shot(pg, "04-coupons")

    pg.click("nav.tabs >> text=为你推荐")
    pg.click(f"[data-offer='{portal_data.offer.pk}'] button")
    pg.wait_for_selector(f"[data-offer='{portal_data.offer.pk}'] .clipped")
    shot(pg, "05-offers")

    pg.click("nav.tabs >> text=积分")
    assert pg.locator("#history li").count() == 2
    shot(pg, "06-points")

    pg.click("nav.tabs >> text=任务")
    pg.wait_for_selector("h1")
    shot(pg, "07-tasks")

    pg.click("nav.tabs >> text=排行")
    pg.wait_for_selector("[data-board='streak-all'] tr.me")
    shot(pg, "08-leaderboards")

    pg.click("header form button[data-lang=en]")
    pg.wait_for_selector("html[lang=en]")
    assert pg.locator("h1").inner_text() == "Leaderboards"
    pg.click("nav.tabs >> text=Card")
    shot(pg, "09-card-en")
