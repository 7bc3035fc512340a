"""Races on a real PostgreSQL server with real threads, each with its own connection."""

from __future__ import annotations

import pytest

from shequn.core import services as core
from shequn.core.errors import Conflict
from shequn.interactions.models import Interaction
from shequn.loyalty import queries as loyalty_queries
from shequn.loyalty import services as loyalty
from shequn.loyalty.models import PointEntry
from shequn.members import services as members
from shequn.offers import services as offers
from shequn.offers.models import Coupon, Redemption
from tests.threads import run_threads

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def setup(n_members=1):
    ws = core.create_workspace("race", "Race")
    ms = [members.upsert_member(ws, [{"kind": "external", "value": f"m{i}"}]).member for i in range(n_members)]
    store = offers.save_store(ws, "s1", "一号店", actor="t")
    return ws, ms, store


def test_32_concurrent_redemptions_of_one_coupon_give_one_success():
    ws, [m], store = setup()
    offer = offers.save_offer(ws, {"name": "满30减5", "kind": "amount_off", "amount_off": "5"}, actor="t")
    coupon, _ = offers.issue_coupon(ws, offer.pk, m.pk, key="k", actor="t")

    def attempt(i):
        try:
            return offers.redeem(ws, coupon.code, key=f"counter-{i}", actor=f"counter:{i}", role="owner",
                                 store=store.pk, amount="40").pk
        except Conflict as exc:
            return exc.code

    results = run_threads(32, attempt)
    assert results.count("already_redeemed") == 31
    assert Redemption.objects.count() == 1
    coupon.refresh_from_db()
    assert (coupon.uses, coupon.status) == (1, "redeemed")
    assert Interaction.objects.filter(source="offers").count() == 1


def test_concurrent_replays_of_one_redemption_key_return_the_first():
    ws, [m], store = setup()
    offer = offers.save_offer(ws, {"name": "x", "kind": "gift", "gift_item": "果盘", "uses_per_coupon": 5},
                              actor="t")
    coupon, _ = offers.issue_coupon(ws, offer.pk, m.pk, key="k", actor="t")
    ids = run_threads(16, lambda i: offers.redeem(ws, coupon.code, key="same", actor="t", role="owner").pk)
    assert len(set(ids)) == 1
    coupon.refresh_from_db()
    assert coupon.uses == 1 and Redemption.objects.count() == 1


def test_concurrent_issuance_respects_stock_per_member_and_keys():
    ws, ms, _store = setup(8)
    offer = offers.save_offer(ws, {"name": "限量", "kind": "gift", "gift_item": "杯子", "stock": 5, "per_member": 1},
                              actor="t")

    def attempt(i):
        try:
            return offers.issue_coupon(ws, offer.pk, ms[i % 8].pk, key=f"k{i}", actor="t")[0].pk
        except Conflict as exc:
            return exc.code

    results = run_threads(24, attempt)
    assert Coupon.objects.count() == 5
    assert len(set(Coupon.objects.values_list("member_id", flat=True))) == 5
    offer.refresh_from_db()
    assert offer.issued_count == 5
    assert sum(1 for r in results if isinstance(r, int)) == 5
    first = Coupon.objects.order_by("pk").first()
    same = run_threads(8, lambda i: offers.issue_coupon(ws, offer.pk, first.member_id, key=first.issue_key,
                                                        actor="t")[0].pk)
    assert set(same) == {first.pk}


def test_concurrent_purchases_with_points_spend_once_per_key():
    ws, [m], _store = setup()
    loyalty.earn(ws, m.pk, "points", 500, reason="t", idempotency_key="e", actor="t")
    offer = offers.save_offer(ws, {"name": "200积分换饮品券", "kind": "gift", "gift_item": "饮品", "points_price": 200},
                              actor="t")
    ids = run_threads(12, lambda i: offers.buy_with_points(ws, offer.pk, m.pk, key="buy", actor="t")[0].pk)
    assert len(set(ids)) == 1
    assert loyalty_queries.balance(ws, m.pk, "points").available == 300
    assert PointEntry.objects.filter(kind="spend").count() == 1

    def distinct(i):
        try:
            return offers.buy_with_points(ws, offer.pk, m.pk, key=f"b{i}", actor="t")[0].pk
        except Conflict as exc:
            return exc.code

    results = run_threads(6, distinct)
    assert results.count("insufficient_points") == 5
    assert loyalty_queries.balance(ws, m.pk, "points").available == 100
    assert loyalty.verify(ws).ok


def test_concurrent_void_gives_the_use_back_once():
    ws, [m], _store = setup()
    offer = offers.save_offer(ws, {"name": "x", "kind": "gift", "gift_item": "y"}, actor="t")
    coupon, _ = offers.issue_coupon(ws, offer.pk, m.pk, key="k", actor="t")
    r = offers.redeem(ws, coupon.code, key="r", actor="t", role="owner")

    def attempt(i):
        try:
            offers.void_redemption(ws, r.pk, reason="mistake", actor="t")
            return "ok"
        except Conflict as exc:
            return exc.code

    results = run_threads(16, attempt)
    assert results.count("ok") == 1 and results.count("already_voided") == 15
    coupon.refresh_from_db()
    assert (coupon.uses, coupon.status) == (0, "issued")
