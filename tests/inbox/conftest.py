"""Inbox fixtures: agents of workspace ``ws`` ("tea"), a way to make WeChat-like inbound messages
arrive through the one write path, and a record of what the inbox asked the outbound service to send."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import pytest

from shequn.core import services as core
from shequn.core.clock import now
from shequn.inbox import services
from shequn.interactions import services as interactions

PASSWORD = "inbox-test-pw-1"  # noqa: S105
APP_ID = "wxinboxtest0001"
_ids = itertools.count(1)


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Sent:
    calls: list[dict[str, Any]] = field(default_factory=list)

    def purposes(self) -> list[str]:
        return [c["purpose"] for c in self.calls]


def _outbound_ready() -> bool:
    try:
        from shequn.outbound import services as outbound
    except ImportError:
        return False
    return hasattr(outbound, "send_text")


@pytest.fixture(autouse=True)
def sent(monkeypatch) -> Sent:
    """Every send the inbox makes, recorded; passed on to shequn.outbound when it exists."""
    record = Sent()
    real = services._send
    live = _outbound_ready()

    def send(workspace, member_id, text, *, purpose, actor, key, channel=""):
        record.calls.append({"member_id": member_id, "text": text, "purpose": purpose, "actor": actor, "key": key,
                             "channel": channel})
        return real(workspace, member_id, text, purpose=purpose, actor=actor, key=key, channel=channel) if live else None

    monkeypatch.setattr(services, "_send", send)
    return record


@pytest.fixture
def agents(ws) -> dict[str, Any]:
    users = {}
    for name, role in (("alice", "agent"), ("bob", "agent"), ("olga", "operator"), ("carl", "clerk")):
        user = core.ensure_user(name, PASSWORD)
        core.add_staff(ws, user, role)
        users[name] = user
    return users


def inbound(ws, *, openid: str = "o-wang", text: str = "你好，我的外卖少了一杯", bot_outcome: str | None = None,
            at=None, touchpoint: str | None = None, channel: str = "wechat", external_id: str | None = None):
    """Store an inbound WeChat-like text message through interactions.ingest (the one write path)."""
    props: dict[str, Any] = {"msg_type": "text", "content": text}
    if bot_outcome is not None:
        props["bot_outcome"] = bot_outcome
    event = {"identities": [{"kind": "wechat_openid", "namespace": APP_ID, "value": openid}], "type": "message",
             "channel": channel, "direction": "in", "occurred_at": at or now(), "source": f"wechat:{APP_ID}",
             "external_id": external_id or f"msg-{next(_ids)}", "properties": props}
    if touchpoint:
        event["touchpoint"] = touchpoint
    return interactions.ingest(ws, event)
