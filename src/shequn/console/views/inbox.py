"""Console pages: the service inbox (conversation lists, a conversation with its thread, reply box,
notes and actions, the member beside it), tickets, the inbox report and the inbox settings (teams,
SLA minutes, canned replies).

Pages stay current by conditional polling: ``inbox.js`` asks ``inbox/version/`` with
``If-None-Match`` every few seconds (a 304 costs one indexed row) and refetches the list or the
conversation only when the version moved (docs/adr/0011-inbox-conditional-polling.md)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified, JsonResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from shequn.console import charts
from shequn.console.access import actor, console_view, has_role
from shequn.console.errors import error_text
from shequn.core import services as core
from shequn.core.clock import now
from shequn.core.errors import NotFound, ShequnError
from shequn.core.models import Role
from shequn.inbox import queries, services
from shequn.inbox.models import Priority, Status

PAGE_SIZE = 50
POLL_SECONDS = 3
REPORT_DAYS = 30


@contextmanager
def reported(request: HttpRequest) -> Iterator[None]:
    """A refused action becomes a message on the page; a missing object stays a 404."""
    try:
        yield
    except NotFound:
        raise
    except ShequnError as exc:
        messages.error(request, error_text(exc))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _wants_fragment(request: HttpRequest) -> bool:
    return request.GET.get("partial") == "1"


# ---------------------------------------------------------------------------------------------
# the version clients poll


@login_required
def version(request: HttpRequest, slug: str) -> HttpResponse:
    """``{"version": n}`` with ``ETag``; ``304 Not Modified`` when ``If-None-Match`` matches. Kept
    lean on purpose (no workspace list, no template): 50 agents poll it every few seconds."""
    try:
        membership = core.membership(request.user, slug)  # type: ignore[arg-type]
    except NotFound:
        raise Http404 from None
    if not has_role(membership.role, Role.AGENT):
        return HttpResponse(status=403)
    current = queries.version(membership.workspace)
    etag = f'"inbox-{current}"'
    if request.headers.get("If-None-Match") == etag:
        response: HttpResponse = HttpResponseNotModified()
    else:
        response = JsonResponse({"version": current})
    response["ETag"] = etag
    response["Cache-Control"] = "no-cache"
    return response


# ---------------------------------------------------------------------------------------------
# the list


VIEW_LABELS = {"mine": gettext_lazy("Mine"), "unassigned": gettext_lazy("Unassigned"), "team": gettext_lazy("My teams"),
               "all": gettext_lazy("All")}


@console_view(read=Role.AGENT)
def conversation_list(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    view = request.GET.get("view") or "unassigned"
    if view not in queries.VIEWS:
        view = "unassigned"
    status = request.GET.get("status", "")
    status = status if status in Status.values else ""
    channel = request.GET.get("channel", "").strip()[:64]
    team_id = _int(request.GET.get("team"))
    filters = {"view": view, "status": status, "channel": channel, "team": team_id or ""}
    rows: list[Any] = []
    next_link = None
    error = None
    try:
        qs = queries.conversations(ws, request.user.pk, queries.ConversationFilter(
            view=view, status=status, channel=channel, team_id=team_id))
        rows, cursor = queries.page(qs, after=request.GET.get("after", ""), limit=PAGE_SIZE)
        if cursor:
            next_link = "?" + urlencode({**{k: v for k, v in filters.items() if v}, "after": cursor})
    except ShequnError as exc:
        error = error_text(exc)
    context = {
        "rows": rows, "next_link": next_link, "error": error, "filters": filters, "view": view,
        "counts": queries.counts(ws, request.user.pk), "version": queries.version(ws),
        "views": list(VIEW_LABELS.items()),
        "status_choices": Status.choices, "teams": queries.teams(ws) if not _wants_fragment(request) else [],
        "poll_seconds": POLL_SECONDS, "paged": bool(request.GET.get("after")),
    }
    template = "console/inbox/_list.html" if _wants_fragment(request) else "console/inbox/list.html"
    return render(request, template, context)


# ---------------------------------------------------------------------------------------------
# one conversation


@console_view(read=Role.AGENT)
def conversation(request: HttpRequest, conversation_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    conv = queries.conversation(ws, conversation_id)
    context: dict[str, Any] = {
        "conv": conv, "thread": queries.thread(ws, conv.pk), "tickets": queries.conversation_tickets(ws, conv.pk),
        "version": queries.version(ws), "poll_seconds": POLL_SECONDS, "live": conv.status != Status.RESOLVED,
        "mine": conv.assignee_id == request.user.pk, "agents": queries.agents(ws), "teams": queries.teams(ws),
    }
    if _wants_fragment(request):
        return render(request, "console/inbox/_conversation.html", context)
    context.update(queries.member_context(ws, conv.member_id))
    context.update({"canned": queries.canned_replies(ws), "reply_key": uuid.uuid4().hex,
                    "priorities": Priority.choices})
    return render(request, "console/inbox/conversation.html", context)


def _back(request: HttpRequest, conversation_id: int) -> HttpResponse:
    return redirect("console:inbox_conversation", slug=request.workspace.slug,  # type: ignore[attr-defined]
                    conversation_id=conversation_id)


@require_POST
@console_view(read=Role.AGENT)
def claim(request: HttpRequest, conversation_id: int) -> HttpResponse:
    with reported(request):
        services.claim(request.workspace, conversation_id, user=request.user,  # type: ignore[attr-defined]
                       actor=actor(request))
        messages.success(request, _("You took this conversation."))
    return _back(request, conversation_id)


@require_POST
@console_view(read=Role.AGENT)
def assign(request: HttpRequest, conversation_id: int) -> HttpResponse:
    with reported(request):
        conv = services.assign(request.workspace, conversation_id,  # type: ignore[attr-defined]
                               user_id=request.POST.get("user") or None, team_id=request.POST.get("team") or None,
                               actor=actor(request))
        messages.success(request, _("Assigned.") if conv.assignee_id or conv.team_id
                         else _("Back in the unassigned queue."))
    return _back(request, conversation_id)


@require_POST
@console_view(read=Role.AGENT)
def reply(request: HttpRequest, conversation_id: int) -> HttpResponse:
    with reported(request):
        services.reply(request.workspace, conversation_id, request.POST.get("text", ""),  # type: ignore[attr-defined]
                       user=request.user, actor=actor(request), key=request.POST.get("key") or None)
        messages.success(request, _("Reply sent."))
    return _back(request, conversation_id)


@require_POST
@console_view(read=Role.AGENT)
def note(request: HttpRequest, conversation_id: int) -> HttpResponse:
    with reported(request):
        services.add_note(request.workspace, conversation_id, request.POST.get("text", ""),  # type: ignore[attr-defined]
                          user=request.user, actor=actor(request))
        messages.success(request, _("Note added."))
    return _back(request, conversation_id)


@require_POST
@console_view(read=Role.AGENT)
def set_status(request: HttpRequest, conversation_id: int) -> HttpResponse:
    with reported(request):
        conv = services.set_status(request.workspace, conversation_id,  # type: ignore[attr-defined]
                                   request.POST.get("status", ""), actor=actor(request))
        messages.success(request, _("Conversation resolved; the member was asked to rate the service.")
                         if conv.status == Status.RESOLVED and hasattr(conv, "csat") else _("Status changed."))
    return _back(request, conversation_id)


@require_POST
@console_view(read=Role.AGENT)
def conversation_ticket(request: HttpRequest, conversation_id: int) -> HttpResponse:
    with reported(request):
        ticket = services.create_ticket(request.workspace, title=request.POST.get("title", ""),  # type: ignore[attr-defined]
                                        description=request.POST.get("description", ""),
                                        priority=request.POST.get("priority", Priority.NORMAL),
                                        conversation_id=conversation_id, actor=actor(request))
        messages.success(request, _("Ticket #%(id)s created.") % {"id": ticket.pk})
    return _back(request, conversation_id)


# ---------------------------------------------------------------------------------------------
# tickets


@console_view(read=Role.AGENT)
def ticket_list(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    if request.method == "POST":
        with reported(request):
            ticket = services.create_ticket(
                ws, title=request.POST.get("title", ""), description=request.POST.get("description", ""),
                priority=request.POST.get("priority", Priority.NORMAL), team_id=request.POST.get("team") or None,
                assignee_id=request.POST.get("assignee") or None, member_id=request.POST.get("member") or None,
                actor=actor(request))
            messages.success(request, _("Ticket #%(id)s created.") % {"id": ticket.pk})
            return redirect("console:inbox_ticket", slug=ws.slug, ticket_id=ticket.pk)
        return redirect("console:inbox_tickets", slug=ws.slug)
    status = request.GET.get("status", "")
    status = status if status in (*Status.values, "any") else ""
    priority = request.GET.get("priority", "")
    priority = priority if priority in Priority.values else ""
    f = queries.TicketFilter(status=status, priority=priority, team_id=_int(request.GET.get("team")),
                             assignee_id=request.user.pk if request.GET.get("mine") else None,
                             breached=bool(request.GET.get("breached")))
    rows, cursor = queries.ticket_page(queries.tickets(ws, f), after=_int(request.GET.get("after")), limit=PAGE_SIZE)
    params = {k: v for k, v in request.GET.items() if k != "after" and v}
    return render(request, "console/inbox/tickets.html", {
        "rows": rows, "next_link": "?" + urlencode({**params, "after": cursor}) if cursor else None,
        "filters": {"status": status, "priority": priority, "team": f.team_id or "", "mine": bool(f.assignee_id),
                    "breached": f.breached},
        "status_choices": Status.choices, "priorities": Priority.choices, "teams": queries.teams(ws),
        "agents": queries.agents(ws), "now": now(),
    })


@console_view(read=Role.AGENT)
def ticket_detail(request: HttpRequest, ticket_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    if request.method == "POST":
        with reported(request):
            services.update_ticket(ws, ticket_id, actor=actor(request), status=request.POST.get("status") or None,
                                   priority=request.POST.get("priority") or None,
                                   team_id=request.POST.get("team") or None,
                                   assignee_id=request.POST.get("assignee") or None)
            messages.success(request, _("Ticket saved."))
        return redirect("console:inbox_ticket", slug=ws.slug, ticket_id=ticket_id)
    ticket = queries.ticket(ws, ticket_id)
    return render(request, "console/inbox/ticket.html", {
        "ticket": ticket, "history": queries.ticket_history(ws, ticket.pk), "now": now(),
        "status_choices": Status.choices, "priorities": Priority.choices, "teams": queries.teams(ws),
        "agents": queries.agents(ws),
    })


# ---------------------------------------------------------------------------------------------
# report


@console_view(read=Role.AGENT)
def report(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    data = queries.report(ws, days=REPORT_DAYS, now=now())
    labels = [d.isoformat() for d in data["days"]]
    return render(request, "console/inbox/report.html", {
        "data": data, "days": REPORT_DAYS, "opened_total": sum(data["opened"]), "breached_total": sum(data["breached"]),
        "volume_figure": daily_figure(labels, data["opened"], data["breached"]),
        "csat_figure": csat_figure(data["scores"]),
    })


def _layout(**extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {"font": charts.FONT, "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
                              "margin": {"l": 50, "r": 20, "t": 20, "b": 50}, "height": 300}
    layout.update(extra)
    return layout


def _step(largest: int) -> int:
    """A whole-number tick step: counts have no fractions."""
    step = 1
    while largest > 5 * step:
        step = step * 5 // 2 if str(step).startswith("2") else step * 2
    return step


def daily_figure(days: list[str], opened: list[int], breached: list[int]) -> dict[str, Any]:
    """Conversations opened per day (bars) and SLA breaches per day (line)."""
    return {
        "data": [
            {"type": "bar", "x": days, "y": opened, "name": _("Conversations opened"), "marker": {"color": "#2f9e8f"},
             "hovertemplate": "%{x}: %{y}<extra></extra>"},
            {"type": "scatter", "mode": "lines+markers", "x": days, "y": breached, "name": _("SLA breaches"),
             "line": {"color": "#d9480f"}, "hovertemplate": "%{x}: %{y}<extra></extra>"},
        ],
        "layout": _layout(showlegend=True, legend={"orientation": "h", "y": -0.2},
                          yaxis={"rangemode": "tozero", "gridcolor": "#e5e9ef", "tick0": 0,
                                 "dtick": _step(max([*opened, *breached, 0]))}),
    }


def csat_figure(scores: dict[int, int]) -> dict[str, Any]:
    """How many answers gave each score 1–5 (red to green)."""
    return {
        "data": [{"type": "bar", "x": [str(s) for s in scores], "y": list(scores.values()),
                  "marker": {"color": ["#d9480f", "#f08c00", "#fab005", "#66a80f", "#2b8a3e"]},
                  "hovertemplate": "%{x}: %{y}<extra></extra>"}],
        "layout": _layout(showlegend=False, xaxis={"title": {"text": _("Score")}},
                          yaxis={"title": {"text": _("Answers")}, "rangemode": "tozero", "gridcolor": "#e5e9ef",
                                 "tick0": 0, "dtick": _step(max([*scores.values(), 0]))}),
    }


# ---------------------------------------------------------------------------------------------
# settings (operators)


@console_view(read=Role.OPERATOR)
def teams(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    if request.method == "POST":
        with reported(request):
            action = request.POST.get("action", "save")
            team_id = request.POST.get("team_id") or None
            if action == "delete" and team_id:
                services.delete_team(ws, team_id, actor=actor(request))
                messages.success(request, _("Team deleted."))
            elif action == "members" and team_id:
                services.set_team_members(ws, team_id, request.POST.getlist("users"), actor=actor(request))
                messages.success(request, _("Team members saved."))
            else:
                services.save_team(ws, request.POST.get("name", ""), team_id=team_id,
                                   escalation_team_id=request.POST.get("escalation_team") or None, actor=actor(request))
                messages.success(request, _("Team saved."))
        return redirect("console:inbox_teams", slug=ws.slug)
    return render(request, "console/inbox/teams.html", {"teams": queries.teams(ws), "agents": queries.agents(ws)})


@console_view(read=Role.OPERATOR)
def sla(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    if request.method == "POST":
        with reported(request):
            services.save_sla(ws, request.POST.get("team") or None, request.POST.get("priority", ""),
                              request.POST.get("first_response_minutes"), request.POST.get("resolution_minutes"),
                              actor=actor(request))
            messages.success(request, _("SLA saved."))
        return redirect("console:inbox_sla", slug=ws.slug)
    return render(request, "console/inbox/sla.html", {"table": queries.sla_table(ws), "priorities": Priority.choices,
                                                      "teams": queries.teams(ws)})


@console_view(read=Role.OPERATOR)
def canned(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    if request.method == "POST":
        with reported(request):
            if request.POST.get("action") == "delete":
                services.delete_canned_reply(ws, request.POST.get("reply_id"), actor=actor(request))
                messages.success(request, _("Canned reply deleted."))
            else:
                services.save_canned_reply(ws, request.POST.get("shortcut", ""), request.POST.get("title", ""),
                                           request.POST.get("text", ""), actor=actor(request))
                messages.success(request, _("Canned reply saved."))
        return redirect("console:inbox_canned", slug=ws.slug)
    return render(request, "console/inbox/canned.html", {"replies": queries.canned_replies(ws)})


urlpatterns: list[URLPattern] = [
    path("inbox/", conversation_list, name="inbox"),
    path("inbox/version/", version, name="inbox_version"),
    path("inbox/c/<int:conversation_id>/", conversation, name="inbox_conversation"),
    path("inbox/c/<int:conversation_id>/claim/", claim, name="inbox_claim"),
    path("inbox/c/<int:conversation_id>/assign/", assign, name="inbox_assign"),
    path("inbox/c/<int:conversation_id>/reply/", reply, name="inbox_reply"),
    path("inbox/c/<int:conversation_id>/note/", note, name="inbox_note"),
    path("inbox/c/<int:conversation_id>/status/", set_status, name="inbox_status"),
    path("inbox/c/<int:conversation_id>/ticket/", conversation_ticket, name="inbox_conversation_ticket"),
    path("inbox/tickets/", ticket_list, name="inbox_tickets"),
    path("inbox/tickets/<int:ticket_id>/", ticket_detail, name="inbox_ticket"),
    path("inbox/report/", report, name="inbox_report"),
    path("inbox/settings/teams/", teams, name="inbox_teams"),
    path("inbox/settings/sla/", sla, name="inbox_sla"),
    path("inbox/settings/canned/", canned, name="inbox_canned"),
]
