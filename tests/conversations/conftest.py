"""Fixtures: a factory for valid rules."""

from __future__ import annotations

from itertools import count

import pytest

from shequn.conversations import services

_names = count(1)


def rule_data(**overrides):
    data = {"name": f"rule {next(_names)}", "match_type": "contains", "patterns": ["积分"],
            "reply": "您的积分请在会员中心查看。"}
    data.update(overrides)
    return data


@pytest.fixture
def make_rule():
    def make(ws, **overrides):
        return services.create_rule(ws, rule_data(**overrides), actor="test")
    return make
