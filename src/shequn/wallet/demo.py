"""Demo data for stored value (储值): about a hundred members of the demo workspace top up a card at
a store counter (¥100–¥500, the usual 储值 tiers) and pay for drinks from it over the last three
months; a few payments are refunded in part. Everything goes through the services, with fixed
idempotency keys, so running it twice adds nothing."""

from __future__ import annotations

import datetime as dt
import random

from shequn.core.models import Workspace
from shequn.core.tenancy import scoped
from shequn.members.models import Member, MemberStatus

from . import services

TIERS_FEN = (10_000, 20_000, 30_000, 50_000)
STORES = ("西湖店", "滨江店", "武林店", "湖滨银泰店", "静安店", "陆家嘴店")
DRINK_FEN = (1_600, 1_800, 1_900, 2_200, 2_500, 2_800)


def seed_demo(workspace: Workspace, rng: random.Random, now: dt.datetime, *, members: int = 100) -> None:
    """Top-ups and payments for ``members`` members, deterministic for a given ``rng`` state."""
    ids = list(scoped(Member, workspace).filter(status=MemberStatus.ACTIVE).order_by("pk").values_list("pk", flat=True))
    if not ids:
        return
    chosen = sorted(rng.sample(ids, min(members, len(ids))))
    for mid in chosen:
        store = rng.choice(STORES)
        at = now - dt.timedelta(days=rng.randint(20, 90), hours=rng.randint(0, 10))
        balance = 0
        for n in range(rng.choice((1, 1, 2, 3))):
            amount = rng.choice(TIERS_FEN)
            services.top_up(workspace, mid, amount, idempotency_key=f"demo:wallet:{mid}:top:{n}", actor="demo",
                            reason="门店充值", store=store, now=at)
            balance += amount
            for p in range(rng.randint(2, 9)):
                at += dt.timedelta(days=rng.randint(1, 6), hours=rng.randint(0, 8))
                if at >= now:
                    break
                price = rng.choice(DRINK_FEN) * rng.choice((1, 1, 2))
                if price > balance:
                    break
                entry = services.pay(workspace, mid, price, idempotency_key=f"demo:wallet:{mid}:pay:{n}:{p}",
                                     actor="demo", reason="储值支付", store=store, now=at)
                balance -= price
                if rng.random() < 0.04:
                    give = rng.choice(DRINK_FEN[:2]) if price > DRINK_FEN[1] else price
                    services.refund(workspace, entry.pk, give, idempotency_key=f"demo:wallet:{mid}:refund:{n}:{p}",
                                    actor="demo", reason="退一杯", now=at + dt.timedelta(minutes=20))
                    balance += give
            at += dt.timedelta(days=rng.randint(1, 10))
            if at >= now:
                break
