"""The embedded database's write lock: taken within a couple of milliseconds of being released (not
after SQLite's own sleeps of up to 100 ms), and still refused with "database is locked" after the
configured timeout."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from django.db import OperationalError

from shequn.core.sqlite.base import DatabaseWrapper


def _wrapper(path: Path, timeout: float) -> DatabaseWrapper:
    return DatabaseWrapper({
        "ENGINE": "shequn.core.sqlite", "NAME": str(path), "USER": "", "PASSWORD": "", "HOST": "", "PORT": "",
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": timeout}, "TIME_ZONE": None, "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False, "AUTOCOMMIT": True, "ATOMIC_REQUESTS": False, "TEST": {}}, alias="lock-test")


@pytest.fixture(autouse=True)
def _own_database(django_db_blocker):
    """These tests open their own database files, not the test database."""
    with django_db_blocker.unblock():
        yield


def _holder(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    return holder


def test_the_write_lock_is_taken_promptly_once_released(tmp_path):
    path = tmp_path / "db.sqlite3"
    holder = _holder(path)
    released: list[float] = []

    def release() -> None:
        time.sleep(0.24)  # SQLite's own handler would next try at 0.253 s, then 0.328 s
        holder.execute("COMMIT")
        released.append(time.monotonic())

    db = _wrapper(path, timeout=5)
    db.ensure_connection()
    thread = threading.Thread(target=release)
    thread.start()
    db._start_transaction_under_autocommit()
    got = time.monotonic()
    thread.join()
    db.connection.execute("INSERT INTO t VALUES (2)")
    db.connection.execute("COMMIT")
    assert got - released[0] < 0.01, f"took the lock {1000 * (got - released[0]):.1f} ms after its release"
    # the busy timeout is back for the statements that follow
    assert db.connection.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert [r[0] for r in db.connection.execute("SELECT x FROM t ORDER BY x")] == [1, 2]
    db.close()
    holder.close()


def test_a_lock_held_past_the_timeout_is_still_an_error(tmp_path):
    path = tmp_path / "db.sqlite3"
    holder = _holder(path)
    db = _wrapper(path, timeout=0.2)
    db.ensure_connection()
    start = time.monotonic()
    with pytest.raises(OperationalError, match="locked"):
        db._start_transaction_under_autocommit()
    assert 0.2 <= time.monotonic() - start < 1.0
    assert db.connection.execute("PRAGMA busy_timeout").fetchone()[0] == 200
    db.close()
    holder.execute("ROLLBACK")
    holder.close()


def _stamp(path: Path) -> float:
    from shequn.core.sqlite import base

    data = Path(f"{path}-waiting").read_bytes()
    return base._STAMP.unpack(data)[0] if len(data) == base._STAMP.size else 0.0


def test_a_request_that_waits_for_the_lock_marks_it_and_clears_the_mark_once_in(tmp_path, monkeypatch):
    from shequn.core.sqlite import base

    monkeypatch.setattr(base, "_yields", False)
    path = tmp_path / "db.sqlite3"
    holder = _holder(path)
    seen: list[float] = []

    def release() -> None:
        time.sleep(0.05)
        seen.append(_stamp(path))  # marked while waiting
        holder.execute("COMMIT")

    db = _wrapper(path, timeout=5)
    db.ensure_connection()
    thread = threading.Thread(target=release)
    thread.start()
    db._start_transaction_under_autocommit()
    thread.join()
    assert 0 <= time.time() - seen[0] < 1.0, seen
    assert _stamp(path) == 0.0  # in: the mark is cleared
    db.connection.execute("COMMIT")
    db.close()
    holder.close()


def test_a_worker_lets_a_waiting_request_in_before_its_next_transaction(tmp_path, monkeypatch):
    from shequn.core.sqlite import base

    monkeypatch.setattr(base, "_yields", True)
    path = tmp_path / "db.sqlite3"
    _holder(path).execute("ROLLBACK")
    worker = _wrapper(path, timeout=5)
    worker.ensure_connection()
    naps: list[float] = []
    monkeypatch.setattr(base.time, "sleep", naps.append)

    def begin_and_commit() -> None:
        worker._start_transaction_under_autocommit()
        worker.connection.execute("COMMIT")

    begin_and_commit()  # no mark: no pause
    Path(f"{path}-waiting").write_bytes(base._STAMP.pack(time.time()))
    begin_and_commit()  # a request is waiting: the worker pauses first
    Path(f"{path}-waiting").write_bytes(base._STAMP.pack(time.time() - 10 * base.FRESH))
    begin_and_commit()  # a stale mark (that request got in or gave up): no pause
    assert naps == [base.YIELD_GAP] and base.YIELD_GAP > base.MAX_SLEEP
    worker.close()


def test_an_in_memory_database_has_no_waiting_mark():
    from shequn.core.sqlite import base

    assert base._mark_fd(":memory:") is None
    assert base._mark_fd("file:memorydb_default?mode=memory&cache=shared") is None


def test_requests_leave_checkpoints_to_the_worker(tmp_path, monkeypatch):
    """A connection of a request-serving process checkpoints the log only past the backstop; once a
    process has become the worker (take_checkpoints), its new connections checkpoint at SQLite's usual
    length, after their own commits."""
    from shequn.core.sqlite import base

    monkeypatch.setattr(base, "_autocheckpoint_pages", base.BACKSTOP_PAGES)
    web = _wrapper(tmp_path / "db.sqlite3", timeout=5)
    web.ensure_connection()
    assert web.connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == base.BACKSTOP_PAGES
    base.take_checkpoints()
    worker = _wrapper(tmp_path / "db.sqlite3", timeout=5)
    worker.ensure_connection()
    assert worker.connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == base.WORKER_PAGES == 1000
    assert web.connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == base.BACKSTOP_PAGES
    web.close()
    worker.close()


@pytest.mark.django_db(transaction=True)
def test_the_worker_command_takes_the_checkpoints(monkeypatch):
    from io import StringIO

    from django.core.management import call_command

    from shequn.core.sqlite import base

    monkeypatch.setattr(base, "_autocheckpoint_pages", base.BACKSTOP_PAGES)
    monkeypatch.setattr(base, "_yields", False)
    call_command("shequn_worker", "--batch", "--no-scheduler", stdout=StringIO())
    assert base.autocheckpoint_pages() == base.WORKER_PAGES
    assert base._yields  # and lets waiting requests in
