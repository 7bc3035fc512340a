from __future__ import annotations

import datetime as dt

import pytest

from shequn.members import services as members


@pytest.fixture
def now():
    """10:00 in Shanghai on Monday 1 June 2026."""
    return dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC)


def make_member(ws, name, **profile):
    return members.upsert_member(ws, [{"kind": "external", "value": name}], {"display_name": name, **profile}).member


@pytest.fixture
def alice(ws):
    return make_member(ws, "alice")


@pytest.fixture
def bob(ws):
    return make_member(ws, "bob")


@pytest.fixture
def tiers(ws):
    from shequn.engagement import services as eng

    out = []
    for code, name, rank, c, i, mult, grace in [("sprout", "新芽", 0, 0, 0, "1", 0), ("leaf", "青叶", 1, 100, 0, "1.2", 30),
                                                ("gold", "金叶", 2, 500, 20, "1.5", 30)]:
        out.append(eng.save_tier(ws, {"code": code, "name": name, "rank": rank, "min_contribution": c,
                                      "min_influence": i, "multiplier": mult, "grace_days": grace}, actor="test"))
    return out
