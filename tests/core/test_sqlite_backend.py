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
    call_command("shequn_worker", "--batch", "--no-scheduler", stdout=StringIO())
    assert base.autocheckpoint_pages() == base.WORKER_PAGES
