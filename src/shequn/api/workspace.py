"""The caller's workspace and its API keys."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import Field

from shequn.core import services as core
from shequn.core.models import ApiKey
from shequn.core.tenancy import scoped
from shequn.lifecycle import services as lifecycle

from .auth import OWNERS, READERS, allow, context
from .lifecycle import StageOut
from .schemas import Input, with_errors

router = Router(tags=["workspace"])
keys_router = Router(tags=["api-keys"])


class WorkspaceOut(Schema):
    slug: str
    name: str
    timezone: str
    country: str = Field(description="Region used to read local phone numbers")
    stages: list[StageOut]


class ApiKeyIn(Input):
    name: str = Field(min_length=1, max_length=100)
    role: str = Field("operator", description="owner, operator, agent or clerk")


class ApiKeyOut(Schema):
    id: int
    name: str
    prefix: str = Field(description="The public part of the key: sq_<prefix>_…")
    role: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    secret: str = Field(description="The key itself. Shown once: only its hash is kept")


class ApiKeyList(Schema):
    items: list[ApiKeyOut]


@router.get("/workspace", response=with_errors({200: WorkspaceOut}), operation_id="workspace_get",
            summary="The caller's workspace")
@allow(*READERS)
def get_workspace(request: HttpRequest) -> dict[str, Any]:
    ctx = context(request)
    ws = ctx.workspace
    return {"slug": ws.slug, "name": ws.name, "timezone": ws.default_timezone, "country": ws.default_country,
            "stages": lifecycle.stages(ws)}


@keys_router.get("/api-keys", response=with_errors({200: ApiKeyList}), operation_id="api_keys_list",
                 summary="List API keys")
@allow(*OWNERS)
def list_keys(request: HttpRequest) -> dict[str, Any]:
    """Revoked keys included; secrets are never shown again."""
    ctx = context(request)
    return {"items": list(scoped(ApiKey, ctx.workspace).order_by("-pk"))}


@keys_router.post("/api-keys", response=with_errors({201: ApiKeyCreatedOut}), operation_id="api_keys_create",
                  summary="Create an API key")
@allow(*OWNERS)
def create_key(request: HttpRequest, body: ApiKeyIn) -> Status[ApiKey]:
    """The answer holds the secret: store it now, it cannot be read again."""
    ctx = context(request)
    key, secret = core.create_api_key(ctx.workspace, body.name, role=body.role, created_by=ctx.user, actor=ctx.actor)
    key.secret = secret  # type: ignore[attr-defined]  # shown in this answer only
    return Status(201, key)


@keys_router.post("/api-keys/{int:key_id}/revoke", response=with_errors({200: ApiKeyOut}), operation_id="api_keys_revoke",
                  summary="Revoke an API key")
@allow(*OWNERS)
def revoke_key(request: HttpRequest, key_id: int) -> ApiKey:
    """Takes effect at once; revoking twice is harmless."""
    ctx = context(request)
    return core.revoke_api_key(ctx.workspace, key_id, actor=ctx.actor)
