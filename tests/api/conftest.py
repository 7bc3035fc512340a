from __future__ import annotations

import pytest
from django.core.cache import cache

from .helpers import ApiClient, make_client


@pytest.fixture(autouse=True)
def _clear_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def api(ws) -> ApiClient:
    """Owner key of workspace ``ws``."""
    return make_client(ws, "owner")


@pytest.fixture
def anon(db) -> ApiClient:
    return ApiClient(None, None)
