"""The shop counter and the offer reports in a real headless Chromium (Debian's chromium, driven by
Playwright), against the live test server. Screenshots go to test-artifacts/screenshots/offers-*.png."""

from __future__ import annotations

from typing import Any

import pytest

from shequn.offers import services as offers
from shequn.offers.models import Redemption
from tests.browser import TIMEOUT_MS
from tests.browser import shot as browser_shot

from .conftest import PASSWORD, build_shop, give, make_offer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]



def new_page(browser: Any, live_server: Any, locale: str = "en-US") -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=locale)
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.base = live_server.url  # type: ignore[attr-defined]
    return pg


def log_in(pg: Any, username: str, landing: str) -> None:
    pg.goto(pg.base + "/login/")
    pg.fill("#id_username", username)
    pg.fill("#id_password", PASSWORD)
    pg.click("button[type=submit].primary")
    pg.wait_for_url(pg.base + landing)


def shot(pg: Any, name: str) -> None:
    browser_shot(pg, f"offers-{name}")


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_two_counters_redeem_one_coupon(browser, live_server, ws):
    shop = build_shop(ws)
    coupon = give(ws, make_offer(ws, coupon_days=30), shop.wang)
    counters = [new_page(browser, live_server) for _ in range(2)]
    try:
        for pg in counters:
            log_in(pg, "clerk-tea", "/w/tea/counter/")
        first, second = counters
        assert first.locator("nav.sidenav a.active").inner_text() == "Counter"
        shot(first, "01-counter-empty")

        # Both counters type the same code and see it redeemable.
        for pg in counters:
            pg.fill("#counter-q", coupon.code[:4].lower() + "-" + coupon.code[4:])
            pg.click("#counter-lookup button[type=submit]")
            pg.wait_for_selector("#counter-coupon")
            assert "Redeemable" in pg.locator("#coupon-state").inner_text()
            assert "王小明" in pg.locator("#counter-coupon").inner_text()
        first.wait_for_function("document.querySelector('#counter-coupon img').naturalWidth > 0")
        shot(first, "02-counter-coupon")

        # Below the minimum spend: refused, nothing redeemed.
        first.fill("#redeem-form input[name=amount]", "20")
        first.click("#redeem-button")
        first.wait_for_selector(".msg.error")
        assert "at least ¥30" in first.locator(".msg.error").inner_text()
        assert not Redemption.objects.exists()

        first.fill("#redeem-form input[name=amount]", "36")
        first.click("#redeem-button")
        first.wait_for_selector(".msg.success")
        assert "Redeemed" in first.locator(".msg.success").inner_text()
        assert "Already redeemed" in first.locator("#coupon-state").inner_text()
        assert first.locator("#redeem-button").count() == 0
        shot(first, "03-counter-redeemed")

        # The second counter still shows its button from before: pressing it is refused.
        second.fill("#redeem-form input[name=amount]", "36")
        second.click("#redeem-button")
        second.wait_for_selector(".msg.error")
        assert "already redeemed" in second.locator(".msg.error").inner_text()
        shot(second, "04-counter-already-redeemed")
        assert Redemption.objects.count() == 1

        # Look a member up by phone: their other coupons are listed.
        other = give(ws, make_offer(ws, name="第二杯半价", kind="percent_off", percent_off=50, min_spend=""), shop.wang)
        second.fill("#counter-q", "13800138000")
        second.click("#counter-lookup button[type=submit]")
        second.wait_for_selector("#counter-member")
        assert other.code in second.locator("#counter-member").inner_text()
        shot(second, "05-counter-member")
    finally:
        for pg in counters:
            pg.context.close()


def test_reports_chart_and_log(browser, live_server, ws):
    shop = build_shop(ws)
    for i in range(3):
        offer = make_offer(ws, name=f"优惠{i}", min_spend="")
        for member in (shop.wang, shop.li):
            c = give(ws, offer, member)
            if i < 2:
                offers.redeem(ws, c.code, key=f"r{c.pk}", actor="t", role="clerk", user_id=shop.clerk.pk,
                              store="xihu")
    pg = new_page(browser, live_server, "zh-CN")
    try:
        log_in(pg, "owner-tea", "/w/tea/")
        pg.goto(pg.base + "/w/tea/offers/reports/")
        pg.wait_for_selector("[data-figure=offers-figure] .plot-container")
        pg.wait_for_selector("[data-figure=store-figure] .plot-container")
        assert pg.locator("[data-figure=offers-figure] .bars .point").count() >= 6
        shot(pg, "06-reports")
        pg.goto(pg.base + "/w/tea/offers/redemptions/")
        assert pg.locator("#redemption-table tbody tr").count() == 4
        pg.locator(".void-form input[name=reason]").first.fill("顾客退单")
        pg.locator(".void-form button").first.click()
        pg.wait_for_selector(".msg.success")
        assert pg.locator("#redemption-table tbody tr.disabled").count() == 1
        shot(pg, "07-redemption-log")
        pg.goto(pg.base + "/w/tea/offers/")
        shot(pg, "08-offer-list")
    finally:
        pg.context.close()
