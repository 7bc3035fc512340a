"""Members: list and search, upsert by identity, profile, identities, tags, keywords, consent,
timeline, lifecycle stage, merges."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Prefetch, Q, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext as _
from ninja import Query, Router, Schema, Status
from pydantic import Field

from shequn.core.errors import NotFound
from shequn.core.models import Workspace
from shequn.core.tenancy import get_scoped, scoped
from shequn.lifecycle import services as lifecycle
from shequn.members import queries
from shequn.members import services as members
from shequn.members.models import (
    Identity,
    Member,
    MemberKeyword,
    MemberTag,
    MergeRecord,
    Subscription,
)

from .auth import EVERYONE, MANAGERS, READERS, allow, context
from .interactions import InteractionPage, interaction_rows
from .schemas import DEFAULT_PAGE, MAX_PAGE, Input, keyset_page, with_errors

router = Router(tags=["members"])
merge_router = Router(tags=["merges"])


# ---------------------------------------------------------------------------------------------
# schemas


class IdentityIn(Input):
    kind: str = Field(description="wechat_openid, wechat_unionid, phone, email or external")
    value: str = Field(description="Phones and emails are normalised (E.164, lower case)")
    namespace: str = Field("", description="WeChat AppID for an openid, system name for an external id")


class IdentityOut(Schema):
    id: int
    kind: str
    namespace: str
    value: str
    verified: bool
    created_at: dt.datetime


class ProfilePatch(Input):
    display_name: str | None = None
    gender: str | None = Field(None, description="female, male, other or empty")
    birthday: str | None = Field(None, description="YYYY-MM-DD; empty string clears it")
    city: str | None = None
    timezone: str | None = Field(None, description="IANA name, e.g. Asia/Shanghai; empty = the workspace's")
    language: str | None = None


class ProfileIn(ProfilePatch):
    source_channel: str | None = Field(None, description="Acquisition channel: kept from the first time only")
    source_code: str | None = Field(None, description="Channel code / QR / poster id: first time only")


class MemberUpsertIn(Input):
    identities: list[IdentityIn] = Field(description="Every identity seen together; at least one")
    profile: ProfileIn | None = None
    attributes: dict[str, Any] = Field(default_factory=dict, description="Custom attributes (defined first)")
    tags: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list, description="Keyword paths, e.g. 茶/绿茶")
    overwrite: bool = Field(True, description="False: only fill fields that are blank")


class MemberPatchIn(ProfilePatch):
    attributes: dict[str, Any] | None = Field(None, description="null or '' as a value removes the attribute")


class MemberOut(Schema):
    id: int
    status: str
    merged_into_id: int | None
    display_name: str
    gender: str
    birthday: dt.date | None
    city: str
    timezone: str
    language: str
    attributes: dict[str, Any]
    source_channel: str
    source_code: str
    referrer_id: int | None
    stage: str | None = Field(description="Key of the lifecycle stage")
    stage_changed_at: dt.datetime | None
    strength: int = Field(description="Relationship strength 0 (none) … 5 (fervent)")
    interaction_count: int
    inbound_count: int
    outbound_count: int
    purchase_count: int
    purchase_total: Decimal
    first_interaction_at: dt.datetime | None
    last_interaction_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    identities: list[IdentityOut]
    tags: list[str]
    keywords: list[str]

    @staticmethod
    def resolve_stage(obj: Member) -> str | None:
        return obj.stage.key if obj.stage_id and obj.stage else None

    @staticmethod
    def resolve_identities(obj: Member) -> list[Identity]:
        return list(obj.identities.all())

    @staticmethod
    def resolve_tags(obj: Member) -> list[str]:
        return [mt.tag.name for mt in obj.member_tags.all()]

    @staticmethod
    def resolve_keywords(obj: Member) -> list[str]:
        return [mk.keyword.path for mk in obj.member_keywords.all()]


class SubscriptionOut(Schema):
    scope: str
    key: str
    subscribed: bool
    source: str
    changed_at: dt.datetime


class MemberDetailOut(MemberOut):
    subscriptions: list[SubscriptionOut]

    @staticmethod
    def resolve_subscriptions(obj: Member) -> list[Subscription]:
        return list(obj.subscriptions.all())


class MemberPage(Schema):
    items: list[MemberOut]
    next: int | None = Field(description="Cursor for the next page (pass as ?after=), null on the last page")


class MergeOut(Schema):
    id: int
    survivor_id: int
    absorbed_id: int
    reason: str
    actor: str
    at: dt.datetime
    moved_member_ids: list[int]
    moved_identity_ids: list[int]
    added_tag_ids: list[int]
    added_keyword_ids: list[int]
    filled_fields: dict[str, Any]
    undone_at: dt.datetime | None
    undone_by: str


class MergePage(Schema):
    items: list[MergeOut]
    next: int | None


class UpsertOut(Schema):
    created: bool
    changed: bool
    member: MemberOut
    merges: list[MergeOut] = Field(description="Members found to be the same person and merged by this call")


class TagsIn(Input):
    names: list[str] = Field(min_length=1)


class TagsOut(Schema):
    tags: list[str] = Field(description="The member's tags after the change")


class KeywordsIn(Input):
    paths: list[str] = Field(min_length=1, description="Keyword paths such as 茶/绿茶 (created if new)")


class KeywordsOut(Schema):
    keywords: list[str] = Field(description="The member's keyword paths after the change")


class SubscriptionIn(Input):
    scope: str = Field(description="category or tag")
    key: str = Field(description="e.g. marketing, or a tag name")
    subscribed: bool
    source: str = Field("api", description="Where the consent was given")


class SubscriptionsIn(Input):
    subscriptions: list[SubscriptionIn] = Field(min_length=1)


class SubscriptionsOut(Schema):
    subscriptions: list[SubscriptionOut]


class StageIn(Input):
    stage: str = Field(description="Key of the target stage")


class StageChangeOut(Schema):
    id: int
    at: dt.datetime
    cause: str = Field(description="rule, manual, import, merge or unmerge")
    from_stage: str | None
    to_stage: str | None
    rule_id: int | None
    rule_name: str | None
    interaction_id: int | None
    actor: str

    @staticmethod
    def resolve_from_stage(obj: Any) -> str | None:
        return obj.from_stage.key if obj.from_stage_id and obj.from_stage else None

    @staticmethod
    def resolve_to_stage(obj: Any) -> str | None:
        return obj.to_stage.key if obj.to_stage_id and obj.to_stage else None

    @staticmethod
    def resolve_rule_name(obj: Any) -> str | None:
        return obj.rule.name if obj.rule_id and obj.rule else None


class StageHistoryOut(Schema):
    items: list[StageChangeOut]


class MergeIn(Input):
    survivor_id: int = Field(description="The member that stays")
    absorbed_id: int = Field(description="The member folded into the survivor")
    reason: str = Field(min_length=1, max_length=255)


# ---------------------------------------------------------------------------------------------
# reads


def with_related(qs: QuerySet[Member]) -> QuerySet[Member]:
    """Everything MemberOut shows, in a constant number of queries whatever the page size."""
    return qs.select_related("stage").prefetch_related(
        Prefetch("identities", queryset=Identity.objects.order_by("pk")),
        Prefetch("member_tags", queryset=MemberTag.objects.select_related("tag").order_by("tag__name")),
        Prefetch("member_keywords", queryset=MemberKeyword.objects.select_related("keyword").order_by("keyword__path")),
    )


def load_member(workspace: Workspace, member_id: int, *, detail: bool = False) -> Member:
    qs = with_related(scoped(Member, workspace))
    if detail:
        qs = qs.prefetch_related(Prefetch("subscriptions", queryset=Subscription.objects.order_by("scope", "key")))
    member = qs.filter(pk=member_id).first()
    if member is None:
        raise NotFound(_("member %(id)s not found") % {"id": member_id})
    return member


def member_id_or_404(workspace: Workspace, member_id: int) -> int:
    """``member_id`` if it names a member of ``workspace``; the API's 404 for a missing id otherwise
    (one query, nothing loaded). For routes of other domains that take a member id in the path."""
    if not queries.existing_ids(workspace, [member_id]):
        raise NotFound(_("member %(id)s not found") % {"id": member_id})
    return member_id


def _check_member(workspace: Workspace, member_id: int) -> Member:
    return get_scoped(Member, workspace, member_id)


@router.get("/members", response=with_errors({200: MemberPage}), operation_id="members_list", summary="List members")
@allow(*READERS)
def list_members(
    request: HttpRequest,
    q: str = Query("", description="Name prefix, member id, phone, email or any identity value"),  # noqa: B008
    tag: str = "",
    keyword: str = Query("", description="Keyword path; includes the keywords below it"),  # noqa: B008
    stage: str = Query("", description="Stage key"),  # noqa: B008
    strength: int | None = Query(None, ge=0, le=5),  # noqa: B008
    source: str = Query("", description="Acquisition channel"),  # noqa: B008
    attribute: str = Query("", description="key=value on a custom attribute"),  # noqa: B008
    include_merged: bool = False,
    after: int | None = Query(None, description="Cursor: the `next` of the previous page"),  # noqa: B008
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),  # noqa: B008
) -> dict[str, Any]:
    """Newest first. Filters combine with AND."""
    ctx = context(request)
    f = queries.MemberFilter(q=q, tag=tag, keyword=keyword, stage=stage, strength=strength, source=source,
                             attribute=attribute, include_merged=include_merged)
    rows, next_cursor = queries.page(with_related(queries.filter_members(ctx.workspace, f)), after=after, limit=limit)
    return {"items": rows, "next": next_cursor}


@router.get("/members/lookup", response=with_errors({200: MemberOut}), operation_id="members_lookup",
            summary="Find a member by identity")
@allow(*EVERYONE)
def lookup_member(
    request: HttpRequest,
    kind: str = Query(..., description="wechat_openid, wechat_unionid, phone, email or external"),  # noqa: B008
    value: str = Query(...),  # noqa: B008
    namespace: str = "",
) -> Member:
    """The member holding this identity, or 404. The value is normalised like on upsert."""
    ctx = context(request)
    found = members.find_member(ctx.workspace, {"kind": kind, "value": value, "namespace": namespace})
    if found is None:
        raise NotFound(_("no member has this identity"))
    return load_member(ctx.workspace, found.pk)


@router.post("/members", response=with_errors({200: UpsertOut, 201: UpsertOut}), operation_id="members_upsert",
             summary="Create or update a member by identities")
@allow(*MANAGERS)
def upsert_member(request: HttpRequest, body: MemberUpsertIn) -> Status[dict[str, Any]]:
    """Finds the member any of the identities belongs to (201 when a new member was created, 200
    otherwise), attaches new identities, updates the profile and attributes and adds tags and
    keywords. Identities held by several members merge them into the oldest (listed in ``merges``)."""
    ctx = context(request)
    profile = body.profile.model_dump(exclude_unset=True) if body.profile else {}
    with transaction.atomic():
        result = members.upsert_member(ctx.workspace, [i.model_dump() for i in body.identities], profile,
                                       body.attributes, overwrite=body.overwrite, actor=ctx.actor,
                                       reason="identities sent together to the API")
        if body.tags:
            members.add_tags(ctx.workspace, result.member.pk, body.tags, actor=ctx.actor)
        if body.keywords:
            members.add_keywords(ctx.workspace, result.member.pk, body.keywords, actor=ctx.actor)
    out = {"created": result.created, "changed": result.changed or bool(body.tags or body.keywords),
           "member": load_member(ctx.workspace, result.member.pk), "merges": result.merges}
    return Status(201 if result.created else 200, out)


@router.get("/members/{int:member_id}", response=with_errors({200: MemberDetailOut}), operation_id="members_get",
            summary="Get a member")
@allow(*READERS)
def get_member(request: HttpRequest, member_id: int) -> Member:
    ctx = context(request)
    return load_member(ctx.workspace, member_id, detail=True)


@router.patch("/members/{int:member_id}", response=with_errors({200: MemberDetailOut}), operation_id="members_update",
              summary="Change a member's profile and attributes")
@allow(*MANAGERS)
def update_member(request: HttpRequest, member_id: int, body: MemberPatchIn) -> Member:
    """Only the fields sent change. A null profile field is left as it is; an empty string clears it."""
    ctx = context(request)
    data = body.model_dump(exclude_unset=True)
    attributes = data.pop("attributes", None) or {}
    members.update_profile(ctx.workspace, member_id, data, attributes, actor=ctx.actor)
    return load_member(ctx.workspace, member_id, detail=True)


@router.post("/members/{int:member_id}/identities", response=with_errors({200: IdentityOut}),
             operation_id="members_add_identity", summary="Add an identity to a member")
@allow(*MANAGERS)
def add_identity(request: HttpRequest, member_id: int, body: IdentityIn) -> Identity:
    """409 ``identity_taken`` when another member holds it (merge them instead)."""
    ctx = context(request)
    return members.add_identity(ctx.workspace, member_id, body.model_dump(), actor=ctx.actor)


def _tag_names(workspace: Workspace, member_id: int) -> list[str]:
    return list(scoped(MemberTag, workspace).filter(member_id=member_id).order_by("tag__name")
                .values_list("tag__name", flat=True))


def _keyword_paths(workspace: Workspace, member_id: int) -> list[str]:
    return list(scoped(MemberKeyword, workspace).filter(member_id=member_id).order_by("keyword__path")
                .values_list("keyword__path", flat=True))


@router.post("/members/{int:member_id}/tags", response=with_errors({200: TagsOut}), operation_id="members_add_tags",
             summary="Tag a member")
@allow(*READERS)
def add_tags(request: HttpRequest, member_id: int, body: TagsIn) -> dict[str, Any]:
    """Tags are created when new."""
    ctx = context(request)
    members.add_tags(ctx.workspace, member_id, body.names, actor=ctx.actor)
    return {"tags": _tag_names(ctx.workspace, member_id)}


@router.delete("/members/{int:member_id}/tags", response=with_errors({200: TagsOut}), operation_id="members_remove_tags",
               summary="Untag a member")
@allow(*READERS)
def remove_tags(request: HttpRequest, member_id: int,
                name: list[str] = Query(..., description="Tag to remove; repeat for several")) -> dict[str, Any]:  # noqa: B008
    ctx = context(request)
    members.remove_tags(ctx.workspace, member_id, name, actor=ctx.actor)
    return {"tags": _tag_names(ctx.workspace, member_id)}


@router.post("/members/{int:member_id}/keywords", response=with_errors({200: KeywordsOut}),
             operation_id="members_add_keywords", summary="Add keywords to a member")
@allow(*MANAGERS)
def add_keywords(request: HttpRequest, member_id: int, body: KeywordsIn) -> dict[str, Any]:
    ctx = context(request)
    members.add_keywords(ctx.workspace, member_id, body.paths, actor=ctx.actor)
    return {"keywords": _keyword_paths(ctx.workspace, member_id)}


@router.delete("/members/{int:member_id}/keywords", response=with_errors({200: KeywordsOut}),
               operation_id="members_remove_keywords", summary="Remove keywords from a member")
@allow(*MANAGERS)
def remove_keywords(request: HttpRequest, member_id: int,
                    path: list[str] = Query(..., description="Keyword path; repeat for several")) -> dict[str, Any]:  # noqa: B008
    ctx = context(request)
    members.remove_keywords(ctx.workspace, member_id, path, actor=ctx.actor)
    return {"keywords": _keyword_paths(ctx.workspace, member_id)}


@router.put("/members/{int:member_id}/subscriptions", response=with_errors({200: SubscriptionsOut}),
            operation_id="members_set_subscriptions", summary="Set a member's consent")
@allow(*MANAGERS)
def set_subscriptions(request: HttpRequest, member_id: int, body: SubscriptionsIn) -> dict[str, Any]:
    """Sets each (scope, key) sent, all or none; returns every subscription of the member."""
    ctx = context(request)
    _check_member(ctx.workspace, member_id)
    with transaction.atomic():
        for s in body.subscriptions:
            members.set_subscription(ctx.workspace, member_id, s.scope, s.key, s.subscribed, source=s.source,
                                     actor=ctx.actor)
    rows = scoped(Subscription, ctx.workspace).filter(member_id=member_id).order_by("scope", "key")
    return {"subscriptions": list(rows)}


@router.get("/members/{int:member_id}/timeline", response=with_errors({200: InteractionPage}),
            operation_id="members_timeline", summary="A member's interactions")
@allow(*READERS)
def timeline(
    request: HttpRequest,
    member_id: int,
    after: int | None = Query(None, description="Cursor: the `next` of the previous page"),  # noqa: B008
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),  # noqa: B008
) -> dict[str, Any]:
    """Newest first by the time the interaction occurred; the cursor is the id of the last one shown."""
    ctx = context(request)
    _check_member(ctx.workspace, member_id)
    qs = interaction_rows(ctx.workspace).filter(member_id=member_id)
    if after is not None:
        last = qs.filter(pk=after).values_list("occurred_at", flat=True).first()
        if last is None:
            qs = qs.none()
        else:
            qs = qs.filter(Q(occurred_at__lt=last) | Q(occurred_at=last, pk__lt=after))
    rows = list(qs.order_by("-occurred_at", "-pk")[: limit + 1])
    next_cursor = rows[limit - 1].pk if len(rows) > limit else None
    return {"items": rows[:limit], "next": next_cursor}


@router.get("/members/{int:member_id}/stage-history", response=with_errors({200: StageHistoryOut}),
            operation_id="members_stage_history", summary="A member's lifecycle stage changes")
@allow(*READERS)
def stage_history(request: HttpRequest, member_id: int) -> dict[str, Any]:
    """Newest first."""
    ctx = context(request)
    _check_member(ctx.workspace, member_id)
    return {"items": list(lifecycle.history(ctx.workspace, member_id))}


@router.post("/members/{int:member_id}/stage", response=with_errors({200: MemberOut}), operation_id="members_set_stage",
             summary="Set a member's lifecycle stage by hand")
@allow(*MANAGERS)
def set_stage(request: HttpRequest, member_id: int, body: StageIn) -> Member:
    ctx = context(request)
    lifecycle.set_stage(ctx.workspace, member_id, body.stage, actor=ctx.actor)
    return load_member(ctx.workspace, member_id)


# ---------------------------------------------------------------------------------------------
# merges


@router.post("/members/merge", response=with_errors({201: MergeOut}), operation_id="members_merge",
             summary="Merge two members")
@allow(*MANAGERS)
def merge(request: HttpRequest, body: MergeIn) -> Status[MergeRecord]:
    """Folds ``absorbed_id`` into ``survivor_id``; undo with POST /merges/{id}/undo."""
    ctx = context(request)
    _check_member(ctx.workspace, body.survivor_id)
    _check_member(ctx.workspace, body.absorbed_id)
    record = members.merge_members(ctx.workspace, body.survivor_id, body.absorbed_id, reason=body.reason,
                                   actor=ctx.actor)
    return Status(201, record)


@merge_router.get("/merges", response=with_errors({200: MergePage}), operation_id="merges_list",
                  summary="List merges")
@allow(*MANAGERS)
def list_merges(
    request: HttpRequest,
    member_id: int | None = Query(None, description="Only merges where this member survived or was absorbed"),  # noqa: B008
    after: int | None = Query(None, description="Cursor: the `next` of the previous page"),  # noqa: B008
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),  # noqa: B008
) -> dict[str, Any]:
    """Newest first."""
    ctx = context(request)
    qs = scoped(MergeRecord, ctx.workspace)
    if member_id is not None:
        qs = qs.filter(Q(survivor_id=member_id) | Q(absorbed_id=member_id))
    rows, next_cursor = keyset_page(qs, after=after, limit=limit)
    return {"items": rows, "next": next_cursor}


@merge_router.post("/merges/{int:merge_id}/undo", response=with_errors({200: MergeOut}), operation_id="merges_undo",
                   summary="Undo a merge")
@allow(*MANAGERS)
def undo_merge(request: HttpRequest, merge_id: int) -> MergeRecord:
    """The absorbed member gets back exactly what moved. 409 when already undone, or when the
    survivor was merged again later (undo that merge first)."""
    ctx = context(request)
    return members.unmerge(ctx.workspace, merge_id, actor=ctx.actor)
