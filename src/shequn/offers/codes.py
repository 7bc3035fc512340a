"""Coupon, claim and activity codes: random, unguessable, easy to read aloud and to type at a counter."""

from __future__ import annotations

import io
import secrets

import segno

# No 0/O, 1/I/L: nothing a clerk can mistype from a phone screen or a receipt.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
LENGTH = 12  # 31^12 ≈ 7.9 × 10^17 codes: about 59 bits of randomness


def new_code(length: int = LENGTH) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def normalize(raw: object) -> str:
    """What a person typed or a scanner read: upper case, without spaces and dashes."""
    return "".join(str(raw or "").split()).replace("-", "").upper()


def looks_like_code(text: str) -> bool:
    return len(text) == LENGTH and all(c in ALPHABET for c in text)


def display(code: str) -> str:
    """``ABCD-EFGH-JKMN``: groups of four for reading aloud."""
    return "-".join(code[i:i + 4] for i in range(0, len(code), 4))


def qr_svg(payload: str, *, scale: int = 6) -> str:
    """The QR code of ``payload`` as a standalone SVG document (segno)."""
    out = io.BytesIO()
    segno.make(payload, error="m", micro=False).save(out, kind="svg", scale=scale, border=2, dark="#111827",
                                                     light="#ffffff", xmldecl=False, svgns=True, omitsize=False)
    return out.getvalue().decode("utf-8")
