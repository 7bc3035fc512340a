"""The member portal's pages through Django's test client."""

from __future__ import annotations

import pytest
from django.test import Client

from shequn.loyalty import queries as loyalty_q
from shequn.offers import queries as offers_q
from shequn.portal.views import masked_name

from .conftest import last_code


def test_pages_need_a_signed_in_member(ws, portal_data):
    client = Client()
    for path in ("", "points/", "coupons/", "offers/", "tasks/", "leaderboards/", "card.svg",
                 f"claim/{portal_data.claim.code}/"):
        r = client.get(f"/m/tea/{path}")
        assert r.status_code == 302 and r["Location"].startswith("/m/tea/login/?next=/m/tea/"), path
    assert client.get("/m/no-such-brand/").status_code == 404


def test_sign_in_with_a_code_then_out(ws, portal_data):
    client = Client()
    r = client.get("/m/tea/login/")
    assert r.status_code == 200 and 'type="tel"' in r.content.decode()
    r = client.post("/m/tea/login/", {"phone": "138 0013 8000", "next": "/m/tea/coupons/"})
    assert r.status_code == 302 and r["Location"] == "/m/tea/login/code/?next=/m/tea/coupons/"
    page = client.get(r["Location"]).content.decode()
    assert "138****8000" in page and "13800138000" not in page
    r = client.post("/m/tea/login/code/", {"code": "000000" if last_code(ws) != "000000" else "111111"})
    assert r.status_code == 400
    r = client.post("/m/tea/login/code/", {"code": last_code(ws), "next": "/m/tea/coupons/"})
    assert r.status_code == 302 and r["Location"] == "/m/tea/coupons/"
    assert client.get("/m/tea/").status_code == 200
    client.post("/m/tea/logout/")
    assert client.get("/m/tea/").status_code == 302


def test_next_never_leaves_the_site(ws, portal_data):
    client = Client()
    client.post("/m/tea/login/", {"phone": "13800138000"})
    r = client.post("/m/tea/login/code/", {"code": last_code(ws), "next": "https://evil.example/"})
    assert r["Location"] == "/m/tea/"


def test_unknown_phone_looks_the_same(ws, portal_data):
    client = Client()
    r = client.post("/m/tea/login/", {"phone": "13700137000"})
    assert r.status_code == 302 and r["Location"] == "/m/tea/login/code/"
    r = client.post("/m/tea/login/", {"phone": "not a phone"})
    assert r.status_code == 400 and "valid mobile" in r.content.decode().lower() or "手机号" in r.content.decode()


def test_card_page(member_client, portal_data, django_assert_max_num_queries):
    with django_assert_max_num_queries(30):
        r = member_client.get("/m/tea/")
    page = r.content.decode()
    assert r.status_code == 200 and "林小满" in page
    assert 'data-point-type="points"><b>320</b>' in page
    assert 'src="/m/tea/card.svg"' in page
    svg = member_client.get("/m/tea/card.svg")
    assert svg["Content-Type"] == "image/svg+xml" and svg.content.startswith(b"<svg")


def test_points_history_shows_reasons(member_client):
    page = member_client.get("/m/tea/points/").content.decode()
    assert page.count("到店消费 ¥32") == 2 and "+320" in page


def test_coupons_with_qr_and_only_my_own(member_client, portal_data):
    page = member_client.get("/m/tea/coupons/").content.decode()
    assert portal_data.coupon.code in page and portal_data.other_coupon.code not in page
    r = member_client.get(f"/m/tea/coupons/{portal_data.coupon.pk}.svg")
    assert r.status_code == 200 and r.content.startswith(b"<svg")
    assert member_client.get(f"/m/tea/coupons/{portal_data.other_coupon.pk}.svg").status_code == 404


def test_clip_an_offer(member_client, ws, portal_data):
    page = member_client.get("/m/tea/offers/").content.decode()
    assert f'data-offer="{portal_data.offer.pk}"' in page and "杨枝甘露第二杯半价" in page
    r = member_client.post(f"/m/tea/offers/{portal_data.offer.pk}/clip/")
    assert r.status_code == 302
    assert [o.pk for o in offers_q.clipped_offers(ws, portal_data.member.pk)] == [portal_data.offer.pk]
    assert 'class="pill clipped"' in member_client.get("/m/tea/offers/").content.decode()


def test_check_in_once_a_day(member_client, ws, portal_data):
    r = member_client.post("/m/tea/check-in/", {"next": "/m/tea/tasks/"}, follow=True)
    assert r.redirect_chain[-1][0] == "/m/tea/tasks/"
    member_client.post("/m/tea/check-in/", {"next": "https://evil.example/"})
    page = member_client.get("/m/tea/").content.decode()
    assert "disabled" in page.split('id="check-in"')[1]


def test_tasks_and_leaderboards_render(member_client):
    assert member_client.get("/m/tea/tasks/").status_code == 200
    page = member_client.get("/m/tea/leaderboards/").content.decode()
    assert 'data-board="points-week"' in page and 'data-board="streak-all"' in page


def test_campaign_claim_and_table_share(member_client, ws, portal_data):
    page = member_client.get(f"/m/tea/claim/{portal_data.claim.code}/").content.decode()
    assert "免费加料" in page
    before = len(offers_q.redeemable_coupons(ws, portal_data.member.pk))
    member_client.post(f"/m/tea/claim/{portal_data.claim.code}/")
    member_client.post(f"/m/tea/claim/{portal_data.claim.code}/")
    assert len(offers_q.redeemable_coupons(ws, portal_data.member.pk)) == before + 1
    assert member_client.get("/m/tea/claim/NOSUCHCODE00/").status_code == 404

    assert "晒单有礼" in member_client.get(f"/m/tea/share/{portal_data.activity.code}/").content.decode()
    member_client.post(f"/m/tea/share/{portal_data.activity.code}/")
    member_client.post(f"/m/tea/share/{portal_data.activity.code}/")
    assert loyalty_q.balance(ws, portal_data.member.pk, "points").available == 340  # rewarded once today


def test_a_session_is_for_one_workspace(member_client, other_ws):
    r = member_client.get(f"/m/{other_ws.slug}/")
    assert r.status_code == 302 and "/login/" in r["Location"]


def test_forms_need_csrf(ws, portal_data):
    client = Client(enforce_csrf_checks=True)
    assert client.post("/m/tea/login/", {"phone": "13800138000"}).status_code == 403


@pytest.mark.parametrize("name,shown", [("王大力", "王**"), ("Jo", "J**"), ("Alexander", "A****"), ("", "***"),
                                        ("#12", "***")])
def test_other_members_names_are_masked(name, shown):
    assert masked_name(name) == shown
