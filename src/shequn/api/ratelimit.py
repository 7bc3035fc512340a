"""Per-caller rate limit: a fixed one-minute window counted in the Django cache.

``cache.add`` creates the window's counter only if it is missing and ``cache.incr`` is atomic in
every shared cache backend (Redis ``INCR``), so concurrent web workers never lose a count. The limit is
``settings.API_RATE_LIMIT_PER_MINUTE``; the state of the window is put on the request so that every
response, errors included, carries ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining``."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponseBase
from django.utils.translation import gettext as _

from shequn.core.errors import RateLimited

WINDOW_SECONDS = 60


def _clock() -> float:
    return time.time()


@dataclass(frozen=True)
class RateState:
    limit: int
    remaining: int
    reset_in: int


class RateLimitExceeded(RateLimited):
    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retry_after": retry_after})
        self.retry_after = retry_after


def hit(request: HttpRequest, caller: str) -> RateState:
    """Count one request of ``caller`` (e.g. ``apikey:<prefix>``); raise RateLimitExceeded past the limit."""
    limit = int(settings.API_RATE_LIMIT_PER_MINUTE)
    clock = _clock()
    window = int(clock // WINDOW_SECONDS)
    key = f"shequn:api:rate:{caller}:{window}"
    cache.add(key, 0, timeout=WINDOW_SECONDS + 5)
    try:
        count = cache.incr(key)
    except ValueError:  # the counter expired between add and incr
        cache.set(key, 1, timeout=WINDOW_SECONDS + 5)
        count = 1
    reset_in = max(1, math.ceil((window + 1) * WINDOW_SECONDS - clock))
    state = RateState(limit=limit, remaining=max(0, limit - count), reset_in=reset_in)
    request._shequn_rate = state  # type: ignore[attr-defined]
    if count > limit:
        raise RateLimitExceeded(_("Rate limit of %(limit)d requests per minute exceeded.") % {"limit": limit},
                                retry_after=reset_in)
    return state


def add_headers(request: HttpRequest, response: HttpResponseBase) -> None:
    state: RateState | None = getattr(request, "_shequn_rate", None)
    if state is not None:
        response["X-RateLimit-Limit"] = str(state.limit)
        response["X-RateLimit-Remaining"] = str(state.remaining)
