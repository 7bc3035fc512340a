"""Normalisation of identity values, so that the same person is recognised however they typed it."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

from shequn.core.errors import ValidationError

from .models import IdentityKind

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def normalize_phone(raw: str, default_region: str = "CN") -> str:
    """Return the E.164 form (``+8613800138000``) or raise ValidationError."""
    text = unicodedata.normalize("NFKC", str(raw)).strip()
    if not text:
        raise ValidationError("phone is empty", code="invalid_phone")
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(f"not a phone number: {raw!r}", code="invalid_phone") from exc
    if not phonenumbers.is_possible_number(number):
        raise ValidationError(f"not a possible phone number: {raw!r}", code="invalid_phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    text = unicodedata.normalize("NFKC", str(raw)).strip().lower()
    if not _EMAIL.match(text) or len(text) > 254:
        raise ValidationError(f"not an email address: {raw!r}", code="invalid_email")
    return text


def normalize_identity(kind: str, value: str, default_region: str = "CN") -> str:
    if kind == IdentityKind.PHONE:
        return normalize_phone(value, default_region)
    if kind == IdentityKind.EMAIL:
        return normalize_email(value)
    if kind not in IdentityKind.values:
        raise ValidationError(f"unknown identity kind {kind!r}", code="invalid_identity")
    text = str(value).strip()
    if not text or len(text) > 255:
        raise ValidationError(f"{kind} must be 1–255 characters", code="invalid_identity")
    return text
