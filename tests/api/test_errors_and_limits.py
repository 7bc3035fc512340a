"""One error format for everything, and the per-key rate limit."""

from __future__ import annotations

from django.core.cache import cache
from django.test import override_settings

from shequn.api import ratelimit
from shequn.lifecycle import services as lifecycle

from .helpers import error_code, make_client


def test_unknown_route_under_api_is_a_json_404(api, anon):
    for client in (api, anon):
        for method in ("get", "post", "delete"):
            r = getattr(client, method)("/api/v1/no-such-thing")
            assert r.status_code == 404 and error_code(r) == "not_found"
    r = api.get("/api/v1/members/not-a-number")
    assert r.status_code == 404 and error_code(r) == "not_found"


def test_wrong_method_is_a_json_405(api):
    r = api.delete("/api/v1/workspace")
    assert r.status_code == 405 and error_code(r) == "method_not_allowed"
    assert r["Allow"] == "GET"


def test_malformed_json_is_a_400(api):
    r = api.client.post("/api/v1/members", "{not json", content_type="application/json")
    assert r.status_code == 400 and error_code(r) == "bad_request"


def test_unexpected_exception_is_a_500_without_traceback(api, monkeypatch, caplog):
    def broken(workspace):
        raise RuntimeError("secret internals /srv/db password=hunter2")

    monkeypatch.setattr(lifecycle, "stages", broken)
    r = api.get("/api/v1/stages")
    assert r.status_code == 500 and error_code(r) == "internal_error"
    assert b"hunter2" not in r.content and b"Traceback" not in r.content
    assert "hunter2" in caplog.text  # logged for the operators, not shown to the client


@override_settings(DEBUG=True)
def test_no_traceback_even_in_debug(api, monkeypatch):
    monkeypatch.setattr(lifecycle, "stages", lambda workspace: 1 / 0)
    r = api.get("/api/v1/stages")
    assert r.status_code == 500 and error_code(r) == "internal_error"
    assert b"ZeroDivisionError" not in r.content


# --------------------------------------------------------------------------------------------- rate limit


@override_settings(API_RATE_LIMIT_PER_MINUTE=3)
def test_rate_limit_per_key(ws):
    cache.clear()
    first = make_client(ws, "owner", name="first")
    second = make_client(ws, "owner", name="second")
    remaining = []
    for _ in range(3):
        r = first.get("/api/v1/workspace")
        assert r.status_code == 200
        assert r["X-RateLimit-Limit"] == "3"
        remaining.append(r["X-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]

    r = first.get("/api/v1/workspace")
    assert r.status_code == 429 and error_code(r) == "rate_limited"
    assert 1 <= int(r["Retry-After"]) <= 60
    assert r.json()["error"]["details"] == {"retry_after": int(r["Retry-After"])}
    assert r["X-RateLimit-Remaining"] == "0"
    # Writes are refused too, before anything is done.
    r = first.post("/api/v1/members", {"identities": [{"kind": "phone", "value": "13800138000"}]})
    assert r.status_code == 429

    # Another key has its own window.
    r = second.get("/api/v1/workspace")
    assert r.status_code == 200 and r["X-RateLimit-Remaining"] == "2"


@override_settings(API_RATE_LIMIT_PER_MINUTE=2)
def test_errors_carry_rate_headers_and_count(ws):
    cache.clear()
    client = make_client(ws, "clerk")
    r = client.get("/api/v1/members")
    assert r.status_code == 403 and r["X-RateLimit-Remaining"] == "1"
    r = client.get("/api/v1/members/lookup", {"kind": "phone", "value": "13800138000"})
    assert r.status_code == 404 and r["X-RateLimit-Remaining"] == "0"
    assert client.get("/api/v1/members/lookup", {"kind": "phone", "value": "13800138000"}).status_code == 429


@override_settings(API_RATE_LIMIT_PER_MINUTE=1)
def test_window_rolls_over(ws, monkeypatch):
    clock = [1_000_000 * 60 + 59.5]
    monkeypatch.setattr(ratelimit, "_clock", lambda: clock[0])
    client = make_client(ws, "owner")
    assert client.get("/api/v1/workspace").status_code == 200
    r = client.get("/api/v1/workspace")
    assert r.status_code == 429 and r["Retry-After"] == "1"
    clock[0] += 1  # the next minute
    assert client.get("/api/v1/workspace").status_code == 200
