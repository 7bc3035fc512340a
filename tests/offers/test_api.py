"""The offers API: offers, issuance, coupons and QR, redemption and void, claims, shares, stores, reports."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache
from django.test import Client

from shequn.loyalty import services as loyalty
from shequn.offers import services as offers
from shequn.offers.models import Coupon, Redemption
from tests.api.helpers import error_code, make_client

from .conftest import build_shop, give, make_offer


@pytest.fixture(autouse=True)
def _clear_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def shop(ws):
    return build_shop(ws)


@pytest.fixture
def api(ws):
    return make_client(ws, "owner")


def test_offer_crud_and_validation(api, shop):
    r = api.post("/api/v1/offers", {"name": "满30减5", "kind": "amount_off", "amount_off": "5", "min_spend": "30",
                                    "stores": ["xihu"], "coupon_days": 14})
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["stores"] == ["xihu"] and body["amount_off"] == "5.00" and body["uses_per_coupon"] == 1
    r = api.patch(f"/api/v1/offers/{body['id']}", {"active": False, "stores": []})
    assert r.status_code == 200 and r.json()["active"] is False and r.json()["stores"] == []
    r = api.post("/api/v1/offers", {"name": "x", "kind": "percent_off", "percent_off": 150})
    assert r.status_code == 422 and error_code(r) == "invalid_field"
    r = api.post("/api/v1/offers", {"name": "x", "kind": "gift", "gift_item": "y", "bogus": 1})
    assert r.status_code == 422 and error_code(r) == "validation_error"
    r = api.get("/api/v1/offers")
    assert [o["name"] for o in r.json()["items"]] == ["满30减5"]


def test_issue_by_ids_and_phones_then_redeem_and_void(api, ws, shop):
    offer = make_offer(ws)
    r = api.post(f"/api/v1/offers/{offer.pk}/issue", {"member_ids": [shop.wang.pk], "phones": ["13900139001", "1"],
                                                      "batch_key": "b1"})
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["created"] == 2 and body["unknown_phones"] == ["1"]
    code = next(c["code"] for c in body["coupons"] if c["member_id"] == shop.wang.pk)
    assert body["coupons"][0]["state"] == "redeemable"
    again = api.post(f"/api/v1/offers/{offer.pk}/issue", {"member_ids": [shop.wang.pk], "batch_key": "b1"})
    assert again.json()["created"] == 0

    svg = api.get(f"/api/v1/coupons/{code}/qr.svg")
    assert svg.status_code == 200 and svg["Content-Type"] == "image/svg+xml"
    assert svg.content.startswith(b"<svg")
    assert api.get(f"/api/v1/coupons/{code.lower()}").json()["member_id"] == shop.wang.pk

    r = api.post("/api/v1/redemptions", {"code": code, "key": "pos-1", "store": "xihu", "amount": "20"})
    assert r.status_code == 422 and error_code(r) == "below_minimum_spend"
    r = api.post("/api/v1/redemptions", {"code": code, "key": "pos-1", "store": "xihu", "amount": "35"})
    assert r.status_code == 201, r.content
    red = r.json()
    assert (red["store"], red["discount"], red["voided"]) == ("xihu", "5.00", False)
    replay = api.post("/api/v1/redemptions", {"code": code, "key": "pos-1", "store": "xihu", "amount": "35"})
    assert replay.status_code == 201 and replay.json()["id"] == red["id"]
    second = api.post("/api/v1/redemptions", {"code": code, "key": "pos-2", "store": "xihu", "amount": "35"})
    assert second.status_code == 409 and error_code(second) == "already_redeemed"

    r = api.post(f"/api/v1/redemptions/{red['id']}/void", {"reason": "退单"})
    assert r.status_code == 200 and r.json()["voided"] is True and r.json()["void_reason"] == "退单"
    r = api.post(f"/api/v1/redemptions/{red['id']}/void", {"reason": "again"})
    assert r.status_code == 409 and error_code(r) == "already_voided"
    log = api.get("/api/v1/redemptions").json()["items"]
    assert [x["id"] for x in log] == [red["id"]]
    report = api.get("/api/v1/offers/report").json()
    assert report["offers"][0]["issued"] == 2 and report["offers"][0]["voided"] == 1


def test_clerk_key_cannot_redeem_without_a_store_assignment(ws, shop):
    offer = make_offer(ws, min_spend="")
    coupon = give(ws, offer, shop.wang)
    clerk_key = make_client(ws, "clerk")
    r = clerk_key.post("/api/v1/redemptions", {"code": coupon.code, "key": "k", "store": "xihu"})
    assert r.status_code == 403 and error_code(r) == "store_not_assigned"
    assert clerk_key.get("/api/v1/redemptions").status_code == 403
    # A clerk signed in to the console redeems as their own store.
    client = Client()
    client.force_login(shop.clerk)
    headers = {"X-Shequn-Workspace": ws.slug}
    r = client.post("/api/v1/redemptions", {"code": coupon.code, "key": "k", "store": "binjiang"},
                    content_type="application/json", headers=headers)
    assert r.status_code == 403 and error_code(r) == "store_not_assigned"
    r = client.post("/api/v1/redemptions", {"code": coupon.code, "key": "k", "store": "xihu"},
                    content_type="application/json", headers=headers)
    assert r.status_code == 201 and r.json()["clerk"] == "clerk-tea"
    assert Coupon.objects.get(pk=coupon.pk).status == "redeemed"


def test_claim_share_buy_and_clip(api, ws, shop):
    offer = make_offer(ws)
    cc = offers.create_claim_code(ws, offer.pk, "海报", actor="t")
    r = api.post("/api/v1/offers/claim", {"code": cc.code, "identity": {"kind": "phone", "value": "13600136000"}})
    assert r.status_code == 201, r.content
    r2 = api.post("/api/v1/offers/claim", {"code": cc.code, "identity": {"kind": "phone", "value": "13600136000"}})
    assert r2.status_code == 200 and r2.json()["coupon"]["id"] == r.json()["coupon"]["id"]
    r = api.post("/api/v1/offers/claim", {"code": "nope", "member_id": shop.wang.pk})
    assert r.status_code == 404 and error_code(r) == "unknown_claim_code"

    act = offers.create_activity_code(ws, {"name": "8号桌", "store": "xihu", "table": "8", "reward_points": 10},
                                      actor="t")
    r = api.post("/api/v1/offers/share", {"code": act.code, "member_id": shop.wang.pk})
    assert r.status_code == 201 and r.json()["points_entry_id"] and r.json()["coupon"] is None
    assert api.post("/api/v1/offers/share", {"code": act.code, "member_id": shop.wang.pk}).status_code == 200

    gift = offers.save_offer(ws, {"name": "兑换", "kind": "gift", "gift_item": "饮品", "points_price": 10,
                                  "clippable": True}, actor="t")
    r = api.post(f"/api/v1/offers/{gift.pk}/buy", {"member_id": shop.wang.pk, "key": "b"})
    assert r.status_code == 201 and r.json()["coupon"]["source"] == "points"
    r = api.post(f"/api/v1/offers/{gift.pk}/buy", {"member_id": shop.wang.pk, "key": "b2"})
    assert r.status_code == 409 and error_code(r) == "insufficient_points"
    r = api.post(f"/api/v1/offers/{gift.pk}/clip", {"member_id": shop.li.pk})
    assert r.status_code == 200
    r = api.post("/api/v1/redemptions/clip", {"member_id": shop.li.pk, "offer_id": gift.pk, "key": "c",
                                              "store": "binjiang"})
    assert r.status_code == 201 and r.json()["member_id"] == shop.li.pk
    assert loyalty.get_point_type(ws, "points")


def test_list_endpoints_query_counts(api, ws, shop, django_assert_max_num_queries):
    offer = make_offer(ws, min_spend="", stores=["xihu", "binjiang"])
    for i in range(2):
        make_offer(ws, name=f"o{i}", stores=["xihu"])
    offers.issue_to_members(ws, offer.pk, [shop.wang.pk, shop.li.pk], batch_key="b", actor="t")
    for i, c in enumerate(Coupon.objects.all()):
        offers.redeem(ws, c.code, key=f"r{i}", actor="t", role="owner", store="xihu")
    offers.void_redemption(ws, Redemption.objects.first().pk, reason="x", actor="t")
    for path in ("/api/v1/offers", "/api/v1/coupons", "/api/v1/redemptions", "/api/v1/stores",
                 "/api/v1/offers/report"):
        with django_assert_max_num_queries(9):
            r = api.get(path)
        assert r.status_code == 200, (path, r.content)


def test_store_api(api, ws, shop):
    r = api.post("/api/v1/stores", {"code": "Wulin", "name": "武林店"})
    assert r.status_code == 200 and r.json()["code"] == "wulin"
    r = api.post("/api/v1/stores", {"code": "bad code", "name": "x"})
    assert r.status_code == 422 and error_code(r) == "invalid_store_code"
    assert [s["code"] for s in api.get("/api/v1/stores").json()["items"]] == ["binjiang", "wulin", "xihu"]


def test_expired_coupon_is_reported_as_expired(api, ws, shop):
    coupon = give(ws, make_offer(ws), shop.wang)
    Coupon.objects.filter(pk=coupon.pk).update(valid_until=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    assert api.get(f"/api/v1/coupons/{coupon.code}").json()["state"] == "expired"
    r = api.post("/api/v1/redemptions", {"code": coupon.code, "key": "k", "amount": "50"})
    assert r.status_code == 422 and error_code(r) == "coupon_expired"
