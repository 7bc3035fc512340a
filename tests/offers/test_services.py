"""Offers, issuance, redemption, voids, clips, claims and shares through the one write path."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from shequn.core import hooks
from shequn.core.errors import Conflict, NotFound, PermissionDenied, ValidationError
from shequn.core.models import AuditEntry
from shequn.interactions.models import Interaction
from shequn.loyalty import queries as loyalty_queries
from shequn.loyalty import services as loyalty
from shequn.members import services as members
from shequn.offers import cards, codes, queries
from shequn.offers import services as offers
from shequn.offers.models import ActivityClaim, Coupon, Offer, Redemption, RedemptionVoid

from .conftest import clerk_redeem, give, make_offer

DAY = dt.timedelta(days=1)


def snapshot(ws):
    from shequn.offers.models import OfferClip

    return {m.__name__: json.dumps(list(m.objects.filter(workspace=ws).order_by("pk").values()), default=str)
            for m in (Offer, Coupon, Redemption, RedemptionVoid, OfferClip, ActivityClaim, Interaction, AuditEntry)}


def test_codes_are_long_random_and_unambiguous():
    seen = {codes.new_code() for _ in range(2000)}
    assert len(seen) == 2000
    for code in seen:
        assert len(code) == 12 and codes.looks_like_code(code)
        assert not set(code) & set("01OIL")
    assert codes.normalize(" abcd-efgh jkmn ") == "ABCDEFGHJKMN"
    svg = codes.qr_svg("ABCDEFGHJKMN")
    assert svg.startswith("<svg") and "</svg>" in svg


def test_issue_and_redeem_once_records_history_and_hook(shop, now):
    seen = []
    handler = hooks.on(hooks.COUPON_REDEEMED, lambda **kw: seen.append(kw))
    try:
        offer = make_offer(shop.ws, coupon_days=30)
        coupon = give(shop.ws, offer, shop.wang)
        assert coupon.valid_until is not None
        assert queries.redeemable_coupons(shop.ws, shop.wang.pk) == [coupon]
        r = clerk_redeem(shop, coupon)
        assert (r.discount, r.amount, r.store_id, r.clerk_id) == (Decimal("5.00"), Decimal("40.00"), shop.xihu.pk,
                                                                  shop.clerk.pk)
        coupon.refresh_from_db()
        assert (coupon.status, coupon.uses) == ("redeemed", 1)
        assert queries.redeemable_coupons(shop.ws, shop.wang.pk) == []
        event = Interaction.objects.get(workspace=shop.ws, source="offers")
        assert (event.member_id, event.type, event.properties["event"]) == (shop.wang.pk, "custom", "coupon_redeemed")
        assert event.properties["store"] == "西湖店"
        assert seen and seen[0]["coupon_id"] == coupon.pk and seen[0]["store_id"] == shop.xihu.pk

        with pytest.raises(Conflict) as exc:
            clerk_redeem(shop, coupon, key="r2")
        assert exc.value.code == "already_redeemed"
        # A replay of the first key returns the first redemption and changes nothing.
        before = snapshot(shop.ws)
        assert clerk_redeem(shop, coupon, key="r1").pk == r.pk
        assert snapshot(shop.ws) == before
    finally:
        hooks._handlers[hooks.COUPON_REDEEMED].remove(handler)


def test_bad_redemptions_change_nothing(shop, ws, other_ws, now):
    offer = make_offer(ws, stores=["binjiang"])
    coupon = give(ws, offer, shop.wang)
    plain = give(ws, make_offer(ws, name="plain"), shop.wang)
    foreign_shop = build_shop_other(other_ws)
    foreign = give(other_ws, make_offer(other_ws), foreign_shop)
    expired_offer = make_offer(ws, name="old", valid_until=(now - DAY).isoformat(), valid_from=(now - 10 * DAY).isoformat())
    expired = Coupon.objects.create(workspace=ws, offer=expired_offer, member=shop.wang, code=codes.new_code(),
                                    valid_until=now - DAY, source="manual", issue_key="x", actor="t", issued_at=now)
    before = snapshot(ws)
    cases = [
        (lambda: clerk_redeem(shop, coupon, store="xihu"), "store_not_allowed"),  # offer only at 滨江店
        (lambda: clerk_redeem(shop, coupon, store="binjiang"), "store_not_assigned"),  # clerk of 西湖店
        (lambda: clerk_redeem(shop, plain, store=None), "store_required"),
        (lambda: clerk_redeem(shop, plain, amount="29.99"), "below_minimum_spend"),
        (lambda: clerk_redeem(shop, plain, amount=None), "below_minimum_spend"),
        (lambda: clerk_redeem(shop, plain, amount="-1"), "invalid_amount"),
        (lambda: clerk_redeem(shop, foreign), "unknown_coupon"),  # another workspace's code
        (lambda: clerk_redeem(shop, expired), "coupon_expired"),
        (lambda: clerk_redeem(shop, plain, store="nowhere"), "unknown_store"),
        (lambda: offers.redeem(ws, "NOPE", key="k", actor="t", role="owner"), "unknown_coupon"),
        (lambda: offers.redeem(ws, plain.code, key="k", actor="t", role="owner", amount="50", member_id=shop.li.pk),
         "foreign_coupon"),
        (lambda: offers.redeem(ws, plain.code, key="", actor="t", role="owner"), "invalid_idempotency_key"),
    ]
    for call, code in cases:
        with pytest.raises((ValidationError, NotFound, PermissionDenied, Conflict)) as exc:
            call()
        assert exc.value.code == code
    assert snapshot(ws) == before


def build_shop_other(other_ws):
    return members.upsert_member(other_ws, [{"kind": "phone", "value": "13700137000"}]).member


def test_owner_may_redeem_anywhere_without_store_and_percent_discount(shop, ws):
    offer = offers.save_offer(ws, {"name": "第二杯半价", "kind": "percent_off", "percent_off": 50,
                                   "items": "多肉葡萄, 芝芝莓莓"}, actor="t")
    assert offer.items == ["多肉葡萄", "芝芝莓莓"]
    coupon = give(ws, offer, shop.li)
    r = offers.redeem(ws, codes.display(coupon.code).lower(), key="o1", actor="t", role="owner",
                      user_id=shop.owner.pk, amount="28.5")
    assert r.discount == Decimal("14.25") and r.store_id is None


def test_multi_use_coupon_and_void_restores_a_use(shop, ws):
    offer = make_offer(ws, min_spend="", uses_per_coupon=2)
    coupon = give(ws, offer, shop.wang)
    r1 = clerk_redeem(shop, coupon, key="a")
    coupon.refresh_from_db()
    assert (coupon.status, coupon.uses) == ("issued", 1)
    clerk_redeem(shop, coupon, key="b")
    coupon.refresh_from_db()
    assert (coupon.status, coupon.uses) == ("redeemed", 2)
    with pytest.raises(Conflict):
        clerk_redeem(shop, coupon, key="c")

    with pytest.raises(ValidationError) as exc:
        offers.void_redemption(ws, r1.pk, reason="", actor="t")
    assert exc.value.code == "reason_required"
    void = offers.void_redemption(ws, r1.pk, reason="顾客退单", actor="user:1")
    coupon.refresh_from_db()
    assert (coupon.status, coupon.uses) == ("issued", 1)
    entry = AuditEntry.objects.get(workspace=ws, action="offers.redemption_voided")
    assert entry.object_id == str(r1.pk) and entry.data["reason"] == "顾客退单" and entry.actor == "user:1"
    with pytest.raises(Conflict) as exc:
        offers.void_redemption(ws, r1.pk, reason="again", actor="t")
    assert exc.value.code == "already_voided"
    assert RedemptionVoid.objects.get().pk == void.pk
    assert Redemption.objects.count() == 2  # append-only: the voided one stays
    clerk_redeem(shop, coupon, key="d")  # the use that came back
    stats = queries.offer_stats(ws)[offer.pk]
    assert (stats["issued"], stats["redeemed"], stats["voided"]) == (1, 2, 1)


def test_void_of_another_workspace_is_not_found(shop, ws, other_ws):
    coupon = give(ws, make_offer(ws, min_spend=""), shop.wang)
    r = clerk_redeem(shop, coupon)
    with pytest.raises(NotFound):
        offers.void_redemption(other_ws, r.pk, reason="x", actor="t")
    assert not RedemptionVoid.objects.exists()


def test_limits_stock_per_member_and_issue_replay(shop, ws):
    offer = make_offer(ws, stock=3, per_member=2)
    r = offers.issue_to_members(ws, offer.pk, [shop.wang.pk, shop.li.pk], batch_key="b1", actor="t")
    assert r.created == 2 and not r.skipped
    again = offers.issue_to_members(ws, offer.pk, [shop.wang.pk, shop.li.pk], batch_key="b1", actor="t")
    assert again.created == 0 and {c.pk for c in again.coupons} == {c.pk for c in r.coupons}
    r2 = offers.issue_to_members(ws, offer.pk, [shop.wang.pk, shop.li.pk], batch_key="b2", actor="t")
    assert r2.created == 1 and [s.code for s in r2.skipped] == ["out_of_stock"]
    offer.refresh_from_db()
    assert offer.issued_count == 3
    offers.save_offer(ws, {"stock": 10}, offer_id=offer.pk, actor="t")
    r3 = offers.issue_to_members(ws, offer.pk, [shop.wang.pk, shop.li.pk], batch_key="b3", actor="t")
    assert {s.code for s in r3.skipped} == {"per_member_limit"}  # both have 2 now... one of them
    assert Coupon.objects.filter(offer=offer).count() == 4
    with pytest.raises(Conflict) as exc:
        offers.issue_coupon(ws, offer.pk, shop.wang.pk, key="single", actor="t")
    assert exc.value.code == "per_member_limit"
    with pytest.raises(ValidationError):
        offers.save_offer(ws, {"stock": 1}, offer_id=offer.pk, actor="t")


def test_issue_to_unknown_or_foreign_member_is_refused(shop, ws, other_ws):
    offer = make_offer(ws)
    foreign = build_shop_other(other_ws)
    with pytest.raises(NotFound) as exc:
        offers.issue_to_members(ws, offer.pk, [shop.wang.pk, foreign.pk], batch_key="x", actor="t")
    assert exc.value.code == "unknown_member"
    with pytest.raises(NotFound):
        offers.issue_coupon(other_ws, offer.pk, foreign.pk, key="x", actor="t")
    assert not Coupon.objects.exists()


def test_issue_key_reused_for_another_member_is_a_conflict(shop, ws):
    offer = make_offer(ws)
    offers.issue_coupon(ws, offer.pk, shop.wang.pk, key="same", actor="t")
    with pytest.raises(Conflict) as exc:
        offers.issue_coupon(ws, offer.pk, shop.li.pk, key="same", actor="t")
    assert exc.value.code == "idempotency_key_reused"


def test_ended_or_paused_offers_issue_nothing(shop, ws, now):
    ended = make_offer(ws, valid_from=(now - 5 * DAY).isoformat(), valid_until=(now - DAY).isoformat())
    with pytest.raises(ValidationError) as exc:
        offers.issue_coupon(ws, ended.pk, shop.wang.pk, key="e", actor="t")
    assert exc.value.code == "offer_ended"
    paused = make_offer(ws, active=False)
    with pytest.raises(ValidationError) as exc:
        offers.issue_coupon(ws, paused.pk, shop.wang.pk, key="p", actor="t")
    assert exc.value.code == "offer_inactive"


def test_offer_validation(ws):
    with pytest.raises(ValidationError) as exc:
        offers.save_offer(ws, {"name": "x", "kind": "percent_off", "percent_off": 0}, actor="t")
    assert exc.value.details["field"] == "percent_off"
    with pytest.raises(ValidationError):
        offers.save_offer(ws, {"name": "x", "kind": "gift"}, actor="t")
    with pytest.raises(ValidationError):
        offers.save_offer(ws, {"name": "x", "kind": "bogus"}, actor="t")
    with pytest.raises(ValidationError):
        offers.save_offer(ws, {"name": "x", "kind": "amount_off", "amount_off": "1.234"}, actor="t")
    with pytest.raises(ValidationError):
        offers.save_offer(ws, {"name": "x", "kind": "gift", "gift_item": "芋圆", "trigger": "tier_upgrade"}, actor="t")
    with pytest.raises(NotFound):
        offers.save_offer(ws, {"name": "x", "kind": "gift", "gift_item": "芋圆", "points_price": 10,
                               "point_type": "nope"}, actor="t")
    assert not Offer.objects.exists()


def test_buy_with_points_spends_and_issues_once(shop, ws, points):
    offer = offers.save_offer(ws, {"name": "200积分换饮品券", "kind": "gift", "gift_item": "任意饮品",
                                   "points_price": 200}, actor="t")
    with pytest.raises(Conflict) as exc:
        offers.buy_with_points(ws, offer.pk, shop.wang.pk, key="buy1", actor="t")
    assert exc.value.code == "insufficient_points"
    assert not Coupon.objects.exists()
    loyalty.earn(ws, shop.wang.pk, "points", 300, reason="t", idempotency_key="e1", actor="t")
    coupon, created = offers.buy_with_points(ws, offer.pk, shop.wang.pk, key="buy1", actor="t")
    assert created and coupon.source == "points" and coupon.point_entry_id
    again, created = offers.buy_with_points(ws, offer.pk, shop.wang.pk, key="buy1", actor="t")
    assert (again.pk, created) == (coupon.pk, False)
    assert loyalty_queries.balance(ws, shop.wang.pk, "points").available == 100
    with pytest.raises(ValidationError):
        offers.buy_with_points(ws, make_offer(ws).pk, shop.wang.pk, key="buy2", actor="t")


def test_clip_and_redeem_clip_at_the_counter(shop, ws):
    offer = offers.save_offer(ws, {"name": "免费加料", "kind": "gift", "gift_item": "芋圆", "clippable": True,
                                   "items": ["芋圆"]}, actor="t")
    assert queries.clippable_offers(ws) == [offer]
    clip = offers.clip_offer(ws, shop.wang.pk, offer.pk, actor="member")
    assert offers.clip_offer(ws, shop.wang.pk, offer.pk, actor="member").pk == clip.pk
    assert queries.clipped_offers(ws, shop.wang.pk) == [offer]
    with pytest.raises(ValidationError):
        offers.clip_offer(ws, shop.wang.pk, make_offer(ws).pk, actor="member")
    with pytest.raises(NotFound):
        offers.redeem_clip(ws, shop.li.pk, offer.pk, key="c0", actor="t", role="owner")
    r = offers.redeem_clip(ws, shop.wang.pk, offer.pk, key="c1", actor="t", role="clerk", user_id=shop.clerk.pk,
                           store="xihu")
    assert r.coupon.source == "clip" and r.member_id == shop.wang.pk
    assert queries.clipped_offers(ws, shop.wang.pk) == []
    assert offers.redeem_clip(ws, shop.wang.pk, offer.pk, key="c1", actor="t", role="owner").pk == r.pk
    with pytest.raises(Conflict) as exc:
        offers.redeem_clip(ws, shop.wang.pk, offer.pk, key="c2", actor="t", role="owner")
    assert exc.value.code == "already_redeemed"
    # A failed counter attempt (wrong store) leaves no coupon behind.
    offers.clip_offer(ws, shop.li.pk, offer.pk, actor="member")
    with pytest.raises(PermissionDenied):
        offers.redeem_clip(ws, shop.li.pk, offer.pk, key="c3", actor="t", role="clerk", user_id=shop.clerk.pk,
                           store="binjiang")
    assert not Coupon.objects.filter(member=shop.li).exists()


def test_cards_round_trip_and_resist_forgery(shop, ws, other_ws):
    code = cards.card_code(ws, shop.wang.pk)
    assert cards.member_from_card(ws, code) == shop.wang.pk
    assert cards.member_from_card(ws, code.lower()) == shop.wang.pk
    forged = f"M{shop.li.pk}-{code.split('-')[1]}"
    for bad in (forged, "M1-000000000000", "", "hello"):
        with pytest.raises(NotFound):
            cards.member_from_card(ws, bad)
    with pytest.raises(NotFound):
        cards.member_from_card(other_ws, code)


def test_counter_lookup_by_code_card_and_phone(shop, ws):
    offer = make_offer(ws)
    coupon = give(ws, offer, shop.wang)
    found = queries.counter_lookup(ws, coupon.code.lower())
    assert found.kind == "coupon" and found.coupon == coupon and found.member_name == "王小明"
    by_phone = queries.counter_lookup(ws, "138 0013 8000")
    assert by_phone.kind == "member" and by_phone.coupons == [coupon]
    by_card = queries.counter_lookup(ws, cards.card_code(ws, shop.wang.pk))
    assert by_card.member_id == shop.wang.pk
    with pytest.raises(NotFound):
        queries.counter_lookup(ws, "13000000000")


def test_claim_code_gives_one_coupon_per_member(shop, ws):
    offer = make_offer(ws)
    cc = offers.create_claim_code(ws, offer.pk, "海报", actor="t")
    c1, created = offers.claim(ws, cc.code, shop.wang.pk, actor="t")
    assert created and c1.source == "claim"
    c2, created = offers.claim(ws, codes.display(cc.code), shop.wang.pk, actor="t")
    assert c2.pk == c1.pk and not created
    with pytest.raises(NotFound) as exc:
        offers.claim(ws, "ZZZZZZZZZZZZ", shop.wang.pk, actor="t")
    assert exc.value.code == "unknown_claim_code"


def test_share_after_consumption_once_per_day(shop, ws, now, points):
    gift = offers.save_offer(ws, {"name": "果盘", "kind": "gift", "gift_item": "果盘"}, actor="t")
    act = offers.create_activity_code(ws, {"name": "西湖店 8号桌", "store": "xihu", "table": "8",
                                           "reward_offer": gift.pk, "reward_points": 20}, actor="t")
    claim, created = offers.claim_activity(ws, act.code, shop.wang.pk, actor="t", at=now)
    assert created and claim.coupon.offer_id == gift.pk and claim.point_entry_id
    share = Interaction.objects.get(pk=claim.interaction_id)
    assert (share.type, share.properties["table"], share.properties["store"]) == ("share", "8", "西湖店")
    again, created = offers.claim_activity(ws, act.code, shop.wang.pk, actor="t", at=now + dt.timedelta(hours=3))
    assert again.pk == claim.pk and not created
    nxt, created = offers.claim_activity(ws, act.code, shop.wang.pk, actor="t", at=now + DAY)
    assert created and nxt.pk != claim.pk
    assert loyalty_queries.balance(ws, shop.wang.pk, "points").available == 40
    assert Coupon.objects.filter(offer=gift).count() == 2
    with pytest.raises(ValidationError):
        offers.create_activity_code(ws, {"name": "none"}, actor="t")


def test_tier_upgrade_issues_configured_offers_once(shop, ws, now):
    gold = offers.save_offer(ws, {"name": "金卡礼", "kind": "gift", "gift_item": "大杯", "trigger": "tier_upgrade",
                                  "trigger_tier": "gold"}, actor="t")
    make_offer(ws, name="other", trigger="tier_upgrade", trigger_tier="silver")
    kw = {"workspace": ws, "member_id": shop.wang.pk, "old_tier": "silver", "new_tier": "gold", "at": now}
    hooks.emit(hooks.TIER_CHANGED, direction="down", **{**kw, "new_tier": "gold"})
    assert not Coupon.objects.exists()
    hooks.emit(hooks.TIER_CHANGED, direction="up", **kw)
    hooks.emit(hooks.TIER_CHANGED, direction="up", **kw)
    assert list(Coupon.objects.values_list("offer_id", "member_id", "source")) == [(gold.pk, shop.wang.pk,
                                                                                   "tier_upgrade")]


def test_birthday_coupons_in_the_member_time_zone(ws, now):
    offer = offers.save_offer(ws, {"name": "生日饮品", "kind": "gift", "gift_item": "任意饮品", "trigger": "birthday",
                                   "coupon_days": 7}, actor="t")
    # 02:00 UTC on 1 June is 10:00 on 1 June in Shanghai but 19:00 on 31 May in Los Angeles.
    sh = members.upsert_member(ws, [{"kind": "external", "value": "sh"}], {"birthday": "1990-06-01"}).member
    la = members.upsert_member(ws, [{"kind": "external", "value": "la"}],
                               {"birthday": "1990-06-01", "timezone": "America/Los_Angeles"}).member
    la_today = members.upsert_member(ws, [{"kind": "external", "value": "la2"}],
                                     {"birthday": "1985-05-31", "timezone": "America/Los_Angeles"}).member
    members.upsert_member(ws, [{"kind": "external", "value": "other"}], {"birthday": "1990-06-02"})
    assert offers.issue_birthday_coupons(ws, now) == 2
    assert set(Coupon.objects.filter(offer=offer).values_list("member_id", flat=True)) == {sh.pk, la_today.pk}
    assert offers.issue_birthday_coupons(ws, now + dt.timedelta(hours=1)) == 0
    assert offers.issue_birthday_coupons(ws, now + dt.timedelta(hours=12)) == 1  # 1 June in Los Angeles
    assert Coupon.objects.filter(offer=offer, member=la).exists()


def test_feb_29_birthdays_on_feb_28():
    assert offers._birthday_matches(dt.date(2000, 2, 29), dt.date(2027, 2, 28))
    assert not offers._birthday_matches(dt.date(2000, 2, 29), dt.date(2028, 2, 28))
    assert offers._birthday_matches(dt.date(2000, 2, 29), dt.date(2028, 2, 29))


def test_reports(shop, ws, now):
    a = make_offer(ws, min_spend="")
    c1, c2 = give(ws, a, shop.wang), give(ws, a, shop.li)
    clerk_redeem(shop, c1)
    Coupon.objects.filter(pk=c2.pk).update(valid_until=now - DAY)
    stats = queries.offer_stats(ws)
    assert stats[a.pk] == {"issued": 2, "expired": 1, "open": 0, "redeemed": 1, "voided": 0}
    by_store = queries.redemptions_by(ws, "store")
    assert by_store == [{"id": shop.xihu.pk, "label": "西湖店", "redemptions": 1, "discount": Decimal("5.00")}]
    assert queries.redemptions_by(ws, "clerk")[0]["label"] == "clerk-tea"


def test_audit_module_is_used_for_offers(ws):
    offers.save_offer(ws, {"name": "x", "kind": "gift", "gift_item": "y"}, actor="user:9")
    assert AuditEntry.objects.filter(workspace=ws, action="offers.offer_created", actor="user:9").count() == 1

