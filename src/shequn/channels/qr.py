"""The image of a channel code: the URL WeChat returned for its ticket, drawn as a QR code with
segno (SVG for the screen and print, PNG for chat tools). A phone's WeChat scanner reads that URL and
opens the account's follow page with the code's scene."""

from __future__ import annotations

import io

import segno

DARK = "#111827"


def _qr(url: str) -> segno.QRCode:
    # Error correction M (15 %) survives a logo sticker or a worn poster corner; WeChat's own codes use it too.
    return segno.make(url, error="m", micro=False)


def svg(url: str, *, scale: int = 8, border: int = 4) -> bytes:
    """A standalone SVG document (``image/svg+xml``) of the QR code of ``url``."""
    buffer = io.BytesIO()
    _qr(url).save(buffer, kind="svg", scale=scale, border=border, dark=DARK, light="#ffffff", xmldecl=True,
                  svgclass="qr", lineclass=None, title=url)
    return buffer.getvalue()


def png(url: str, *, scale: int = 10, border: int = 4) -> bytes:
    """A PNG (``image/png``) of the QR code of ``url``; scale 10 is about 450 pixels, enough for print."""
    buffer = io.BytesIO()
    _qr(url).save(buffer, kind="png", scale=scale, border=border, dark=DARK, light="#ffffff")
    return buffer.getvalue()
