"""Races on a real PostgreSQL server with real threads, each with its own connection."""

from __future__ import annotations

import pytest

from shequn.core import services as core
from shequn.core.errors import Conflict
from shequn.members import services as members
from shequn.wallet import queries, services
from shequn.wallet.models import WalletEntry
from tests.threads import run_threads

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def setup(n=1):
    ws = core.create_workspace("wrace", "Race")
    return ws, [members.upsert_member(ws, [{"kind": "external", "value": f"m{i}"}]).member for i in range(n)]


def assert_clean(ws):
    report = services.verify(ws)
    assert report.ok, report.as_dict()


def test_64_concurrent_payments_never_overdraw_and_lose_nothing():
    ws, [m] = setup()
    services.top_up(ws, m, 5_550, idempotency_key="t", actor="t")

    def attempt(i):
        try:
            services.pay(ws, m.pk, 100, idempotency_key=f"p{i}", actor="t")
            return "ok"
        except Conflict as exc:
            return exc.code

    results = run_threads(64, attempt)
    assert results.count("ok") == 55 and results.count("insufficient_funds") == 9
    assert queries.balance(ws, m.pk) == 50
    assert WalletEntry.objects.filter(kind="pay").count() == 55
    assert sorted(WalletEntry.objects.filter(kind="pay").values_list("balance_after", flat=True)) == \
        list(range(50, 5_550, 100))
    assert_clean(ws)


def test_concurrent_top_ups_pays_and_refunds_on_fresh_wallets():
    ws, ms = setup(4)

    def work(i):
        m = ms[i % 4]
        services.top_up(ws, m.pk, 1_000, idempotency_key=f"t{i}", actor="t")
        p = services.pay(ws, m.pk, 700, idempotency_key=f"p{i}", actor="t")
        try:
            services.refund(ws, p.pk, 700, idempotency_key=f"r{i}", actor="t")
        except Conflict as exc:
            return exc.code
        return "ok"

    assert run_threads(32, work) == ["ok"] * 32
    assert sum(queries.balance(ws, m.pk) for m in ms) == 32 * 1_000
    assert_clean(ws)


def test_16_concurrent_replays_make_one_entry_each():
    ws, [m] = setup()
    ids = run_threads(16, lambda i: services.top_up(ws, m.pk, 500, idempotency_key="t", actor="t").pk)
    assert len(set(ids)) == 1
    paid = run_threads(16, lambda i: services.pay(ws, m.pk, 500, idempotency_key="p", actor="t").pk)
    assert len(set(paid)) == 1
    refunds = run_threads(16, lambda i: services.refund(ws, paid[0], 200, idempotency_key="r", actor="t").pk)
    assert len(set(refunds)) == 1
    assert queries.balance(ws, m.pk) == 200
    assert WalletEntry.objects.count() == 3
    assert_clean(ws)


def test_concurrent_partial_refunds_never_exceed_the_payment():
    ws, [m] = setup()
    services.top_up(ws, m, 1_000, idempotency_key="t", actor="t")
    p = services.pay(ws, m, 1_000, idempotency_key="p", actor="t")

    def attempt(i):
        try:
            services.refund(ws, p.pk, 300, idempotency_key=f"r{i}", actor="t")
            return "ok"
        except Conflict as exc:
            return exc.code

    results = run_threads(16, attempt)
    assert results.count("ok") == 3 and results.count("refund_exceeds_payment") == 13
    assert queries.balance(ws, m.pk) == 900
    assert_clean(ws)
