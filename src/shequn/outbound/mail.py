"""Sending one email through the workspace's SMTP server (Django's EmailMessage over an explicit
SMTP connection built from ``SmtpSettings``), and telling transient failures from permanent ones."""

from __future__ import annotations

import smtplib
import socket
from email.utils import formataddr, make_msgid

from django.core.mail import EmailMultiAlternatives
from django.core.mail.backends.smtp import EmailBackend

from .models import SmtpSecurity, SmtpSettings


def connection_for(smtp: SmtpSettings) -> EmailBackend:
    return EmailBackend(host=smtp.host, port=smtp.port, username=smtp.username or None,
                        password=smtp.password or None, use_tls=smtp.security == SmtpSecurity.STARTTLS,
                        use_ssl=smtp.security == SmtpSecurity.SSL, timeout=smtp.timeout, fail_silently=False)


def send(smtp: SmtpSettings, to: str, subject: str, body: str, *, html: str | None = None,
         message_id: str | None = None) -> str:
    """Send one message; return its Message-ID. Raises smtplib/socket errors (see :func:`is_transient`)."""
    sender = formataddr((smtp.from_name, smtp.from_address)) if smtp.from_name else smtp.from_address
    message_id = message_id or make_msgid(domain=smtp.from_address.rpartition("@")[2] or "shequn.local")
    headers = {"Message-ID": message_id}
    email = EmailMultiAlternatives(subject=subject, body=body, from_email=sender, to=[to], headers=headers)
    if html:
        email.attach_alternative(html, "text/html")
    connection = connection_for(smtp)
    try:
        connection.open()
        connection.send_messages([email])
    finally:
        connection.close()
    return message_id


def is_transient(exc: BaseException) -> bool:
    """Worth retrying later: the server was unreachable, dropped us, or answered 4xx."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _msg in exc.recipients.values()]
        return bool(codes) and all(400 <= code < 500 for code in codes)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return False
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError | socket.timeout | OSError)
