"""HMAC-SHA256 signatures of webhook bodies, in both directions.

The header is ``X-Shequn-Signature: t=<unix seconds>,v1=<hex>`` where
``hex = HMAC-SHA256(secret, "<t>." + body)``. Several ``v1=`` values may be sent (a sender rotating its
secret signs with both); one matching value is enough. The timestamp is covered by the signature and
must be within the endpoint's tolerance of the receiver's clock, so a captured request cannot be
replayed later; within the tolerance, events are de-duplicated by their ``external_id``.
"""

from __future__ import annotations

import hashlib
import hmac

from django.utils.translation import gettext as _

from shequn.core.errors import Unauthorized

SIGNATURE_HEADER = "X-Shequn-Signature"
MAX_SCHEMES = 8


class SignatureError(Unauthorized):
    code = "invalid_signature"


def compute(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def header_value(secret: str, timestamp: int, body: bytes) -> str:
    """The value of the ``X-Shequn-Signature`` header for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={compute(secret, timestamp, body)}"


def parse(header: str) -> tuple[int, list[str]]:
    """``(timestamp, [v1 signatures])`` from a header value; raises SignatureError if unreadable."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in (header or "").split(",")[: MAX_SCHEMES + 1]:
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError(_("the signature header's timestamp is not a number")) from None
        elif name == "v1" and value:
            signatures.append(value.lower())
    if timestamp is None or not signatures:
        raise SignatureError(_("missing or unreadable %(header)s header (expected t=<timestamp>,v1=<hex>)")
                             % {"header": SIGNATURE_HEADER})
    return timestamp, signatures


def verify(secret: str, header: str, body: bytes, *, now: float, tolerance: int) -> int:
    """Check ``header`` against ``body``; return its timestamp. Raises SignatureError when the
    signature does not match (compared in constant time) or the timestamp is outside ``tolerance``."""
    timestamp, signatures = parse(header)
    if tolerance and abs(now - timestamp) > tolerance:
        raise SignatureError(_("the signature timestamp is more than %(n)s seconds away from the server's clock")
                             % {"n": tolerance}, code="signature_expired")
    expected = compute(secret, timestamp, body)
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError(_("the signature does not match the body"))
    return timestamp
