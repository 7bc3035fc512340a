"""Shared pieces of the browser tests: Debian's Chromium driven by Playwright (never a downloaded
browser), one browser per test module, and full-page screenshots under test-artifacts/screenshots/.

The ``browser`` fixture is registered for the whole suite in tests/conftest.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("SHEQUN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing and SHEQUN_REQUIRE_BROWSER=1")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are still
    # plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def shot(pg: Any, name: str) -> None:
    """A full-page screenshot ``test-artifacts/screenshots/<name>.png``."""
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def image_width(pg: Any, selector: str) -> int:
    """The natural width of the first image matching ``selector`` once it has loaded (0 if it failed).

    Reading ``naturalWidth`` straight after the element appears races the image's own request (and a
    ``loading="lazy"`` image starts that request only after layout), so wait for ``complete`` first."""
    pg.wait_for_function(
        "sel => { const i = document.querySelector(sel); return !!i && i.complete; }", arg=selector)
    return int(pg.evaluate("sel => document.querySelector(sel).naturalWidth", selector))
