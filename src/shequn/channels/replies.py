"""What the account answers to a message, on the fast path (inside WeChat's 5-second window).

Everything that decides a passive reply plugs in here: :func:`compute_reply` is the one function the
endpoint calls. It runs inside the transaction that records the message, and its answer is stored
with that record so that WeChat's retries get the same reply. It must be quick, make no network
call, and write nothing but the member's menu session (``conversations.MenuSession``), which is
written in that same transaction so that a retry — answered from the stored reply — sees the state
its first delivery left (ADR 0005, ADR 0014)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from shequn.conversations import services as conversations

from .models import WeChatAccount
from .wechat import WeChatMessage, render_text_reply

TEXT = "text"


@dataclass(frozen=True)
class Reply:
    """A passive reply. ``kind`` is the WeChat MsgType of the reply (only ``text`` for now);
    ``rule_id`` the keyword auto-reply rule that gave it, if one did; ``bot_outcome`` whether the bot
    answered the member's text (``"answered"``) or a person must take over (``"handoff"``), None when
    the message was not a text the bot reads; ``props`` further interaction properties that say what
    answered (incident, menu, node)."""

    kind: str
    content: str
    rule_id: int | None = None
    bot_outcome: str | None = None
    props: tuple[tuple[str, Any], ...] = ()


def compute_reply(account: WeChatAccount, message: WeChatMessage) -> Reply | None:
    """The reply to ``message``, or None to answer ``success`` (nothing to say).

    A new follower gets the account's welcome text. A text message (or the recognised text of a voice
    message) is answered by the workspace's bot (``conversations.answer``: reply hooks, incidents,
    menus, keyword rules, handoff); what the bot cannot answer, and any other message (not an event),
    gets the account's default auto-reply text."""
    if message.is_event:
        # A new follower who scanned an active channel code gets that code's welcome (a cached,
        # read-only lookup); any other new follower the account's. Other events (a follower's SCAN
        # is a touch) get nothing.
        if message.event_lower != "subscribe":
            return None
        from .queries import code_for_scene

        code = code_for_scene(account, message.qr_scene)
        if code is not None and code.active and code.welcome_text:
            return Reply(kind=TEXT, content=code.welcome_text)
        if account.welcome_text:
            return Reply(kind=TEXT, content=account.welcome_text)
        return None
    text = message.fields.get("Content" if message.msg_type == "text" else "Recognition", "")
    if text and message.msg_type in ("text", "voice"):
        answer = conversations.answer(
            account.workspace, text, channel="wechat", at=_sent_at(message),
            identity={"kind": "wechat_openid", "namespace": account.app_id, "value": message.from_user})
        if answer is not None:
            props = tuple((k, v) for k, v in (("bot_source", answer.source), ("incident", answer.incident_id),
                                              ("menu", answer.menu_id), ("menu_node", answer.node_id))
                          if v is not None)
            content = answer.content if answer.reply_type == TEXT else ""
            if content:
                return Reply(kind=TEXT, content=content, rule_id=answer.rule_id, bot_outcome=answer.outcome,
                             props=props)
            if account.reply_text:
                return Reply(kind=TEXT, content=account.reply_text, bot_outcome=answer.outcome, props=props)
            return None
    if account.reply_text:
        return Reply(kind=TEXT, content=account.reply_text)
    return None


def _sent_at(message: WeChatMessage) -> dt.datetime | None:
    """When the member sent ``message`` (its CreateTime): the moment rules' time windows are judged at."""
    try:
        return dt.datetime.fromtimestamp(message.create_time, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


def render(reply: Reply, *, message: WeChatMessage, create_time: int) -> str:
    """The reply XML to ``message`` (sent back to its sender, from the account that received it)."""
    if reply.kind == TEXT:
        return render_text_reply(to_user=message.from_user, from_user=message.to_user, create_time=create_time,
                                 content=reply.content)
    raise ValueError(f"unknown reply kind {reply.kind!r}")
