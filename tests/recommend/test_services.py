"""rank_offers and refresh_affinity on the database, and the API endpoint."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from shequn.core.errors import NotFound
from shequn.interactions import services as interactions
from shequn.members import services as members
from shequn.offers import services as offers
from shequn.recommend import services as recommend
from shequn.recommend.models import ItemAffinity, ItemStat
from shequn.recommend.tasks import refresh_affinity_all
from tests.api.helpers import error_code, make_client

NOW = dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC)


def member(ws, name):
    return members.upsert_member(ws, [{"kind": "external", "value": name}], {"display_name": name}).member


def buy(ws, m, days_ago, *names, key=None):
    at = NOW - dt.timedelta(days=days_ago)
    interactions.ingest(ws, {
        "member_id": m.pk, "type": "purchase", "channel": "store", "occurred_at": at.isoformat(), "amount": "20.00",
        "source": "pos", "external_id": key or f"{m.pk}-{days_ago}-{'+'.join(names)}",
        "properties": {"items": [{"name": n, "price": 20, "qty": 1} for n in names], "store": "西湖店"}}, actor="test")


def offer(ws, name, items, categories=(), **extra):
    data = {"name": name, "kind": "amount_off", "amount_off": "3", "items": list(items),
            "categories": list(categories), "clippable": True}
    data.update(extra)
    return offers.save_offer(ws, data, actor="test")


@pytest.fixture
def shop(ws):
    """Alice drinks 茉莉奶绿 every few days and once had 多肉葡萄 two months ago; the other members
    who buy 茉莉奶绿 also buy 芝士茉莉; nobody buys 柠檬水 twice."""
    alice, bob, carol, dan = (member(ws, n) for n in ("alice", "bob", "carol", "dan"))
    for d in (1, 4, 8, 12):
        buy(ws, alice, d, "茉莉奶绿")
    buy(ws, alice, 60, "多肉葡萄")
    for m in (bob, carol):
        buy(ws, m, 3, "茉莉奶绿", "芝士茉莉")
        buy(ws, m, 10, "芝士茉莉")
    buy(ws, dan, 2, "柠檬水")
    buy(ws, bob, 400, "杨枝甘露")  # older than a year: ignored
    o = {
        "jasmine": offer(ws, "茉莉奶绿第二杯半价", ["茉莉奶绿"], ["奶茶"]),
        "grape": offer(ws, "多肉葡萄减3元", ["多肉葡萄"], ["水果茶"]),
        "cheese": offer(ws, "芝士茉莉尝鲜", ["芝士茉莉"], ["奶茶"]),
        "lemon": offer(ws, "柠檬水买一送一", ["柠檬水"]),
        "mango": offer(ws, "杨枝甘露", ["杨枝甘露"], ["水果茶"]),
        "hidden": offer(ws, "not clippable", ["茉莉奶绿"], clippable=False),
    }
    return {"alice": alice, "bob": bob, "dan": dan, "offers": o}


def test_refresh_affinity_stores_item_stats_and_neighbours(ws, shop):
    counts = recommend.refresh_affinity(ws, at=NOW)
    assert counts == {"members": 4, "items": 4, "links": 2}
    stats = {s.item: s for s in ItemStat.objects.filter(workspace=ws)}
    assert sorted(stats) == ["多肉葡萄", "柠檬水", "芝士茉莉", "茉莉奶绿"]
    assert stats["茉莉奶绿"].buyers == 3
    assert stats["茉莉奶绿"].popularity == pytest.approx(0.75)
    # 茉莉奶绿 and 芝士茉莉 share bob and carol: 2 / sqrt(3 × 2).
    links = {(a.item, a.other): a.similarity for a in ItemAffinity.objects.filter(workspace=ws)}
    assert links == pytest.approx({("茉莉奶绿", "芝士茉莉"): 2 / 6 ** 0.5, ("芝士茉莉", "茉莉奶绿"): 2 / 6 ** 0.5})
    # Idempotent: running it again leaves the same rows.
    assert recommend.refresh_affinity(ws, at=NOW) == counts
    assert ItemAffinity.objects.filter(workspace=ws).count() == 2


def test_rank_offers_for_a_regular(ws, shop):
    recommend.refresh_affinity(ws, at=NOW)
    ranked = recommend.rank_offers(ws, shop["alice"].pk, at=NOW)
    o = shop["offers"]
    # 茉莉奶绿 (four recent purchases) > 多肉葡萄 (once, two months ago) > 芝士茉莉 (never bought, but
    # in her favourite category 奶茶 and bought by the members who buy 茉莉奶绿) > 杨枝甘露 (水果茶,
    # her other category) > 柠檬水 (only popularity).
    assert [r.offer.pk for r in ranked] == [o["jasmine"].pk, o["grape"].pk, o["cheese"].pk, o["mango"].pk,
                                            o["lemon"].pk]
    assert [r.reason_code for r in ranked] == ["buy_again", "buy_again", "category", "category", "popular"]
    assert ranked[0].reason == "您常买这款"  # "You buy this often"
    assert ranked[0].score > ranked[1].score > ranked[2].score > ranked[3].score > ranked[4].score > 0
    assert [r.offer.pk for r in recommend.rank_offers(ws, shop["alice"].pk, limit=2, at=NOW)] == [
        o["jasmine"].pk, o["grape"].pk]


def test_rank_offers_cold_start_and_before_any_refresh(ws, shop):
    newcomer = member(ws, "newcomer")
    o = shop["offers"]
    # No statistics yet: every score is 0 and the offers keep their order (by id).
    assert [r.offer.pk for r in recommend.rank_offers(ws, newcomer.pk, at=NOW)] == [
        o[k].pk for k in ("jasmine", "grape", "cheese", "lemon", "mango")]
    recommend.refresh_affinity(ws, at=NOW)
    ranked = recommend.rank_offers(ws, newcomer.pk, at=NOW)
    assert [r.offer.pk for r in ranked][:2] == [o["jasmine"].pk, o["cheese"].pk]  # most popular first
    assert {r.reason_code for r in ranked} == {"popular"}


def test_rank_offers_accepts_fake_candidates(ws, shop):
    class Fake:
        def __init__(self, name, items):
            self.name, self.items, self.categories = name, items, []

    recommend.refresh_affinity(ws, at=NOW)
    ranked = recommend.rank_offers(ws, shop["alice"].pk, at=NOW, candidates=[
        Fake("x", ["柠檬水"]), Fake("y", ["多肉葡萄"]), Fake("z", ["芝士茉莉"]), Fake("w", ["新品"])])
    assert [(r.offer.name, r.reason_code) for r in ranked] == [
        ("y", "buy_again"), ("z", "similar_members"), ("x", "popular"), ("w", "popular")]
    assert ranked[-1].score == 0.0


def test_rank_offers_is_tenant_scoped_and_cheap(ws, other_ws, shop):
    with pytest.raises(NotFound):
        recommend.rank_offers(other_ws, shop["alice"].pk, at=NOW)
    recommend.refresh_affinity(ws, at=NOW)
    with CaptureQueriesContext(connection) as ctx:
        recommend.rank_offers(ws, shop["alice"].pk, at=NOW)
    # member check, candidates, purchases, neighbours, item statistics
    assert len(ctx.captured_queries) == 5


def test_periodic_task_refreshes_every_workspace_with_purchases(ws, other_ws, shop, monkeypatch):
    from shequn.recommend import tasks

    queued = []
    monkeypatch.setattr(tasks, "enqueue_on_commit", lambda task, *args: queued.append((task, args)))
    assert refresh_affinity_all.func() == 1
    assert queued == [(tasks.refresh_affinity, (ws.pk,))]
    assert tasks.refresh_affinity.func(ws.pk)["items"] == 4
    assert tasks.refresh_affinity.func(10 ** 9) == {"members": 0, "items": 0, "links": 0}
    assert ItemStat.objects.filter(workspace=ws).count() == 4
    assert not ItemStat.objects.filter(workspace=other_ws).exists()


# ---------------------------------------------------------------------------------------------
# API


def test_api_recommended_offers(ws, other_ws, shop):
    recommend.refresh_affinity(ws)
    api = make_client(ws, "agent")
    r = api.get(f"/api/v1/members/{shop['alice'].pk}/offers/recommended", {"limit": 2})
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["member_id"] == shop["alice"].pk
    assert [i["offer"]["name"] for i in body["items"]] == ["茉莉奶绿第二杯半价", "多肉葡萄减3元"]
    first = body["items"][0]
    assert set(first) == {"offer", "score", "reason", "reason_code"}
    assert set(first["offer"]) == {"id", "name", "kind", "items", "categories", "valid_until"}
    assert first["offer"]["items"] == ["茉莉奶绿"]
    assert first["reason_code"] == "buy_again"

    zh = api.get(f"/api/v1/members/{shop['alice'].pk}/offers/recommended", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert zh.status_code == 200

    # A member of another workspace does not exist for this key.
    other = make_client(other_ws, "owner")
    r = other.get(f"/api/v1/members/{shop['alice'].pk}/offers/recommended")
    assert r.status_code == 404 and error_code(r) == "not_found"
    # Clerks may not read recommendations; bad limits are rejected.
    r = make_client(ws, "clerk").get(f"/api/v1/members/{shop['alice'].pk}/offers/recommended")
    assert r.status_code == 403 and error_code(r) == "forbidden"
    r = api.get(f"/api/v1/members/{shop['alice'].pk}/offers/recommended", {"limit": 0})
    assert r.status_code == 422 and error_code(r) == "validation_error"


def test_demo_seed_computes_the_statistics(ws, shop):
    import random

    from shequn.recommend.demo import seed_demo

    seed_demo(ws, random.Random(7), NOW)
    assert ItemStat.objects.filter(workspace=ws).count() == 4
    assert ItemAffinity.objects.filter(workspace=ws).count() == 2
