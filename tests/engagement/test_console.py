"""Console pages of engagement: who may see and change what, forms through the services, charts,
and a bounded number of queries."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from shequn.core import services as core
from shequn.engagement import services as eng
from shequn.engagement.models import Badge, Task, Tier
from shequn.loyalty import services as loyalty

from .conftest import make_member

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def client_for(ws, role, name=None):
    user = core.ensure_user(name or f"{role}-{ws.slug}", "pw-123456789")
    core.add_staff(ws, user, role)
    c = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
    c.force_login(user)
    return c


@pytest.fixture
def data(ws, tiers, now):
    ms = [make_member(ws, f"会员{i}") for i in range(12)]
    for i, m in enumerate(ms):
        loyalty.earn(ws, m, "points", 10 * (i + 1), reason="r", idempotency_key=f"p{i}", actor="t")
        loyalty.earn(ws, m, "growth", 60 * i + 1, reason="r", idempotency_key=f"g{i}", actor="t")
        eng.check_in(ws, m.pk)
    eng.save_badge(ws, {"code": "ci", "name": "签到新人", "icon": "🌱", "metric": "check_in", "threshold": 1}, actor="t")
    eng.save_task(ws, {"code": "review", "name": "写一条评价", "metric": "review", "points": 20}, actor="t")
    return ms


def test_pages_render_with_charts_and_bounded_queries(ws, data, django_assert_max_num_queries):
    owner = client_for(ws, "owner")
    for url, marker in [("/w/tea/engagement/", "tier-figure"), ("/w/tea/engagement/badges/", "签到新人"),
                        ("/w/tea/engagement/tasks/", "写一条评价"),
                        ("/w/tea/engagement/leaderboards/?board=points&period=week", "board-figure"),
                        ("/w/tea/engagement/leaderboards/?board=streak&period=all", "board-figure"),
                        ("/w/tea/engagement/leaderboards/?board=invites&period=all", "board-figure")]:
        with django_assert_max_num_queries(20):
            r = owner.get(url)
        assert r.status_code == 200, url
        assert marker in r.content.decode(), url
    r = owner.get("/w/tea/engagement/")
    figure = json.loads(r.content.decode().split('id="tier-figure" type="application/json">')[1].split("</script>")[0])
    assert figure["data"][0]["x"] == ["新芽", "青叶", "金叶"]
    assert sum(figure["data"][0]["y"]) == 12
    board = owner.get("/w/tea/engagement/leaderboards/?board=points&period=week").content.decode()
    assert board.index("会员11") < board.index("会员10")


def test_roles(ws, data, other_ws):
    clerk = client_for(ws, "clerk")
    agent = client_for(ws, "agent")
    assert clerk.get("/w/tea/engagement/leaderboards/").status_code == 403  # a clerk sees the counter only
    assert agent.get("/w/tea/engagement/leaderboards/").status_code == 200
    assert clerk.get("/w/tea/engagement/").status_code == 403
    assert agent.get("/w/tea/engagement/").status_code == 200
    assert agent.post("/w/tea/engagement/", {"window_days": 30}).status_code == 403
    assert agent.get("/w/tea/engagement/tiers/new/").status_code == 403
    outsider = client_for(other_ws, "owner", name="outsider")
    assert outsider.get("/w/tea/engagement/").status_code == 404
    tier = Tier.objects.get(code="leaf")
    other_owner = client_for(other_ws, "owner", name="owner2")
    assert other_owner.get(f"/w/phone/engagement/tiers/{tier.pk}/").status_code == 404


def test_edit_tier_badge_task_and_programme(ws, data):
    op = client_for(ws, "operator")
    leaf = Tier.objects.get(code="leaf")
    r = op.post(f"/w/tea/engagement/tiers/{leaf.pk}/", {
        "code": "leaf", "name": "青叶会员", "rank": 1, "min_contribution": 120, "min_influence": 0, "requires": "all",
        "multiplier": "1.25", "grace_days": 15, "benefits": "生日券"})
    assert r.status_code == 302, r.content.decode()[-2000:]
    leaf.refresh_from_db()
    assert (leaf.name, leaf.min_contribution, str(leaf.multiplier), leaf.grace_days) == ("青叶会员", 120, "1.25", 15)
    r = op.post("/w/tea/engagement/tiers/new/", {"code": "leaf2", "name": "x", "rank": 1, "min_contribution": 0,
                                                 "min_influence": 0, "requires": "all", "multiplier": "1", "grace_days": 0})
    assert r.status_code == 200 and "error-box" in r.content.decode()
    assert not Tier.objects.filter(code="leaf2").exists()
    r = op.post("/w/tea/engagement/badges/new/", {"code": "s3", "name": "分享达人", "metric": "share", "threshold": 3,
                                                  "enabled": "on"})
    assert r.status_code == 302 and Badge.objects.filter(code="s3").exists()
    r = op.post("/w/tea/engagement/tasks/new/", {"code": "inv3", "name": "邀请3位好友", "metric": "referral", "target": 3,
                                                 "repeat": "once", "points": 100, "point_type": "points", "xp": 50,
                                                 "badge": "s3", "enabled": "on", "position": 1})
    assert r.status_code == 302
    assert Task.objects.get(code="inv3").badge.code == "s3"
    r = op.post("/w/tea/engagement/", {"window_days": 180, "review_days": 90, "invite_weight": 5, "share_weight": 1,
                                       "checkin_points": 2, "checkin_point_type": "points"})
    assert r.status_code == 302
    assert eng.programme(ws).window_days == 180
    r = op.post(f"/w/tea/engagement/tiers/{leaf.pk}/delete/")
    assert r.status_code == 302 and Tier.objects.filter(pk=leaf.pk).exists()  # members hold it
