"""Reads of the service inbox (no writes): the version clients poll, conversation lists (keyset
pages on the indexed ``(last_message_at, id)`` order), a thread, the member context shown beside
it, tickets, settings and the report."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from shequn.core.errors import ValidationError
from shequn.core.models import StaffMembership, Workspace
from shequn.core.tenancy import scoped

from .models import (
    LIVE_STATUSES,
    CannedReply,
    Conversation,
    CsatSurvey,
    Entry,
    InboxState,
    Priority,
    SlaPolicy,
    Status,
    Team,
    TeamMember,
    Ticket,
)
from .services import AGENT_ROLES, DEFAULT_SLA

VIEWS = ("mine", "unassigned", "team", "all")
# What a list row shows: the conversation's own columns, and only the names of its member, agent and team.
LIST_FIELDS = ("workspace_id", "member__display_name", "channel", "touchpoint_id", "status", "needs_human",
               "assignee__username", "team__name", "preview", "opened_at", "last_message_at", "last_inbound_at",
               "last_reply_at", "first_response_at", "assigned_at", "resolved_at", "updated_at")
MAX_PAGE = 200
THREAD_LIMIT = 300


def version(workspace: Workspace | int) -> int:
    """The workspace's inbox version: one indexed row (0 before the first change)."""
    ws_id = workspace if isinstance(workspace, int) else workspace.pk
    return InboxState.objects.filter(workspace_id=ws_id).values_list("version", flat=True).first() or 0


def member_open_conversation(workspace: Workspace, member_id: int) -> Conversation | None:
    """The member's open or pending conversation, if any."""
    return scoped(Conversation, workspace).filter(member_id=member_id, status__in=LIVE_STATUSES).first()


def my_team_ids(workspace: Workspace, user_id: int) -> list[int]:
    return list(TeamMember.objects.filter(workspace=workspace, user_id=user_id).values_list("team_id", flat=True))


def encode_cursor(row: Conversation) -> str:
    return f"{int(row.last_message_at.timestamp() * 1_000_000)}_{row.pk}"


def decode_cursor(cursor: str) -> tuple[dt.datetime, int] | None:
    try:
        micro, pk = cursor.split("_", 1)
        return dt.datetime.fromtimestamp(int(micro) / 1_000_000, tz=dt.UTC), int(pk)
    except (ValueError, OverflowError, OSError):
        return None


@dataclass(frozen=True)
class ConversationFilter:
    view: str = "mine"
    status: str = ""  # "" = open and pending (for "all": any)
    channel: str = ""
    team_id: int | None = None


def conversations(workspace: Workspace, user_id: int | None, f: ConversationFilter) -> QuerySet[Conversation]:
    """The conversations of one list, newest activity first (not yet paged)."""
    if f.view not in VIEWS:
        raise ValidationError(f"view must be one of {', '.join(VIEWS)}", code="invalid_field", details={"field": "view"})
    if f.status and f.status not in Status.values:
        raise ValidationError(f"status must be one of {', '.join(Status.values)}", code="invalid_field",
                              details={"field": "status"})
    qs = scoped(Conversation, workspace)
    if f.view == "mine":
        qs = qs.filter(assignee_id=user_id)
    elif f.view == "unassigned":
        qs = qs.filter(assignee__isnull=True, needs_human=True)
    elif f.view == "team":
        teams = [f.team_id] if f.team_id else my_team_ids(workspace, user_id or 0)
        qs = qs.filter(team_id__in=teams)
    if f.status:
        qs = qs.filter(status=f.status)
    elif f.view != "all":
        qs = qs.filter(status__in=LIVE_STATUSES) if f.view != "unassigned" else qs.filter(status=Status.OPEN)
    if f.channel:
        qs = qs.filter(channel=f.channel)
    if f.team_id and f.view != "team":
        qs = qs.filter(team_id=f.team_id)
    return qs


def page(qs: QuerySet[Conversation], *, after: str = "", limit: int = 50) -> tuple[list[Conversation], str | None]:
    """One keyset page (newest activity first) with member, agent and team; the cursor of the next."""
    limit = max(1, min(int(limit), MAX_PAGE))
    if after:
        decoded = decode_cursor(after)
        if decoded is None:
            raise ValidationError("invalid cursor", code="invalid_cursor", details={"field": "after"})
        at, pk = decoded
        qs = qs.filter(Q(last_message_at__lt=at) | Q(last_message_at=at, pk__lt=pk))
    rows = list(qs.select_related("member", "assignee", "team").only(*LIST_FIELDS)
                .order_by("-last_message_at", "-pk")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1]) if more and rows else None)


def counts(workspace: Workspace, user_id: int) -> dict[str, int]:
    """Sizes of the agent's queues (live conversations), one aggregate query."""
    teams = my_team_ids(workspace, user_id)
    agg = scoped(Conversation, workspace).filter(status__in=LIVE_STATUSES).aggregate(
        mine=Count("pk", filter=Q(assignee_id=user_id)),
        unassigned=Count("pk", filter=Q(assignee__isnull=True, needs_human=True, status=Status.OPEN)),
        team=Count("pk", filter=Q(team_id__in=teams)) if teams else Count("pk", filter=Q(pk__in=[])),
    )
    return {k: int(v or 0) for k, v in agg.items()}


def conversation(workspace: Workspace, conversation_id: Any) -> Conversation:
    qs = scoped(Conversation, workspace).select_related("member", "member__stage", "assignee", "team", "touchpoint")
    return _one(qs, conversation_id)


def _one(qs: QuerySet[Any], pk: Any) -> Any:
    from shequn.core.errors import NotFound

    try:
        return qs.get(pk=pk)
    except (qs.model.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"{qs.model._meta.verbose_name} {pk} not found") from None


def thread(workspace: Workspace, conversation_id: int, *, limit: int = THREAD_LIMIT) -> list[Entry]:
    """The last ``limit`` lines of a conversation, oldest first."""
    rows = list(scoped(Entry, workspace).filter(conversation_id=conversation_id).select_related("author")
                .order_by("-at", "-pk")[:limit])
    rows.reverse()
    return rows


def conversation_tickets(workspace: Workspace, conversation_id: int) -> list[Ticket]:
    return list(scoped(Ticket, workspace).filter(conversation_id=conversation_id).select_related("team", "assignee")
                .order_by("-pk"))


def member_context(workspace: Workspace, member_id: int, *, recent: int = 8) -> dict[str, Any]:
    """What an agent sees beside a conversation: profile, identities, tags, stage, strength, points
    balances, recent interactions, earlier conversations and, when the engagement domain offers it,
    the member's tier summary."""
    from shequn.interactions.models import Interaction
    from shequn.loyalty import queries as loyalty
    from shequn.members.models import Member, MemberTag

    member = _one(scoped(Member, workspace).select_related("stage").prefetch_related(
        "identities", Prefetch("member_tags", queryset=MemberTag.objects.select_related("tag").order_by("tag__name"))),
        member_id)
    context: dict[str, Any] = {
        "member": member,
        "identities": list(member.identities.all()),
        "tags": [mt.tag.name for mt in member.member_tags.all()],
        "points": loyalty.balances(workspace, member.pk),
        "recent": list(scoped(Interaction, workspace).filter(member_id=member.pk).select_related("touchpoint")
                       .order_by("-occurred_at", "-pk")[:recent]),
        "past_conversations": list(scoped(Conversation, workspace).filter(member_id=member.pk)
                                   .order_by("-opened_at")[:5]),
        "engagement": None,
    }
    try:
        from shequn.engagement import queries as engagement  # type: ignore[attr-defined]
    except ImportError:
        engagement = None
    summary = getattr(engagement, "member_summary", None)
    if summary is not None:
        context["engagement"] = summary(workspace, member.pk)
    return context


# ---------------------------------------------------------------------------------------------
# tickets


@dataclass(frozen=True)
class TicketFilter:
    status: str = ""  # "" = open and pending
    priority: str = ""
    team_id: int | None = None
    assignee_id: int | None = None
    breached: bool = False


def tickets(workspace: Workspace, f: TicketFilter) -> QuerySet[Ticket]:
    qs = scoped(Ticket, workspace)
    if f.status:
        if f.status != "any":
            qs = qs.filter(status=f.status)
    else:
        qs = qs.filter(status__in=LIVE_STATUSES)
    if f.priority:
        qs = qs.filter(priority=f.priority)
    if f.team_id:
        qs = qs.filter(team_id=f.team_id)
    if f.assignee_id:
        qs = qs.filter(assignee_id=f.assignee_id)
    if f.breached:
        qs = qs.filter(breached_at__isnull=False)
    return qs.select_related("team", "assignee", "member", "escalated_from")


def ticket_page(qs: QuerySet[Ticket], *, after: int | None = None, limit: int = 50) -> tuple[list[Ticket], int | None]:
    limit = max(1, min(int(limit), MAX_PAGE))
    if after:
        qs = qs.filter(pk__lt=after)
    rows = list(qs.order_by("-pk")[: limit + 1])
    return rows[:limit], (rows[limit - 1].pk if len(rows) > limit else None)


def ticket(workspace: Workspace, ticket_id: Any) -> Ticket:
    return _one(scoped(Ticket, workspace).select_related("team", "assignee", "member", "conversation",
                                                         "escalated_from"), ticket_id)


def ticket_history(workspace: Workspace, ticket_id: int, limit: int = 50) -> list[Any]:
    from shequn.core.models import AuditEntry

    return list(AuditEntry.objects.filter(workspace=workspace, object_type="ticket", object_id=str(ticket_id))
                .order_by("-at", "-pk")[:limit])


# ---------------------------------------------------------------------------------------------
# settings


def teams(workspace: Workspace) -> list[Team]:
    return list(scoped(Team, workspace).select_related("escalation_team").prefetch_related(
        Prefetch("members", queryset=TeamMember.objects.select_related("user").order_by("user__username")))
        .order_by("name", "pk"))


def agents(workspace: Workspace) -> list[Any]:
    """Staff users who may work the inbox (agent, operator, owner), by user name."""
    return [m.user for m in StaffMembership.objects.filter(workspace=workspace, role__in=AGENT_ROLES)
            .select_related("user").order_by("user__username")]


def canned_replies(workspace: Workspace) -> list[CannedReply]:
    return list(scoped(CannedReply, workspace).order_by("shortcut"))


def sla_table(workspace: Workspace) -> list[dict[str, Any]]:
    """For the workspace default and each team: the effective minutes per priority, and whether a
    row sets them (else they are inherited)."""
    rows = {(r.team_id, r.priority): r for r in scoped(SlaPolicy, workspace)}
    out = []
    for team in [None, *scoped(Team, workspace).order_by("name", "pk")]:
        cells = []
        for level in Priority.values:
            row = rows.get((team.pk if team else None, level))
            inherited = rows.get((None, level))
            if row is not None:
                values, own = (row.first_response_minutes, row.resolution_minutes), True
            elif inherited is not None:
                values, own = (inherited.first_response_minutes, inherited.resolution_minutes), False
            else:
                values, own = DEFAULT_SLA[level], False
            cells.append({"priority": level, "label": Priority(level).label, "first": values[0],
                          "resolution": values[1], "own": own})
        out.append({"team": team, "cells": cells})
    return out


# ---------------------------------------------------------------------------------------------
# report


def report(workspace: Workspace, *, days: int, now: dt.datetime) -> dict[str, Any]:
    """Per day (workspace time zone) over the last ``days`` days: conversations opened, SLA breaches;
    the distribution of CSAT scores and their average."""
    tz = timezone.get_current_timezone()
    end = now.astimezone(tz).date()
    start_day = end - dt.timedelta(days=days - 1)
    since = dt.datetime.combine(start_day, dt.time(), tzinfo=tz)
    opened = dict(scoped(Conversation, workspace).filter(opened_at__gte=since)
                  .annotate(day=TruncDate("opened_at", tzinfo=tz)).values("day").annotate(n=Count("pk"))
                  .values_list("day", "n"))
    breached = dict(scoped(Ticket, workspace).filter(breached_at__gte=since)
                    .annotate(day=TruncDate("breached_at", tzinfo=tz)).values("day").annotate(n=Count("pk"))
                    .values_list("day", "n"))
    scores = dict(scoped(CsatSurvey, workspace).filter(answered_at__gte=since, score__isnull=False)
                  .values("score").annotate(n=Count("pk")).values_list("score", "n"))
    asked = scoped(CsatSurvey, workspace).filter(asked_at__gte=since).count()
    day_list = [start_day + dt.timedelta(days=i) for i in range(days)]
    answered = sum(scores.values())
    return {
        "days": day_list,
        "opened": [int(opened.get(d, 0)) for d in day_list],
        "breached": [int(breached.get(d, 0)) for d in day_list],
        "scores": {s: int(scores.get(s, 0)) for s in range(1, 6)},
        "csat_asked": asked,
        "csat_answered": answered,
        "csat_average": (sum(s * n for s, n in scores.items()) / answered) if answered else None,
        "csat_satisfied": (sum(n for s, n in scores.items() if s >= 4) / answered) if answered else None,
    }
