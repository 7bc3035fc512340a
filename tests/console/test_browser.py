"""The console in a real headless Chromium (Debian's chromium, driven by Playwright), against the live
test server. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from shequn.members.models import ImportJob
from tests.browser import TIMEOUT_MS, shot

from .conftest import PASSWORD, build_data

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


def test_login_and_language_switch(page, ws, other_ws):
    build_data(ws, other_ws)
    pg = page
    pg.goto(pg.base + "/login/")
    assert pg.locator("h1").inner_text() == "登录社群控制台"
    shot(pg, "01-login")
    log_in(pg)
    assert pg.locator("nav.sidenav a.active").inner_text() == "概览"
    pg.wait_for_selector("[data-figure=funnel-figure] .plot-container")
    shot(pg, "02-dashboard-zh")

    pg.click("form.lang button[data-lang=en]")
    pg.wait_for_selector("html[lang=en]")
    assert pg.url == pg.base + "/w/tea/"
    assert pg.locator("nav.sidenav a.active").inner_text() == "Dashboard"
    pg.wait_for_selector("[data-figure=strength-figure] .plot-container")
    shot(pg, "03-dashboard-en")

    pg.click("form.lang button[data-lang=zh-hans]")
    pg.wait_for_selector("html[lang=zh-hans]")
    assert pg.locator("nav.sidenav a.active").inner_text() == "概览"

    pg.click("#logout")
    pg.wait_for_url(pg.base + "/login/")


def test_member_list_filter_and_member_page(page, ws, other_ws):
    data = build_data(ws, other_ws)
    pg = page
    log_in(pg)
    pg.click("nav.sidenav >> text=会员")
    pg.wait_for_selector("#member-table")
    assert pg.locator("#member-table tbody tr").count() == 3
    shot(pg, "04-members")

    pg.fill("#f-tag", "VIP")
    pg.click("#member-filters button[type=submit]")
    pg.wait_for_url("**/members/?*tag=VIP*")
    rows = pg.locator("#member-table tbody tr")
    assert rows.count() == 1
    assert "王小明" in rows.first.inner_text()
    shot(pg, "05-members-filtered")

    pg.click("#member-table a.member-link")
    pg.wait_for_url(f"**/members/{data.wang.pk}/")
    items = pg.locator("#timeline ol.timeline li")
    assert items.count() == 5
    assert "评价" in items.first.inner_text()
    assert "有新品吗？" in pg.locator("#timeline").inner_text()
    shot(pg, "06-member-page")

    pg.fill("#tags input[name=names]", "周末党")
    pg.click("#tags button:has-text('添加')")
    pg.wait_for_selector(".msg.success")
    assert "周末党" in pg.locator("#tags .tag-list").first.inner_text()


def test_touchpoint_map_renders(page, ws, other_ws):
    build_data(ws, other_ws)
    pg = page
    log_in(pg)
    pg.goto(pg.base + "/w/tea/touchpoints/")
    pg.wait_for_selector("#touchpoint-map .plot-container svg.main-svg")
    assert pg.locator("#touchpoint-map .scatterlayer .point").count() == 3
    assert "门店收银台" in pg.locator("#fix-first").inner_text()
    shot(pg, "07-touchpoints")


def test_import_progress_reaches_done(page, ws, settings):
    from shequn.members.tasks import run_import_job

    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
    pg = page
    log_in(pg)
    pg.goto(pg.base + "/w/tea/imports/")
    rows = ["phone,name,city,tags"] + [f"1381111{i:04d},会员{i},杭州,导入" for i in range(40)] + ["12,坏号码,,"]
    pg.select_option("#id_kind", "members")
    pg.uncheck("#id_dry_run")
    pg.set_input_files("#id_file", files=[{"name": "members.csv", "mimeType": "text/csv",
                                            "buffer": "\n".join(rows).encode("utf-8")}])
    shot(pg, "08-import-form")
    pg.click("#import-form button[type=submit]")
    pg.wait_for_url("**/imports/*/")
    job = ImportJob.objects.get(workspace=ws)
    # The database queue holds the job until a worker takes it: the page shows it waiting.
    assert pg.locator("#job-status").get_attribute("data-status") == "queued"
    shot(pg, "09-import-queued")

    # Run the queued task here, as the worker would; the page's poller must notice.
    run_import_job.call(job.pk)
    pg.wait_for_selector("#job-status[data-status=done]")
    pg.wait_for_selector("#error-report table")
    assert pg.locator("#job-created").inner_text() == "40"
    assert pg.locator("#job-errors").inner_text() == "1"
    assert pg.locator("#job-bar").evaluate("el => el.style.width") == "100%"
    assert "phone" in pg.locator("#error-report").inner_text()
    shot(pg, "10-import-done")


def test_rules_and_api_keys(page, ws):
    pg = page
    log_in(pg)
    pg.goto(pg.base + "/w/tea/lifecycle/rules/")
    assert pg.locator(".stage-group").count() == 6
    shot(pg, "11-rules")
    pg.click(".stage-group >> nth=3 >> text=新建进入此阶段的规则")
    pg.fill("#id_name", "大额购买 → 使用")
    pg.select_option("#id_interaction_type", "purchase")
    pg.fill("#id_min_amount", "500")
    assert pg.locator("#id_target_stage").input_value() == "using"
    shot(pg, "12-rule-form")
    pg.click("form.stacked button[type=submit]")
    pg.wait_for_url(pg.base + "/w/tea/lifecycle/rules/")
    assert "大额购买 → 使用" in pg.locator(".stage-group >> nth=3").inner_text()

    pg.goto(pg.base + "/w/tea/settings/api-keys/")
    pg.fill("#id_name", "收银系统同步")
    pg.click("form.stacked button[type=submit]")
    secret = pg.locator("#new-secret code.secret").inner_text()
    assert secret.startswith("sq_")
    shot(pg, "13-api-key-created")
    pg.reload()
    assert pg.locator("#new-secret").count() == 0
    pg.once("dialog", lambda dialog: dialog.accept())
    pg.click("#key-table button:has-text('吊销')")
    pg.wait_for_selector(".msg.success")
    assert "已吊销" in pg.locator("#key-table").inner_text()
