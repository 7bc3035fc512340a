from __future__ import annotations

import datetime as dt
import os

import pytest

from shequn.core import services as core


@pytest.fixture
def ws(db):
    return core.create_workspace("tea", "茶语 Tea House")


@pytest.fixture
def other_ws(db):
    return core.create_workspace("phone", "Other Brand")


@pytest.fixture
def t0():
    return dt.datetime(2026, 6, 1, 10, 0, tzinfo=dt.UTC)


def pytest_collection_modifyitems(config, items):
    pg = os.environ.get("SHEQUN_TEST_POSTGRES_URL") and os.environ.get("DATABASE_URL", "").startswith("postgres")
    skip_pg = pytest.mark.skip(reason="needs PostgreSQL (run with DATABASE_URL=postgres://… and SHEQUN_TEST_POSTGRES_URL)")
    for item in items:
        if "postgres" in item.keywords and not pg:
            item.add_marker(skip_pg)


from tests.browser import browser  # noqa: E402,F401 - the Chromium fixture for every browser test
