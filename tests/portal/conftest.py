"""Portal fixtures: a member of workspace ``ws`` with points, a coupon, a clippable offer and codes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from shequn.loyalty import services as loyalty
from shequn.members import services as members
from shequn.offers import services as offers
from shequn.outbound.models import OutboundMessage

PHONE = "13800138000"


@dataclass
class PortalData:
    member: Any
    other: Any
    coupon: Any
    other_coupon: Any
    offer: Any
    claim: Any
    activity: Any


@pytest.fixture
def portal_data(ws) -> PortalData:
    member = members.upsert_member(ws, [{"kind": "phone", "value": PHONE}], {"display_name": "林小满"},
                                   actor="test").member
    other = members.upsert_member(ws, [{"kind": "phone", "value": "13900139000"}], {"display_name": "王大力"},
                                  actor="test").member
    loyalty.earn(ws, member.pk, "points", 320, reason="到店消费 ¥32", idempotency_key="p1", actor="test")
    loyalty.earn(ws, member.pk, "growth", 320, reason="到店消费 ¥32", idempotency_key="g1", actor="test")
    gift = offers.save_offer(ws, {"name": "免费加料", "kind": "gift", "gift_item": "珍珠"}, actor="test")
    coupon, _ = offers.issue_coupon(ws, gift.pk, member.pk, key="c1", actor="test")
    other_coupon, _ = offers.issue_coupon(ws, gift.pk, other.pk, key="c2", actor="test")
    offer = offers.save_offer(ws, {"name": "杨枝甘露第二杯半价", "kind": "percent_off", "percent_off": 50,
                                   "items": ["杨枝甘露"], "clippable": True}, actor="test")
    claim = offers.create_claim_code(ws, gift.pk, "海报", actor="test")
    activity = offers.create_activity_code(ws, {"name": "晒单有礼", "reward_points": 20}, actor="test")
    return PortalData(member, other, coupon, other_coupon, offer, claim, activity)


def last_code(ws) -> str:
    msg = OutboundMessage.objects.filter(workspace=ws, purpose="otp").order_by("-id").first()
    return re.search(r"\b(\d{6})\b", msg.payload["text"]).group(1)


def sign_in(client: Client, ws, phone: str = PHONE) -> None:
    r = client.post(f"/m/{ws.slug}/login/", {"phone": phone})
    assert r.status_code == 302, r.content
    r = client.post(f"/m/{ws.slug}/login/code/", {"code": last_code(ws)})
    assert r.status_code == 302 and r["Location"] == f"/m/{ws.slug}/", r.content


@pytest.fixture
def member_client(ws, portal_data) -> Client:
    client = Client()
    sign_in(client, ws)
    return client
