"""The engagement demo seed (called by build_demo) on a small demo workspace: deterministic, and
everything filled through the services (tiers by hook, badges, tasks, check-ins, leaderboards)."""

from __future__ import annotations

import datetime as dt

import pytest

from shequn import demo
from shequn.engagement import queries
from shequn.engagement.models import BadgeAward, CheckIn, TaskProgress, TierChange
from shequn.loyalty import services as loyalty

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 6, 10, 4, 0, tzinfo=dt.UTC)


def snapshot(ws):
    return {
        "tiers": [m for _c, m in [(r["code"], r["members"]) for r in queries.tier_distribution(ws)]],
        "check_ins": CheckIn.objects.filter(workspace=ws).count(),
        "badges": BadgeAward.objects.filter(workspace=ws).count(),
        "done": TaskProgress.objects.filter(workspace=ws, completed_at__isnull=False).count(),
        "board": [r.score for r in queries.leaderboard(ws, "points", "week", at=NOW)],
        "streaks": [r.score for r in queries.leaderboard(ws, "streak", "all", at=NOW)],
    }


def test_seed_demo_fills_everything_and_is_deterministic(monkeypatch):
    from shequn.engagement import demo as engagement_demo

    # only this feature's seeder, so that the test says something about engagement alone
    monkeypatch.setattr(demo, "_feature_seeders", lambda: [("engagement", engagement_demo.seed_demo)])
    shots = []
    for slug in ("d1", "d2"):
        ws = demo.build_demo(slug, members=120, interactions=3000, seed=3, now=NOW)
        shots.append(snapshot(ws))
        assert loyalty.verify(ws).ok
        assert [t.code for t in queries.tiers(ws)] == ["sprout", "leaf", "gold", "king"]
    a, b = shots
    assert a == b
    assert a["check_ins"] > 100 and a["badges"] > 10 and a["done"] > 5
    assert sum(a["tiers"][1:]) > 5
    assert a["board"] and a["streaks"] and TierChange.objects.filter(new_tier="leaf").exists()
