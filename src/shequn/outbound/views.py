"""Inbound webhooks: ``POST /hooks/in/<key>/`` — HTTP in/out only.

The body must be signed (``X-Shequn-Signature: t=<ts>,v1=<hmac-sha256 hex>``, see ``signing``).
Answers: 200 with the per-event results, 401 for a missing, wrong or expired signature (nothing
recorded), 400 for a body that cannot be read, 404 for an unknown or disabled endpoint, 405 for
anything but POST; errors use the API's format ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import logging
import time

from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from shequn.core.errors import ShequnError

from . import services, signing

logger = logging.getLogger("shequn.outbound.webhooks")


def _error(exc: ShequnError) -> JsonResponse:
    return JsonResponse({"error": exc.as_dict()}, status=exc.status, json_dumps_params={"ensure_ascii": False})


@csrf_exempt
@require_POST
def inbound(request: HttpRequest, key: str) -> JsonResponse:
    length = request.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > services.MAX_WEBHOOK_BODY:
        return _error(services.MalformedWebhook(_("the body is larger than 1 MiB"), code="body_too_large"))
    try:
        results = services.receive_webhook(key, request.headers.get(signing.SIGNATURE_HEADER, ""), request.body,
                                           now=time.time())
    except ShequnError as exc:
        if exc.status == 401:
            logger.warning("webhook %s… refused (%s): %s", key[:6], exc.code, exc.message)
        return _error(exc)
    counts = {s: sum(1 for r in results if r.get("status") == s) for s in ("created", "duplicate", "error")}
    return JsonResponse({**counts, "results": results}, json_dumps_params={"ensure_ascii": False})
