"""Two agents in two real headless Chromium contexts (Debian's chromium, driven by Playwright) against
the live test server: a WeChat-like message arrives, both see it appear without reloading, one claims
it, the other sees it claimed. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from shequn.inbox import services
from shequn.inbox.models import Conversation
from tests.browser import TIMEOUT_MS, shot

from .conftest import PASSWORD, inbound

pytestmark = pytest.mark.browser



def _page(browser: Any, live_server: Any, username: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.base = live_server.url  # type: ignore[attr-defined]
    pg.goto(pg.base + "/login/")
    pg.fill("#id_username", username)
    pg.fill("#id_password", PASSWORD)
    pg.click("button[type=submit].primary")
    pg.wait_for_url(pg.base + "/w/tea/")
    return pg


@pytest.fixture
def two_agents(browser, live_server, ws, agents) -> Iterator[tuple[Any, Any]]:
    a = _page(browser, live_server, "alice")
    b = _page(browser, live_server, "bob")
    yield a, b
    a.context.close()
    b.context.close()


def test_two_agents_see_a_message_arrive_and_one_claims_it(two_agents, ws, agents):
    services.save_canned_reply(ws, "sorry", "致歉", "非常抱歉给您带来不便，我们马上为您处理。", actor="test")
    a, b = two_agents
    a.goto(a.base + "/w/tea/inbox/?view=unassigned")
    b.goto(b.base + "/w/tea/inbox/?view=all")
    assert a.locator("#inbox-table tr.conv-row").count() == 0
    shot(a, "inbox-01-agent-a-empty")

    # A WeChat-like message arrives through the one write path; nobody reloads.
    inbound(ws, openid="o-browser", text="外卖少了一杯杨枝甘露，请帮我处理", bot_outcome="handoff")
    conv = Conversation.objects.get(workspace=ws)
    row = f"#inbox-table tr[data-id='{conv.pk}']"
    a.wait_for_selector(row)
    b.wait_for_selector(row)
    assert "杨枝甘露" in a.locator(row).inner_text()
    assert b.locator(row).get_attribute("data-assignee") == ""
    shot(a, "inbox-02-agent-a-message-arrived")
    shot(b, "inbox-03-agent-b-message-arrived")

    # Both open it; A claims it; B's open page follows without a reload.
    b.click(f"{row} a.conv-link")
    b.wait_for_selector("#claim")
    a.click(f"{row} a.conv-link")
    a.wait_for_selector("#claim")
    a.click("#claim")
    a.wait_for_selector("#conv-head[data-assignee=alice]")
    assert a.locator("#claim").count() == 0
    shot(a, "inbox-04-agent-a-claimed")

    b.wait_for_selector("#conv-head[data-assignee=alice]")
    assert b.locator("#claim").count() == 0
    assert "alice" in b.locator("#conv-assignee").inner_text()
    shot(b, "inbox-05-agent-b-sees-claimed")

    # B's list shows the agent; A's unassigned queue no longer holds it.
    b.goto(b.base + "/w/tea/inbox/?view=all")
    assert b.locator(row).get_attribute("data-assignee") == "alice"
    assert "alice" in b.locator(f"{row} td.assignee").inner_text()
    shot(b, "inbox-06-agent-b-list-claimed")
    a.goto(a.base + "/w/tea/inbox/?view=unassigned")
    assert a.locator(row).count() == 0

    # A answers with a canned reply (shortcut + Tab) and resolves: the CSAT question goes out.
    a.goto(a.base + f"/w/tea/inbox/c/{conv.pk}/")
    a.fill("#reply-text", "/sorry")
    a.press("#reply-text", "Tab")
    assert a.locator("#reply-text").input_value().startswith("非常抱歉")
    a.click("#reply-form button[type=submit]")
    a.wait_for_selector(".entry-reply")
    a.click("#resolve")
    a.wait_for_selector("#conv-head[data-status=resolved]")
    shot(a, "inbox-07-resolved")
    conv.refresh_from_db()
    assert conv.status == "resolved" and conv.csat is not None


def test_report_and_tickets_pages(browser, live_server, ws, agents):
    from shequn.core.clock import now

    team = services.save_team(ws, "门店组", actor="t")
    services.save_team(ws, "客服组", actor="t")
    for i, score in enumerate((5, 4, 5, 2)):
        inbound(ws, openid=f"o-r{i}", text="请帮我查一下订单")
        conv = Conversation.objects.get(workspace=ws, status="open")
        services.claim(ws, conv.pk, user=agents["alice"], actor="a")
        services.reply(ws, conv.pk, "已为您处理", user=agents["alice"], actor="a")
        services.resolve(ws, conv.pk, actor="a")
        inbound(ws, openid=f"o-r{i}", text=str(score), bot_outcome="answered")
    services.create_ticket(ws, title="门店服务态度投诉跟进", priority="high", team_id=team.pk, actor="t",
                           at=now() - dt.timedelta(hours=10))
    services.escalate_overdue()
    pg = _page(browser, live_server, "olga")
    pg.goto(pg.base + "/w/tea/inbox/report/")
    pg.wait_for_selector("[data-figure=csat-figure] .plot-container")
    pg.wait_for_selector("[data-figure=volume-figure] .plot-container")
    assert pg.locator("#csat-average").inner_text() == "4.00"
    shot(pg, "inbox-08-report")
    pg.goto(pg.base + "/w/tea/inbox/tickets/?breached=1")
    assert "门店服务态度投诉跟进" in pg.locator("#ticket-table").inner_text()
    shot(pg, "inbox-09-tickets-breached")
    pg.context.close()
