"""Helpers for the API tests: a JSON client that sends one API key, and error-envelope checks."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client

from shequn.core import services as core
from shequn.core.models import ApiKey, Workspace


class ApiClient:
    """A Django test client that sends JSON and one workspace API key."""

    def __init__(self, key: ApiKey | None, secret: str | None, **client_kwargs: Any) -> None:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self.key = key
        self.secret = secret
        self.client = Client(headers=headers, **client_kwargs)

    def _send(self, method: str, path: str, body: Any = None, **kw: Any):
        if body is not None:
            kw.setdefault("content_type", "application/json")
            kw["data"] = json.dumps(body)
        return getattr(self.client, method)(path, **kw)

    def get(self, path: str, params: dict[str, Any] | None = None, **kw: Any):
        return self.client.get(path, params or {}, **kw)

    def post(self, path: str, body: Any = None, **kw: Any):
        return self._send("post", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any):
        return self._send("put", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any):
        return self._send("patch", path, body, **kw)

    def delete(self, path: str, query: str = "", **kw: Any):
        return self.client.delete(path + (f"?{query}" if query else ""), **kw)


def make_client(workspace: Workspace, role: str = "owner", name: str | None = None) -> ApiClient:
    key, secret = core.create_api_key(workspace, name or f"{role} key", role=role)
    return ApiClient(key, secret)


def error_code(response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]["code"]
