"""Stored value one operation at a time: top up, pay, refund, replays, bad input, the check, the report."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.db.models import F

from shequn.core.errors import Conflict, NotFound, ValidationError
from shequn.members import services as members
from shequn.wallet import queries, services
from shequn.wallet.models import Wallet, WalletEntry

DAY = dt.timedelta(days=1)


def top_up(ws, m, n, key, now, **kw):
    return services.top_up(ws, m, n, idempotency_key=key, actor="t", now=now, **kw)


def pay(ws, m, n, key, now, **kw):
    return services.pay(ws, m, n, idempotency_key=key, actor="t", now=now, **kw)


def state():
    return (list(WalletEntry.objects.order_by("pk").values_list("kind", "amount")),
            list(Wallet.objects.order_by("pk").values_list("balance", flat=True)))


def assert_clean(ws):
    report = services.verify(ws)
    assert report.ok, report.as_dict()


def test_top_up_pay_and_refund(ws, alice, now):
    t = top_up(ws, alice, 10_000, "t1", now, store="前门店", reason="充100")
    assert (t.kind, t.amount, t.balance_after, t.store) == ("top_up", 10_000, 10_000, "前门店")
    p = pay(ws, alice.pk, 2_350, "p1", now + DAY)
    assert (p.kind, p.amount, p.balance_after) == ("pay", -2_350, 7_650)
    r1 = services.refund(ws, p.pk, 350, idempotency_key="r1", actor="t", now=now + 2 * DAY)
    assert (r1.kind, r1.amount, r1.related_id, r1.balance_after, r1.store) == ("refund", 350, p.pk, 8_000, "")
    r2 = services.refund(ws, p.pk, idempotency_key="r2", actor="t", now=now + 2 * DAY)  # the rest: 2,000
    assert r2.amount == 2_000 and queries.balance(ws, alice.pk) == 10_000
    with pytest.raises(Conflict) as exc:
        services.refund(ws, p.pk, 1, idempotency_key="r3", actor="t")
    assert exc.value.code == "already_refunded"
    assert [e.kind for e in queries.history(ws, alice.pk)] == ["refund", "refund", "pay", "top_up"]
    assert queries.refundable(ws, [p.pk]) == {p.pk: 0}
    assert_clean(ws)


def test_refund_never_exceeds_the_payment(ws, alice, now):
    top_up(ws, alice, 5_000, "t1", now)
    p = pay(ws, alice, 1_000, "p1", now)
    services.refund(ws, p.pk, 600, idempotency_key="r1", actor="t")
    before = state()
    with pytest.raises(Conflict) as exc:
        services.refund(ws, p.pk, 401, idempotency_key="r2", actor="t")
    assert exc.value.code == "refund_exceeds_payment" and exc.value.details["left"] == 400
    assert state() == before
    topup = WalletEntry.objects.get(kind="top_up")
    with pytest.raises(NotFound) as exc:
        services.refund(ws, topup.pk, 1, idempotency_key="r3", actor="t")  # only a payment can be refunded
    assert exc.value.code == "unknown_payment"


def test_paying_more_than_the_balance_is_refused_and_changes_nothing(ws, alice, bob, now):
    top_up(ws, alice, 1_000, "t1", now)
    before = state()
    with pytest.raises(Conflict) as exc:
        pay(ws, alice, 1_001, "p1", now)
    assert exc.value.code == "insufficient_funds" and exc.value.details == {"balance": 1_000, "requested": 1_001}
    with pytest.raises(Conflict) as exc:
        pay(ws, bob, 1, "p2", now)  # no wallet at all
    assert exc.value.code == "insufficient_funds"
    assert state()[0] == before[0] and queries.balance(ws, alice.pk) == 1_000
    assert pay(ws, alice, 1_000, "p3", now).balance_after == 0


def test_replays_return_the_first_entry_and_change_nothing(ws, alice, now):
    t = top_up(ws, alice, 1_000, "t1", now)
    p = pay(ws, alice, 1_000, "p1", now)
    before = state()
    assert top_up(ws, alice, 1_000, "t1", now).pk == t.pk
    assert pay(ws, alice, 1_000, "p1", now).pk == p.pk  # the balance is 0 now: still the first answer
    r = services.refund(ws, p.pk, 100, idempotency_key="r1", actor="t")
    assert services.refund(ws, p.pk, 100, idempotency_key="r1", actor="t").pk == r.pk
    assert state()[0] == [*before[0], ("refund", 100)]
    for call in (lambda: pay(ws, alice, 999, "p1", now), lambda: top_up(ws, alice, 1_000, "p1", now),
                 lambda: services.refund(ws, p.pk, 50, idempotency_key="r1", actor="t")):
        with pytest.raises(Conflict) as exc:
            call()
        assert exc.value.code == "idempotency_key_reused"
    assert_clean(ws)


@pytest.mark.parametrize("amount", [0, -1, 1.5, "1.5", "0.01", "abc", None, True, Decimal("2.50"), 10**11 + 1, "NaN"])
def test_bad_amounts_are_refused_with_a_clear_error(ws, alice, now, amount):
    with pytest.raises(ValidationError) as exc:
        top_up(ws, alice, amount, "t1", now)
    assert exc.value.code == "invalid_amount" and exc.value.details == {"field": "amount"}
    assert "fen" in exc.value.message or "分" in exc.value.message
    assert WalletEntry.objects.count() == 0 and Wallet.objects.count() == 0


def test_whole_amounts_in_any_form_are_accepted(ws, alice, now):
    for i, amount in enumerate([100, "200", 300.0, Decimal("400")]):
        top_up(ws, alice, amount, f"k{i}", now)
    assert queries.balance(ws, alice.pk) == 1_000


def test_other_bad_input(ws, other_ws, alice, now):
    stranger = members.upsert_member(other_ws, [{"kind": "external", "value": "x"}]).member
    with pytest.raises(NotFound) as exc:
        top_up(ws, stranger, 100, "k", now)
    assert exc.value.code == "unknown_member"
    with pytest.raises(NotFound):
        top_up(ws, 99_999, 100, "k", now)
    with pytest.raises(ValidationError) as exc:
        top_up(ws, alice, 100, "", now)
    assert exc.value.code == "invalid_idempotency_key"
    with pytest.raises(ValidationError):
        top_up(ws, alice, 100, "k", now, reason="x" * 201)
    with pytest.raises(ValueError):
        top_up(ws, alice, 100, "k", dt.datetime(2026, 6, 1))  # noqa: DTZ001 - naive on purpose
    # A payment of another workspace cannot be refunded from here.
    top_up(other_ws, stranger, 100, "k", now)
    p = pay(other_ws, stranger, 100, "p", now)
    with pytest.raises(NotFound):
        services.refund(ws, p.pk, 10, idempotency_key="r", actor="t")
    assert Wallet.objects.filter(workspace=ws).count() == 0


def test_the_database_refuses_a_negative_balance(ws, alice, now):
    top_up(ws, alice, 100, "t1", now)
    with pytest.raises(IntegrityError), transaction.atomic():
        Wallet.objects.filter(member=alice).update(balance=F("balance") - 101)


def test_verify_reports_tampering(ws, alice, bob, now):
    top_up(ws, alice, 1_000, "t1", now)
    p = pay(ws, alice, 400, "p1", now)
    top_up(ws, bob, 50, "t2", now)
    assert_clean(ws)
    Wallet.objects.filter(member=alice).update(balance=F("balance") + 5)
    WalletEntry.objects.create(workspace=ws, wallet=Wallet.objects.get(member=bob), member=bob, kind="refund",
                               amount=500, balance_after=550, actor="x", idempotency_key="forged", related=p, at=now)
    checks = sorted(d.check for d in services.verify(ws).discrepancies)
    assert checks == ["balance_after", "balance_after", "entries_sum", "entries_sum", "over_refunded"]


def test_liability_report(ws, alice, bob, now):
    top_up(ws, alice, 10_000, "a1", now - 40 * DAY)  # April (Shanghai)
    top_up(ws, alice, 5_000, "a2", now - 2 * DAY)    # May
    pay(ws, alice, 12_000, "a3", now - DAY)          # uses April's 10,000 and 2,000 of May's
    top_up(ws, bob, 3_000, "b1", now)                # June
    p = pay(ws, bob, 1_000, "b2", now)
    services.refund(ws, p.pk, 200, idempotency_key="b3", actor="t", now=now)
    import zoneinfo

    report = queries.liability(ws, now=now, days=30, tz=zoneinfo.ZoneInfo("Asia/Shanghai"))
    assert (report.outstanding, report.wallets) == (3_000 + 2_200, 2)
    assert report.by_month == [("2026-05", 3_000), ("2026-06", 2_200)]
    assert (report.topped_up, report.paid, report.refunded) == (8_000, 13_000, 200)
    assert len(report.days) == 31 and report.days[-1].top_ups == 3_000 and report.days[-1].payments == 1_000


def test_the_verify_command(ws, alice, now):
    import io
    import json

    from django.core.management import CommandError, call_command
    from django.utils import translation

    top_up(ws, alice, 100, "t1", now)
    out = io.StringIO()
    with translation.override("en"):
        call_command("shequn_wallet_verify", "--workspace", "tea", stdout=out)
    assert "tea: 1 wallets, 1 entries checked" in out.getvalue() and "consistent" in out.getvalue()
    out = io.StringIO()
    call_command("shequn_wallet_verify", "--workspace", "tea", "--json", stdout=out)
    assert json.loads(out.getvalue())["ok"] is True
    Wallet.objects.update(balance=F("balance") + 1)
    with pytest.raises(CommandError) as exc:
        call_command("shequn_wallet_verify", "--workspace", "tea", stdout=io.StringIO())
    assert exc.value.returncode == 1
