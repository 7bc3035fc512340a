from __future__ import annotations

import datetime as dt

import pytest

from shequn.loyalty import services as loyalty
from shequn.members import services as members


@pytest.fixture
def now():
    """10:00 in Shanghai on 1 June 2026."""
    return dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
def alice(ws):
    return members.upsert_member(ws, [{"kind": "external", "value": "alice"}], {"display_name": "Alice"}).member


@pytest.fixture
def bob(ws):
    return members.upsert_member(ws, [{"kind": "external", "value": "bob"}], {"display_name": "Bob"}).member


@pytest.fixture
def coins(ws):
    """A spendable currency that never expires, transferable, no waiting time."""
    return loyalty.save_point_type(ws, "coins", {"name": "金币", "kind": "currency", "transferable": True}, actor="test")


# The console's staff of every role (tests/console/conftest.py), for the console and browser tests.
from tests.console.conftest import _fast_passwords, agent, clerk, operator, owner, staff  # noqa: E402, F401
