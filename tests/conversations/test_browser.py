"""The bot's console pages in a real headless Chromium (Debian's chromium, driven by Playwright),
against the live test server. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import random

import pytest

from shequn.conversations import demo
from shequn.core import services as core
from tests.browser import SHOTS, TIMEOUT_MS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "console-test-pw-1"  # noqa: S105


def test_operator_walks_the_menu_in_the_tester_and_ends_an_incident(browser, live_server, settings):
    import datetime as dt

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    ws = core.create_workspace("tea", "茶语 Tea House")
    core.add_staff(ws, core.ensure_user("operator-tea", PASSWORD), "operator")
    demo.seed_demo(ws, random.Random(1), dt.datetime.now(dt.UTC))
    from shequn.conversations import services

    incident = services.declare_incident(ws, {"title": "支付通道故障", "keywords": ["付款", "支付"],
                                              "reply": "支付通道维护中,请稍后再试。"}, actor="t")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    base = live_server.url
    pg.goto(base + "/login/")
    pg.fill("#id_username", "operator-tea")
    pg.fill("#id_password", PASSWORD)
    pg.click("button[type=submit].primary")
    pg.wait_for_url(base + "/w/tea/")

    pg.goto(base + "/w/tea/bots/rules/")
    assert pg.locator("#rules tbody tr").count() == 7
    pg.screenshot(path=str(SHOTS / "bots-rules.png"), full_page=True)

    pg.goto(base + "/w/tea/bots/menus/")
    pg.locator("#menus a").first.click()
    assert "1. 查积分" in pg.locator("#menu-preview").inner_text()
    pg.screenshot(path=str(SHOTS / "bots-menu.png"), full_page=True)

    pg.goto(base + "/w/tea/bots/try/")
    pg.fill("#t-text", "菜单")
    pg.click("#tester-form button[type=submit]")
    assert "0. 人工客服" in pg.locator("#tester-result").inner_text()
    pg.fill("#t-text", "5")
    pg.click("#tester-form button[type=submit]")
    pg.fill("#t-text", "1")
    pg.click("#tester-form button[type=submit]")
    assert "9:00–21:00" in pg.locator("#tester-result").inner_text()
    pg.screenshot(path=str(SHOTS / "bots-tester.png"), full_page=True)

    pg.goto(base + f"/w/tea/bots/incidents/{incident.pk}/")
    pg.screenshot(path=str(SHOTS / "bots-incident.png"), full_page=True)
    pg.once("dialog", lambda d: d.accept())
    pg.click("#end-incident")
    pg.wait_for_load_state()
    incident.refresh_from_db()
    assert incident.status == "ended"
    context.close()
