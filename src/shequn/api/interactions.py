"""Interactions (one, a batch, the filtered log) and the touchpoint registry."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _
from ninja import Query, Router, Schema, Status
from pydantic import Field

from shequn.core.errors import Conflict, NotFound, ValidationError
from shequn.core.models import Workspace
from shequn.core.tenancy import scoped
from shequn.interactions import services as interactions
from shequn.interactions import touchpoint_map
from shequn.interactions.models import Interaction, Touchpoint

from .auth import MANAGERS, READERS, allow, context
from .schemas import DEFAULT_PAGE, MAX_PAGE, Input, keyset_page, with_errors

router = Router(tags=["interactions"])
touchpoint_router = Router(tags=["touchpoints"])


# ---------------------------------------------------------------------------------------------
# schemas


class EventIdentityIn(Input):
    kind: str = Field(description="wechat_openid, wechat_unionid, phone, email or external")
    value: str
    namespace: str = Field("", description="WeChat AppID for an openid, system name for an external id")


class InteractionIn(Input):
    """One event. The member is ``member_id`` or found/created from ``identities``."""

    member_id: int | None = None
    identities: list[EventIdentityIn] | None = None
    profile: dict[str, Any] | None = Field(None, description="Profile fields to fill when blank")
    type: str = Field(description="message, scan, follow, unfollow, purchase, refund, visit, event_attendance, "
                                  "share, referral, review, support_contact, satisfaction or custom")
    channel: str = Field(description="wechat, store, web, phone, email …")
    direction: str | None = Field(None, description="in (member → brand, default) or out")
    touchpoint: str | None = Field(None, description="Touchpoint code")
    occurred_at: str = Field(description="ISO 8601 date-time with offset, e.g. 2026-06-01T10:00:00+08:00")
    source: str | None = Field(None, description="The system that produced the event (default 'api')")
    external_id: str | None = Field(None, description="Its id there: (source, external_id) is stored once")
    amount: Decimal | None = None
    currency: str | None = None
    properties: dict[str, Any] | None = None


class IngestOut(Schema):
    id: int | None
    member_id: int | None
    duplicate: bool


class BatchIn(Input):
    events: list[Any] = Field(description="Objects shaped like InteractionIn; each row is checked on its own")


class RowOut(Schema):
    index: int
    status: str = Field(description="created, duplicate or error")
    id: int | None = None
    member_id: int | None = None
    error: dict[str, Any] | None = None


class BatchCounts(Schema):
    created: int
    duplicate: int
    error: int


class BatchOut(Schema):
    results: list[RowOut]
    counts: BatchCounts


class InteractionOut(Schema):
    id: int
    member_id: int
    origin_member_id: int
    type: str
    channel: str
    direction: str
    touchpoint: str | None
    occurred_at: dt.datetime
    received_at: dt.datetime
    source: str
    external_id: str | None
    amount: Decimal | None
    currency: str
    properties: dict[str, Any]

    @staticmethod
    def resolve_touchpoint(obj: Interaction) -> str | None:
        return obj.touchpoint.code if obj.touchpoint_id and obj.touchpoint else None


class InteractionPage(Schema):
    items: list[InteractionOut]
    next: int | None


class TouchpointIn(Input):
    code: str = Field(description="Slug, unique in the workspace")
    name: str
    channel: str
    function: str = ""
    segment: str = ""
    lifecycle_stage: str = ""
    importance: int = 3
    complexity: int = 3
    consistency: int = 3
    description: str = ""


class TouchpointPatch(Input):
    name: str | None = None
    channel: str | None = None
    function: str | None = None
    segment: str | None = None
    lifecycle_stage: str | None = None
    importance: int | None = None
    complexity: int | None = None
    consistency: int | None = None
    description: str | None = None


class TouchpointOut(Schema):
    id: int
    code: str
    name: str
    channel: str
    function: str
    segment: str
    lifecycle_stage: str
    importance: int
    complexity: int
    consistency: int
    description: str
    created_at: dt.datetime


class TouchpointList(Schema):
    items: list[TouchpointOut]


class MapPointOut(Schema):
    code: str
    name: str
    channel: str
    function: str
    segment: str
    lifecycle_stage: str
    importance: int
    complexity: int
    consistency: int
    conversations: int
    inbound: int
    positive: int
    negative: int
    trust: float = Field(description="(positive + 1) / (positive + negative + 2)")
    value: float = Field(description="0.5 · importance (0–1) + 0.5 · share of the busiest touchpoint's conversations")
    conversation_share: float
    quadrant_key: str
    quadrant: str = Field(description="Quadrant label in the request's language")
    flagged: bool = Field(description="高会话低信任: many conversations, low trust")
    quiet_trusted: bool = Field(description="低会话高信任: few conversations, high trust")


class TouchpointMapOut(Schema):
    window_days: int
    since: dt.date | None
    until: dt.date | None
    value_threshold: float
    complexity_threshold: int
    conversation_median: float
    points: list[MapPointOut] = Field(description="Busiest first")
    flagged: list[str] = Field(description="Codes of the 高会话低信任 touchpoints, busiest first")
    quiet_trusted: list[str] = Field(description="Codes of the 低会话高信任 touchpoints, most trusted first")

    @staticmethod
    def resolve_flagged(obj: touchpoint_map.TouchpointMap) -> list[str]:
        return [p.code for p in obj.flagged]

    @staticmethod
    def resolve_quiet_trusted(obj: touchpoint_map.TouchpointMap) -> list[str]:
        return [p.code for p in obj.quiet_trusted]


# Paths of the API under /touchpoints/ that are not touchpoint codes.
RESERVED_CODES = frozenset({"map"})


# ---------------------------------------------------------------------------------------------
# interactions


def _aware(value: dt.datetime | None, field: str) -> dt.datetime | None:
    if value is not None and timezone.is_naive(value):
        raise ValidationError(_("%(field)s must carry a time zone offset (e.g. +08:00 or Z)") % {"field": field},
                              code="invalid_time", details={"field": field})
    return value


def interaction_rows(workspace: Workspace) -> models.QuerySet[Interaction]:
    return scoped(Interaction, workspace).select_related("touchpoint")


@router.post("/interactions", response=with_errors({200: IngestOut, 201: IngestOut}), operation_id="interactions_create",
             summary="Record one interaction")
@allow(*READERS)
def create_interaction(request: HttpRequest, body: InteractionIn) -> Status[dict[str, Any]]:
    """Store one event: 201 when stored, 200 with ``duplicate: true`` and the stored id when its
    ``(source, external_id)`` was stored before. A bad event is a 422 with the reason's code."""
    ctx = context(request)
    result = interactions.ingest(ctx.workspace, body.model_dump(exclude_none=True, mode="python"), actor=ctx.actor)
    duplicate = result.status == "duplicate"
    return Status(200 if duplicate else 201, {"id": result.id, "member_id": result.member_id, "duplicate": duplicate})


@router.post("/interactions/batch", response=with_errors({200: BatchOut}), operation_id="interactions_batch",
             summary="Record a batch of interactions")
@allow(*READERS)
def create_batch(request: HttpRequest, body: BatchIn) -> dict[str, Any]:
    """Up to ``API_MAX_BATCH`` events (10,000 by default). Good rows are stored and bad rows reported
    row by row; the answer lists every row's outcome in order, with counts."""
    ctx = context(request)
    limit = int(settings.API_MAX_BATCH)
    if not body.events:
        raise ValidationError(_("The batch is empty."), code="empty_batch", details={"field": "events"})
    if len(body.events) > limit:
        raise ValidationError(_("A batch holds at most %(limit)d events; this one has %(n)d.")
                              % {"limit": limit, "n": len(body.events)}, code="batch_too_large",
                              details={"max": limit, "received": len(body.events)})
    results = interactions.ingest_batch(ctx.workspace, body.events, actor=ctx.actor)
    counts = {status: sum(r.status == status for r in results) for status in ("created", "duplicate", "error")}
    return {"results": results, "counts": counts}


@router.get("/interactions", response=with_errors({200: InteractionPage}), operation_id="interactions_list",
            summary="List interactions")
@allow(*READERS)
def list_interactions(
    request: HttpRequest,
    type: str = "",
    channel: str = "",
    member_id: int | None = None,
    since: dt.datetime | None = Query(None, description="occurred_at ≥ since (with offset)"),  # noqa: B008
    until: dt.datetime | None = Query(None, description="occurred_at < until (with offset)"),  # noqa: B008
    after: int | None = Query(None, description="Cursor: the `next` of the previous page"),  # noqa: B008
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),  # noqa: B008
) -> dict[str, Any]:
    """Newest first (by id), filtered by type, channel, member and time."""
    ctx = context(request)
    qs = interaction_rows(ctx.workspace)
    if type:
        qs = qs.filter(type=type)
    if channel:
        qs = qs.filter(channel=channel)
    if member_id is not None:
        qs = qs.filter(member_id=member_id)
    if _aware(since, "since") is not None:
        qs = qs.filter(occurred_at__gte=since)
    if _aware(until, "until") is not None:
        qs = qs.filter(occurred_at__lt=until)
    rows, next_cursor = keyset_page(qs, after=after, limit=limit)
    return {"items": rows, "next": next_cursor}


# ---------------------------------------------------------------------------------------------
# touchpoints


def _touchpoint(workspace: Workspace, code: str) -> Touchpoint:
    tp = scoped(Touchpoint, workspace).filter(code=code).first()
    if tp is None:
        raise NotFound(_("touchpoint %(code)s not found") % {"code": code})
    return tp


@touchpoint_router.get("/touchpoints", response=with_errors({200: TouchpointList}), operation_id="touchpoints_list",
                       summary="List touchpoints")
@allow(*READERS)
def list_touchpoints(request: HttpRequest) -> dict[str, Any]:
    ctx = context(request)
    return {"items": list(scoped(Touchpoint, ctx.workspace).order_by("code"))}


@touchpoint_router.post("/touchpoints", response=with_errors({201: TouchpointOut}),
                        operation_id="touchpoints_create", summary="Create a touchpoint")
@allow(*MANAGERS)
def create_touchpoint(request: HttpRequest, body: TouchpointIn) -> Status[Touchpoint]:
    ctx = context(request)
    data = body.model_dump()
    code = data.pop("code")
    if code in RESERVED_CODES:
        raise ValidationError(_("%(code)s is reserved; choose another code") % {"code": code}, code="reserved_code",
                              details={"field": "code"})
    if scoped(Touchpoint, ctx.workspace).filter(code=code).exists():
        raise Conflict(_("touchpoint %(code)s already exists") % {"code": code}, code="touchpoint_exists",
                       details={"field": "code"})
    tp = interactions.save_touchpoint(ctx.workspace, code, data, actor=ctx.actor)
    return Status(201, tp)


# Registered before /touchpoints/{code}, which would otherwise read "map" as a code.
@touchpoint_router.get("/touchpoints/map", response=with_errors({200: TouchpointMapOut}),
                       operation_id="touchpoints_map", summary="The touchpoint map")
@allow(*MANAGERS)
def get_map(request: HttpRequest, days: int = Query(90, ge=1, le=730)) -> touchpoint_map.TouchpointMap:  # noqa: B008
    """Every touchpoint on the value × complexity plane over the last ``days`` days, with trust from
    its positive and negative signals, and the two lists to act on: 高会话低信任 (fix first) and
    低会话高信任 (make more visible). Formulas: docs/api.md, "Touchpoint map"."""
    ctx = context(request)
    return touchpoint_map.compute(ctx.workspace, days=days)


@touchpoint_router.get("/touchpoints/{slug:code}", response=with_errors({200: TouchpointOut}),
                       operation_id="touchpoints_get", summary="Get a touchpoint")
@allow(*READERS)
def get_touchpoint(request: HttpRequest, code: str) -> Touchpoint:
    ctx = context(request)
    return _touchpoint(ctx.workspace, code)


@touchpoint_router.patch("/touchpoints/{slug:code}", response=with_errors({200: TouchpointOut}),
                         operation_id="touchpoints_update", summary="Change a touchpoint")
@allow(*MANAGERS)
def update_touchpoint(request: HttpRequest, code: str, body: TouchpointPatch) -> Touchpoint:
    ctx = context(request)
    _touchpoint(ctx.workspace, code)
    tp = interactions.save_touchpoint(ctx.workspace, code, body.model_dump(exclude_unset=True, exclude_none=True),
                                     actor=ctx.actor)
    return tp
