"""Schemas and helpers shared by every part of the API: input base, error envelope, keyset pages."""

from __future__ import annotations

from typing import Any, TypeVar

from django.db import models
from ninja import Schema
from pydantic import ConfigDict, Field

MAX_PAGE = 500
DEFAULT_PAGE = 50

M = TypeVar("M", bound=models.Model)


class Input(Schema):
    """Request bodies reject fields they do not know, so a misspelt field is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(Schema):
    code: str = Field(description="Stable machine-readable code, e.g. not_found, validation_error")
    message: str = Field(description="Human-readable explanation")
    details: Any = Field(None, description="Extra data: the field at fault, ninja's validation errors …")


class ErrorOut(Schema):
    error: ErrorBody


ERROR_STATUSES = frozenset({400, 401, 403, 404, 409, 422, 429})


def with_errors(ok: dict[int, Any]) -> dict[Any, Any]:
    """A response map for an operation: its success schemas plus the error envelope."""
    return {**ok, ERROR_STATUSES: ErrorOut}


class DeletedOut(Schema):
    deleted: int


def keyset_page(qs: models.QuerySet[M], *, after: int | None, limit: int) -> tuple[list[M], int | None]:
    """Newest first by primary key: the page and the cursor (``after``) for the next one, or None."""
    limit = max(1, min(limit, MAX_PAGE))
    if after is not None:
        qs = qs.filter(pk__lt=after)
    rows = list(qs.order_by("-pk")[: limit + 1])
    return rows[:limit], (rows[limit - 1].pk if len(rows) > limit else None)
