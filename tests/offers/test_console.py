"""Console pages of offers: who sees what, offers, issuance, the counter, the log with void, reports,
stores and codes."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from shequn.core import services as core
from shequn.members import services as members
from shequn.offers import services as offers
from shequn.offers.models import (
    ActivityCode,
    ClaimCode,
    Coupon,
    Offer,
    Redemption,
    RedemptionVoid,
    StoreClerk,
)

from .conftest import PASSWORD, build_shop, give, make_offer

OPERATOR_PAGES = ["offers/", "offers/new/", "offers/{offer}/", "offers/{offer}/issue/", "offers/redemptions/",
                  "offers/reports/", "offers/stores/", "offers/codes/"]


def login(user, lang="zh-hans") -> Client:
    client = Client(HTTP_ACCEPT_LANGUAGE=lang)
    client.force_login(user)
    return client


@pytest.fixture
def shop(ws):
    return build_shop(ws)


@pytest.fixture
def operator(ws):
    user = core.ensure_user("operator-tea", PASSWORD)
    core.add_staff(ws, user, "operator")
    return user


def _nav(html: str) -> list[str]:
    nav = html.split('<nav class="sidenav"', 1)[1].split("</nav>", 1)[0]
    return [re.sub(r"<[^>]+>", "", a).strip() for a in re.findall(r"<a [^>]*>.*?</a>", nav, re.S)]


def test_clerk_sees_only_the_counter(shop, ws):
    client = login(shop.clerk, "en")
    home = client.get("/")
    assert home.status_code == 302 and home["Location"] == "/w/tea/counter/"
    page = client.get("/w/tea/counter/")
    assert page.status_code == 200
    links = _nav(page.content.decode())
    assert links[0] == "Counter"
    # Counter work only: no dashboard, funnel, members or offer management (the loyalty domain adds its
    # counter-side points & stored-value lookup for clerks).
    assert not {"Dashboard", "Funnel", "Members", "Offers & coupons"} & set(links)
    offer = make_offer(ws)
    for path in OPERATOR_PAGES:
        assert client.get("/w/tea/" + path.format(offer=offer.pk)).status_code == 403, path


def test_operator_pages_and_foreign_ids(shop, ws, other_ws, operator, django_assert_max_num_queries):
    offer = make_offer(ws, stores=["xihu"])
    for i in range(3):
        make_offer(ws, name=f"o{i}", stores=["xihu", "binjiang"])
    client = login(operator)
    for path in OPERATOR_PAGES:
        r = client.get("/w/tea/" + path.format(offer=offer.pk))
        assert r.status_code == 200, path
    with django_assert_max_num_queries(14):
        assert client.get("/w/tea/offers/").status_code == 200
    foreign = make_offer(other_ws)
    assert client.get(f"/w/tea/offers/{foreign.pk}/").status_code == 404
    assert client.get(f"/w/tea/offers/{foreign.pk}/issue/").status_code == 404


def test_create_and_edit_an_offer(shop, operator):
    client = login(operator)
    r = client.post("/w/tea/offers/new/", {"name": "第二杯半价", "kind": "percent_off", "percent_off": "50",
                                            "uses_per_coupon": "1", "trigger": "manual", "stores": "xihu",
                                            "items": "多肉葡萄，芝芝莓莓", "active": "on"})
    assert r.status_code == 302, r.content.decode()[:3000]
    offer = Offer.objects.get()
    assert offer.items == ["多肉葡萄", "芝芝莓莓"] and [s.code for s in offer.stores.all()] == ["xihu"]
    r = client.post(f"/w/tea/offers/{offer.pk}/", {"name": "第二杯半价", "kind": "percent_off", "percent_off": "",
                                                  "uses_per_coupon": "1", "trigger": "manual"})
    assert r.status_code == 200 and 'id="offer-form"' in r.content.decode()
    r = client.post(f"/w/tea/offers/{offer.pk}/", {"name": "第二杯半价", "kind": "percent_off", "percent_off": "40",
                                                  "uses_per_coupon": "1", "trigger": "manual", "stores": "nowhere"})
    assert r.status_code == 200 and "nowhere" in r.content.decode()
    offer.refresh_from_db()
    assert offer.percent_off == 50


def test_issue_by_list_and_by_filter(shop, ws, operator):
    offer = make_offer(ws)
    members.add_tags(ws, shop.li.pk, ["VIP"], actor="t")
    client = login(operator)
    page = client.get(f"/w/tea/offers/{offer.pk}/issue/").content.decode()
    batch = re.search(r'name="batch_key" value="([^"]+)"', page).group(1)
    r = client.post(f"/w/tea/offers/{offer.pk}/issue/", {"members": f"{shop.wang.pk}\n13900000000",
                                                         "batch_key": batch})
    assert r.status_code == 200 and "13900000000" in r.content.decode()
    assert list(Coupon.objects.values_list("member_id", flat=True)) == [shop.wang.pk]
    # The same form sent again issues nothing twice.
    client.post(f"/w/tea/offers/{offer.pk}/issue/", {"members": f"{shop.wang.pk}", "batch_key": batch})
    assert Coupon.objects.count() == 1
    client.post(f"/w/tea/offers/{offer.pk}/issue/", {"tag": "VIP", "batch_key": "other"})
    assert set(Coupon.objects.values_list("member_id", flat=True)) == {shop.wang.pk, shop.li.pk}


def test_counter_lookup_redeem_and_already_redeemed(shop, ws):
    coupon = give(ws, make_offer(ws), shop.wang)
    client = login(shop.clerk, "en")
    page = client.get("/w/tea/counter/", {"q": coupon.code.lower()}).content.decode()
    assert "Redeemable" in page and coupon.code in page and "王小明" in page
    key = re.search(r'name="key" value="([^"]+)"', page).group(1)
    form = {"code": coupon.code, "key": key, "q": coupon.code, "store": str(shop.xihu.pk), "amount": "25"}
    r = client.post("/w/tea/counter/redeem/", form, follow=True)
    assert "at least ¥30" in r.content.decode()
    assert not Redemption.objects.exists()
    r = client.post("/w/tea/counter/redeem/", {**form, "amount": "31"}, follow=True)
    assert "Redeemed" in r.content.decode() and "Already redeemed" in r.content.decode()
    r = client.post("/w/tea/counter/redeem/", {**form, "key": "other", "amount": "31"}, follow=True)
    assert "This coupon was already redeemed." in r.content.decode()
    assert Redemption.objects.count() == 1 and Redemption.objects.get().clerk_id == shop.clerk.pk
    # A store the clerk is not assigned to.
    other = give(ws, make_offer(ws, name="b", min_spend=""), shop.wang)
    r = client.post("/w/tea/counter/redeem/", {"code": other.code, "key": "k2", "store": str(shop.binjiang.pk)},
                    follow=True)
    assert "not assigned" in r.content.decode()
    assert Redemption.objects.count() == 1
    assert client.get(f"/w/tea/coupons/{coupon.code}/qr.svg")["Content-Type"] == "image/svg+xml"


def test_counter_by_phone_lists_coupons_and_applies_a_clip(shop, ws):
    coupon = give(ws, make_offer(ws, min_spend=""), shop.wang)
    clip_offer = offers.save_offer(ws, {"name": "免费加料", "kind": "gift", "gift_item": "芋圆", "clippable": True},
                                   actor="t")
    offers.clip_offer(ws, shop.wang.pk, clip_offer.pk, actor="member")
    client = login(shop.clerk, "en")
    page = client.get("/w/tea/counter/", {"q": "13800138000"}).content.decode()
    assert coupon.code in page and "免费加料" in page and "clipped" in page
    r = client.post("/w/tea/counter/clip/", {"member_id": shop.wang.pk, "offer_id": clip_offer.pk, "key": "kc",
                                             "store": shop.xihu.pk, "q": "13800138000"}, follow=True)
    assert "Clipped offer applied" in r.content.decode()
    assert Redemption.objects.get().offer_id == clip_offer.pk
    page = client.get("/w/tea/counter/", {"q": "nobody-here"}).content.decode()
    assert 'id="counter-error"' in page


def test_clerk_without_store_is_told(ws, shop):
    lonely = core.ensure_user("lonely", PASSWORD)
    core.add_staff(ws, lonely, "clerk")
    page = login(lonely, "en").get("/w/tea/counter/").content.decode()
    assert 'id="no-store"' in page


def test_log_void_and_reports(shop, ws, operator, django_assert_max_num_queries):
    for i in range(4):
        c = give(ws, make_offer(ws, name=f"o{i}", min_spend=""), shop.wang)
        offers.redeem(ws, c.code, key=f"r{i}", actor="t", role="clerk", user_id=shop.clerk.pk, store="xihu")
    client = login(operator, "en")
    with django_assert_max_num_queries(12):
        page = client.get("/w/tea/offers/redemptions/")
    assert page.status_code == 200 and page.content.decode().count('class="inline void-form"') == 4
    r = Redemption.objects.first()
    resp = client.post(f"/w/tea/offers/redemptions/{r.pk}/void/", {"reason": "wrong coupon"}, follow=True)
    assert "voided" in resp.content.decode()
    assert RedemptionVoid.objects.get().reason == "wrong coupon"
    resp = client.post(f"/w/tea/offers/redemptions/{r.pk}/void/", {"reason": "again"}, follow=True)
    assert "already voided" in resp.content.decode()
    assert login(shop.clerk).post(f"/w/tea/offers/redemptions/{r.pk}/void/", {"reason": "x"}).status_code == 403
    with django_assert_max_num_queries(12):
        page = client.get("/w/tea/offers/reports/").content.decode()
    assert 'data-figure="offers-figure"' in page and "clerk-tea" in page and 'id="store-figure"' in page


def test_stores_and_codes_pages(shop, ws, operator):
    client = login(operator, "en")
    client.post("/w/tea/offers/stores/", {"code": "wulin", "name": "武林店"})
    client.post("/w/tea/offers/stores/", {"action": "assign", "store": shop.binjiang.pk, "user": shop.clerk.pk})
    assert StoreClerk.objects.filter(user=shop.clerk).count() == 2
    client.post("/w/tea/offers/stores/", {"action": "unassign", "store": shop.binjiang.pk, "user": shop.clerk.pk})
    assert StoreClerk.objects.filter(user=shop.clerk).count() == 1
    page = client.get("/w/tea/offers/stores/").content.decode()
    assert "武林店" in page
    offer = make_offer(ws)
    client.post("/w/tea/offers/codes/", {"action": "claim", "offer": offer.pk, "name": "海报"})
    client.post("/w/tea/offers/codes/", {"action": "activity", "name": "8号桌", "store": "xihu", "table": "8",
                                         "reward_points": "10"})
    cc, act = ClaimCode.objects.get(), ActivityCode.objects.get()
    page = client.get("/w/tea/offers/codes/").content.decode()
    assert cc.code in page and act.code in page and f"/m/tea/claim/{cc.code}/" in page
    svg = client.get(f"/w/tea/offers/codes/claim/{cc.pk}/qr.svg")
    assert svg.status_code == 200 and svg.content.startswith(b"<svg")
    assert client.get(f"/w/tea/offers/codes/nope/{cc.pk}/qr.svg").status_code == 404


def test_counter_query_count_does_not_grow_with_coupons(shop, ws, django_assert_max_num_queries):
    for i in range(6):
        give(ws, make_offer(ws, name=f"o{i}", stores=["xihu"]), shop.wang)
    client = login(shop.clerk, "en")
    with django_assert_max_num_queries(16):
        page = client.get("/w/tea/counter/", {"q": "13800138000"}).content.decode()
    assert page.count('name="code"') == 6
