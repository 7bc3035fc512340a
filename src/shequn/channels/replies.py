"""What the account answers to a message, on the fast path (inside WeChat's 5-second window).

Everything that decides a passive reply plugs in here: :func:`compute_reply` is the one function the
endpoint calls. It must be quick and must not write — it runs inside the transaction that records the
message, and its answer is stored with that record so that WeChat's retries get the same reply."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from shequn.conversations import services as conversations

from .models import WeChatAccount
from .wechat import WeChatMessage, render_text_reply

TEXT = "text"


@dataclass(frozen=True)
class Reply:
    """A passive reply. ``kind`` is the WeChat MsgType of the reply (only ``text`` for now);
    ``rule_id`` the keyword auto-reply rule that gave it, if one did."""

    kind: str
    content: str
    rule_id: int | None = None


def compute_reply(account: WeChatAccount, message: WeChatMessage) -> Reply | None:
    """The reply to ``message``, or None to answer ``success`` (nothing to say).

    A new follower gets the account's welcome text. A text message (or the recognised text of a voice
    message) is answered by the workspace's keyword rules (``conversations``) when one matches; any
    other message (not an event) gets the account's default auto-reply text."""
    if message.is_event:
        if message.event_lower == "subscribe" and account.welcome_text:
            return Reply(kind=TEXT, content=account.welcome_text)
        return None
    text = message.fields.get("Content" if message.msg_type == "text" else "Recognition", "")
    if text and message.msg_type in ("text", "voice"):
        answer = conversations.auto_reply(
            account.workspace, text, channel="wechat", at=_sent_at(message),
            identity={"kind": "wechat_openid", "namespace": account.app_id, "value": message.from_user})
        if answer is not None and answer.reply_type == TEXT:
            return Reply(kind=TEXT, content=answer.content, rule_id=answer.rule_id)
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
