"""A client of WeChat's Official Account HTTP API (``api.weixin.qq.com``).

One :class:`WeChatApiClient` per account (:func:`client_for`). Every call

* carries an access token from the database cache (``outbound.AccessToken``): a token with less than
  :data:`REFRESH_MARGIN` left is refreshed before use; only the worker that wins a refresh lease
  (conditional UPDATE) calls WeChat's token API, the others keep using the old token while it is
  still valid and wait for the new one otherwise, so an expired token is never sent (ADR 0010);
* is refreshed once and retried once when WeChat answers that the token is invalid or expired
  (errcode 40001, 40014, 42001) — e.g. because someone reset the AppSecret or another system fetched
  a token for the same account;
* is retried with exponential backoff and jitter on network errors, HTTP 5xx and errcode -1
  (system busy); never on other errcodes (they are the caller's mistake or a business refusal);
* waits for a per-account token bucket (in-process rate limit); WeChat's own limits (45009 daily
  quota, 45047 too many customer-service messages) raise :class:`WeChatRateLimited`.

The base URL is ``settings.SHEQUN_WECHAT_API_BASE`` (or the environment variable of the same name;
default ``https://api.weixin.qq.com``), so tests and the demo point it at
:class:`shequn.outbound.fake_wechat.FakeWeChatServer`.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.db.models import F, Q
from django.utils.translation import gettext as _

from shequn.channels.models import WeChatAccount
from shequn.core import clock
from shequn.core.errors import ShequnError

from .models import AccessToken

DEFAULT_BASE = "https://api.weixin.qq.com"
REFRESH_MARGIN = timedelta(minutes=5)
"""A token with less than this left is refreshed before use."""
LEASE = timedelta(seconds=30)
"""How long a worker may hold the refresh lease before another may take it over."""
MIN_VALID = timedelta(seconds=30)
"""While another worker refreshes, the old token is still used if it has at least this much left."""

TOKEN_ERRORS = frozenset({40001, 40014, 42001})
"""invalid credential / invalid access_token / access_token expired: refresh once and retry once."""
BUSY = -1
RATE_LIMIT_ERRORS = {45009: "api_quota_exceeded", 45047: "customer_service_limit"}
NOT_REACHABLE_ERRORS = {43004: "not_following", 45015: "reply_window_closed", 40003: "invalid_openid"}


def api_base() -> str:
    base = getattr(settings, "SHEQUN_WECHAT_API_BASE", None) or os.environ.get("SHEQUN_WECHAT_API_BASE") or DEFAULT_BASE
    return str(base).rstrip("/")


# ---------------------------------------------------------------------------------------------
# errors


class WeChatApiError(ShequnError):
    """WeChat refused a call (``errcode`` != 0) or could not be reached. ``retryable`` says whether the
    same call may succeed later (network, 5xx, system busy, rate limits)."""

    code = "wechat_api_error"
    status = 502

    def __init__(self, message: str, *, errcode: int | None = None, errmsg: str = "", retryable: bool = False,
                 code: str | None = None) -> None:
        super().__init__(message, code=code, details={"errcode": errcode, "errmsg": errmsg})
        self.errcode = errcode
        self.errmsg = errmsg
        self.retryable = retryable


class WeChatRateLimited(WeChatApiError):
    """WeChat's rate limit or quota was hit (45009, 45047): try later, not now."""

    code = "wechat_rate_limited"
    status = 429


class WeChatUnreachable(WeChatApiError):
    """The call reached WeChat but the member cannot receive it (not following, 48-hour window)."""

    code = "wechat_member_unreachable"
    status = 422


def _error_for(errcode: int, errmsg: str) -> WeChatApiError:
    if errcode in RATE_LIMIT_ERRORS:
        message = (_("WeChat's daily API quota for this account is used up (45009)") if errcode == 45009 else
                   _("WeChat refused more customer-service messages to this member for now (45047)"))
        return WeChatRateLimited(message, errcode=errcode, errmsg=errmsg, retryable=True,
                                 code=RATE_LIMIT_ERRORS[errcode])
    if errcode in NOT_REACHABLE_ERRORS:
        message = {43004: _("the member does not follow the Official Account (43004)"),
                   45015: _("the member has not written in the last 48 hours, so customer-service messages "
                            "cannot reach them (45015)"),
                   40003: _("the openid does not belong to this Official Account (40003)")}[errcode]
        return WeChatUnreachable(message, errcode=errcode, errmsg=errmsg, code=NOT_REACHABLE_ERRORS[errcode])
    if errcode == BUSY:
        return WeChatApiError(_("WeChat is busy (-1)"), errcode=errcode, errmsg=errmsg, retryable=True,
                              code="wechat_busy")
    if errcode in TOKEN_ERRORS:
        return WeChatApiError(_("WeChat refused the access token (%(code)s)") % {"code": errcode},
                              errcode=errcode, errmsg=errmsg, code="wechat_token_rejected")
    return WeChatApiError(_("WeChat refused the call: %(code)s %(msg)s") % {"code": errcode, "msg": errmsg},
                          errcode=errcode, errmsg=errmsg)


# ---------------------------------------------------------------------------------------------
# rate limit


class TokenBucket:
    """``rate`` calls per second on average, bursts up to ``capacity``. Thread-safe; ``acquire``
    sleeps (with the injected ``sleep``) until a call may go."""

    def __init__(self, rate: float, capacity: float | None = None, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.capacity = float(capacity if capacity is not None else max(1.0, rate))
        self.tokens = self.capacity
        self._monotonic = monotonic
        self._last = monotonic()
        self._lock = threading.Lock()

    def _take(self) -> float:
        """Take a token and return 0, or return how long to wait for one."""
        with self._lock:
            now = self._monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
            self._last = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> float:
        """Wait for a token; return the total time waited (seconds)."""
        waited = 0.0
        while True:
            wait = self._take()
            if wait <= 0:
                return waited
            sleep(wait)
            waited += wait


_BUCKETS: dict[str, TokenBucket] = {}
_BUCKETS_LOCK = threading.Lock()


def bucket_for(app_id: str) -> TokenBucket:
    """The process-wide bucket of an AppID (``SHEQUN_WECHAT_RATE_LIMIT`` calls per second, default 50)."""
    with _BUCKETS_LOCK:
        bucket = _BUCKETS.get(app_id)
        if bucket is None:
            rate = float(getattr(settings, "SHEQUN_WECHAT_RATE_LIMIT", os.environ.get("SHEQUN_WECHAT_RATE_LIMIT", 50)))
            bucket = _BUCKETS[app_id] = TokenBucket(rate)
        return bucket


# ---------------------------------------------------------------------------------------------
# the client


class WeChatApiClient:
    """Calls WeChat's API on behalf of one account. Construct with :func:`client_for`; tests may pass
    an ``http`` client, a ``sleep`` (to keep backoff fast), an ``rng`` for the jitter, a ``now`` and a
    ``bucket``."""

    def __init__(self, account: WeChatAccount, *, base_url: str | None = None, http: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
                 now: Callable[[], datetime] = clock.now, bucket: TokenBucket | None = None,
                 max_attempts: int = 4, backoff_base: float = 0.5, backoff_max: float = 8.0,
                 timeout: float = 10.0) -> None:
        self.account = account
        self.base_url = (base_url or api_base()).rstrip("/")
        self._http = http
        self._own_http = http is None
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.now = now
        self.bucket = bucket or bucket_for(account.app_id)
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.sleeps: list[float] = []
        """Every backoff this client slept, in seconds (for logs and tests)."""

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout, headers={"User-Agent": "shequn"})
        return self._http

    def close(self) -> None:
        if self._own_http and self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> WeChatApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based): base·2^(attempt-1), capped,
        with "full jitter" between half and all of it."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        return ceiling / 2 + self.rng.random() * ceiling / 2

    def _request(self, method: str, path: str, *, params: Mapping[str, str], body: Any = None) -> dict[str, Any]:
        """One HTTP exchange with retries on transient failures; returns the decoded JSON (which may
        carry a non-zero errcode: the caller decides)."""
        url = self.base_url + path
        last: WeChatApiError | None = None
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                delay = self.backoff(attempt - 1)
                self.sleeps.append(delay)
                self.sleep(delay)
            self.bucket.acquire(self.sleep)
            try:
                if method == "GET":
                    response = self.http.get(url, params=dict(params))
                else:
                    content = json.dumps(body, ensure_ascii=False).encode("utf-8")
                    response = self.http.post(url, params=dict(params), content=content,
                                              headers={"Content-Type": "application/json; charset=utf-8"})
            except httpx.TransportError as exc:
                last = WeChatApiError(_("WeChat's API could not be reached: %(error)s") % {"error": exc},
                                      retryable=True, code="wechat_unreachable")
                continue
            if response.status_code >= 500:
                last = WeChatApiError(_("WeChat's API answered HTTP %(status)s") % {"status": response.status_code},
                                      retryable=True, code="wechat_http_error")
                continue
            try:
                data = response.json()
            except ValueError:
                raise WeChatApiError(_("WeChat's API answered something that is not JSON (HTTP %(status)s)")
                                     % {"status": response.status_code}, code="wechat_bad_response") from None
            if not isinstance(data, dict):
                raise WeChatApiError(_("WeChat's API answered something that is not JSON (HTTP %(status)s)")
                                     % {"status": response.status_code}, code="wechat_bad_response")
            if response.status_code >= 400 and not data.get("errcode"):
                raise WeChatApiError(_("WeChat's API answered HTTP %(status)s") % {"status": response.status_code},
                                     code="wechat_http_error")
            if data.get("errcode") == BUSY:
                last = _error_for(BUSY, str(data.get("errmsg", "")))
                continue
            return data
        assert last is not None
        raise last

    # -- access token -----------------------------------------------------------------------

    def _token_row(self) -> AccessToken:
        row = AccessToken.objects.filter(account=self.account).first()
        if row is None:
            row, _created = AccessToken.objects.get_or_create(  # backed by the one-to-one unique index
                account=self.account, defaults={"workspace_id": self.account.workspace_id})
        return row

    def _fetch_token(self) -> tuple[str, int]:
        data = self._request("GET", "/cgi-bin/token", params={
            "grant_type": "client_credential", "appid": self.account.app_id, "secret": self.account.app_secret})
        errcode = int(data.get("errcode") or 0)
        if errcode:
            raise _error_for(errcode, str(data.get("errmsg", "")))
        token = str(data.get("access_token") or "")
        if not token:
            raise WeChatApiError(_("WeChat's token API answered without an access_token"), code="wechat_bad_response")
        return token, int(data.get("expires_in") or 7200)

    def access_token(self, *, wait_rounds: int = 50, wait_seconds: float = 0.2) -> str:
        """A token with more than :data:`REFRESH_MARGIN` left, refreshing it under the lease if needed."""
        for _round in range(wait_rounds):
            row = self._token_row()
            now = self.now()
            if row.token and row.expires_at and row.expires_at - now > REFRESH_MARGIN:
                return row.token
            claimed = AccessToken.objects.filter(pk=row.pk).filter(
                Q(lease_until__isnull=True) | Q(lease_until__lt=now)).update(lease_until=now + LEASE)
            if claimed:
                started = self.now()
                try:
                    token, expires_in = self._fetch_token()
                except BaseException:
                    AccessToken.objects.filter(pk=row.pk).update(lease_until=None)
                    raise
                AccessToken.objects.filter(pk=row.pk).update(
                    token=token, expires_at=started + timedelta(seconds=expires_in), refreshed_at=self.now(),
                    lease_until=None, refresh_count=F("refresh_count") + 1)
                return token
            # Another worker is refreshing: the current token is fine while it is clearly valid.
            if row.token and row.expires_at and row.expires_at - now > MIN_VALID:
                return row.token
            self.sleep(wait_seconds)
        raise WeChatApiError(_("the access token could not be refreshed in time"), retryable=True,
                             code="wechat_token_timeout")

    def invalidate_token(self, token: str) -> None:
        """Mark ``token`` as expired if it is still the cached one (a newer token is left alone)."""
        AccessToken.objects.filter(account=self.account, token=token).update(expires_at=self.now() - timedelta(seconds=1))

    def call(self, path: str, body: Mapping[str, Any] | None = None, *, method: str = "POST") -> dict[str, Any]:
        """Call an API ``path`` with the access token; refresh the token and retry once if WeChat
        rejects it. Raises :class:`WeChatApiError` for a non-zero errcode."""
        for round_ in (1, 2):
            token = self.access_token()
            data = self._request(method, path, params={"access_token": token}, body=dict(body or {}))
            errcode = int(data.get("errcode") or 0)
            if errcode in TOKEN_ERRORS and round_ == 1:
                self.invalidate_token(token)
                continue
            if errcode:
                raise _error_for(errcode, str(data.get("errmsg", "")))
            return data
        raise AssertionError("unreachable")  # pragma: no cover

    # -- API methods ------------------------------------------------------------------------

    def send_custom(self, openid: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send a customer-service message (客服消息). ``payload`` is the message part as WeChat's docs
        give it, e.g. ``{"msgtype": "text", "text": {"content": "…"}}``, ``{"msgtype": "image",
        "image": {"media_id": "…"}}``, ``{"msgtype": "news", "news": {"articles": [{title, description,
        url, picurl}]}}`` or ``{"msgtype": "link", "link": {title, description, url, thumb_url}}``."""
        if not isinstance(payload, Mapping) or not payload.get("msgtype"):
            raise WeChatApiError(_("a customer-service message needs a msgtype"), code="invalid_payload")
        return self.call("/cgi-bin/message/custom/send", {"touser": openid, **payload})

    def send_template(self, openid: str, template_id: str, data: Mapping[str, Any], url: str | None = None) -> dict[str, Any]:
        """Send a template message (模板消息); ``data`` maps the template's keys to ``{"value": …}``
        (plain values are wrapped). Returns WeChat's answer, with ``msgid``."""
        body: dict[str, Any] = {"touser": openid, "template_id": template_id,
                                "data": {k: v if isinstance(v, Mapping) else {"value": str(v)} for k, v in data.items()}}
        if url:
            body["url"] = url
        return self.call("/cgi-bin/message/template/send", body)

    def create_qr_scene(self, scene: str, *, permanent: bool = True, expire_seconds: int | None = None) -> dict[str, Any]:
        """Create a parametric QR code for ``scene`` (1–64 characters): permanent (QR_LIMIT_STR_SCENE)
        or temporary (QR_STR_SCENE, ``expire_seconds`` up to 30 days). Returns ``{"ticket", "url",
        "expire_seconds"}``; the image is at ``https://mp.weixin.qq.com/cgi-bin/showqrcode?ticket=…``
        and the ``url`` can be drawn as a QR code directly."""
        if not scene or len(scene) > 64:
            raise WeChatApiError(_("a QR scene is 1–64 characters"), code="invalid_scene")
        body: dict[str, Any] = {
            "action_name": "QR_LIMIT_STR_SCENE" if permanent else "QR_STR_SCENE",
            "action_info": {"scene": {"scene_str": scene}},
        }
        if not permanent:
            body["expire_seconds"] = int(expire_seconds or 2_592_000)
        data = self.call("/cgi-bin/qrcode/create", body)
        return {"ticket": data.get("ticket", ""), "url": data.get("url", ""),
                "expire_seconds": data.get("expire_seconds")}


def client_for(account: WeChatAccount, **options: Any) -> WeChatApiClient:
    """The API client of ``account`` (base URL from ``SHEQUN_WECHAT_API_BASE``)."""
    return WeChatApiClient(account, **options)
