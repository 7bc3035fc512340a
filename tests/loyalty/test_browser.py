"""The liability reports in a real headless Chromium (Debian's chromium, driven by Playwright), against
the live test server; screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from shequn.loyalty import services as loyalty
from shequn.members import services as members
from shequn.wallet import services as wallet
from tests.browser import SHOTS, TIMEOUT_MS
from tests.console.conftest import PASSWORD

pytestmark = pytest.mark.browser



@pytest.fixture
def page(browser, live_server, staff, ws, other_ws) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.base = live_server.url  # type: ignore[attr-defined]
    yield pg
    context.close()


def log_in(pg: Any, username: str = "owner-tea") -> None:
    pg.goto(pg.base + "/login/")
    pg.fill("#id_username", username)
    pg.fill("#id_password", PASSWORD)
    pg.click("button[type=submit].primary")
    pg.wait_for_url(pg.base + "/w/tea/")


def seed(ws) -> None:
    now = dt.datetime.now(dt.UTC)
    ms = [members.upsert_member(ws, [{"kind": "external", "value": f"m{i}"}], {"display_name": f"会员{i}"}).member
          for i in range(6)]
    for week in range(10):
        for i, m in enumerate(ms):
            at = now - dt.timedelta(days=7 * week + i)
            loyalty.earn(ws, m, "points", 50 + 10 * i + week, reason="消费", idempotency_key=f"e{week}-{i}", actor="t",
                         now=at)
            if (week + i) % 2 == 0:
                loyalty.spend(ws, m, "points", 30 + i, reason="兑换", idempotency_key=f"s{week}-{i}", actor="t", now=at)
    for day in range(25):
        m = ms[day % 6]
        at = now - dt.timedelta(days=day)
        wallet.top_up(ws, m, 10_000 + 500 * (day % 4), idempotency_key=f"t{day}", actor="t", now=at)
        wallet.pay(ws, m, 3_000 + 100 * day, idempotency_key=f"p{day}", actor="t", now=at)


def test_points_and_stored_value_liability_reports(page, ws):
    seed(ws)
    pg = page
    log_in(pg)
    pg.click("nav.sidenav a[href$='/loyalty/liability/']")
    pg.wait_for_url("**/loyalty/liability/")
    pg.wait_for_selector("[data-figure=outstanding-figure] .plot-container svg.main-svg")
    pg.wait_for_selector("[data-figure=flow-figure] .plot-container svg.main-svg")
    assert pg.locator("#points-liability tbody tr").count() == 2
    assert pg.locator("[data-figure=flow-figure] .scatterlayer .trace").count() == 2
    pg.screenshot(path=str(SHOTS / "loyalty-01-points-liability.png"), full_page=True)

    pg.click("nav.tabs a[href$='/wallet/liability/']")
    pg.wait_for_url("**/wallet/liability/")
    pg.wait_for_selector("[data-figure=wallet-figure] .plot-container svg.main-svg")
    assert pg.locator("[data-figure=wallet-figure] .barlayer .trace").count() == 3
    assert pg.locator("#wallet-outstanding").inner_text().startswith("¥")
    pg.screenshot(path=str(SHOTS / "loyalty-02-wallet-liability.png"), full_page=True)
