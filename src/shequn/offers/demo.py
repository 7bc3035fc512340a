"""Demo data for offers: three stores (names as in the demo purchases' ``properties.store``), the
chain's offers (满30减5, 第二杯半价, 免费加料, 200积分换饮品券, personalised offers to clip, a
birthday and a tier-upgrade gift), coupons issued to a few hundred members — some redeemed at the
counter by the demo clerk and operator, two voided, some expired — a campaign claim code with
claims, and a table code for "share after consumption" with shares.

Everything goes through the services, at times in the past, so reports, the redemption log and the
members' histories look like a few weeks of real use. Coupon and claim codes are random (they must be
unguessable); everything else follows from ``rng``."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

from shequn.core.errors import ShequnError
from shequn.core.models import Role, StaffMembership, Workspace
from shequn.core.tenancy import scoped
from shequn.members.models import Member, MemberStatus

from . import services as offers
from .models import Coupon

ACTOR = "demo"
STORES = (("xihu", "西湖店"), ("binjiang", "滨江店"), ("jingan", "静安店"))
DAY = dt.timedelta(days=1)


def _staff(workspace: Workspace, role: str) -> list[int]:
    return list(StaffMembership.objects.filter(workspace=workspace, role=role).order_by("user__username")
                .values_list("user_id", flat=True))


def seed_demo(workspace: Workspace, rng: random.Random, now: dt.datetime) -> None:
    stores = {code: offers.save_store(workspace, code, name, actor=ACTOR) for code, name in STORES}
    clerks = _staff(workspace, Role.CLERK)
    operators = _staff(workspace, Role.OPERATOR) or _staff(workspace, Role.OWNER)
    for user_id in clerks:
        offers.assign_clerk(workspace, stores["xihu"], user_id, actor=ACTOR)
        offers.assign_clerk(workspace, stores["binjiang"], user_id, actor=ACTOR)

    start = now - 60 * DAY
    spend = offers.save_offer(workspace, {
        "name": "满30减5", "kind": "amount_off", "amount_off": "5", "min_spend": "30", "coupon_days": 14,
        "valid_from": start, "description": "单笔满30元立减5元，全场通用"}, actor=ACTOR)
    second = offers.save_offer(workspace, {
        "name": "第二杯半价", "kind": "percent_off", "percent_off": 50, "items": ["多肉葡萄", "芝芝莓莓", "满杯红柚"],
        "categories": ["口味/水果茶"], "clippable": True, "valid_from": start, "valid_until": now + 30 * DAY,
        "per_member": 2, "description": "水果茶第二杯半价"}, actor=ACTOR)
    topping = offers.save_offer(workspace, {
        "name": "免费加料", "kind": "gift", "gift_item": "芋圆", "items": ["芋圆"], "clippable": True,
        "stores": ["xihu"], "valid_from": start, "valid_until": now + 45 * DAY, "per_member": 1}, actor=ACTOR)
    cheese = offers.save_offer(workspace, {
        "name": "芝士奶盖立减3元", "kind": "amount_off", "amount_off": "3",
        "items": ["芝士茉莉", "芝士莓莓奶盖"], "categories": ["口味/奶茶/芝士"], "clippable": True,
        "valid_from": start, "valid_until": now + 30 * DAY}, actor=ACTOR)
    offers.save_offer(workspace, {
        "name": "纯茶买一送一", "kind": "gift", "gift_item": "纯茶一杯", "items": ["纯绿妍茶", "金凤茶王"],
        "categories": ["口味/纯茶"], "clippable": True, "valid_from": start, "valid_until": now + 20 * DAY}, actor=ACTOR)
    offers.save_offer(workspace, {
        "name": "杨枝甘露8折", "kind": "percent_off", "percent_off": 20, "items": ["杨枝甘露", "椰椰芒芒"],
        "categories": ["口味/水果茶/芒果"], "clippable": True, "valid_from": start, "valid_until": now + 30 * DAY},
        actor=ACTOR)
    drink = offers.save_offer(workspace, {
        "name": "200积分换饮品券", "kind": "gift", "gift_item": "任意中杯饮品", "points_price": 200, "coupon_days": 30,
        "per_member": 3, "valid_from": start}, actor=ACTOR)
    offers.save_offer(workspace, {
        "name": "生日饮品", "kind": "gift", "gift_item": "任意饮品一杯", "trigger": "birthday", "coupon_days": 7,
        "description": "会员生日当天自动发放，7天内有效"}, actor=ACTOR)
    offers.save_offer(workspace, {
        "name": "升级金卡礼", "kind": "gift", "gift_item": "大杯升级", "trigger": "tier_upgrade", "trigger_tier": "gold",
        "coupon_days": 30}, actor=ACTOR)
    fruit = offers.save_offer(workspace, {
        "name": "果盘一份", "kind": "gift", "gift_item": "鲜切果盘", "coupon_days": 1, "stores": ["xihu"],
        "description": "消费后分享到朋友圈，赠果盘一份"}, actor=ACTOR)

    member_ids = list(scoped(Member, workspace).filter(status=MemberStatus.ACTIVE).order_by("pk")
                      .values_list("pk", flat=True))
    if not member_ids:
        return
    picked = rng.sample(member_ids, min(len(member_ids), 320))
    old, recent = picked[: len(picked) // 3], picked[len(picked) // 3:]

    # Two issuances of 满30减5: one six weeks ago (mostly expired unused), one ten days ago.
    first = offers.issue_to_members(workspace, spend.pk, old, batch_key="demo:spend:1", actor=ACTOR,
                                    at=now - 42 * DAY)
    second_batch = offers.issue_to_members(workspace, spend.pk, recent, batch_key="demo:spend:2", actor=ACTOR,
                                           at=now - 10 * DAY)
    gifts = offers.issue_to_members(workspace, second.pk, rng.sample(recent, min(len(recent), 80)),
                                    batch_key="demo:second:1", actor=ACTOR, at=now - 7 * DAY)

    def redeem(coupon: Coupon, at: dt.datetime, key: str) -> None:
        store = rng.choice(list(stores.values()))
        if store.code == "jingan" or not clerks:
            role, user_id = Role.OPERATOR, rng.choice(operators)
        else:
            role, user_id = Role.CLERK, rng.choice(clerks)
        amount = Decimal(rng.randint(30, 88)) + Decimal(rng.choice(["0", "0.5"]))
        try:
            offers.redeem(workspace, coupon.code, key=key, actor=f"user:{user_id}", role=role, user_id=user_id,
                          store=store.pk, amount=amount, at=at)
        except ShequnError:
            pass  # e.g. a store an offer is not valid at: the counter refused, as it would

    for coupon in first.coupons[: len(first.coupons) // 6]:
        redeem(coupon, now - 42 * DAY + rng.uniform(0.5, 13.5) * DAY, f"demo:r:{coupon.pk}")
    for coupon in second_batch.coupons[: len(second_batch.coupons) // 8]:
        redeem(coupon, now - rng.uniform(0.1, 9.5) * DAY, f"demo:r:{coupon.pk}")
    for coupon in gifts.coupons[: len(gifts.coupons) // 6]:
        redeem(coupon, now - rng.uniform(0.1, 6.5) * DAY, f"demo:r:{coupon.pk}")

    # Two redemptions voided at the counter, with the reason in the audit trail.
    from .models import Redemption

    for redemption, reason in zip(scoped(Redemption, workspace).order_by("-pk")[:2], ("顾客退单", "扫错券"),
                                  strict=False):
        offers.void_redemption(workspace, redemption.pk, reason=reason, actor=f"user:{operators[0]}",
                               at=redemption.at + dt.timedelta(minutes=5))

    # Personalised offers clipped in the portal, a few applied at the counter.
    clippers = rng.sample(member_ids, min(len(member_ids), 60))
    for i, mid in enumerate(clippers):
        offer = (second, cheese, topping)[i % 3]
        offers.clip_offer(workspace, mid, offer.pk, actor=f"member:{mid}")
    for mid in clippers[:9:3]:
        try:
            offers.redeem_clip(workspace, mid, second.pk, key=f"demo:clip:{mid}", actor=f"user:{operators[0]}",
                               role=Role.OPERATOR, user_id=operators[0], store=stores["jingan"].pk,
                               amount=Decimal("56"), at=now - rng.uniform(0.1, 3) * DAY)
        except ShequnError:
            pass

    # A campaign poster QR for 免费加料 at 西湖店, scanned by 25 members.
    claim_code = offers.create_claim_code(workspace, topping.pk, "西湖店新品海报", actor=ACTOR)
    for mid in rng.sample(member_ids, min(len(member_ids), 12)):
        try:
            offers.claim(workspace, claim_code.code, mid, actor="portal", at=now - rng.uniform(0.1, 14) * DAY)
        except ShequnError:
            pass

    # "Share after consumption" at table 8 of 西湖店: a fruit plate and 20 points, once a day.
    table = offers.create_activity_code(workspace, {"name": "西湖店 8号桌 · 分享赢果盘", "store": "xihu", "table": "8",
                                                    "reward_offer": fruit.pk, "reward_points": 20}, actor=ACTOR)
    for mid in rng.sample(member_ids, min(len(member_ids), 10)):
        try:
            offers.claim_activity(workspace, table.code, mid, actor="portal", at=now - rng.uniform(0.1, 20) * DAY)
        except ShequnError:
            pass

    # A few members bought the drink coupon with points, where they have enough.
    from shequn.loyalty import queries as loyalty_queries

    buyers = 0
    for mid in rng.sample(member_ids, min(len(member_ids), 60)):
        if buyers >= 8:
            break
        if loyalty_queries.balance(workspace, mid, "points").available >= 200:
            offers.buy_with_points(workspace, drink.pk, mid, key=f"demo:buy:{mid}", actor=f"member:{mid}",
                                   at=now - rng.uniform(0.1, 10) * DAY)
            buyers += 1
