"""The workspace's vocabularies: tags, the keyword tree and custom attribute definitions."""

from __future__ import annotations

from typing import Any

from django.db.models import Count
from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import Field

from shequn.core.tenancy import scoped
from shequn.members import services as members
from shequn.members.models import AttributeDefinition, Keyword, Tag

from .auth import MANAGERS, READERS, allow, context
from .schemas import Input, with_errors

router = Router(tags=["catalog"])


class TagOut(Schema):
    id: int
    name: str
    member_count: int


class TagList(Schema):
    items: list[TagOut]


class KeywordNode(Schema):
    id: int
    name: str
    path: str
    depth: int
    member_count: int
    children: list[KeywordNode]


KeywordNode.model_rebuild()


class KeywordTree(Schema):
    items: list[KeywordNode] = Field(description="First-level keywords, each with its children")


class AttributeIn(Input):
    key: str = Field(description="Slug, unique in the workspace")
    label: str = ""
    type: str = Field(description="text, number, boolean, date or choice")
    choices: list[str] = Field(default_factory=list, description="Allowed values of a choice attribute")


class AttributeOut(Schema):
    id: int
    key: str
    label: str
    type: str
    choices: list[Any]


class AttributeList(Schema):
    items: list[AttributeOut]


@router.get("/tags", response=with_errors({200: TagList}), operation_id="tags_list", summary="List tags")
@allow(*READERS)
def list_tags(request: HttpRequest) -> dict[str, Any]:
    """Every tag with the number of members that carry it."""
    ctx = context(request)
    rows = scoped(Tag, ctx.workspace).annotate(member_count=Count("member_tags")).order_by("name")
    return {"items": list(rows)}


@router.get("/keywords", response=with_errors({200: KeywordTree}), operation_id="keywords_tree",
            summary="The keyword tree")
@allow(*READERS)
def keyword_tree(request: HttpRequest) -> dict[str, Any]:
    """The hierarchical keyword index (一级 / 二级 …); ``member_count`` counts members linked to the
    node itself (filtering members by a keyword includes the keywords below it)."""
    ctx = context(request)
    rows = list(scoped(Keyword, ctx.workspace).annotate(member_count=Count("member_keywords")).order_by("path"))
    nodes: dict[int, dict[str, Any]] = {
        k.pk: {"id": k.pk, "name": k.name, "path": k.path, "depth": k.depth, "member_count": k.member_count,
               "children": []} for k in rows}
    roots: list[dict[str, Any]] = []
    for k in rows:
        parent = nodes.get(k.parent_id) if k.parent_id else None
        (parent["children"] if parent is not None else roots).append(nodes[k.pk])
    return {"items": roots}


@router.get("/attributes", response=with_errors({200: AttributeList}), operation_id="attributes_list",
            summary="List custom attribute definitions")
@allow(*READERS)
def list_attributes(request: HttpRequest) -> dict[str, Any]:
    ctx = context(request)
    return {"items": list(scoped(AttributeDefinition, ctx.workspace).order_by("key"))}


@router.post("/attributes", response=with_errors({200: AttributeOut, 201: AttributeOut}),
             operation_id="attributes_define", summary="Define a custom attribute")
@allow(*MANAGERS)
def define_attribute(request: HttpRequest, body: AttributeIn) -> Status[AttributeDefinition]:
    """201 when the key is new, 200 when an existing definition was changed."""
    ctx = context(request)
    existed = scoped(AttributeDefinition, ctx.workspace).filter(key=body.key).exists()
    d = members.define_attribute(ctx.workspace, body.key, body.label, body.type, body.choices, actor=ctx.actor)
    return Status(200 if existed else 201, d)
