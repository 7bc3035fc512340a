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
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from django.db.backends.sqlite3 import base

FIRST_SLEEP = 0.0002
MAX_SLEEP = 0.002


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        self._lock_timeout = float(conn_params.get("timeout", 5.0))
        return super().get_new_connection(conn_params)

    def _start_transaction_under_autocommit(self) -> None:
        if self.transaction_mode != "IMMEDIATE":
            super()._start_transaction_under_autocommit()
            return
        raw = self.connection
        timeout = getattr(self, "_lock_timeout", 5.0)
        deadline = time.monotonic() + timeout
        delay = FIRST_SLEEP
        raw.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    raw.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() >= deadline:
                        with self.wrap_database_errors:
                            raise
                    time.sleep(delay)
                    delay = min(delay * 2, MAX_SLEEP)
                    continue
                if self.queries_logged:
                    self.queries_log.append({"sql": "BEGIN IMMEDIATE", "time": "0.000"})
                return
        finally:
            raw.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
