"""Signing in to the member portal with a one-time code."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from shequn.core.errors import RateLimited, ValidationError
from shequn.members import services as members
from shequn.outbound.models import OutboundMessage
from shequn.portal import auth
from shequn.portal.models import LoginCode

PHONE = "13800138000"


@pytest.fixture
def member(ws):
    return members.upsert_member(ws, [{"kind": "phone", "value": PHONE}], {"display_name": "小林"}, actor="test").member


def sent_code(ws) -> str:
    msg = OutboundMessage.objects.filter(workspace=ws, purpose="otp").order_by("-id").first()
    assert msg is not None
    return re.search(r"\b(\d{6})\b", msg.payload["text"]).group(1)


def test_code_signs_in_once(ws, member, t0):
    assert auth.request_code(ws, PHONE, at=t0).sent
    code = sent_code(ws)
    assert LoginCode.objects.get().code_hash != code  # only a hash is kept
    assert auth.verify_code(ws, "+86 138 0013 8000", code, at=t0 + dt.timedelta(minutes=1)) == member.pk
    with pytest.raises(ValidationError):
        auth.verify_code(ws, PHONE, code, at=t0 + dt.timedelta(minutes=2))


def test_wrong_guesses_use_up_the_code(ws, member, t0):
    auth.request_code(ws, PHONE, at=t0)
    code = sent_code(ws)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(auth.MAX_ATTEMPTS):
        with pytest.raises(ValidationError):
            auth.verify_code(ws, PHONE, wrong, at=t0)
    with pytest.raises(ValidationError):
        auth.verify_code(ws, PHONE, code, at=t0)
    assert LoginCode.objects.get().attempts == auth.MAX_ATTEMPTS


def test_code_expires(ws, member, t0):
    auth.request_code(ws, PHONE, at=t0)
    with pytest.raises(ValidationError):
        auth.verify_code(ws, PHONE, sent_code(ws), at=t0 + auth.CODE_TTL)


def test_one_code_per_minute_and_newest_counts(ws, member, t0):
    auth.request_code(ws, PHONE, at=t0)
    first = sent_code(ws)
    with pytest.raises(RateLimited):
        auth.request_code(ws, PHONE, at=t0 + dt.timedelta(seconds=20))
    auth.request_code(ws, PHONE, at=t0 + dt.timedelta(seconds=61))
    second = sent_code(ws)
    if first != second:
        with pytest.raises(ValidationError):
            auth.verify_code(ws, PHONE, first, at=t0 + dt.timedelta(seconds=70))
    assert auth.verify_code(ws, PHONE, second, at=t0 + dt.timedelta(seconds=70)) == member.pk


def test_unknown_phone_gets_the_same_answer_and_nothing_is_sent(ws, member, t0):
    assert auth.request_code(ws, "13900000000", at=t0).sent is False
    assert not OutboundMessage.objects.exists() and not LoginCode.objects.exists()
    with pytest.raises(ValidationError):
        auth.verify_code(ws, "13900000000", "123456", at=t0)


@pytest.mark.parametrize("phone", ["", "abc", "12"])
def test_bad_phone_is_a_clear_error(ws, phone):
    with pytest.raises(ValidationError) as err:
        auth.request_code(ws, phone)
    assert err.value.code == "invalid_phone"


def test_code_of_one_workspace_does_not_open_another(ws, other_ws, member, t0):
    members.upsert_member(other_ws, [{"kind": "phone", "value": PHONE}], {}, actor="test")
    auth.request_code(ws, PHONE, at=t0)
    with pytest.raises(ValidationError):
        auth.verify_code(other_ws, PHONE, sent_code(ws), at=t0)
