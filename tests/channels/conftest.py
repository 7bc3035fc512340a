"""Fixtures: one account per mode in workspace ``ws``, each with a ``WeChatServer`` pointed at it."""

from __future__ import annotations

import pytest

from .helpers import WeChatServer, connect


@pytest.fixture
def safe(ws):
    account, path = connect(ws, "safe", welcome="欢迎关注茶语!", reply="收到,稍后回复您。")
    return account, WeChatServer(path)


@pytest.fixture
def plain(ws):
    account, path = connect(ws, "plaintext", aes_key="", welcome="欢迎关注茶语!", reply="收到,稍后回复您。")
    return account, WeChatServer(path)


@pytest.fixture
def compatible(ws):
    account, path = connect(ws, "compatible", welcome="欢迎关注茶语!", reply="收到,稍后回复您。")
    return account, WeChatServer(path)
