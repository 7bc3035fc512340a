"""The lifecycle pipeline: its stages and the rules that move members along it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import Field

from shequn.core.models import Workspace
from shequn.core.tenancy import scoped
from shequn.lifecycle import services as lifecycle
from shequn.lifecycle.models import StageRule

from .auth import MANAGERS, READERS, allow, context
from .schemas import Input, with_errors

router = Router(tags=["lifecycle"])


class StageOut(Schema):
    id: int
    key: str
    name: str
    position: int


class StageList(Schema):
    items: list[StageOut]


class RulePatch(Input):
    name: str | None = None
    interaction_type: str | None = None
    direction: str | None = Field(None, description="in, out or empty for either")
    channel: str | None = None
    touchpoint: str | None = Field(None, description="Touchpoint code; empty for any")
    min_amount: Decimal | None = None
    min_count: int | None = None
    target_stage: str | None = Field(None, description="Stage key")
    allow_backward: bool | None = None
    priority: int | None = Field(None, description="Lower runs first")
    enabled: bool | None = None


class RuleIn(RulePatch):
    name: str  # type: ignore[assignment]
    interaction_type: str  # type: ignore[assignment]
    target_stage: str = Field(description="Stage key")  # type: ignore[assignment]


class RuleOut(Schema):
    id: int
    name: str
    interaction_type: str
    direction: str
    channel: str
    touchpoint: str | None
    min_amount: Decimal | None
    min_count: int
    target_stage: str
    allow_backward: bool
    priority: int
    enabled: bool

    @staticmethod
    def resolve_touchpoint(obj: StageRule) -> str | None:
        return obj.touchpoint.code if obj.touchpoint_id and obj.touchpoint else None

    @staticmethod
    def resolve_target_stage(obj: StageRule) -> str:
        return obj.target_stage.key


class RuleList(Schema):
    items: list[RuleOut]


def _rules(workspace: Workspace) -> QuerySet[StageRule]:
    return scoped(StageRule, workspace).select_related("target_stage", "touchpoint")


def _rule_data(body: RulePatch) -> dict[str, object]:
    data = body.model_dump(exclude_unset=True)
    # ``touchpoint: null`` clears it; other nulls mean "leave as it is".
    return {k: v for k, v in data.items() if v is not None or k in {"touchpoint", "min_amount"}}


@router.get("/stages", response=with_errors({200: StageList}), operation_id="stages_list",
            summary="The pipeline's stages")
@allow(*READERS)
def list_stages(request: HttpRequest) -> dict[str, Any]:
    ctx = context(request)
    return {"items": lifecycle.stages(ctx.workspace)}


@router.get("/stage-rules", response=with_errors({200: RuleList}), operation_id="stage_rules_list",
            summary="List stage rules")
@allow(*MANAGERS)
def list_rules(request: HttpRequest) -> dict[str, Any]:
    """In the order they run (priority, then id)."""
    ctx = context(request)
    return {"items": list(_rules(ctx.workspace).order_by("priority", "pk"))}


@router.post("/stage-rules", response=with_errors({201: RuleOut}), operation_id="stage_rules_create",
             summary="Create a stage rule")
@allow(*MANAGERS)
def create_rule(request: HttpRequest, body: RuleIn) -> Status[StageRule]:
    ctx = context(request)
    rule = lifecycle.save_rule(ctx.workspace, _rule_data(body), actor=ctx.actor)
    return Status(201, _rules(ctx.workspace).get(pk=rule.pk))


@router.patch("/stage-rules/{int:rule_id}", response=with_errors({200: RuleOut}), operation_id="stage_rules_update",
              summary="Change a stage rule")
@allow(*MANAGERS)
def update_rule(request: HttpRequest, rule_id: int, body: RulePatch) -> StageRule:
    ctx = context(request)
    rule = lifecycle.save_rule(ctx.workspace, _rule_data(body), rule_id=rule_id, actor=ctx.actor)
    return _rules(ctx.workspace).get(pk=rule.pk)


@router.delete("/stage-rules/{int:rule_id}", response=with_errors({204: None}), operation_id="stage_rules_delete",
               summary="Delete a stage rule")
@allow(*MANAGERS)
def delete_rule(request: HttpRequest, rule_id: int) -> Status[None]:
    ctx = context(request)
    lifecycle.delete_rule(ctx.workspace, rule_id, actor=ctx.actor)
    return Status(204, None)
