"""Email through a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import socket
from email.header import decode_header, make_header
from email.policy import default

import pytest
from aiosmtpd.controller import Controller

from shequn.core.errors import ValidationError
from shequn.members import services as members
from shequn.outbound import services
from shequn.outbound.models import SmtpSettings


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list = []
        self.refuse: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


@pytest.fixture
def smtp(ws, smtp_server):
    controller, _inbox = smtp_server
    return services.save_smtp_settings(ws, host="127.0.0.1", port=controller.port, security="none",
                                       from_address="hello@chayu.example", from_name="茶语 Tea", actor="t", timeout=5)


@pytest.fixture
def reader(ws):
    return members.upsert_member(ws, [{"kind": "email", "value": "li.lei@example.com"}], {"display_name": "李雷"}).member


def _decode(value: str) -> str:
    return str(make_header(decode_header(value)))


def test_an_email_reaches_the_smtp_server_with_utf8_subject_and_body(ws, smtp, reader, smtp_server):
    _controller, inbox = smtp_server
    msg = services.send_email(ws, reader.pk, "欢迎加入茶语会员", "您好李雷，\n欢迎加入！送您一张买一送一券。",
                              purpose="welcome", actor="t")
    assert (msg.channel, msg.recipient, msg.status) == ("email", "li.lei@example.com", "queued")
    assert services.deliver(msg.pk) == "sent"
    [envelope] = inbox.envelopes
    assert envelope.mail_from == "hello@chayu.example" and envelope.rcpt_tos == ["li.lei@example.com"]
    parsed = email.message_from_bytes(envelope.original_content, policy=default)
    assert parsed["Subject"] == "欢迎加入茶语会员"
    assert _decode(parsed["From"]) == "茶语 Tea <hello@chayu.example>"
    assert parsed["To"] == "li.lei@example.com"
    assert parsed["Message-ID"] == f"<outbox-{msg.pk}.tea@shequn>"
    assert parsed.get_content().replace("\r\n", "\n").strip() == "您好李雷，\n欢迎加入！送您一张买一送一券。"
    msg.refresh_from_db()
    assert msg.interaction_id is not None and msg.attempt_log.get().response == {"message_id": parsed["Message-ID"]}


def test_send_text_falls_back_to_email(ws, smtp, reader, smtp_server):
    _controller, inbox = smtp_server
    msg = services.send_text(ws, reader.pk, "您的验证码是 123456", purpose="otp", actor="t")
    assert msg.channel == "email"
    services.deliver(msg.pk)
    parsed = email.message_from_bytes(inbox.envelopes[0].original_content, policy=default)
    assert parsed["Subject"] == "来自茶语 Tea House的消息"
    assert "123456" in parsed.get_content()


def test_without_smtp_settings_email_is_undeliverable(ws, reader):
    msg = services.send_email(ws, reader.pk, "Hi", "body", purpose="welcome", actor="t")
    assert msg.status == "undeliverable" and "SMTP" in msg.last_error


def test_a_refused_recipient_fails_and_a_4xx_is_retried(ws, smtp, reader, smtp_server):
    _controller, inbox = smtp_server
    inbox.refuse = "550 5.1.1 no such user"
    msg = services.send_email(ws, reader.pk, "Hi", "body", purpose="welcome", actor="t")
    assert services.deliver(msg.pk) == "failed"
    inbox.refuse = "451 4.3.0 try again later"
    msg2 = services.send_email(ws, reader.pk, "Hi", "body", purpose="welcome", actor="t")
    assert services.deliver(msg2.pk) == "queued"


def test_an_unreachable_server_is_retried(ws, reader):
    services.save_smtp_settings(ws, host="127.0.0.1", port=_free_port(), security="none",
                                from_address="hello@chayu.example", actor="t", timeout=2)
    msg = services.send_email(ws, reader.pk, "Hi", "body", purpose="welcome", actor="t")
    assert services.deliver(msg.pk) == "queued"
    msg.refresh_from_db()
    assert "Connection" in msg.last_error or "refused" in msg.last_error.lower()


def test_smtp_settings_validation_and_password_kept(ws):
    s = services.save_smtp_settings(ws, host="smtp.example.com", port=465, security="ssl", username="u",
                                    password="pw", from_address="a@example.com", actor="t")
    services.save_smtp_settings(ws, host="smtp.example.com", port=465, security="ssl", username="u",
                                password=None, from_address="b@example.com", actor="t")
    s = SmtpSettings.objects.get(pk=s.pk)
    assert s.password == "pw" and s.from_address == "b@example.com"
    for bad in ({"port": 0}, {"from_address": "nope"}, {"security": "tls13"}, {"host": ""}):
        args = {"host": "smtp.example.com", "port": 25, "security": "none", "from_address": "a@example.com", **bad}
        with pytest.raises(ValidationError):
            services.save_smtp_settings(ws, actor="t", **args)
