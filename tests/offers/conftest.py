from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest

from shequn.core import services as core
from shequn.loyalty import services as loyalty
from shequn.members import services as members
from shequn.offers import services as offers

PASSWORD = "offers-test-pw-1"  # noqa: S105


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def now():
    """10:00 in Shanghai on 1 June 2026."""
    return dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC)


@dataclass
class Shop:
    ws: Any
    xihu: Any
    binjiang: Any
    clerk: Any  # assigned to 西湖店
    owner: Any
    wang: Any
    li: Any


def build_shop(ws) -> Shop:
    xihu = offers.save_store(ws, "xihu", "西湖店", actor="t")
    binjiang = offers.save_store(ws, "binjiang", "滨江店", actor="t")
    clerk = core.ensure_user("clerk-tea", PASSWORD)
    core.add_staff(ws, clerk, "clerk")
    offers.assign_clerk(ws, xihu, clerk.pk, actor="t")
    owner = core.ensure_user("owner-tea", PASSWORD)
    core.add_staff(ws, owner, "owner")
    wang = members.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}], {"display_name": "王小明"}).member
    li = members.upsert_member(ws, [{"kind": "phone", "value": "13900139001"}], {"display_name": "李娜"}).member
    return Shop(ws, xihu, binjiang, clerk, owner, wang, li)


@pytest.fixture
def shop(ws) -> Shop:
    return build_shop(ws)


def make_offer(ws, **extra):
    data = {"name": "满30减5", "kind": "amount_off", "amount_off": "5", "min_spend": "30"}
    data.update(extra)
    return offers.save_offer(ws, data, actor="t")


def give(ws, offer, member, key=None):
    coupon, _created = offers.issue_coupon(ws, offer.pk, member.pk, key=key or f"k-{offer.pk}-{member.pk}", actor="t")
    return coupon


def clerk_redeem(shop, coupon, key="r1", **kw):
    args = {"store": "xihu", "amount": "40"}
    args.update(kw)
    return offers.redeem(shop.ws, coupon.code, key=key, actor=f"user:{shop.clerk.pk}", role="clerk",
                         user_id=shop.clerk.pk, **args)


@pytest.fixture
def points(ws):
    return loyalty.get_point_type(ws, "points")
