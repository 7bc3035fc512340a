from __future__ import annotations

import pytest


@pytest.fixture
def account():
    """A connected WeChat account (safe mode) in workspace ``prep``: a model with JSON, text and
    foreign-key columns for the statement helpers' tests."""
    from shequn.channels import services as channels
    from shequn.core import services as core

    ws = core.create_workspace("prep", "Prepared")
    acc, _ = channels.connect_account(ws, "wx5b1e0c3f9a7d2e44", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "tok123",
                                      "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx", "safe", "test")
    return acc
