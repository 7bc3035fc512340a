"""The offers demo seed on top of a small demo workspace."""

from __future__ import annotations

from shequn import demo
from shequn.core import clock
from shequn.offers import queries
from shequn.offers.models import (
    ActivityClaim,
    ClaimCode,
    Coupon,
    Offer,
    OfferClip,
    Redemption,
    RedemptionVoid,
    Store,
)


def test_seed_demo(db):
    now = clock.now()
    ws = demo.build_demo("demo", members=400, interactions=2500, seed=7, now=now)  # runs seed_demo
    assert set(Store.objects.filter(workspace=ws).values_list("name", flat=True)) == {"西湖店", "滨江店", "静安店"}
    assert Offer.objects.filter(workspace=ws).count() >= 8
    assert Coupon.objects.filter(workspace=ws).count() >= 300
    stats = queries.offer_stats(ws)
    assert sum(s["redeemed"] for s in stats.values()) >= 30
    assert sum(s["expired"] for s in stats.values()) >= 20
    assert RedemptionVoid.objects.filter(workspace=ws).count() == 2
    by_clerk = {r["label"] for r in queries.redemptions_by(ws, "clerk")}
    assert {"demo-clerk", "demo-operator"} <= by_clerk
    assert ClaimCode.objects.filter(workspace=ws).exists() and ActivityClaim.objects.filter(workspace=ws).count() > 0
    assert OfferClip.objects.filter(workspace=ws).count() >= 50
    assert Redemption.objects.filter(workspace=ws, coupon__source="clip").exists()
