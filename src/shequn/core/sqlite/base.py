"""Django's SQLite backend, taking the write lock without SQLite's growing sleeps.

Every write transaction starts with ``BEGIN IMMEDIATE`` (settings: ``transaction_mode``), so writers
queue for SQLite's one write lock instead of failing half-way. When the lock is held, SQLite's own
busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100 ms between attempts: a writer
that arrives while another process (the task worker) runs transactions back to back can sleep 100 ms
or more after the lock was already free. On the WeChat endpoint that was the p99.

Here ``BEGIN IMMEDIATE`` is tried with SQLite's busy timeout off and retried after sleeps that start at
0.2 ms and grow to 2 ms, until the configured timeout (``OPTIONS["timeout"]``, seconds) has passed;
then the "database is locked" error is raised as before. Statements inside the transaction, and
writes outside one, keep SQLite's busy timeout as a backstop.

Checkpoints are taken off the request path. In WAL mode the commit that finds the log longer than
``wal_autocheckpoint`` pages copies the log into the database file and syncs it, a few milliseconds
that SQLite charges to whichever request committed last: one WeChat answer in a hundred paid it (the
endpoint's p99). Connections here checkpoint at :data:`BACKSTOP_PAGES` (a bound on the log when no
worker runs); a task worker calls :func:`take_checkpoints` when it starts, so its connections
checkpoint at SQLite's usual 1,000 pages (4 MB) after its own commits — every WeChat message is
recorded by a worker transaction, so the log stays short while requests never pay for it.

Requests go first. A worker draining a backlog runs its write transactions back to back: it takes
the lock again microseconds after releasing it, and a request retrying every 2 ms can miss every
gap for many transactions in a row (the WeChat endpoint's p99 was 100–130 ms with one worker
recording beside it). So a request that finds the lock taken says so in a small file next to the
database (``<name>-waiting``: the time, 8 bytes; no lock, no fsync), and a worker process
(:func:`yield_to_requests`) that finds a fresh mark before it begins a transaction lets
:data:`YIELD_GAP` pass first — longer than the requests' longest sleep, so a waiting one gets in. The
mark costs a request one write when it has to wait, and a worker one read per transaction.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
import time
from typing import Any

from django.db.backends.sqlite3 import base

FIRST_SLEEP = 0.0002
MAX_SLEEP = 0.002

BACKSTOP_PAGES = 10_000
"""Log pages (4 KiB each) after which a connection of a request-serving process checkpoints."""
WORKER_PAGES = 1_000
"""Log pages after which a worker's connection checkpoints (SQLite's default)."""

_autocheckpoint_pages = BACKSTOP_PAGES

YIELD_GAP = 0.003
"""Seconds a worker waits before its next transaction while a request waits for the lock (more than
:data:`MAX_SLEEP`: the request's next attempt falls inside it)."""
FRESH = 0.02
"""A waiting mark older than this is stale (the request got in, or gave up)."""

_yields = False
_marks: dict[str, int] = {}
_marks_lock = threading.Lock()
_STAMP = struct.Struct("<d")


def take_checkpoints() -> None:
    """Make this process the one that checkpoints the log: its connections opened from now on
    checkpoint at :data:`WORKER_PAGES` (called by ``shequn worker`` before it opens any)."""
    global _autocheckpoint_pages
    _autocheckpoint_pages = WORKER_PAGES


def yield_to_requests() -> None:
    """Make this process a worker whose new connections let waiting requests take the write lock
    first (called by ``shequn worker`` before it opens any connection)."""
    global _yields
    _yields = True


def _mark_fd(database: str) -> int | None:
    """The descriptor of the waiting mark of ``database`` (opened once per process), or None for an
    in-memory database or when the file cannot be opened (the worker then never yields)."""
    if not database or database == ":memory:" or database.startswith("file:") or "mode=memory" in database:
        return None
    with _marks_lock:
        fd = _marks.get(database)
        if fd is None:
            try:
                fd = os.open(f"{database}-waiting", os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                return None
            _marks[database] = fd
        return fd


def autocheckpoint_pages() -> int:
    """The log length, in pages, at which this process's new connections checkpoint."""
    return _autocheckpoint_pages


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        self._lock_timeout = float(conn_params.get("timeout", 5.0))
        self._mark = _mark_fd(str(conn_params.get("database", "")))
        self._yields = _yields
        conn = super().get_new_connection(conn_params)
        conn.execute(f"PRAGMA wal_autocheckpoint = {int(_autocheckpoint_pages)}")
        return conn

    def _start_transaction_under_autocommit(self) -> None:
        if self.transaction_mode != "IMMEDIATE":
            super()._start_transaction_under_autocommit()
            return
        raw = self.connection
        timeout = getattr(self, "_lock_timeout", 5.0)
        deadline = time.monotonic() + timeout
        delay = FIRST_SLEEP
        mark = getattr(self, "_mark", None)
        yields = getattr(self, "_yields", False)
        if yields and mark is not None:
            self._let_waiting_requests_in(mark)
        marked = False
        raw.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    raw.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() >= deadline:
                        with self.wrap_database_errors:
                            raise
                    if not yields and mark is not None:
                        os.pwrite(mark, _STAMP.pack(time.time()), 0)
                        marked = True
                    time.sleep(delay)
                    delay = min(delay * 2, MAX_SLEEP)
                    continue
                if marked:  # in: another request still waiting marks again at its next attempt
                    os.pwrite(mark, _STAMP.pack(0.0), 0)
                if self.queries_logged:
                    self.queries_log.append({"sql": "BEGIN IMMEDIATE", "time": "0.000"})
                return
        finally:
            raw.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")

    @staticmethod
    def _let_waiting_requests_in(mark: int) -> None:
        stamp = os.pread(mark, _STAMP.size, 0)
        if len(stamp) == _STAMP.size and 0 <= time.time() - _STAMP.unpack(stamp)[0] < FRESH:
            time.sleep(YIELD_GAP)
