"""Signing members in to the portal with a one-time code sent through their own channel.

``request_code`` finds the member by phone, stores a keyed hash of a fresh 6-digit code and hands the
code to the outbound sender (WeChat customer-service message, e-mail, or — for a member with no
reachable channel, as in the demo — the console's outbox, where staff can read it). ``verify_code``
checks it in constant time, at most ``MAX_ATTEMPTS`` times, once. Answers never reveal whether a phone
number belongs to a member: an unknown number gets the same "code sent" answer and nothing is sent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils.translation import gettext as _

from shequn.core.clock import now as clock_now
from shequn.core.errors import RateLimited, ValidationError
from shequn.core.models import Workspace
from shequn.core.tenancy import scoped
from shequn.members import services as members
from shequn.members.models import MemberStatus

from .models import LoginCode

CODE_TTL = dt.timedelta(minutes=10)
MAX_ATTEMPTS = 5
ACTOR = "portal"


def _digest(workspace: Workspace, member_id: int, code: str) -> str:
    key = f"{settings.SECRET_KEY}:portal-code:{workspace.pk}:{member_id}".encode()
    return hmac.new(key, code.encode(), hashlib.sha256).hexdigest()


def _member_id_for_phone(workspace: Workspace, phone: str) -> int | None:
    try:
        member = members.find_member(workspace, {"kind": "phone", "value": phone})
    except (ValueError, ValidationError):
        raise ValidationError(_("Enter a valid mobile number."), code="invalid_phone",
                              details={"field": "phone"}) from None
    if member is None or member.status != MemberStatus.ACTIVE:
        return None
    return member.pk


@dataclass(frozen=True)
class CodeRequest:
    sent: bool
    expires_at: dt.datetime


def request_code(workspace: Workspace, phone: str, *, at: dt.datetime | None = None) -> CodeRequest:
    """Send a sign-in code to the member with this phone number (if there is one)."""
    from shequn.outbound import services as outbound

    moment = at or clock_now()
    expires = moment + CODE_TTL
    member_id = _member_id_for_phone(workspace, phone)
    if member_id is None:
        return CodeRequest(sent=False, expires_at=expires)
    code = f"{secrets.randbelow(1_000_000):06d}"
    window = int(moment.timestamp()) // 60
    try:
        with transaction.atomic():
            row = LoginCode.objects.create(workspace=workspace, member_id=member_id,
                                           code_hash=_digest(workspace, member_id, code), window=window,
                                           created_at=moment, expires_at=expires)
            text = _("Your %(brand)s sign-in code is %(code)s. It is valid for 10 minutes. "
                     "Never share it with anyone.") % {"brand": workspace.name, "code": code}
            outbound.send_text(workspace, member_id, text, purpose="otp", actor=ACTOR, key=f"otp:{row.pk}")
    except IntegrityError:
        raise RateLimited(_("A code was sent less than a minute ago: wait a moment and try again."),
                          code="code_recently_sent") from None
    return CodeRequest(sent=True, expires_at=expires)


def verify_code(workspace: Workspace, phone: str, code: str, *, at: dt.datetime | None = None) -> int:
    """The id of the member signing in with ``code``; raises ValidationError otherwise.

    Only the newest code counts. A wrong guess uses up one attempt (a conditional UPDATE, so parallel
    guesses cannot get more than ``MAX_ATTEMPTS``); the right code is marked used in the same way, so it
    signs in once."""
    moment = at or clock_now()
    wrong = ValidationError(_("That code is not right or has expired: ask for a new one."), code="invalid_code",
                            details={"field": "code"})
    code = (code or "").strip()
    if not (len(code) == 6 and code.isdigit()):
        raise wrong
    member_id = _member_id_for_phone(workspace, phone)
    if member_id is None:
        raise wrong
    row = (scoped(LoginCode, workspace).filter(member_id=member_id).order_by("-created_at", "-pk").first())
    if row is None or row.used_at is not None or row.expires_at <= moment or row.attempts >= MAX_ATTEMPTS:
        raise wrong
    if not hmac.compare_digest(row.code_hash, _digest(workspace, member_id, code)):
        scoped(LoginCode, workspace).filter(pk=row.pk, attempts__lt=MAX_ATTEMPTS).update(attempts=F("attempts") + 1)
        raise wrong
    used = scoped(LoginCode, workspace).filter(pk=row.pk, used_at__isnull=True,
                                               attempts__lt=MAX_ATTEMPTS).update(used_at=moment)
    if used != 1:
        raise wrong
    return member_id
