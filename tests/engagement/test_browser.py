"""Engagement console pages in a real headless Chromium (same set-up as tests/console/test_browser.py);
screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import pytest

from shequn.engagement import services as eng
from shequn.loyalty import services as loyalty
from tests.console.conftest import staff  # noqa: F401 - fixture
from tests.console.test_browser import log_in, page, shot  # noqa: F401 - fixtures

from .conftest import make_member

pytestmark = pytest.mark.browser


def seed(ws):
    for code, name, rank, c in [("sprout", "新芽", 0, 0), ("leaf", "青叶", 1, 100), ("gold", "金叶", 2, 400)]:
        eng.save_tier(ws, {"code": code, "name": name, "rank": rank, "min_contribution": c}, actor="t")
    for i in range(8):
        m = make_member(ws, f"茶友{i}")
        loyalty.earn(ws, m, "growth", 1 + 60 * i, reason="r", idempotency_key=f"g{i}", actor="t")
        loyalty.earn(ws, m, "points", 10 + 15 * i, reason="r", idempotency_key=f"p{i}", actor="t")
        eng.check_in(ws, m.pk)
    eng.evaluate_all(ws)


def test_tiers_chart_leaderboard_and_badge_form(page, ws, other_ws):  # noqa: F811
    seed(ws)
    pg = page
    log_in(pg)
    pg.goto(pg.base + "/w/tea/engagement/")
    pg.wait_for_selector("#tier-chart .plot-container svg.main-svg")
    assert pg.locator("#tier-chart .bars .point").count() == 3
    assert pg.locator("#tiers tbody tr").count() == 3
    shot(pg, "engagement-01-tiers")

    pg.goto(pg.base + "/w/tea/engagement/leaderboards/?board=points&period=week")
    pg.wait_for_selector("#board-chart .plot-container svg.main-svg")
    assert pg.locator("#board-chart .bars .point").count() == 8
    assert "茶友7" in pg.locator("#board tbody tr").first.inner_text()
    shot(pg, "engagement-02-leaderboard")

    pg.goto(pg.base + "/w/tea/engagement/badges/new/")
    pg.fill("#id_code", "checkin-1")
    pg.fill("#id_name", "签到新人")
    pg.select_option("#id_metric", "check_in")
    pg.fill("#id_threshold", "1")
    pg.click("#engagement-form button[type=submit]")
    pg.wait_for_url("**/engagement/badges/")
    row = pg.locator("#badges tbody tr").first
    assert "签到新人" in row.inner_text() and "8" in row.inner_text()
    shot(pg, "engagement-03-badges")
