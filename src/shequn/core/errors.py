"""One error type for every layer. The API turns it into ``{"error": {"code", "message", "details"}}``
with a stable ``code``; the console shows ``message``; the CLI prints it and exits non-zero."""

from __future__ import annotations

from typing import Any


class ShequnError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class ValidationError(ShequnError):
    code = "validation_error"
    status = 422


class NotFound(ShequnError):
    code = "not_found"
    status = 404


class Conflict(ShequnError):
    code = "conflict"
    status = 409


class PermissionDenied(ShequnError):
    code = "forbidden"
    status = 403


class Unauthorized(ShequnError):
    code = "unauthorized"
    status = 401


class RateLimited(ShequnError):
    code = "rate_limited"
    status = 429
