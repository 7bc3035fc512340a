"""Every write of the service inbox: routing inbound messages into conversations, claim / assign /
transfer, replies and notes, status and resolution with the satisfaction question, tickets with their
SLA clock and escalation, and the settings (teams, SLA minutes, canned replies).

Each change adds one to the workspace's ``InboxState.version`` in the same transaction, which is
what polling clients compare (see docs/adr/0011-inbox-conditional-polling.md)."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.db import transaction
from django.db.models import BigIntegerField, Case, DateTimeField, F, Q, Value, When
from django.db.models.functions import Greatest
from django.utils.translation import gettext as _

from shequn.core import audit
from shequn.core.clock import now as clock_now
from shequn.core.errors import Conflict, NotFound, ValidationError
from shequn.core.models import Role, StaffMembership, Workspace
from shequn.core.tenancy import get_scoped, scoped
from shequn.interactions.models import Direction, Interaction, InteractionType

from .models import (
    LIVE_STATUSES,
    CannedReply,
    Conversation,
    CsatSurvey,
    Entry,
    EntryKind,
    InboxState,
    Priority,
    SlaPolicy,
    Status,
    Team,
    TeamMember,
    Ticket,
)

# Minutes to the first response and to resolution when neither the team nor the workspace set them.
DEFAULT_SLA: dict[str, tuple[int, int]] = {
    Priority.URGENT: (15, 4 * 60),
    Priority.HIGH: (60, 8 * 60),
    Priority.NORMAL: (4 * 60, 24 * 60),
    Priority.LOW: (8 * 60, 72 * 60),
}
MAX_SLA_MINUTES = 90 * 24 * 60
# Inbound messages older than this when they are stored (imports of history, the demo's past) are
# kept in the member's timeline but do not open inbox conversations.
MAX_MESSAGE_AGE = dt.timedelta(days=2)
# Channels whose messages are not addressed to the brand's service (group chats).
IGNORED_CHANNELS = frozenset({"wechat_group"})
# A conversation only the bot took part in is resolved after this long without messages.
BOT_IDLE_CLOSE = dt.timedelta(hours=24)
CSAT_WINDOW = dt.timedelta(days=3)
CLOCK_SKEW = dt.timedelta(minutes=1)  # WeChat's CreateTime has whole seconds
MAX_TEXT = 2000
MAX_PREVIEW = 200
ESCALATION_BATCH = 500
AGENT_ROLES = (Role.AGENT, Role.OPERATOR, Role.OWNER)
SOURCE = "inbox"
OUTBOUND_CHANNELS = frozenset({"wechat", "email"})

_SHORTCUT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SCORE_RE = re.compile(r"^([1-5])\s*(分|星|stars?|points?)?[。.!！]?$", re.IGNORECASE)


def csat_question() -> str:
    return _("Thank you for contacting us. How satisfied are you with our service? Reply with a number from "
             "1 (very unsatisfied) to 5 (very satisfied).")


def csat_thanks(score: int) -> str:
    return _("Thank you for your rating (%(score)s/5)! We will keep improving.") % {"score": score}


# ---------------------------------------------------------------------------------------------
# helpers


def bump(workspace: Workspace | int) -> None:
    """Add one to the workspace's inbox version (inside the caller's transaction)."""
    ws_id = workspace if isinstance(workspace, int) else workspace.pk
    if not InboxState.objects.filter(workspace_id=ws_id).update(version=F("version") + 1):
        InboxState.objects.bulk_create([InboxState(workspace_id=ws_id, version=0)], ignore_conflicts=True)
        InboxState.objects.filter(workspace_id=ws_id).update(version=F("version") + 1)


def _clean_text(field: str, text: Any, *, limit: int = MAX_TEXT) -> str:
    value = str(text or "").strip()
    if not value:
        raise ValidationError(_("%(field)s is empty") % {"field": field}, code="empty_text", details={"field": field})
    if _CONTROL_RE.search(value):
        raise ValidationError(_("%(field)s contains control characters") % {"field": field}, code="invalid_field",
                              details={"field": field})
    if len(value) > limit:
        raise ValidationError(_("%(field)s is longer than %(n)s characters") % {"field": field, "n": limit},
                              code="invalid_field", details={"field": field})
    return value


def _agent(workspace: Workspace, user_id: Any) -> Any:
    """The staff user ``user_id`` of ``workspace`` with an agent role or higher."""
    try:
        uid = int(user_id)
    except (TypeError, ValueError):
        uid = 0
    row = (StaffMembership.objects.select_related("user")
           .filter(workspace=workspace, user_id=uid, role__in=AGENT_ROLES).first())
    if row is None:
        raise NotFound(_("agent %(id)s not found in this workspace") % {"id": user_id}, code="unknown_agent")
    return row.user


def _team(workspace: Workspace, team_id: Any) -> Team:
    try:
        return get_scoped(Team, workspace, team_id)
    except NotFound:
        raise NotFound(_("team %(id)s not found in this workspace") % {"id": team_id}, code="unknown_team") from None


def _live_conversation(workspace: Workspace, conversation_id: Any) -> Conversation:
    conv = get_scoped(Conversation, workspace, conversation_id, for_update=True)
    if conv.status not in LIVE_STATUSES:
        raise Conflict(_("this conversation is resolved"), code="conversation_resolved")
    return conv


def _event(conv: Conversation, at: dt.datetime, actor: str, action: str, **data: Any) -> None:
    Entry.objects.create(workspace_id=conv.workspace_id, conversation=conv, kind=EntryKind.EVENT, at=at, actor=actor,
                         data={"action": action, **data})


def _send(workspace: Workspace, member_id: int, text: str, *, purpose: str, actor: str, key: str,
          channel: str = "") -> int | None:
    """Send ``text`` to the member through the outbound service, which records it in the outbox and
    delivers it after commit; on the conversation's channel when the outbound service can address it
    (WeChat, e-mail), else on the member's best channel. The id of the recorded outbound message."""
    from shequn.outbound import services as outbound

    route = channel if channel in OUTBOUND_CHANNELS else None
    message = outbound.send_text(workspace, member_id, text, purpose=purpose, actor=actor, channel=route, key=key)
    return int(message.pk) if message is not None and message.pk is not None else None


# ---------------------------------------------------------------------------------------------
# inbound messages → conversations (an INTERACTION_HANDLERS handler)


def message_text(props: Mapping[str, Any]) -> str:
    for key in ("content", "text", "recognition"):
        value = props.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    kind = props.get("msg_type")
    return f"[{kind}]" if kind else ""


def parse_score(text: str) -> int | None:
    """1–5 when ``text`` is a satisfaction answer ("5", "５", "4分"), else None."""
    value = unicodedata.normalize("NFKC", text or "").strip()
    match = _SCORE_RE.match(value) if len(value) <= 12 else None
    return int(match.group(1)) if match else None


def needs_human(props: Mapping[str, Any]) -> bool:
    """A message needs a person unless the bot answered it."""
    return str(props.get("bot_outcome") or "") != "answered"


def on_interactions(workspace: Workspace, rows: list[Interaction]) -> None:
    """Route new inbound messages into conversations (and record satisfaction answers). Runs inside
    the storing transaction; a batch without recent inbound messages costs no query."""
    cutoff = clock_now() - MAX_MESSAGE_AGE
    messages = [r for r in rows if r.type == InteractionType.MESSAGE and r.direction == Direction.INBOUND
                and r.channel not in IGNORED_CHANNELS and r.occurred_at >= cutoff]
    if not messages:
        return
    consumed = _record_csat_answers(workspace, messages)
    rest = [r for r in messages if r.pk not in consumed]
    if rest:
        _route(workspace, rest)
    bump(workspace)


@transaction.atomic
def route_messages(workspace: Workspace, interaction_ids: Iterable[int]) -> int:
    """Route stored inbound messages into conversations whatever their age (imports, the demo);
    already routed messages are not repeated. The number of messages looked at."""
    rows = list(scoped(Interaction, workspace).filter(pk__in=list(interaction_ids), type=InteractionType.MESSAGE,
                                                      direction=Direction.INBOUND).order_by("occurred_at", "pk"))
    if rows:
        _route(workspace, rows)
        bump(workspace)
    return len(rows)


def _route(workspace: Workspace, messages: list[Interaction]) -> None:
    member_ids = {r.member_id for r in messages}
    live = {c.member_id: c for c in scoped(Conversation, workspace).filter(member_id__in=member_ids,
                                                                             status__in=LIVE_STATUSES)}
    missing = member_ids - set(live)
    if missing:
        first: dict[int, Interaction] = {}
        for r in sorted(messages, key=lambda r: (r.occurred_at, r.pk)):
            first.setdefault(r.member_id, r)
        # ignore_conflicts: a concurrent batch that opened the member's conversation first wins
        # (uniq_inbox_live_conversation); the message then joins that one.
        Conversation.objects.bulk_create([
            Conversation(workspace=workspace, member_id=mid, channel=r.channel, touchpoint_id=r.touchpoint_id,
                         status=Status.OPEN, opened_at=r.occurred_at, last_message_at=r.occurred_at,
                         preview=message_text(r.properties or {})[:MAX_PREVIEW])
            for mid, r in first.items()], ignore_conflicts=True)
        live.update({c.member_id: c for c in scoped(Conversation, workspace).filter(member_id__in=missing,
                                                                                      status__in=LIVE_STATUSES)})
    Entry.objects.bulk_create([
        Entry(workspace=workspace, conversation=live[r.member_id], kind=EntryKind.INBOUND, at=r.occurred_at,
              text=message_text(r.properties or {}), interaction_id=r.pk, channel=r.channel,
              bot_outcome=str((r.properties or {}).get("bot_outcome") or "")[:16])
        for r in messages if r.member_id in live], ignore_conflicts=True)

    latest: dict[int, Interaction] = {}
    human: set[int] = set()
    for r in messages:
        conv = live.get(r.member_id)
        if conv is None:
            continue
        best = latest.get(conv.pk)
        if best is None or (r.occurred_at, r.pk) > (best.occurred_at, best.pk):
            latest[conv.pk] = r
        if needs_human(r.properties or {}):
            human.add(conv.pk)
    if not latest:
        return
    stamp = DateTimeField()
    at_case = Case(*[When(pk=pk, then=Value(r.occurred_at, output_field=stamp)) for pk, r in latest.items()],
                   output_field=stamp)
    # One statement for the whole batch; columns agents change (assignee, team) are not touched.
    scoped(Conversation, workspace).filter(pk__in=list(latest), status__in=LIVE_STATUSES).update(
        preview=Case(*[When(pk=pk, last_message_at__lte=r.occurred_at,
                            then=Value(message_text(r.properties or {})[:MAX_PREVIEW])) for pk, r in latest.items()],
                     default=F("preview")),
        touchpoint_id=Case(*[When(pk=pk, then=Value(r.touchpoint_id)) for pk, r in latest.items()
                             if r.touchpoint_id is not None], default=F("touchpoint_id"), output_field=BigIntegerField()),
        last_message_at=Greatest(F("last_message_at"), at_case),
        last_inbound_at=Case(When(last_inbound_at__isnull=True, then=at_case),
                             default=Greatest(F("last_inbound_at"), at_case), output_field=stamp),
        status=Value(Status.OPEN),
        updated_at=Value(clock_now(), output_field=stamp),
        **({"needs_human": Case(When(pk__in=sorted(human), then=Value(True)), default=F("needs_human"))}
           if human else {}),
    )


def _record_csat_answers(workspace: Workspace, messages: list[Interaction]) -> set[int]:
    """Answer pending surveys with messages that are a score 1–5; the ids of the messages used."""
    scored = [(r, s) for r in messages if (s := parse_score(message_text(r.properties or {}))) is not None]
    if not scored:
        return set()
    from shequn.interactions import services as interactions

    pending: dict[int, CsatSurvey] = {}
    for survey in (scoped(CsatSurvey, workspace).filter(member_id__in={r.member_id for r, _s in scored},
                                                          score__isnull=True)
                   .select_related("touchpoint").order_by("asked_at", "pk")):
        pending[survey.member_id] = survey  # the latest question wins
    used: set[int] = set()
    for r, score in sorted(scored, key=lambda x: (x[0].occurred_at, x[0].pk)):
        survey = pending.get(r.member_id)
        if survey is None or not survey.asked_at - CLOCK_SKEW <= r.occurred_at < survey.expires_at:
            continue
        if not CsatSurvey.objects.filter(pk=survey.pk, score__isnull=True).update(score=score, answered_at=r.occurred_at):
            continue
        del pending[r.member_id]
        used.add(r.pk)
        [result] = interactions.ingest_batch(workspace, [{
            "member_id": r.member_id, "type": InteractionType.SATISFACTION, "channel": survey.channel,
            "direction": Direction.INBOUND, "touchpoint": survey.touchpoint.code if survey.touchpoint else None,
            "occurred_at": r.occurred_at, "source": SOURCE, "external_id": f"csat-{survey.pk}",
            "properties": {"score": score, "question": "csat", "conversation": survey.conversation_id,
                           "survey": survey.pk, "message": r.pk},
        }], actor=SOURCE)
        CsatSurvey.objects.filter(pk=survey.pk).update(interaction_id=result.id)
        Entry.objects.bulk_create([Entry(workspace=workspace, conversation_id=survey.conversation_id,
                                         kind=EntryKind.CSAT, at=r.occurred_at, text=message_text(r.properties or {}),
                                         interaction_id=r.pk, channel=r.channel, data={"score": score})],
                                  ignore_conflicts=True)
    return used


def csat_reply_hook(workspace: Workspace, member_id: int | Callable[[], int | None] | None, text: str,
                    at: dt.datetime) -> Any:
    """A REPLY_HOOKS answer: the thank-you text when ``text`` answers the member's pending survey.
    ``member_id`` may be a function giving it (as the bot passes it): the member is looked up only
    for a text that is a score. Reads one indexed row; writes nothing (the answer is recorded by
    :func:`on_interactions`)."""
    score = parse_score(text)
    if score is None:
        return None
    if callable(member_id):
        member_id = member_id()
    if member_id is None:
        return None
    survey = (scoped(CsatSurvey, workspace).filter(member_id=member_id, score__isnull=True)
              .order_by("-asked_at", "-pk").values_list("asked_at", "expires_at").first())
    if survey is None or not survey[0] - CLOCK_SKEW <= at < survey[1]:
        return None
    from shequn.conversations import services as conversations

    return conversations.Answer(content=csat_thanks(score))  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# claim, assign, transfer


@transaction.atomic
def claim(workspace: Workspace, conversation_id: Any, *, user: Any, actor: str) -> Conversation:
    """Take an unassigned conversation. Race-free: a conditional UPDATE on ``assignee IS NULL``; of
    agents claiming at once exactly one wins, the others get ``already_claimed``."""
    get_scoped(Conversation, workspace, conversation_id)  # 404 before anything else
    agent = _agent(workspace, getattr(user, "pk", user))
    at = clock_now()
    won = scoped(Conversation, workspace).filter(pk=conversation_id, assignee__isnull=True,
                                                 status__in=LIVE_STATUSES).update(
        assignee=agent, assigned_at=at, needs_human=True, updated_at=at)
    conv = get_scoped(Conversation, workspace, conversation_id)
    if not won:
        if conv.status not in LIVE_STATUSES:
            raise Conflict(_("this conversation is resolved"), code="conversation_resolved")
        raise Conflict(_("this conversation was already claimed"), code="already_claimed",
                       details={"assignee_id": conv.assignee_id})
    _event(conv, at, actor, "claim", user=agent.pk, username=agent.get_username())
    audit.record(workspace, actor, "inbox.claim", conv, {"user": agent.pk})
    bump(workspace)
    return conv


@transaction.atomic
def assign(workspace: Workspace, conversation_id: Any, *, user_id: Any = None, team_id: Any = None,
           actor: str) -> Conversation:
    """Assign (or transfer) a conversation to an agent, to a team (its queue: no agent), or both;
    neither puts it back to the unassigned queue."""
    conv = _live_conversation(workspace, conversation_id)
    agent = _agent(workspace, user_id) if user_id not in (None, "") else None
    team = _team(workspace, team_id) if team_id not in (None, "") else None
    before = {"user": conv.assignee_id, "team": conv.team_id}
    at = clock_now()
    conv.assignee = agent
    conv.assigned_at = at if agent else None
    if team is not None or agent is None:
        conv.team = team
    if agent or team:
        conv.needs_human = True
    conv.save(update_fields=["assignee", "assigned_at", "team", "needs_human", "updated_at"])
    after = {"user": conv.assignee_id, "team": conv.team_id}
    action = "transfer" if before["user"] or before["team"] else "assign"
    _event(conv, at, actor, action, user=conv.assignee_id,
           username=agent.get_username() if agent else "", team=conv.team_id, team_name=team.name if team else "")
    audit.record(workspace, actor, f"inbox.{action}", conv, {"from": before, "to": after})
    bump(workspace)
    return conv


# ---------------------------------------------------------------------------------------------
# replies, notes, status


@transaction.atomic
def reply(workspace: Workspace, conversation_id: Any, text: str, *, user: Any, actor: str,
          key: str | None = None) -> Entry:
    """Send an agent's reply to the member through the conversation's member channel. ``key`` makes
    it idempotent (a resubmitted form returns the stored reply). An unassigned conversation is
    claimed by the replying agent."""
    body = _clean_text("text", text)
    key = str(key or "")[:64]
    if key:
        done = scoped(Entry, workspace).filter(conversation_id=conversation_id, key=key).first()
        if done is not None:
            return done
    conv = _live_conversation(workspace, conversation_id)  # locks the row: concurrent replies queue here
    if key:
        done = Entry.objects.filter(conversation=conv, key=key).first()
        if done is not None:
            return done
    agent = _agent(workspace, getattr(user, "pk", user)) if user is not None else None
    at = clock_now()
    entry = Entry.objects.create(workspace=workspace, conversation=conv, kind=EntryKind.REPLY, at=at, text=body,
                                 author=agent, actor=actor, channel=conv.channel, key=key)
    entry.outbound_id = _send(workspace, conv.member_id, body, purpose="inbox_reply", actor=actor,
                              key=f"inbox-reply-{entry.pk}", channel=conv.channel)
    entry.save(update_fields=["outbound_id"])
    values: dict[str, Any] = {"last_reply_at": at, "last_message_at": Greatest(F("last_message_at"), Value(at, output_field=DateTimeField())),
                              "preview": body[:MAX_PREVIEW], "updated_at": at}
    scoped(Conversation, workspace).filter(pk=conv.pk).update(**values)
    scoped(Conversation, workspace).filter(pk=conv.pk, first_response_at__isnull=True).update(first_response_at=at)
    if agent is not None:
        scoped(Conversation, workspace).filter(pk=conv.pk, assignee__isnull=True).update(
            assignee=agent, assigned_at=at, needs_human=True)
    scoped(Ticket, workspace).filter(conversation=conv, first_responded_at__isnull=True).update(
        first_responded_at=at, updated_at=at)
    audit.record(workspace, actor, "inbox.reply", conv, {"entry": entry.pk, "outbound": entry.outbound_id})
    bump(workspace)
    return entry


@transaction.atomic
def add_note(workspace: Workspace, conversation_id: Any, text: str, *, user: Any, actor: str) -> Entry:
    """An internal note: seen by staff, never sent to the member."""
    body = _clean_text("text", text)
    conv = get_scoped(Conversation, workspace, conversation_id, for_update=True)
    author = _agent(workspace, getattr(user, "pk", user)) if user is not None else None
    entry = Entry.objects.create(workspace=workspace, conversation=conv, kind=EntryKind.NOTE, at=clock_now(),
                                 text=body, author=author, actor=actor)
    conv.save(update_fields=["updated_at"])
    audit.record(workspace, actor, "inbox.note", conv, {"entry": entry.pk})
    bump(workspace)
    return entry


@transaction.atomic
def set_status(workspace: Workspace, conversation_id: Any, status: str, *, actor: str,
               ask_csat: bool = True) -> Conversation:
    """Open, pending (waiting on the member) or resolved. Resolving a conversation a person took
    part in asks the member the satisfaction question once, through the same channel."""
    if status not in Status.values:
        raise ValidationError(_("status must be one of: %(values)s") % {"values": ", ".join(Status.values)},
                              code="invalid_field", details={"field": "status"})
    conv = get_scoped(Conversation, workspace, conversation_id, for_update=True)
    if conv.status == status:
        return conv
    at = clock_now()
    if conv.status == Status.RESOLVED:
        # Reopening: only while the member has no other live conversation.
        if scoped(Conversation, workspace).filter(member_id=conv.member_id, status__in=LIVE_STATUSES).exists():
            raise Conflict(_("the member has another open conversation"), code="conversation_exists")
        conv.resolved_at, conv.resolved_by = None, ""
    old = conv.status
    conv.status = status
    if status == Status.RESOLVED:
        conv.resolved_at, conv.resolved_by = at, actor
    conv.save(update_fields=["status", "resolved_at", "resolved_by", "updated_at"])
    _event(conv, at, actor, "status", old=old, new=status)
    audit.record(workspace, actor, "inbox.status", conv, {"from": old, "to": status})
    if status == Status.RESOLVED and ask_csat and (conv.needs_human or conv.assignee_id or conv.last_reply_at):
        _ask_csat(workspace, conv, at, actor)
    bump(workspace)
    return conv


def resolve(workspace: Workspace, conversation_id: Any, *, actor: str) -> Conversation:
    return set_status(workspace, conversation_id, Status.RESOLVED, actor=actor)


def _ask_csat(workspace: Workspace, conv: Conversation, at: dt.datetime, actor: str) -> None:
    survey, created = CsatSurvey.objects.get_or_create(  # backed by the one-to-one on conversation
        conversation=conv, defaults={"workspace": workspace, "member_id": conv.member_id,
                                     "touchpoint_id": conv.touchpoint_id, "channel": conv.channel,
                                     "asked_at": at, "expires_at": at + CSAT_WINDOW})
    if not created:
        return
    survey.outbound_id = _send(workspace, conv.member_id, csat_question(), purpose="csat", actor=actor,
                               key=f"inbox-csat-{survey.pk}", channel=conv.channel)
    survey.save(update_fields=["outbound_id"])
    _event(conv, at, actor, "csat_asked", survey=survey.pk)


# ---------------------------------------------------------------------------------------------
# tickets and the SLA clock


def sla_minutes(workspace: Workspace, team_id: int | None, priority: str) -> tuple[int, int]:
    """(first response, resolution) minutes: the team's row, else the workspace default, else built in."""
    rows = {r.team_id: r for r in scoped(SlaPolicy, workspace).filter(priority=priority)
            .filter(Q(team__isnull=True) | Q(team_id=team_id))}
    row = rows.get(team_id) if team_id is not None else None
    row = row or rows.get(None)
    if row is not None:
        return row.first_response_minutes, row.resolution_minutes
    return DEFAULT_SLA[priority]


def _set_dues(ticket: Ticket) -> None:
    base = ticket.created_at + dt.timedelta(seconds=ticket.paused_seconds)
    ticket.first_response_due = base + dt.timedelta(minutes=ticket.first_response_minutes)
    ticket.resolution_due = base + dt.timedelta(minutes=ticket.resolution_minutes)


def _clean_priority(priority: Any) -> str:
    value = str(priority or Priority.NORMAL)
    if value not in Priority.values:
        raise ValidationError(_("priority must be one of: %(values)s") % {"values": ", ".join(Priority.values)},
                              code="invalid_field", details={"field": "priority"})
    return value


@transaction.atomic
def create_ticket(workspace: Workspace, *, title: str, description: str = "", priority: str = Priority.NORMAL,
                  team_id: Any = None, assignee_id: Any = None, conversation_id: Any = None, member_id: Any = None,
                  actor: str, at: dt.datetime | None = None) -> Ticket:
    """A ticket, from a conversation (it takes the conversation's member, team and agent unless
    given) or on its own. Its SLA minutes come from the team's settings at creation. ``at`` (past
    only) records a ticket imported from another system with its original creation time."""
    title_value = _clean_text("title", title, limit=200)
    desc = str(description or "").strip()[:MAX_TEXT]
    level = _clean_priority(priority)
    conv = get_scoped(Conversation, workspace, conversation_id) if conversation_id not in (None, "") else None
    team = _team(workspace, team_id) if team_id not in (None, "") else None
    agent = _agent(workspace, assignee_id) if assignee_id not in (None, "") else None
    mid = None
    if member_id not in (None, ""):
        from shequn.members import queries as member_queries

        try:
            mid = int(member_id)
        except (TypeError, ValueError):
            mid = 0
        if mid not in member_queries.existing_ids(workspace, {mid}):
            raise NotFound(_("member %(id)s not found") % {"id": member_id}, code="unknown_member")
    if conv is not None:
        mid = mid or conv.member_id
        if team is None and conv.team_id:
            team = conv.team
        if agent is None and conv.assignee_id:
            agent = conv.assignee
    first, resolution = sla_minutes(workspace, team.pk if team else None, level)
    at = min(at, clock_now()) if at is not None else clock_now()
    ticket = Ticket(workspace=workspace, title=title_value, description=desc, conversation=conv, member_id=mid,
                    priority=level, team=team, assignee=agent, created_by=actor, created_at=at,
                    first_response_minutes=first, resolution_minutes=resolution)
    if conv is not None and conv.last_reply_at is not None:
        ticket.first_responded_at = at  # the member has already been answered in the conversation
    _set_dues(ticket)
    ticket.save()
    if conv is not None:
        _event(conv, at, actor, "ticket", ticket=ticket.pk, title=title_value)
    audit.record(workspace, actor, "inbox.ticket.create", ticket,
                 {"priority": level, "team": ticket.team_id, "conversation": ticket.conversation_id})
    bump(workspace)
    return ticket


@transaction.atomic
def update_ticket(workspace: Workspace, ticket_id: Any, *, actor: str, status: str | None = None,
                  priority: str | None = None, team_id: Any = ..., assignee_id: Any = ...) -> Ticket:
    """Change a ticket's status, priority, team or agent (``None`` clears team/agent, an omitted
    argument leaves it). Pending stops the SLA clock; back to open it runs again, the due times moved
    by the pause. A priority change recomputes the SLA minutes from the settings."""
    ticket = get_scoped(Ticket, workspace, ticket_id, for_update=True)
    changes: dict[str, Any] = {}
    at = clock_now()
    if team_id is not ...:
        team = _team(workspace, team_id) if team_id not in (None, "") else None
        if ticket.team_id != (team.pk if team else None):
            changes["team"] = [ticket.team_id, team.pk if team else None]
            ticket.team = team
    if assignee_id is not ...:
        agent = _agent(workspace, assignee_id) if assignee_id not in (None, "") else None
        if ticket.assignee_id != (agent.pk if agent else None):
            changes["assignee"] = [ticket.assignee_id, agent.pk if agent else None]
            ticket.assignee = agent
    if priority is not None:
        level = _clean_priority(priority)
        if level != ticket.priority:
            changes["priority"] = [ticket.priority, level]
            ticket.priority = level
            ticket.first_response_minutes, ticket.resolution_minutes = sla_minutes(workspace, ticket.team_id, level)
    if status is not None:
        if status not in Status.values:
            raise ValidationError(_("status must be one of: %(values)s") % {"values": ", ".join(Status.values)},
                                  code="invalid_field", details={"field": "status"})
        if status != ticket.status:
            changes["status"] = [ticket.status, status]
            if ticket.paused_at is not None:  # leaving pending: the clock runs again
                ticket.paused_seconds += max(0, int((at - ticket.paused_at).total_seconds()))
                ticket.paused_at = None
            if status == Status.PENDING:
                ticket.paused_at = at
            if status in (Status.PENDING, Status.RESOLVED) and ticket.first_responded_at is None:
                ticket.first_responded_at = at
            ticket.resolved_at = at if status == Status.RESOLVED else None
            ticket.status = status
    if not changes:
        return ticket
    _set_dues(ticket)
    ticket.save()
    audit.record(workspace, actor, "inbox.ticket.update", ticket, changes)
    bump(workspace)
    return ticket


def overdue_tickets(at: dt.datetime) -> Any:
    """Open tickets (clock running) past a due time and not yet breached, in every workspace."""
    return (Ticket.objects.filter(status=Status.OPEN, paused_at__isnull=True, breached_at__isnull=True)
            .filter(Q(first_responded_at__isnull=True, first_response_due__lte=at) | Q(resolution_due__lte=at)))


def escalate_overdue(at: dt.datetime | None = None, *, limit: int = ESCALATION_BATCH) -> list[int]:
    """Mark overdue tickets as breached and move each to its team's escalation team (unassigned, in
    that team's queue) — once per ticket: a conditional UPDATE on ``breached_at IS NULL`` lets one
    of any concurrent runs do it. The ids of the tickets this run escalated or marked."""
    moment = at or clock_now()
    done: list[int] = []
    for ticket in overdue_tickets(moment).select_related("team", "workspace").order_by("pk")[:limit]:
        breach = ("first_response" if ticket.first_responded_at is None and ticket.first_response_due <= moment
                  else "resolution")
        target = ticket.team.escalation_team_id if ticket.team is not None else None
        values: dict[str, Any] = {"breached_at": moment, "breach": breach, "updated_at": moment}
        if target is not None and target != ticket.team_id:
            values.update(team_id=target, escalated_from_id=ticket.team_id, assignee=None)
        with transaction.atomic():
            if not Ticket.objects.filter(pk=ticket.pk, breached_at__isnull=True, status=Status.OPEN,
                                         paused_at__isnull=True).update(**values):
                continue
            audit.record(ticket.workspace, "task:inbox.escalate", "inbox.ticket.escalate", ticket,
                         {"breach": breach, "from_team": ticket.team_id, "to_team": values.get("team_id")})
            bump(ticket.workspace_id)
        done.append(ticket.pk)
    return done


def close_idle_bot_conversations(at: dt.datetime | None = None, *, limit: int = ESCALATION_BATCH) -> int:
    """Resolve conversations only the bot took part in, idle for ``BOT_IDLE_CLOSE`` (no CSAT)."""
    moment = at or clock_now()
    rows = list(Conversation.objects.filter(status=Status.OPEN, needs_human=False, assignee__isnull=True,
                                            last_reply_at__isnull=True, last_message_at__lte=moment - BOT_IDLE_CLOSE)
                .values_list("pk", "workspace_id")[:limit])
    closed = 0
    for pk, ws_id in rows:
        with transaction.atomic():
            if Conversation.objects.filter(pk=pk, status=Status.OPEN, needs_human=False, assignee__isnull=True,
                                           last_message_at__lte=moment - BOT_IDLE_CLOSE).update(
                    status=Status.RESOLVED, resolved_at=moment, resolved_by="task:inbox.idle", updated_at=moment):
                bump(ws_id)
                closed += 1
    return closed


# ---------------------------------------------------------------------------------------------
# settings: teams, SLA minutes, canned replies


@transaction.atomic
def save_team(workspace: Workspace, name: str, *, escalation_team_id: Any = None, team_id: Any = None,
              actor: str) -> Team:
    value = _clean_text("name", name, limit=100)
    team = get_scoped(Team, workspace, team_id, for_update=True) if team_id not in (None, "") else None
    escalation = _team(workspace, escalation_team_id) if escalation_team_id not in (None, "") else None
    if team is not None and escalation is not None and escalation.pk == team.pk:
        raise ValidationError(_("a team cannot escalate to itself"), code="invalid_field",
                              details={"field": "escalation_team"})
    clash = scoped(Team, workspace).filter(name=value)
    if team is not None:
        clash = clash.exclude(pk=team.pk)
    if clash.exists():
        raise Conflict(_("a team with this name already exists"), code="team_exists", details={"field": "name"})
    if team is None:
        team = Team.objects.create(workspace=workspace, name=value, escalation_team=escalation)
        audit.record(workspace, actor, "inbox.team.create", team, {"name": value})
    else:
        team.name, team.escalation_team = value, escalation
        team.save(update_fields=["name", "escalation_team"])
        audit.record(workspace, actor, "inbox.team.update", team, {"name": value, "escalation": team.escalation_team_id})
    return team


@transaction.atomic
def set_team_members(workspace: Workspace, team_id: Any, user_ids: Iterable[Any], *, actor: str) -> list[int]:
    """Make exactly ``user_ids`` (agents of the workspace) the team's members."""
    team = get_scoped(Team, workspace, team_id, for_update=True)
    wanted = sorted({_agent(workspace, uid).pk for uid in user_ids})
    current = set(TeamMember.objects.filter(team=team).values_list("user_id", flat=True))
    TeamMember.objects.filter(team=team).exclude(user_id__in=wanted).delete()
    TeamMember.objects.bulk_create([TeamMember(workspace=workspace, team=team, user_id=uid)
                                    for uid in wanted if uid not in current], ignore_conflicts=True)
    if set(wanted) != current:
        audit.record(workspace, actor, "inbox.team.members", team, {"users": wanted})
    return wanted


@transaction.atomic
def delete_team(workspace: Workspace, team_id: Any, *, actor: str) -> None:
    team = get_scoped(Team, workspace, team_id, for_update=True)
    audit.record(workspace, actor, "inbox.team.delete", team, {"name": team.name})
    team.delete()
    bump(workspace)


@transaction.atomic
def save_sla(workspace: Workspace, team_id: Any, priority: str, first_response_minutes: Any, resolution_minutes: Any,
             *, actor: str) -> SlaPolicy:
    """Set the SLA minutes of ``priority`` for a team (``team_id`` None: the workspace default).
    Applies to tickets created (or re-prioritised) afterwards."""
    level = _clean_priority(priority)
    team = _team(workspace, team_id) if team_id not in (None, "") else None
    values = {}
    for field, raw in (("first_response_minutes", first_response_minutes), ("resolution_minutes", resolution_minutes)):
        try:
            number = int(raw)
        except (TypeError, ValueError):
            number = 0
        if not 1 <= number <= MAX_SLA_MINUTES:
            raise ValidationError(_("%(field)s must be a whole number of minutes from 1 to %(max)s")
                                  % {"field": field, "max": MAX_SLA_MINUTES}, code="invalid_field",
                                  details={"field": field})
        values[field] = number
    if values["first_response_minutes"] > values["resolution_minutes"]:
        raise ValidationError(_("the first response cannot be due after the resolution"), code="invalid_field",
                              details={"field": "first_response_minutes"})
    # backed by uniq_inbox_sla_team / uniq_inbox_sla_default
    policy, _created = SlaPolicy.objects.update_or_create(workspace=workspace, team=team, priority=level,
                                                          defaults=values)
    audit.record(workspace, actor, "inbox.sla", policy, {"team": team.pk if team else None, "priority": level, **values})
    return policy


@transaction.atomic
def save_canned_reply(workspace: Workspace, shortcut: str, title: str, text: str, *, actor: str) -> CannedReply:
    """Create or update the canned reply with ``shortcut`` (a-z, 0-9, - and _)."""
    key = str(shortcut or "").strip().lstrip("/").lower()
    if not _SHORTCUT_RE.match(key):
        raise ValidationError(_("the shortcut must be 1–32 letters, digits, - or _"), code="invalid_field",
                              details={"field": "shortcut"})
    values = {"title": _clean_text("title", title, limit=100), "text": _clean_text("text", text)}
    reply_row, created = CannedReply.objects.update_or_create(workspace=workspace, shortcut=key, defaults=values)
    audit.record(workspace, actor, "inbox.canned.create" if created else "inbox.canned.update", reply_row,
                 {"shortcut": key})
    return reply_row


@transaction.atomic
def delete_canned_reply(workspace: Workspace, reply_id: Any, *, actor: str) -> None:
    row = get_scoped(CannedReply, workspace, reply_id, for_update=True)
    audit.record(workspace, actor, "inbox.canned.delete", row, {"shortcut": row.shortcut})
    row.delete()

