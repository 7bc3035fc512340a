"""API: the service inbox — the version to poll, conversations (lists, detail with the thread, claim,
assign/transfer, reply, notes, status), tickets, teams and canned replies. Everything is scoped to
the caller's workspace; an id of another workspace answers 404."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotModified, JsonResponse
from django.utils.translation import gettext as _
from ninja import Query, Router, Schema, Status
from pydantic import Field

from shequn.core.errors import ValidationError
from shequn.inbox import queries, services
from shequn.inbox.models import CannedReply, Conversation, Entry, Team, Ticket

from .auth import READERS, allow, context
from .schemas import DEFAULT_PAGE, MAX_PAGE, Input, with_errors

router = Router(tags=["inbox"])
routers: list[Router] = [router]


# ---------------------------------------------------------------------------------------------
# schemas


class VersionOut(Schema):
    version: int = Field(description="Changes whenever a conversation or ticket of the workspace changes")


class ConversationOut(Schema):
    id: int
    member_id: int
    member_name: str
    channel: str
    touchpoint_id: int | None
    status: str = Field(description="open, pending (waiting on the member) or resolved")
    needs_human: bool = Field(description="False while only the bot has answered")
    waiting: bool = Field(description="The member wrote last and no agent has answered since")
    assignee_id: int | None
    assignee: str | None = Field(description="User name of the agent")
    team_id: int | None
    team: str | None
    preview: str
    opened_at: dt.datetime
    last_message_at: dt.datetime
    last_inbound_at: dt.datetime | None
    last_reply_at: dt.datetime | None
    first_response_at: dt.datetime | None
    resolved_at: dt.datetime | None

    @staticmethod
    def resolve_member_name(obj: Conversation) -> str:
        return obj.member.display_name

    @staticmethod
    def resolve_assignee(obj: Conversation) -> str | None:
        return obj.assignee.get_username() if obj.assignee_id and obj.assignee else None

    @staticmethod
    def resolve_team(obj: Conversation) -> str | None:
        return obj.team.name if obj.team_id and obj.team else None


class ConversationPage(Schema):
    items: list[ConversationOut]
    next: str | None = Field(description="Cursor for the next page (pass as ?after=), null on the last page")


class EntryOut(Schema):
    id: int
    kind: str = Field(description="in (member message), reply, note, event or csat")
    at: dt.datetime
    text: str
    author_id: int | None
    actor: str
    interaction_id: int | None
    outbound_id: int | None
    channel: str
    bot_outcome: str = Field(description="answered or handoff for member messages the bot saw")
    data: dict[str, Any]


class ConversationDetail(ConversationOut):
    entries: list[EntryOut] = Field(description="The last 300 lines of the thread, oldest first")

    @staticmethod
    def resolve_entries(obj: Conversation) -> list[Entry]:
        return list(getattr(obj, "thread_entries", []))


class ClaimIn(Input):
    user_id: int | None = Field(None, description="Agent who takes it; default: the console user (required "
                                                  "with an API key)")


class AssignIn(Input):
    user_id: int | None = Field(None, description="Agent; null with no team puts it back in the unassigned queue")
    team_id: int | None = Field(None, description="Team (its queue, when no agent is given)")


class TextIn(Input):
    text: str = Field(min_length=1, max_length=services.MAX_TEXT)


class ReplyIn(TextIn):
    key: str | None = Field(None, max_length=64, description="Idempotency key: the same key sends once")


class StatusIn(Input):
    status: str = Field(description="open, pending or resolved (resolving asks the member the CSAT question)")


class TicketOut(Schema):
    id: int
    title: str
    description: str
    priority: str
    status: str
    conversation_id: int | None
    member_id: int | None
    team_id: int | None
    assignee_id: int | None
    created_by: str
    created_at: dt.datetime
    first_response_minutes: int
    resolution_minutes: int
    first_response_due: dt.datetime
    resolution_due: dt.datetime
    first_responded_at: dt.datetime | None
    resolved_at: dt.datetime | None
    paused_at: dt.datetime | None
    paused_seconds: int
    breached_at: dt.datetime | None
    breach: str
    escalated_from_id: int | None


class TicketPage(Schema):
    items: list[TicketOut]
    next: int | None


class TicketIn(Input):
    title: str = Field(min_length=1, max_length=200)
    description: str = ""
    priority: str = Field("normal", description="urgent, high, normal or low")
    team_id: int | None = None
    assignee_id: int | None = None
    conversation_id: int | None = None
    member_id: int | None = None


class TicketPatch(Input):
    status: str | None = None
    priority: str | None = None
    team_id: int | None = Field(None, description="null clears it (when sent)")
    assignee_id: int | None = Field(None, description="null clears it (when sent)")


class TeamOut(Schema):
    id: int
    name: str
    escalation_team_id: int | None
    member_ids: list[int]

    @staticmethod
    def resolve_member_ids(obj: Team) -> list[int]:
        return [m.user_id for m in obj.members.all()]


class TeamList(Schema):
    items: list[TeamOut]


class CannedOut(Schema):
    id: int
    shortcut: str
    title: str
    text: str


class CannedList(Schema):
    items: list[CannedOut]


# ---------------------------------------------------------------------------------------------
# version


@router.get("/inbox/version", response=with_errors({200: VersionOut}), operation_id="inbox_version",
            summary="The inbox version to poll")
@allow(*READERS)
def version(request: HttpRequest) -> HttpResponse:
    """Send the last ``ETag`` as ``If-None-Match``: the answer is ``304 Not Modified`` (one indexed row
    read) until something in the inbox changed. Poll this, then refetch lists only when it moved."""
    ctx = context(request)
    current = queries.version(ctx.workspace)
    etag = f'"inbox-{current}"'
    response: HttpResponse
    if request.headers.get("If-None-Match") == etag:
        response = HttpResponseNotModified()
    else:
        response = JsonResponse({"version": current})
    response["ETag"] = etag
    response["Cache-Control"] = "no-cache"
    return response


# ---------------------------------------------------------------------------------------------
# conversations


def _user_id(request: HttpRequest, given: int | None) -> int:
    ctx = context(request)
    if given is not None:
        return given
    if ctx.user is not None:
        return int(ctx.user.pk)
    raise ValidationError(_("name the agent with user_id (an API key is not a person)"), code="user_required",
                          details={"field": "user_id"})


@router.get("/inbox/conversations", response=with_errors({200: ConversationPage}), operation_id="inbox_conversations",
            summary="List conversations")
@allow(*READERS)
def list_conversations(
    request: HttpRequest,
    view: str = Query("all", description="mine, unassigned, team or all"),  # noqa: B008
    status: str = Query("", description="open, pending or resolved; default: open and pending ('all': any)"),  # noqa: B008
    channel: str = "",
    team_id: int | None = None,
    agent_id: int | None = Query(None, description="For view=mine / team: whose (default: the console user)"),  # noqa: B008
    after: str = Query("", description="Cursor from the previous page"),  # noqa: B008
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),  # noqa: B008
) -> dict[str, Any]:
    """Newest activity first, keyset-paged on the indexed (last message, id) order."""
    ctx = context(request)
    user_id = agent_id if agent_id is not None else (ctx.user.pk if ctx.user is not None else None)
    if view in ("mine", "team") and user_id is None and not (view == "team" and team_id):
        raise ValidationError(_("name the agent with agent_id (an API key is not a person)"), code="user_required",
                              details={"field": "agent_id"})
    qs = queries.conversations(ctx.workspace, user_id, queries.ConversationFilter(
        view=view, status=status, channel=channel, team_id=team_id))
    rows, cursor = queries.page(qs, after=after, limit=limit)
    return {"items": rows, "next": cursor}


@router.get("/inbox/conversations/{int:conversation_id}", response=with_errors({200: ConversationDetail}),
            operation_id="inbox_conversation", summary="A conversation with its thread")
@allow(*READERS)
def get_conversation(request: HttpRequest, conversation_id: int) -> Conversation:
    ctx = context(request)
    conv = queries.conversation(ctx.workspace, conversation_id)
    conv.thread_entries = queries.thread(ctx.workspace, conv.pk)  # type: ignore[attr-defined]
    return conv


@router.post("/inbox/conversations/{int:conversation_id}/claim", response=with_errors({200: ConversationOut}),
             operation_id="inbox_claim", summary="Claim an unassigned conversation")
@allow(*READERS)
def claim(request: HttpRequest, conversation_id: int, body: ClaimIn) -> Conversation:
    """Exactly one of several agents claiming at once wins; the others get 409 ``already_claimed``."""
    ctx = context(request)
    services.claim(ctx.workspace, conversation_id, user=_user_id(request, body.user_id), actor=ctx.actor)
    return queries.conversation(ctx.workspace, conversation_id)


@router.post("/inbox/conversations/{int:conversation_id}/assign", response=with_errors({200: ConversationOut}),
             operation_id="inbox_assign", summary="Assign or transfer to an agent or a team")
@allow(*READERS)
def assign(request: HttpRequest, conversation_id: int, body: AssignIn) -> Conversation:
    ctx = context(request)
    services.assign(ctx.workspace, conversation_id, user_id=body.user_id, team_id=body.team_id, actor=ctx.actor)
    return queries.conversation(ctx.workspace, conversation_id)


@router.post("/inbox/conversations/{int:conversation_id}/reply", response=with_errors({201: EntryOut}),
             operation_id="inbox_reply", summary="Reply to the member")
@allow(*READERS)
def reply(request: HttpRequest, conversation_id: int, body: ReplyIn) -> Status[Entry]:
    """Sent through the member's channel by the outbound service (purpose ``inbox_reply``)."""
    ctx = context(request)
    entry = services.reply(ctx.workspace, conversation_id, body.text, user=ctx.user, actor=ctx.actor, key=body.key)
    return Status(201, entry)


@router.post("/inbox/conversations/{int:conversation_id}/notes", response=with_errors({201: EntryOut}),
             operation_id="inbox_note", summary="Add an internal note")
@allow(*READERS)
def note(request: HttpRequest, conversation_id: int, body: TextIn) -> Status[Entry]:
    ctx = context(request)
    return Status(201, services.add_note(ctx.workspace, conversation_id, body.text, user=ctx.user, actor=ctx.actor))


@router.post("/inbox/conversations/{int:conversation_id}/status", response=with_errors({200: ConversationOut}),
             operation_id="inbox_status", summary="Set open, pending or resolved")
@allow(*READERS)
def set_status(request: HttpRequest, conversation_id: int, body: StatusIn) -> Conversation:
    ctx = context(request)
    services.set_status(ctx.workspace, conversation_id, body.status, actor=ctx.actor)
    return queries.conversation(ctx.workspace, conversation_id)


@router.post("/inbox/conversations/{int:conversation_id}/resolve", response=with_errors({200: ConversationOut}),
             operation_id="inbox_resolve", summary="Resolve (asks the CSAT question)")
@allow(*READERS)
def resolve(request: HttpRequest, conversation_id: int) -> Conversation:
    ctx = context(request)
    services.resolve(ctx.workspace, conversation_id, actor=ctx.actor)
    return queries.conversation(ctx.workspace, conversation_id)


# ---------------------------------------------------------------------------------------------
# tickets


@router.get("/inbox/tickets", response=with_errors({200: TicketPage}), operation_id="inbox_tickets",
            summary="List tickets")
@allow(*READERS)
def list_tickets(
    request: HttpRequest,
    status: str = Query("", description="open, pending, resolved or any; default: open and pending"),  # noqa: B008
    priority: str = "",
    team_id: int | None = None,
    assignee_id: int | None = None,
    breached: bool = False,
    after: int | None = None,
    limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE),  # noqa: B008
) -> dict[str, Any]:
    ctx = context(request)
    f = queries.TicketFilter(status=status, priority=priority, team_id=team_id, assignee_id=assignee_id,
                             breached=breached)
    rows, cursor = queries.ticket_page(queries.tickets(ctx.workspace, f), after=after, limit=limit)
    return {"items": rows, "next": cursor}


@router.post("/inbox/tickets", response=with_errors({201: TicketOut}), operation_id="inbox_ticket_create",
             summary="Create a ticket")
@allow(*READERS)
def create_ticket(request: HttpRequest, body: TicketIn) -> Status[Ticket]:
    ctx = context(request)
    ticket = services.create_ticket(ctx.workspace, actor=ctx.actor, **body.dict())
    return Status(201, ticket)


@router.get("/inbox/tickets/{int:ticket_id}", response=with_errors({200: TicketOut}), operation_id="inbox_ticket",
            summary="A ticket")
@allow(*READERS)
def get_ticket(request: HttpRequest, ticket_id: int) -> Ticket:
    return queries.ticket(context(request).workspace, ticket_id)


@router.patch("/inbox/tickets/{int:ticket_id}", response=with_errors({200: TicketOut}),
              operation_id="inbox_ticket_update", summary="Change a ticket")
@allow(*READERS)
def update_ticket(request: HttpRequest, ticket_id: int, body: TicketPatch) -> Ticket:
    """Pending stops the SLA clock; open again runs it with the due times moved by the pause."""
    ctx = context(request)
    sent = body.dict(exclude_unset=True)
    return services.update_ticket(ctx.workspace, ticket_id, actor=ctx.actor, status=sent.get("status"),
                                  priority=sent.get("priority"), team_id=sent.get("team_id", ...),
                                  assignee_id=sent.get("assignee_id", ...))


# ---------------------------------------------------------------------------------------------
# teams, canned replies


@router.get("/inbox/teams", response=with_errors({200: TeamList}), operation_id="inbox_teams", summary="Teams")
@allow(*READERS)
def list_teams(request: HttpRequest) -> dict[str, Any]:
    return {"items": queries.teams(context(request).workspace)}


@router.get("/inbox/canned-replies", response=with_errors({200: CannedList}), operation_id="inbox_canned_replies",
            summary="Canned replies")
@allow(*READERS)
def list_canned(request: HttpRequest) -> dict[str, list[CannedReply]]:
    return {"items": queries.canned_replies(context(request).workspace)}
