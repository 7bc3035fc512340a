"""Console pages of the bot: keyword rules (with a message tester), IVR menus, incidents."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from shequn.console.access import actor, console_view
from shequn.console.errors import error_text
from shequn.conversations import queries, services
from shequn.conversations.models import (
    AutoReplyRule,
    IncidentStatus,
    LiveData,
    MatchType,
    MenuNode,
    NodeAction,
    NotificationStatus,
)
from shequn.core.errors import ShequnError, ValidationError
from shequn.core.models import Role
from shequn.core.tenancy import get_scoped, scoped

PAGE = 100
_WINDOW_RE = re.compile(r"^\s*([1-7](?:\s*[,-]\s*[1-7])*)\s+(\d{1,2}:\d{2})\s*[-–~ ]\s*(\d{1,2}:\d{2})\s*$")


def _ws(request: HttpRequest) -> Any:
    return request.workspace  # type: ignore[attr-defined]


def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _days(spec: str) -> list[int]:
    days: set[int] = set()
    for part in re.split(r"\s*,\s*", spec.strip()):
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-"))
            days.update(range(lo, hi + 1))
        elif part:
            days.add(int(part))
    return sorted(days)


def parse_windows(text: str) -> list[dict[str, Any]]:
    """``1-5 09:00-18:00`` per line (ISO weekdays, Monday = 1) → the service's window objects."""
    out = []
    for line in _lines(text):
        m = _WINDOW_RE.match(line)
        if not m:
            raise ValidationError(_("Write each time window as days and times, e.g. 1-5 09:00-18:00"),
                              code="invalid_field", details={"field": "windows"})
        out.append({"days": _days(m[1]), "start": m[2], "end": m[3]})
    return out


def windows_text(windows: list[dict[str, Any]]) -> str:
    lines = []
    for w in windows or []:
        days = w.get("days", [])
        spec = f"{days[0]}-{days[-1]}" if days and days == list(range(days[0], days[-1] + 1)) and len(days) > 1 \
            else ",".join(str(d) for d in days)
        lines.append(f"{spec} {w.get('start')}-{w.get('end')}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# rules


@console_view(read=Role.OPERATOR)
def rules(request: HttpRequest) -> HttpResponse:
    ws = _ws(request)
    q = request.GET.get("q", "").strip()
    qs = scoped(AutoReplyRule, ws).order_by("priority", "id")
    if q:
        qs = qs.filter(Q(name__icontains=q) | Q(patterns__icontains=q))
    page = Paginator(qs, PAGE).get_page(request.GET.get("page"))
    return render(request, "console/bots/rules.html", {"page": page, "q": q, "result": None, "tried": ""})


def _rule_data(post: Any) -> dict[str, Any]:
    return {
        "name": post.get("name", ""),
        "match_type": post.get("match_type", ""),
        "patterns": _lines(post.get("patterns", "")),
        "reply": post.get("reply", ""),
        "priority": post.get("priority", "") or services.DEFAULT_PRIORITY,
        "channels": post.get("channels", ""),
        "windows": parse_windows(post.get("windows", "")),
        "outside_windows": post.get("outside_windows") == "on",
        "enabled": post.get("enabled") == "on",
        "tag": post.get("tag", ""),
    }


def _rule_form(request: HttpRequest, rule: AutoReplyRule | None) -> HttpResponse:
    ws = _ws(request)
    error = ""
    if request.method == "POST":
        values = dict(request.POST.items())
        try:
            data = _rule_data(request.POST)
            if rule is None:
                saved = services.create_rule(ws, data, actor=actor(request))
            else:
                saved = services.update_rule(ws, rule.pk, data, actor=actor(request))
        except ShequnError as exc:
            error = error_text(exc)
        else:
            messages.success(request, _("Rule “%(name)s” saved.") % {"name": saved.name})
            return redirect("console:bots_rules", slug=ws.slug)
    elif rule is not None:
        values = {"name": rule.name, "match_type": rule.match_type, "patterns": "\n".join(rule.patterns),
                  "reply": rule.reply.get("content", ""), "priority": rule.priority,
                  "channels": ", ".join(rule.channels), "windows": windows_text(rule.windows),
                  "outside_windows": "on" if rule.outside_windows else "", "enabled": "on" if rule.enabled else "",
                  "tag": rule.tag}
    else:
        values = {"match_type": MatchType.CONTAINS, "priority": services.DEFAULT_PRIORITY, "enabled": "on"}
    return render(request, "console/bots/rule_form.html", {"rule": rule, "values": values, "error": error,
                                                          "match_types": MatchType.choices})


@console_view(read=Role.OPERATOR)
def rule_new(request: HttpRequest) -> HttpResponse:
    return _rule_form(request, None)


@console_view(read=Role.OPERATOR)
def rule_edit(request: HttpRequest, rule_id: int) -> HttpResponse:
    return _rule_form(request, queries.rule(_ws(request), rule_id))


@require_POST
@console_view(read=Role.OPERATOR)
def rule_delete(request: HttpRequest, rule_id: int) -> HttpResponse:
    ws = _ws(request)
    rule = queries.rule(ws, rule_id)
    services.delete_rule(ws, rule.pk, actor=actor(request))
    messages.success(request, _("Rule “%(name)s” deleted.") % {"name": rule.name})
    return redirect("console:bots_rules", slug=ws.slug)


@console_view(read=Role.OPERATOR)
def tester(request: HttpRequest) -> HttpResponse:
    """Try a message: the bot's reply as it would be sent (menu steps are remembered per user)."""
    ws = _ws(request)
    result: dict[str, Any] | None = None
    error = ""
    text = request.POST.get("text", "") if request.method == "POST" else ""
    member = request.POST.get("member_id", "").strip() if request.method == "POST" else ""
    if request.method == "POST":
        try:
            member_id = int(member) if member else None
            result = services.simulate(ws, text, member_id=member_id, actor=actor(request))
        except ValueError:
            error = _("The member id is a number.")
        except ShequnError as exc:
            error = error_text(exc)
    return render(request, "console/bots/tester.html", {"result": result, "text": text, "member": member,
                                                       "error": error})


# ---------------------------------------------------------------------------------------------
# menus


def _menu_data(post: Any) -> dict[str, Any]:
    return {"name": post.get("name", ""), "triggers": post.get("triggers", ""), "prompt": post.get("prompt", ""),
            "handoff_text": post.get("handoff_text", ""),
            "timeout_seconds": post.get("timeout_seconds", "") or services.DEFAULT_TIMEOUT,
            "enabled": post.get("enabled") == "on"}


@console_view(read=Role.OPERATOR)
def menus(request: HttpRequest) -> HttpResponse:
    ws = _ws(request)
    error = ""
    values: dict[str, Any] = {"triggers": "菜单, menu", "timeout_seconds": services.DEFAULT_TIMEOUT, "enabled": "on"}
    if request.method == "POST":
        values = dict(request.POST.items())
        try:
            menu = services.create_menu(ws, _menu_data(request.POST), actor=actor(request))
        except ShequnError as exc:
            error = error_text(exc)
        else:
            messages.success(request, _("Menu “%(name)s” created.") % {"name": menu.name})
            return redirect("console:bots_menu", slug=ws.slug, menu_id=menu.pk)
    return render(request, "console/bots/menus.html", {"menus": queries.menus(ws), "values": values, "error": error})


def _node_data(post: Any) -> dict[str, Any]:
    data = {k: post.get(k, "") for k in ("key", "label", "action", "text", "live")}
    if "parent" in post:
        data["parent"] = post.get("parent") or None
    return data


@console_view(read=Role.OPERATOR)
def menu_detail(request: HttpRequest, menu_id: int) -> HttpResponse:
    ws = _ws(request)
    menu = queries.menu(ws, menu_id)
    menu_error = node_error = ""
    menu_values = {"name": menu.name, "triggers": ", ".join(menu.triggers), "prompt": menu.prompt,
                   "handoff_text": menu.handoff_text, "timeout_seconds": menu.timeout_seconds,
                   "enabled": "on" if menu.enabled else ""}
    node_values: dict[str, Any] = {"action": NodeAction.TEXT, "parent": request.GET.get("parent", "")}
    if request.method == "POST":
        try:
            if request.POST.get("form") == "menu":
                menu_values = dict(request.POST.items())
                services.update_menu(ws, menu.pk, _menu_data(request.POST), actor=actor(request))
                messages.success(request, _("Menu saved."))
            else:
                node_values = dict(request.POST.items())
                node = services.create_node(ws, menu.pk, _node_data(request.POST), actor=actor(request))
                messages.success(request, _("Option %(key)s added.") % {"key": node.key})
        except ShequnError as exc:
            if request.POST.get("form") == "menu":
                menu_error = error_text(exc)
            else:
                node_error = error_text(exc)
        else:
            return redirect("console:bots_menu", slug=ws.slug, menu_id=menu.pk)
    nodes = queries.menu_nodes(ws, menu.pk)
    bot = queries.bot(ws)
    compiled = bot.menus_by_id.get(menu.pk) if bot is not None else None
    preview = compiled.listing(None) if compiled is not None else None
    return render(request, "console/bots/menu.html", {
        "menu": menu, "nodes": nodes, "menu_values": menu_values, "node_values": node_values,
        "menu_error": menu_error, "node_error": node_error, "preview": preview,
        "submenus": [n for n in nodes if n.action == NodeAction.SUBMENU],
        "actions": NodeAction.choices, "lives": LiveData.choices})


@require_POST
@console_view(read=Role.OPERATOR)
def menu_delete(request: HttpRequest, menu_id: int) -> HttpResponse:
    ws = _ws(request)
    menu = queries.menu(ws, menu_id)
    services.delete_menu(ws, menu.pk, actor=actor(request))
    messages.success(request, _("Menu “%(name)s” deleted.") % {"name": menu.name})
    return redirect("console:bots_menus", slug=ws.slug)


@console_view(read=Role.OPERATOR)
def node_edit(request: HttpRequest, node_id: int) -> HttpResponse:
    ws = _ws(request)
    node = get_scoped(MenuNode, ws, node_id)
    error = ""
    values: dict[str, Any] = {"parent": node.parent_id or "", "key": node.key, "label": node.label,
                              "action": node.action, "text": node.text, "live": node.live}
    if request.method == "POST":
        values = dict(request.POST.items())
        try:
            services.update_node(ws, node.pk, _node_data(request.POST), actor=actor(request))
        except ShequnError as exc:
            error = error_text(exc)
        else:
            messages.success(request, _("Option %(key)s saved.") % {"key": request.POST.get("key", "")})
            return redirect("console:bots_menu", slug=ws.slug, menu_id=node.menu_id)
    nodes = queries.menu_nodes(ws, node.menu_id)
    return render(request, "console/bots/node_form.html", {
        "node": node, "menu": node.menu, "values": values, "error": error,
        "submenus": [n for n in nodes if n.action == NodeAction.SUBMENU and n.pk != node.pk],
        "actions": NodeAction.choices, "lives": LiveData.choices})


@require_POST
@console_view(read=Role.OPERATOR)
def node_delete(request: HttpRequest, node_id: int) -> HttpResponse:
    ws = _ws(request)
    node = get_scoped(MenuNode, ws, node_id)
    services.delete_node(ws, node.pk, actor=actor(request))
    messages.success(request, _("Option %(key)s deleted.") % {"key": node.key})
    return redirect("console:bots_menu", slug=ws.slug, menu_id=node.menu_id)


# ---------------------------------------------------------------------------------------------
# incidents


def _local_input(value: dt.datetime | None) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%dT%H:%M") if value else ""


def _parse_local(field: str, raw: str) -> dt.datetime | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        naive = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValidationError(_("Give a date and time like 2026-06-01 10:00."), code="invalid_field",
                          details={"field": field}) from None
    return timezone.make_aware(naive) if timezone.is_naive(naive) else naive


def _incident_data(post: Any) -> dict[str, Any]:
    return {"title": post.get("title", ""), "keywords": post.get("keywords", ""), "reply": post.get("reply", ""),
            "starts_at": _parse_local("starts_at", post.get("starts_at", "")),
            "ends_at": _parse_local("ends_at", post.get("ends_at", ""))}


@console_view(read=Role.OPERATOR)
def incidents(request: HttpRequest) -> HttpResponse:
    ws = _ws(request)
    error = ""
    values: dict[str, Any] = {"starts_at": _local_input(timezone.now())}
    if request.method == "POST":
        values = dict(request.POST.items())
        try:
            incident = services.declare_incident(ws, _incident_data(request.POST), actor=actor(request))
        except ShequnError as exc:
            error = error_text(exc)
        else:
            messages.success(request, _("Incident “%(title)s” declared.") % {"title": incident.title})
            return redirect("console:bots_incident", slug=ws.slug, incident_id=incident.pk)
    return render(request, "console/bots/incidents.html", {"incidents": queries.incidents(ws), "values": values,
                                                          "error": error})


def _target(post: Any) -> dict[str, Any]:
    kind = post.get("target", "filter")
    if kind == "filter":
        return {"filter": {k: post.get(f"f_{k}", "").strip() for k in ("tag", "stage", "keyword", "source",
                                                                       "attribute") if post.get(f"f_{k}", "").strip()}}
    if kind == "phones":
        return {"phones": post.get("phones", "")}
    return {"member_ids": post.get("member_ids", "")}


@console_view(read=Role.OPERATOR)
def incident_detail(request: HttpRequest, incident_id: int) -> HttpResponse:
    ws = _ws(request)
    incident = queries.incident(ws, incident_id)
    error = notify_error = ""
    values = {"title": incident.title, "keywords": ", ".join(incident.keywords), "reply": incident.reply,
              "starts_at": _local_input(incident.starts_at), "ends_at": _local_input(incident.ends_at)}
    notify_values: dict[str, Any] = {"target": "filter", "text": incident.reply}
    if request.method == "POST":
        if request.POST.get("form") == "notify":
            notify_values = dict(request.POST.items())
            try:
                services.notify_incident(ws, incident.pk, _target(request.POST), actor=actor(request),
                                         text=request.POST.get("text") or None)
            except ShequnError as exc:
                notify_error = error_text(exc)
            else:
                messages.success(request, _("The notification is being sent."))
                return redirect("console:bots_incident", slug=ws.slug, incident_id=incident.pk)
        else:
            values = dict(request.POST.items())
            try:
                services.update_incident(ws, incident.pk, _incident_data(request.POST), actor=actor(request))
            except ShequnError as exc:
                error = error_text(exc)
            else:
                messages.success(request, _("Incident saved."))
                return redirect("console:bots_incident", slug=ws.slug, incident_id=incident.pk)
    notifications = queries.notifications(ws, incident.pk)
    for n in notifications:
        n.percent = int(100 * n.processed / n.total) if n.total else 100  # type: ignore[attr-defined]
    running = any(n.status in (NotificationStatus.QUEUED, NotificationStatus.RUNNING) for n in notifications)
    return render(request, "console/bots/incident.html", {
        "incident": incident, "values": values, "error": error, "notify_values": notify_values,
        "notify_error": notify_error, "notifications": notifications, "running": running,
        "active": incident.status == IncidentStatus.ACTIVE})


@require_POST
@console_view(read=Role.OPERATOR)
def incident_end(request: HttpRequest, incident_id: int) -> HttpResponse:
    ws = _ws(request)
    incident = services.end_incident(ws, incident_id, actor=actor(request))
    messages.success(request, _("Incident “%(title)s” ended.") % {"title": incident.title})
    return redirect("console:bots_incident", slug=ws.slug, incident_id=incident.pk)


urlpatterns: list[URLPattern] = [
    path("bots/rules/", rules, name="bots_rules"),
    path("bots/rules/new/", rule_new, name="bots_rule_new"),
    path("bots/rules/<int:rule_id>/", rule_edit, name="bots_rule_edit"),
    path("bots/rules/<int:rule_id>/delete/", rule_delete, name="bots_rule_delete"),
    path("bots/try/", tester, name="bots_tester"),
    path("bots/menus/", menus, name="bots_menus"),
    path("bots/menus/<int:menu_id>/", menu_detail, name="bots_menu"),
    path("bots/menus/<int:menu_id>/delete/", menu_delete, name="bots_menu_delete"),
    path("bots/menu-options/<int:node_id>/", node_edit, name="bots_node_edit"),
    path("bots/menu-options/<int:node_id>/delete/", node_delete, name="bots_node_delete"),
    path("bots/incidents/", incidents, name="bots_incidents"),
    path("bots/incidents/<int:incident_id>/", incident_detail, name="bots_incident"),
    path("bots/incidents/<int:incident_id>/end/", incident_end, name="bots_incident_end"),
]
