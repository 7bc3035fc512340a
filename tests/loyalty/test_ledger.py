"""The ledger operations one by one: earn, spend, reverse, transfer, adjust, expiry and pending points,
idempotency, and every kind of bad input (clear error, nothing changed)."""

from __future__ import annotations

import datetime as dt

import pytest

from shequn.core.errors import Conflict, NotFound, ValidationError
from shequn.core.models import AuditEntry
from shequn.loyalty import periods, queries
from shequn.loyalty import services as loyalty
from shequn.loyalty.models import EntryKind, PointBalance, PointEntry, PointLot, PointLotDraw
from shequn.members import services as members

DAY = dt.timedelta(days=1)


def bal(ws, member, code):
    b = queries.balance(ws, member.pk, code)
    return (b.available, b.pending)


def ledger_rows():
    return (PointEntry.objects.count(), PointLot.objects.count(), PointLotDraw.objects.count(),
            list(PointBalance.objects.order_by("pk").values_list("available", "pending", "lifetime_earned")))


def assert_clean(ws):
    report = loyalty.verify(ws)
    assert report.ok, report.as_dict()


def earn(ws, m, code, n, key, now, **kw):
    return loyalty.earn(ws, m, code, n, reason="test", idempotency_key=key, actor="test", now=now, **kw)


def spend(ws, m, code, n, key, now):
    return loyalty.spend(ws, m, code, n, reason="test", idempotency_key=key, actor="test", now=now)


# ---------------------------------------------------------------------------------------------
# point types


def test_new_workspace_gets_a_currency_and_a_contribution_type(ws):
    types = {t.code: t for t in queries.point_types(ws)}
    assert set(types) == {"points", "growth"}
    assert types["points"].spendable and not types["growth"].spendable
    assert (types["points"].expiry_policy, types["points"].expiry_period) == ("year_end", 1)
    assert types["growth"].expiry_policy == "never"


def test_point_type_settings_are_validated(ws, coins):
    with pytest.raises(ValidationError) as exc:
        loyalty.save_point_type(ws, "coins", {"kind": "contribution"}, actor="t")
    assert exc.value.code == "immutable_field"
    with pytest.raises(ValidationError) as exc:
        loyalty.save_point_type(ws, "short", {"name": "x", "expiry_policy": "days", "expiry_period": 0}, actor="t")
    assert exc.value.details == {"field": "expiry_period"}
    with pytest.raises(ValidationError) as exc:
        loyalty.save_point_type(ws, "short", {"name": "x", "expiry_policy": "days", "expiry_period": 7,
                                              "pending_days": 7}, actor="t")
    assert exc.value.details == {"field": "pending_days"}
    with pytest.raises(ValidationError):
        loyalty.save_point_type(ws, "Bad Code", {"name": "x"}, actor="t")
    with pytest.raises(ValidationError):
        loyalty.save_point_type(ws, "x", {"name": "x", "pending_days": -1}, actor="t")
    with pytest.raises(ValidationError):
        loyalty.save_point_type(ws, "x", {"colour": "red"}, actor="t")
    updated = loyalty.save_point_type(ws, "coins", {"pending_days": 3}, actor="t")
    assert updated.pending_days == 3
    assert AuditEntry.objects.filter(action__startswith="point_type.").count() == 2


def test_expiry_dates_are_local_month_and_year_ends(ws):
    tz = periods.zone("Asia/Shanghai")
    late_june = dt.datetime(2026, 6, 30, 15, 30, tzinfo=dt.UTC)  # 23:30 on 30 June in Shanghai
    month = loyalty.save_point_type(ws, "m", {"name": "m", "expiry_policy": "month_end"}, actor="t")
    assert periods.expires_at(month, late_june, tz) == dt.datetime(2026, 6, 30, 16, 0, tzinfo=dt.UTC)
    month2 = loyalty.save_point_type(ws, "m2", {"name": "m2", "expiry_policy": "month_end", "expiry_period": 7},
                                     actor="t")
    assert periods.expires_at(month2, late_june, tz) == dt.datetime(2027, 1, 31, 16, 0, tzinfo=dt.UTC)
    year = loyalty.save_point_type(ws, "y", {"name": "y", "expiry_policy": "year_end", "expiry_period": 1}, actor="t")
    new_year_eve = dt.datetime(2026, 12, 31, 16, 30, tzinfo=dt.UTC)  # already 1 January 2027 in Shanghai
    assert periods.expires_at(year, new_year_eve, tz) == dt.datetime(2028, 12, 31, 16, 0, tzinfo=dt.UTC)
    days = loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 30}, actor="t")
    assert periods.expires_at(days, late_june, tz) == late_june + 30 * DAY
    assert periods.period_start("week", dt.datetime(2026, 6, 7, 17, 0, tzinfo=dt.UTC), tz) == dt.date(2026, 6, 8)


# ---------------------------------------------------------------------------------------------
# earn


def test_earn_creates_an_entry_a_lot_and_the_balance(ws, alice, now):
    entry = earn(ws, alice, "points", 120, "order-1", now, source_interaction_id=77)
    assert (entry.kind, entry.amount, entry.source_interaction_id, entry.idempotency_key) == ("earn", 120, 77, "order-1")
    lot = PointLot.objects.get(entry=entry)
    assert (lot.amount, lot.remaining, lot.released) == (120, 120, True)
    assert lot.expires_at == dt.datetime(2027, 12, 31, 16, 0, tzinfo=dt.UTC)  # end of next year, Shanghai
    b = PointBalance.objects.get(member=alice)
    assert (b.available, b.pending, b.lifetime_earned, b.next_change_at) == (120, 0, 120, lot.expires_at)
    assert_clean(ws)


def test_replaying_an_earn_returns_the_first_entry_and_changes_nothing(ws, alice, now):
    first = earn(ws, alice, "points", 50, "k", now)
    before = ledger_rows()
    again = earn(ws, alice, "points", 50, "k", now + DAY)
    assert again.pk == first.pk
    assert ledger_rows() == before
    with pytest.raises(Conflict) as exc:
        earn(ws, alice, "points", 51, "k", now)
    assert exc.value.code == "idempotency_key_reused" and exc.value.details == {"entry_id": first.pk}
    with pytest.raises(Conflict):
        spend(ws, alice, "points", 50, "k", now)
    assert ledger_rows() == before
    # the same key in another point type is another operation
    assert earn(ws, alice, "growth", 50, "k", now).pk != first.pk


@pytest.mark.parametrize("amount", [0, -5, 1.5, "2.5", "abc", True, None, 10**13, "1e3x", [3]])
def test_bad_amounts_are_refused_and_change_nothing(ws, alice, now, amount):
    earn(ws, alice, "points", 10, "seed", now)
    before = ledger_rows()
    for op in (lambda: earn(ws, alice, "points", amount, "x", now), lambda: spend(ws, alice, "points", amount, "y", now)):
        with pytest.raises(ValidationError) as exc:
            op()
        assert exc.value.code == "invalid_amount"
    assert ledger_rows() == before


def test_whole_numbers_in_other_spellings_are_accepted(ws, alice, now):
    assert earn(ws, alice, "points", "15", "a", now).amount == 15
    assert earn(ws, alice, "points", 15.0, "b", now).amount == 15
    assert earn(ws, alice, "points", "15.00", "c", now).amount == 15


def test_unknown_point_type_and_foreign_members_are_refused(ws, other_ws, alice, now):
    stranger = members.upsert_member(other_ws, [{"kind": "external", "value": "s"}]).member
    foreign_type = loyalty.get_point_type(other_ws, "points")
    before = ledger_rows()
    with pytest.raises(NotFound) as exc:
        earn(ws, alice, "gold", 10, "a", now)
    assert exc.value.code == "unknown_point_type"
    with pytest.raises(NotFound) as exc:
        earn(ws, alice, foreign_type, 10, "a", now)
    assert exc.value.code == "unknown_point_type"
    for who in (stranger, stranger.pk, 999_999, 0, "1"):
        with pytest.raises(NotFound) as exc:
            earn(ws, who, "points", 10, "a", now)
        assert exc.value.code == "unknown_member"
    with pytest.raises(ValidationError) as exc:
        earn(ws, alice, "points", 10, "", now)
    assert exc.value.code == "invalid_idempotency_key"
    with pytest.raises(ValidationError):
        earn(ws, alice, "points", 10, "k" * 201, now)
    assert ledger_rows() == before


# ---------------------------------------------------------------------------------------------
# spend


def test_spend_draws_the_soonest_expiring_lot_first_and_records_the_draws(ws, alice, now):
    loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 30}, actor="t")
    late = earn(ws, alice, "d", 40, "late", now)  # expires now + 30 days
    early = earn(ws, alice, "d", 30, "early", now - 20 * DAY)  # expires now + 10 days
    also_early = earn(ws, alice, "d", 5, "also-early", now - 20 * DAY)  # same expiry, later id
    entry = spend(ws, alice, "d", 50, "s1", now)
    assert entry.amount == -50
    draws = [(d.lot.entry_id, d.amount) for d in queries.entry_draws(ws, entry.pk)]
    assert draws == [(early.pk, 30), (also_early.pk, 5), (late.pk, 15)]
    assert bal(ws, alice, "d") == (25, 0)
    assert_clean(ws)


def test_lots_that_never_expire_are_spent_last(ws, alice, coins, now):
    loyalty.save_point_type(ws, "coins", {"expiry_policy": "days", "expiry_period": 5}, actor="t")
    forever = loyalty.save_point_type(ws, "forever", {"name": "f"}, actor="t")
    assert forever.expiry_policy == "never"
    loyalty.save_point_type(ws, "coins", {"expiry_policy": "never"}, actor="t")
    keep = earn(ws, alice, "coins", 10, "never", now)  # never expires
    loyalty.save_point_type(ws, "coins", {"expiry_policy": "days", "expiry_period": 5}, actor="t")
    soon = earn(ws, alice, "coins", 10, "soon", now)
    entry = spend(ws, alice, "coins", 12, "s", now)
    assert [(d.lot.entry_id, d.amount) for d in queries.entry_draws(ws, entry.pk)] == [(soon.pk, 10), (keep.pk, 2)]


def test_spending_more_than_available_is_refused_and_changes_nothing(ws, alice, now):
    earn(ws, alice, "points", 30, "e", now)
    before = ledger_rows()
    with pytest.raises(Conflict) as exc:
        spend(ws, alice, "points", 31, "s", now)
    assert exc.value.code == "insufficient_points"
    assert exc.value.details == {"available": 30, "pending": 0, "requested": 31}
    assert ledger_rows() == before
    with pytest.raises(Conflict):  # a member with no balance at all
        spend(ws, members.upsert_member(ws, [{"kind": "external", "value": "new"}]).member, "points", 1, "s2", now)
    assert PointEntry.objects.count() == before[0]


def test_contribution_points_cannot_be_spent_so_tiers_never_fall_by_spending(ws, alice, now):
    earn(ws, alice, "growth", 100, "g", now)
    earn(ws, alice, "points", 100, "p", now)
    with pytest.raises(ValidationError) as exc:
        spend(ws, alice, "growth", 10, "s", now)
    assert exc.value.code == "not_spendable"
    spend(ws, alice, "points", 100, "s", now)
    assert bal(ws, alice, "growth") == (100, 0)
    assert queries.balance(ws, alice.pk, "growth").lifetime_earned == 100


def test_replaying_a_spend_returns_it_even_when_the_balance_is_gone(ws, alice, now):
    earn(ws, alice, "points", 10, "e", now)
    first = spend(ws, alice, "points", 10, "s", now)
    assert spend(ws, alice, "points", 10, "s", now).pk == first.pk
    assert bal(ws, alice, "points") == (0, 0)
    assert PointEntry.objects.filter(kind="spend").count() == 1


# ---------------------------------------------------------------------------------------------
# expiry and pending points


def test_expired_lots_are_never_spent(ws, alice, now):
    loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 10}, actor="t")
    earn(ws, alice, "d", 70, "old", now)
    fresh = earn(ws, alice, "d", 20, "fresh", now + 5 * DAY)
    later = now + 11 * DAY
    with pytest.raises(Conflict) as exc:
        spend(ws, alice, "d", 21, "s1", later)
    assert exc.value.details["available"] == 20
    entry = spend(ws, alice, "d", 20, "s2", later)
    assert [(d.lot.entry_id, d.amount) for d in queries.entry_draws(ws, entry.pk)] == [(fresh.pk, 20)]
    expired = PointEntry.objects.get(kind="expire")
    assert (expired.amount, expired.actor, expired.at) == (-70, "system", later)
    assert_clean(ws)


def test_expire_due_is_idempotent(ws, alice, bob, now):
    loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 10}, actor="t")
    earn(ws, alice, "d", 70, "a", now)
    earn(ws, bob, "d", 30, "b", now)
    earn(ws, bob, "d", 5, "b2", now + 5 * DAY)
    assert loyalty.expire_due(ws, now + 9 * DAY) == loyalty.ExpiryRun(0, 0, 0)
    run = loyalty.expire_due(ws, now + 10 * DAY)
    assert run == loyalty.ExpiryRun(balances=2, expired=100, released=0)
    assert loyalty.expire_due(ws, now + 10 * DAY) == loyalty.ExpiryRun(0, 0, 0)
    assert bal(ws, alice, "d") == (0, 0) and bal(ws, bob, "d") == (5, 0)
    assert PointBalance.objects.get(member=bob, point_type__code="d").next_change_at == now + 15 * DAY
    assert PointEntry.objects.filter(kind="expire").count() == 2
    assert_clean(ws)


def test_pending_points_wait_then_become_spendable(ws, alice, coins, now):
    loyalty.save_point_type(ws, "coins", {"pending_days": 7}, actor="t")
    earn(ws, alice, "coins", 40, "e", now)
    assert bal(ws, alice, "coins") == (0, 40)
    with pytest.raises(Conflict) as exc:
        spend(ws, alice, "coins", 1, "s", now + 6 * DAY)
    assert exc.value.details["pending"] == 40
    assert loyalty.expire_due(ws, now + 7 * DAY) == loyalty.ExpiryRun(balances=1, expired=0, released=40)
    assert bal(ws, alice, "coins") == (40, 0)
    spend(ws, alice, "coins", 40, "s", now + 7 * DAY)
    assert_clean(ws)


def test_a_spend_releases_due_pending_points_itself(ws, alice, coins, now):
    loyalty.save_point_type(ws, "coins", {"pending_days": 3}, actor="t")
    earn(ws, alice, "coins", 40, "e", now)
    spend(ws, alice, "coins", 25, "s", now + 3 * DAY)  # no expire_due run in between
    assert bal(ws, alice, "coins") == (15, 0)
    assert_clean(ws)


def test_backdated_awards_count_pending_and_expiry_from_when_they_were_earned(ws, alice, coins, now):
    loyalty.save_point_type(ws, "coins", {"pending_days": 7, "expiry_policy": "days", "expiry_period": 30}, actor="t")
    e = earn(ws, alice, "coins", 10, "old", now, earned_at=now - 10 * DAY)
    lot = PointLot.objects.get(entry=e)
    assert (lot.available_at, lot.released, lot.expires_at) == (now - 3 * DAY, True, now + 20 * DAY)
    future = earn(ws, alice, "coins", 10, "future", now, earned_at=now + 10 * DAY)  # never later than now
    assert PointLot.objects.get(entry=future).earned_at == now


# ---------------------------------------------------------------------------------------------
# reverse


def test_reversing_an_untouched_award_takes_it_all_back(ws, alice, now):
    e = earn(ws, alice, "points", 100, "order", now)
    r = loyalty.reverse(ws, entry_id=e.pk, reason="refund", actor="t", now=now)
    assert (r.kind, r.amount, r.shortfall, r.related_id, r.idempotency_key) == ("reverse", -100, 0, e.pk, f"reverse:{e.pk}")
    assert bal(ws, alice, "points") == (0, 0)
    assert queries.balance(ws, alice.pk, "points").lifetime_earned == 0
    assert loyalty.reverse(ws, entry_id=e.pk, reason="refund", actor="t", now=now).pk == r.pk  # replay
    with pytest.raises(Conflict) as exc:
        loyalty.reverse(ws, entry_id=e.pk, reason="again", actor="t", idempotency_key="other", now=now)
    assert exc.value.code == "already_reversed"
    assert_clean(ws)


def test_a_refund_inside_the_pending_window_cancels_the_award(ws, alice, coins, now):
    loyalty.save_point_type(ws, "coins", {"pending_days": 7}, actor="t")
    e = earn(ws, alice, "coins", 80, "order", now)
    loyalty.reverse(ws, entry_id=e.pk, reason="refund", actor="t", now=now + 2 * DAY)
    assert bal(ws, alice, "coins") == (0, 0)
    assert PointLot.objects.get(entry=e).remaining == 0
    loyalty.expire_due(ws, now + 8 * DAY)
    assert bal(ws, alice, "coins") == (0, 0)
    assert_clean(ws)


def test_reversing_a_partly_spent_award_takes_the_rest_from_the_balance_and_records_the_shortfall(ws, alice, now):
    first = earn(ws, alice, "points", 100, "order-1", now)
    spend(ws, alice, "points", 70, "coffee", now)  # drawn from order-1's lot (the only one)
    earn(ws, alice, "points", 50, "order-2", now)
    r = loyalty.reverse(ws, point_type="points", earn_key="order-1", reason="refund", actor="t", now=now)
    # 30 left in the lot + 50 from order-2's lot; the other 20 are gone (spent) and cannot be taken
    assert (r.amount, r.shortfall) == (-80, 20)
    assert sorted(d.amount for d in queries.entry_draws(ws, r.pk)) == [30, 50]
    assert bal(ws, alice, "points") == (0, 0)
    assert queries.balance(ws, alice.pk, "points").lifetime_earned == 50
    with pytest.raises(Conflict):
        loyalty.reverse(ws, entry_id=first.pk, reason="refund", actor="t", idempotency_key="x", now=now)
    assert_clean(ws)


def test_partial_reversals_add_up_to_the_award(ws, alice, now):
    e = earn(ws, alice, "points", 100, "order", now)
    loyalty.reverse(ws, entry_id=e.pk, amount=40, reason="part", actor="t", idempotency_key="r1", now=now)
    last = loyalty.reverse(ws, entry_id=e.pk, amount=100, reason="rest", actor="t", idempotency_key="r2", now=now)
    assert last.amount == -60
    assert bal(ws, alice, "points") == (0, 0)
    with pytest.raises(ValidationError):
        loyalty.reverse(ws, entry_id=e.pk, amount=-1, reason="x", actor="t", idempotency_key="r3", now=now)


def test_expired_points_of_an_award_are_not_taken_again(ws, alice, now):
    loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 10}, actor="t")
    e = earn(ws, alice, "d", 100, "order", now)
    earn(ws, alice, "d", 100, "later", now + 9 * DAY)
    loyalty.expire_due(ws, now + 10 * DAY)
    with pytest.raises(Conflict) as exc:
        loyalty.reverse(ws, entry_id=e.pk, reason="refund", actor="t", now=now + 11 * DAY)
    assert exc.value.code == "already_reversed"
    assert bal(ws, alice, "d") == (100, 0)


def test_only_awards_can_be_reversed(ws, other_ws, alice, now):
    earn(ws, alice, "points", 10, "e", now)
    s = spend(ws, alice, "points", 5, "s", now)
    with pytest.raises(ValidationError) as exc:
        loyalty.reverse(ws, entry_id=s.pk, reason="x", actor="t", now=now)
    assert exc.value.code == "not_reversible"
    with pytest.raises(NotFound):
        loyalty.reverse(other_ws, entry_id=s.pk, reason="x", actor="t", now=now)
    with pytest.raises(NotFound):
        loyalty.reverse(ws, point_type="points", earn_key="nope", reason="x", actor="t", now=now)
    with pytest.raises(ValidationError):
        loyalty.reverse(ws, reason="x", actor="t", now=now)


# ---------------------------------------------------------------------------------------------
# transfer and adjust


def test_transfer_moves_lots_with_their_expiry(ws, alice, bob, coins, now):
    loyalty.save_point_type(ws, "coins", {"expiry_policy": "days", "expiry_period": 30}, actor="t")
    earn(ws, alice, "coins", 30, "a1", now - 20 * DAY)
    earn(ws, alice, "coins", 30, "a2", now)
    out = loyalty.transfer(ws, "coins", alice, bob.pk, 40, reason="gift", idempotency_key="t1", actor="t", now=now)
    incoming = PointEntry.objects.get(kind=EntryKind.TRANSFER_IN)
    assert (out.amount, incoming.amount, incoming.member_id, incoming.related_id) == (-40, 40, bob.pk, out.pk)
    assert sorted((lot.remaining, lot.expires_at) for lot in PointLot.objects.filter(member=bob)) == [
        (10, now + 30 * DAY), (30, now + 10 * DAY)]
    assert bal(ws, alice, "coins") == (20, 0) and bal(ws, bob, "coins") == (40, 0)
    assert queries.balance(ws, bob.pk, "coins").lifetime_earned == 0
    again = loyalty.transfer(ws, "coins", alice, bob, 40, reason="gift", idempotency_key="t1", actor="t", now=now)
    assert again.pk == out.pk and PointEntry.objects.filter(kind="transfer_in").count() == 1
    assert_clean(ws)


def test_transfer_refusals(ws, other_ws, alice, bob, coins, now):
    earn(ws, alice, "points", 10, "p", now)
    earn(ws, alice, "coins", 10, "c", now)
    stranger = members.upsert_member(other_ws, [{"kind": "external", "value": "s"}]).member
    before = ledger_rows()
    cases = [
        (lambda: loyalty.transfer(ws, "points", alice, bob, 5, reason="x", idempotency_key="t", actor="t"), "not_transferable"),
        (lambda: loyalty.transfer(ws, "growth", alice, bob, 5, reason="x", idempotency_key="t", actor="t"), "not_transferable"),
        (lambda: loyalty.transfer(ws, "coins", alice, alice, 5, reason="x", idempotency_key="t", actor="t"), "same_member"),
        (lambda: loyalty.transfer(ws, "coins", alice, bob, 11, reason="x", idempotency_key="t", actor="t"), "insufficient_points"),
        (lambda: loyalty.transfer(ws, "coins", alice, stranger, 5, reason="x", idempotency_key="t", actor="t"), "unknown_member"),
        (lambda: loyalty.transfer(ws, "coins", alice, bob, 0, reason="x", idempotency_key="t", actor="t"), "invalid_amount"),
    ]
    for call, code in cases:
        with pytest.raises((ValidationError, Conflict, NotFound)) as exc:
            call()
        assert exc.value.code == code
    assert ledger_rows() == before


def test_adjust_is_audited_and_needs_a_reason(ws, alice, coins, now):
    loyalty.save_point_type(ws, "coins", {"pending_days": 7}, actor="t")
    up = loyalty.adjust(ws, alice, "coins", 25, reason="goodwill", idempotency_key="a1", actor="user:1", now=now)
    assert bal(ws, alice, "coins") == (25, 0)  # a correction is available at once
    down = loyalty.adjust(ws, alice, "coins", "-5", reason="typo", idempotency_key="a2", actor="user:1", now=now)
    assert (up.amount, down.amount) == (25, -5)
    assert bal(ws, alice, "coins") == (20, 0)
    audits = list(AuditEntry.objects.filter(action="points.adjust").order_by("pk").values_list("actor", "data"))
    assert audits == [("user:1", {"member": alice.pk, "point_type": "coins", "amount": 25, "reason": "goodwill"}),
                      ("user:1", {"member": alice.pk, "point_type": "coins", "amount": -5, "reason": "typo"})]
    assert loyalty.adjust(ws, alice, "coins", 25, reason="goodwill", idempotency_key="a1", actor="user:1").pk == up.pk
    assert AuditEntry.objects.filter(action="points.adjust").count() == 2
    with pytest.raises(ValidationError) as exc:
        loyalty.adjust(ws, alice, "coins", 5, reason="  ", idempotency_key="a3", actor="user:1")
    assert exc.value.code == "reason_required"
    with pytest.raises(ValidationError):
        loyalty.adjust(ws, alice, "coins", 0, reason="zero", idempotency_key="a3", actor="user:1")
    with pytest.raises(Conflict):
        loyalty.adjust(ws, alice, "coins", -21, reason="too much", idempotency_key="a3", actor="user:1", now=now)
    assert_clean(ws)


def test_history_and_expiring_queries(ws, alice, now):
    loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 20}, actor="t")
    earn(ws, alice, "d", 10, "a", now - 15 * DAY)
    earn(ws, alice, "d", 20, "b", now)
    spend(ws, alice, "d", 4, "s", now)
    assert [e.kind for e in queries.history(ws, alice.pk, "d")] == ["spend", "earn", "earn"]
    assert [e.kind for e in queries.history(ws, alice.pk, before_id=queries.history(ws, alice.pk)[0].pk)] == ["earn", "earn"]
    assert queries.expiring(ws, alice.pk, "d", now=now, within=10 * DAY) == 6
    assert {b.point_type: b.available for b in queries.balances(ws, alice.pk)} == {"points": 0, "growth": 0, "d": 26}


def test_a_draw_the_lot_cannot_cover_is_refused_by_the_database_and_nothing_changes(ws, alice, coins, now, monkeypatch):
    first = earn(ws, alice, "coins", 5, "a", now)
    earn(ws, alice, "coins", 5, "b", now)
    before = ledger_rows()
    first_lot = PointLot.objects.get(entry=first).pk

    def greedy(rows, need, plan):  # claims all 10 points from the first lot, which holds 5
        plan.append((loyalty._Lot(first_lot, 5, True, now, None), need))
        return 0

    monkeypatch.setattr(loyalty, "_take", greedy)
    monkeypatch.setattr(loyalty, "_pg_spend", lambda *a, **k: None)  # PostgreSQL: the general path, with that plan
    with pytest.raises(Conflict) as exc:
        spend(ws, alice, "coins", 10, "s", now)
    assert exc.value.code == "ledger_inconsistent"
    assert ledger_rows() == before
    assert_clean(ws)


def test_a_spend_over_more_lots_than_one_read_takes_them_in_expiry_order(ws, alice, now):
    """More lots than the one-statement spend reads at once (``PLAN_CHUNK``): the general path
    reads on, and the draws still follow the expiry order."""
    loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 100}, actor="t")
    n = loyalty.PLAN_CHUNK + 4
    lots = [loyalty.earn(ws, alice, "d", 3, reason="e", idempotency_key=f"e{i}", actor="t", now=now,
                         earned_at=now - (n - i) * DAY) for i in range(n)]
    entry = loyalty.spend(ws, alice, "d", 3 * (n - 1) + 1, reason="s", idempotency_key="s", actor="t", now=now)
    draws = sorted((d.lot.entry_id, d.amount) for d in queries.entry_draws(ws, entry.pk))
    assert draws == [(e.pk, 3) for e in lots[:-1]] + [(lots[-1].pk, 1)]
    assert queries.balance(ws, alice.pk, "d").available == 2
    assert_clean(ws)
