"""The channels' demo seed: codes with stats that went through the real write paths, deterministic,
fast, and clearly marked as demo data."""

from __future__ import annotations

import datetime as dt
import random

from shequn import demo
from shequn.channels import queries
from shequn.channels.demo import PLANS, seed_demo
from shequn.channels.models import ChannelCode, WeChatAccount
from shequn.core import services as core
from shequn.interactions.models import Interaction

NOW = dt.datetime(2026, 11, 23, 6, 0, tzinfo=dt.UTC)


def summary(ws) -> dict[str, tuple]:
    stats = queries.code_stats(ws)
    return {c.scene: (c.active, stats[c.pk].scans, stats[c.pk].follows, stats[c.pk].unfollows, stats[c.pk].conversions)
            for c in queries.codes(ws)}


def test_seed_on_the_demo_workspace(db):
    ws = demo.build_demo("demo", members=120, interactions=3000, now=NOW)  # runs seed_demo

    account = WeChatAccount.objects.get(workspace=ws)
    assert account.app_id == demo.WECHAT_APPID and account.app_secret.startswith("demoonly")
    codes = list(ChannelCode.objects.filter(workspace=ws))
    assert len(codes) == len(PLANS) == 6
    assert all(c.is_demo and c.url.startswith("https://demo-only.invalid/") for c in codes)
    got = summary(ws)
    for plan in PLANS:
        active, scans, follows, unfollows, conversions = got[plan.scene]
        assert active is plan.active
        assert follows == plan.new and scans >= plan.new
        assert 0 <= unfollows < follows
    assert sum(v[3] for v in got.values()) > 0 and sum(v[4] for v in got.values()) > 0
    # The giveaway campaign loses the most followers early and converts worst (the seed's lesson).
    rate = {s: (v[3] / v[2], v[4] / v[2]) for s, v in got.items()}
    assert rate["campaign-1111"][0] > rate["store-counter"][0]
    assert rate["campaign-1111"][1] < rate["store-counter"][1]
    # Existing followers' scans are touches on demo members.
    assert Interaction.objects.filter(workspace=ws, type="scan", properties__channel_code__isnull=False).count() > 0


def test_seed_is_deterministic_and_needs_no_members(db):
    a = core.create_workspace("a", "A")
    b = core.create_workspace("b", "B")
    seed_demo(a, random.Random(3), NOW)
    seed_demo(b, random.Random(3), NOW)
    assert summary(a) == summary(b)
    assert all(v[1] == v[2] for v in summary(a).values())  # no followers to touch: every scan is a follow
