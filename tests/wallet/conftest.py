from __future__ import annotations

import datetime as dt

import pytest

from shequn.members import services as members


@pytest.fixture
def now():
    return dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
def alice(ws):
    return members.upsert_member(ws, [{"kind": "external", "value": "alice"}], {"display_name": "Alice"}).member


@pytest.fixture
def bob(ws):
    return members.upsert_member(ws, [{"kind": "external", "value": "bob"}], {"display_name": "Bob"}).member
