"""Reads the console pages need that the domains do not offer as queries. Every one is scoped to the
workspace it is given; none writes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import Prefetch, Q, QuerySet

from shequn.core.errors import NotFound
from shequn.core.models import ApiKey, Workspace
from shequn.core.tenancy import get_scoped, scoped
from shequn.interactions.models import Interaction, Touchpoint
from shequn.lifecycle import strength as strength_formula
from shequn.lifecycle.models import Stage, StageRule
from shequn.members.models import (
    AttributeDefinition,
    Identity,
    ImportJob,
    Keyword,
    Member,
    MemberKeyword,
    MemberTag,
    MergeRecord,
    Subscription,
    Tag,
)

TAG_CHOICES_LIMIT = 500
KEYWORD_CHOICES_LIMIT = 2000


# ---------------------------------------------------------------------------------------------
# member list


def tag_names(workspace: Workspace, limit: int = TAG_CHOICES_LIMIT) -> list[str]:
    return list(scoped(Tag, workspace).order_by("name").values_list("name", flat=True)[:limit])


def keyword_tree(workspace: Workspace, limit: int = KEYWORD_CHOICES_LIMIT) -> list[tuple[str, str, int]]:
    """(path, name, depth) in tree order: a parent comes right before its children."""
    return list(scoped(Keyword, workspace).order_by("path").values_list("path", "name", "depth")[:limit])


def with_list_relations(qs: QuerySet[Member]) -> QuerySet[Member]:
    """What one row of the member list shows, fetched in a constant number of queries."""
    return qs.select_related("stage").prefetch_related(
        Prefetch("member_tags", queryset=MemberTag.objects.select_related("tag").order_by("tag__name")),
        Prefetch("identities", queryset=Identity.objects.order_by("kind", "pk")),
    )


def page_before(qs: QuerySet[Member], *, before: int, limit: int = 50) -> tuple[list[Member], bool]:
    """The page of members just newer than ``before`` (the reverse step of the keyset ``page``), newest
    first, and whether still newer members exist."""
    limit = max(1, min(limit, 500))
    rows = list(qs.filter(pk__gt=before).order_by("pk")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    rows.reverse()
    return rows, more


# ---------------------------------------------------------------------------------------------
# member page


def member_detail(workspace: Workspace, member_id: object) -> Member:
    """One member of ``workspace`` with what its page shows; NotFound for another workspace's id."""
    qs = (
        scoped(Member, workspace)
        .select_related("stage", "referrer", "merged_into")
        .prefetch_related(
            Prefetch("identities", queryset=Identity.objects.order_by("kind", "pk")),
            Prefetch("member_tags", queryset=MemberTag.objects.select_related("tag").order_by("tag__name")),
            Prefetch("member_keywords",
                     queryset=MemberKeyword.objects.select_related("keyword").order_by("keyword__path")),
            Prefetch("subscriptions", queryset=Subscription.objects.order_by("scope", "key")),
        )
    )
    try:
        return qs.get(pk=member_id)
    except (Member.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"member {member_id} not found") from None


def attribute_labels(workspace: Workspace, keys: list[str]) -> dict[str, str]:
    if not keys:
        return {}
    return dict(scoped(AttributeDefinition, workspace).filter(key__in=keys).values_list("key", "label"))


def merge_history(workspace: Workspace, member_id: int) -> list[MergeRecord]:
    return list(
        scoped(MergeRecord, workspace)
        .filter(Q(survivor_id=member_id) | Q(absorbed_id=member_id))
        .select_related("survivor", "absorbed")
        .order_by("-at", "-pk")[:100]
    )


@dataclass(frozen=True)
class TimelinePage:
    rows: list[Interaction]
    next_cursor: str | None


def _encode_cursor(row: Interaction) -> str:
    micros = int(row.occurred_at.timestamp() * 1_000_000)
    return f"{micros}_{row.pk}"


def _decode_cursor(cursor: str) -> tuple[dt.datetime, int] | None:
    micros, sep, pk = cursor.partition("_")
    if not sep:
        return None
    try:
        at = dt.datetime.fromtimestamp(int(micros) / 1_000_000, tz=dt.UTC)
        return at, int(pk)
    except (ValueError, OverflowError, OSError):
        return None


def timeline(workspace: Workspace, member_id: int, *, cursor: str = "", limit: int = 20) -> TimelinePage:
    """A member's interactions, newest first, by keyset on (occurred_at, id) — the ``ix_member_time``
    index — so deep pages cost the same as the first one."""
    qs = scoped(Interaction, workspace).filter(member_id=member_id).select_related("touchpoint")
    decoded = _decode_cursor(cursor) if cursor else None
    if decoded is not None:
        at, pk = decoded
        qs = qs.filter(Q(occurred_at__lt=at) | Q(occurred_at=at, pk__lt=pk))
    rows = list(qs.order_by("-occurred_at", "-pk")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return TimelinePage(rows=rows, next_cursor=_encode_cursor(rows[-1]) if more and rows else None)


@dataclass(frozen=True)
class StrengthExplanation:
    level: int
    activity: float
    balance: float
    span_days: int | None
    quiet_days: int | None
    inbound: int
    outbound: int


def explain_strength(member: Member, at: dt.datetime) -> StrengthExplanation:
    """The factors the strength formula (``shequn.lifecycle.strength``) looked at, as of ``at``."""
    engagement = strength_formula.Engagement(
        inbound=member.inbound_count, outbound=member.outbound_count, first_at=member.first_interaction_at,
        last_at=member.last_interaction_at, activity=member.activity_score, activity_at=member.activity_at)
    level = strength_formula.strength(engagement, max(at, member.last_interaction_at or at))
    span = None
    if member.first_interaction_at and member.last_interaction_at:
        span = (member.last_interaction_at - member.first_interaction_at).days
    quiet = (at - member.last_interaction_at).days if member.last_interaction_at else None
    return StrengthExplanation(
        level=level,
        activity=round(strength_formula.decay(member.activity_score, member.activity_at, at), 2),
        balance=round(strength_formula.balance(member.inbound_count, member.outbound_count), 2),
        span_days=span, quiet_days=max(quiet, 0) if quiet is not None else None,
        inbound=member.inbound_count, outbound=member.outbound_count,
    )


# ---------------------------------------------------------------------------------------------
# dashboard


def interactions_since(workspace: Workspace, since: dt.datetime) -> int:
    """Counted on the ``(workspace, -occurred_at)`` index over the window only."""
    return scoped(Interaction, workspace).filter(occurred_at__gte=since).count()


# ---------------------------------------------------------------------------------------------
# settings pages


def stages(workspace: Workspace) -> list[Stage]:
    return list(scoped(Stage, workspace).order_by("position"))


def rules_by_stage(workspace: Workspace) -> list[tuple[Stage, list[StageRule]]]:
    """Every stage in pipeline order with the rules that move members into it."""
    all_stages = stages(workspace)
    grouped: dict[int, list[StageRule]] = {s.pk: [] for s in all_stages}
    for rule in scoped(StageRule, workspace).select_related("touchpoint").order_by("priority", "pk"):
        grouped.setdefault(rule.target_stage_id, []).append(rule)
    return [(s, grouped[s.pk]) for s in all_stages]


def touchpoints(workspace: Workspace) -> list[Touchpoint]:
    return list(scoped(Touchpoint, workspace).order_by("code"))


def touchpoint_by_code(workspace: Workspace, code: str) -> Touchpoint | None:
    return scoped(Touchpoint, workspace).filter(code=code).first()


def api_keys(workspace: Workspace) -> list[ApiKey]:
    return list(scoped(ApiKey, workspace).select_related("created_by").order_by("revoked_at", "-created_at"))


def import_jobs(workspace: Workspace, limit: int = 20) -> list[ImportJob]:
    return list(scoped(ImportJob, workspace).select_related("created_by").order_by("-created_at", "-pk")[:limit])


def import_job(workspace: Workspace, job_id: object) -> ImportJob:
    return get_scoped(ImportJob, workspace, job_id)


def import_progress(job: ImportJob) -> dict[str, Any]:
    percent = 0
    if job.status == "done":
        percent = 100
    elif job.total_rows:
        percent = min(100, int(job.processed_rows * 100 / job.total_rows))
    return {
        "id": job.pk, "status": job.status, "status_label": str(job.get_status_display()),
        "total_rows": job.total_rows, "processed_rows": job.processed_rows, "percent": percent,
        "created_count": job.created_count, "updated_count": job.updated_count,
        "unchanged_count": job.unchanged_count, "error_count": job.error_count, "message": job.message,
        "finished": job.status in ("done", "failed"),
    }
