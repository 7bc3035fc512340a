"""Run a function in N real threads that start at the same instant, each with its own database
connection (closed at the end), and return their results; any exception fails the caller."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


def run_threads(n: int, fn: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []
    results: list[Any] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            results.append(fn(i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results
