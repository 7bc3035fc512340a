"""The ledger check (``services.verify`` and ``shequn_loyalty_verify``), the database backstops, the
periodic expiry task, and workspace isolation."""

from __future__ import annotations

import datetime as dt
import io
import json
from unittest import mock

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.db.models import F

from shequn.core import services as core
from shequn.core.tasks import PERIODIC_REGISTRY
from shequn.loyalty import services as loyalty
from shequn.loyalty import tasks
from shequn.loyalty.models import PointBalance, PointEntry, PointLot, PointLotDraw
from shequn.members import services as members

DAY = dt.timedelta(days=1)


@pytest.fixture
def ledger(ws, alice, bob, coins, now):
    loyalty.earn(ws, alice, "coins", 100, reason="e", idempotency_key="e1", actor="t", now=now)
    loyalty.earn(ws, bob, "points", 40, reason="e", idempotency_key="e2", actor="t", now=now)
    loyalty.spend(ws, alice, "coins", 30, reason="s", idempotency_key="s1", actor="t", now=now)
    loyalty.transfer(ws, "coins", alice, bob, 20, reason="gift", idempotency_key="t1", actor="t", now=now)
    return ws


def run_verify(slug, *extra):
    from django.utils import translation

    out = io.StringIO()
    with translation.override("en"):  # the assertions read the English messages
        call_command("shequn_loyalty_verify", "--workspace", slug, *extra, stdout=out)
    return out.getvalue()


def test_a_clean_ledger_passes(ledger):
    report = loyalty.verify(ledger)
    assert report.ok and (report.balances, report.entries, report.lots) == (3, 5, 3)
    assert "consistent" in run_verify("tea")
    assert json.loads(run_verify("tea", "--json"))["ok"] is True


def test_a_balance_that_disagrees_with_its_entries_is_reported(ledger, alice):
    PointBalance.objects.filter(member=alice, point_type__code="coins").update(available=F("available") + 5)
    checks = sorted(d.check for d in loyalty.verify(ledger).discrepancies)
    assert checks == ["available_lots", "entries_sum"]
    with pytest.raises(CommandError) as exc:
        run_verify("tea")
    assert exc.value.returncode == 1


def test_lots_and_draws_that_disagree_are_reported(ledger, alice):
    PointLotDraw.objects.filter(entry__kind="spend").delete()
    checks = sorted(d.check for d in loyalty.verify(ledger).discrepancies)
    assert checks == ["draws", "lot_draws"]
    PointLot.objects.filter(member=alice).update(remaining=F("remaining") - 1)
    assert "available_lots" in {d.check for d in loyalty.verify(ledger).discrepancies}


def test_spending_an_expired_or_pending_lot_is_reported(ledger, alice, now):
    lot = PointLot.objects.get(member=alice)
    PointLot.objects.filter(pk=lot.pk).update(expires_at=now - DAY)
    assert {d.check for d in loyalty.verify(ledger).discrepancies} == {"expired_lot_drawn"}
    PointLot.objects.filter(pk=lot.pk).update(expires_at=None, available_at=now + DAY)
    assert {d.check for d in loyalty.verify(ledger).discrepancies} == {"pending_lot_drawn"}


def test_lifetime_and_orphans_are_checked(ledger, bob):
    PointBalance.objects.filter(member=bob, point_type__code="points").update(lifetime_earned=1)
    assert [d.check for d in loyalty.verify(ledger).discrepancies] == ["lifetime"]
    PointBalance.objects.filter(member=bob, point_type__code="points").delete()
    assert sorted(d.check for d in loyalty.verify(ledger).discrepancies) == ["orphan", "orphan"]


def test_the_database_refuses_negative_balances_and_lots(ledger, alice):
    with pytest.raises(IntegrityError), transaction.atomic():
        PointBalance.objects.filter(member=alice).update(available=-1)
    with pytest.raises(IntegrityError), transaction.atomic():
        PointLot.objects.filter(member=alice).update(remaining=-1)
    with pytest.raises(IntegrityError), transaction.atomic():
        PointEntry.objects.filter(kind="spend").update(amount=5)
    assert loyalty.verify(ledger).ok


def test_unknown_workspace(db):
    with pytest.raises(CommandError):
        run_verify("nope")


def test_one_workspace_does_not_see_or_touch_another(ledger, other_ws, alice, now):
    intruder = members.upsert_member(other_ws, [{"kind": "external", "value": "x"}]).member
    loyalty.earn(other_ws, intruder, "points", 5, reason="e", idempotency_key="e1", actor="t", now=now)
    assert loyalty.verify(other_ws).balances == 1 and loyalty.verify(ledger).balances == 3
    entry = PointEntry.objects.filter(workspace=ledger, kind="earn").first()
    with pytest.raises(Exception) as exc:
        loyalty.reverse(other_ws, entry_id=entry.pk, reason="x", actor="t")
    assert getattr(exc.value, "code", "") == "unknown_entry"
    with pytest.raises(Exception) as exc:
        loyalty.spend(other_ws, alice, "points", 1, reason="x", idempotency_key="x", actor="t")
    assert getattr(exc.value, "code", "") == "unknown_member"


def test_deleting_a_workspace_deletes_its_ledger(ledger):
    core.delete_workspace(ledger)
    assert PointEntry.objects.count() == PointLot.objects.count() == PointBalance.objects.count() == 0


def test_the_periodic_task_expires_and_releases_everywhere(ws, other_ws, alice, now):
    loyalty.save_point_type(ws, "d", {"name": "d", "expiry_policy": "days", "expiry_period": 10}, actor="t")
    loyalty.save_point_type(other_ws, "p", {"name": "p", "pending_days": 3}, actor="t")
    loyalty.earn(ws, alice, "d", 10, reason="e", idempotency_key="e", actor="t", now=now)
    other = members.upsert_member(other_ws, [{"kind": "external", "value": "o"}]).member
    loyalty.earn(other_ws, other, "p", 7, reason="e", idempotency_key="e", actor="t", now=now)
    assert PERIODIC_REGISTRY["loyalty.expire_due"].task_path == "shequn.loyalty.tasks.expire_due_all"
    with mock.patch("shequn.core.clock.now", return_value=now + 11 * DAY):
        assert tasks.expire_due_all.call() == {"workspaces": 2, "balances": 2, "expired": 10, "released": 7}
        assert tasks.expire_due_all.call() == {"workspaces": 0, "balances": 0, "expired": 0, "released": 0}
    assert loyalty.verify(ws).ok and loyalty.verify(other_ws).ok
