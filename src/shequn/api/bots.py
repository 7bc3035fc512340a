"""The bot: keyword auto-reply rules, IVR menus, incidents (outage notices) and a message simulator."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from shequn.conversations import queries, services
from shequn.conversations.models import AutoReplyRule, Incident, IncidentNotification, Menu, MenuNode
from shequn.core.tenancy import scoped

from .auth import MANAGERS, allow, context
from .schemas import DEFAULT_PAGE, MAX_PAGE, Input, keyset_page, with_errors

router = Router(tags=["bots"])


# ---------------------------------------------------------------------------------------------
# rules


class Window(Schema):
    days: list[int] = Field(description="ISO weekdays, 1 = Monday … 7 = Sunday")
    start: str = Field(description="HH:MM, workspace time zone")
    end: str = Field(description="HH:MM (24:00 allowed); earlier than start runs past midnight")


class RulePatch(Input):
    name: str | None = None
    match_type: str | None = Field(None, description="exact, contains, starts_with or regex")
    patterns: list[str] | None = None
    reply: str | dict[str, Any] | None = Field(None, description="A text, or {\"type\": \"text\", \"content\": …}")
    priority: int | None = Field(None, description="Lower answers first")
    channels: list[str] | None = Field(None, description="Empty: every channel")
    windows: list[Window] | None = None
    outside_windows: bool | None = None
    enabled: bool | None = None
    tag: str | None = None


class RuleIn(RulePatch):
    name: str  # type: ignore[assignment]
    match_type: str  # type: ignore[assignment]
    patterns: list[str]  # type: ignore[assignment]
    reply: str | dict[str, Any]  # type: ignore[assignment]


class RuleOut(Schema):
    id: int
    name: str
    match_type: str
    patterns: list[str]
    reply_type: str
    reply: dict[str, Any]
    priority: int
    channels: list[str]
    windows: list[dict[str, Any]]
    outside_windows: bool
    enabled: bool
    tag: str


class RuleList(Schema):
    items: list[RuleOut]
    next: int | None = Field(description="Cursor for the next page (pass as ?after=), null on the last page")


def _data(body: Input) -> dict[str, Any]:
    return {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}


@router.get("/bots/rules", response=with_errors({200: RuleList}), operation_id="bot_rules_list",
            summary="List keyword auto-reply rules")
@allow(*MANAGERS)
def list_rules(request: HttpRequest,
               after: int | None = Query(None, description="Cursor: the `next` of the previous page"),  # noqa: B008
               limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE)) -> dict[str, Any]:  # noqa: B008
    """Newest first."""
    ctx = context(request)
    rows, next_cursor = keyset_page(scoped(AutoReplyRule, ctx.workspace), after=after, limit=limit)
    return {"items": rows, "next": next_cursor}


@router.post("/bots/rules", response=with_errors({201: RuleOut}), operation_id="bot_rules_create",
             summary="Create a keyword auto-reply rule")
@allow(*MANAGERS)
def create_rule(request: HttpRequest, body: RuleIn) -> Status[AutoReplyRule]:
    ctx = context(request)
    return Status(201, services.create_rule(ctx.workspace, _data(body), actor=ctx.actor))


@router.get("/bots/rules/{int:rule_id}", response=with_errors({200: RuleOut}), operation_id="bot_rules_get",
            summary="One rule")
@allow(*MANAGERS)
def get_rule(request: HttpRequest, rule_id: int) -> AutoReplyRule:
    return queries.rule(context(request).workspace, rule_id)


@router.patch("/bots/rules/{int:rule_id}", response=with_errors({200: RuleOut}), operation_id="bot_rules_update",
              summary="Change a rule (only the given fields)")
@allow(*MANAGERS)
def update_rule(request: HttpRequest, rule_id: int, body: RulePatch) -> AutoReplyRule:
    ctx = context(request)
    return services.update_rule(ctx.workspace, rule_id, _data(body), actor=ctx.actor)


@router.delete("/bots/rules/{int:rule_id}", response=with_errors({204: None}), operation_id="bot_rules_delete",
               summary="Delete a rule")
@allow(*MANAGERS)
def delete_rule(request: HttpRequest, rule_id: int) -> Status[None]:
    ctx = context(request)
    services.delete_rule(ctx.workspace, rule_id, actor=ctx.actor)
    return Status(204, None)


# ---------------------------------------------------------------------------------------------
# menus


class MenuPatch(Input):
    name: str | None = None
    triggers: list[str] | None = Field(None, description="Texts that open the menu, e.g. [\"菜单\"]")
    prompt: str | None = Field(None, description="Text above the top-level options")
    handoff_text: str | None = Field(None, description="Reply when the member is handed over to a person")
    timeout_seconds: int | None = Field(None, description="Session timeout, 30–86400 seconds (default 300)")
    enabled: bool | None = None


class MenuIn(MenuPatch):
    name: str  # type: ignore[assignment]


class NodeOut(Schema):
    id: int
    parent: int | None = Field(description="Parent option (a submenu); null: top level")
    key: str
    label: str
    action: str = Field(description="submenu, text, live or handoff")
    text: str
    live: str = Field(description="points, coupons, latest_purchase or booking (live options)")

    @staticmethod
    def resolve_parent(obj: MenuNode) -> int | None:
        return obj.parent_id


class MenuOut(Schema):
    id: int
    name: str
    triggers: list[str]
    prompt: str
    handoff_text: str
    timeout_seconds: int
    enabled: bool


class MenuDetail(MenuOut):
    nodes: list[NodeOut] = Field(description="Every option, parents before children")


class MenuList(Schema):
    items: list[MenuOut]


class NodePatch(Input):
    parent: int | None = Field(None, description="Parent submenu option id; 0 or null: top level")
    key: str | None = Field(None, description="1–2 digits the member sends")
    label: str | None = None
    action: str | None = Field(None, description="submenu, text, live or handoff")
    text: str | None = None
    live: str | None = None


class NodeIn(NodePatch):
    key: str  # type: ignore[assignment]
    label: str  # type: ignore[assignment]
    action: str  # type: ignore[assignment]


def _menu_detail(workspace: Any, menu: Menu) -> dict[str, Any]:
    return {**{f: getattr(menu, f) for f in ("id", "name", "triggers", "prompt", "handoff_text", "timeout_seconds",
                                              "enabled")},
            "nodes": queries.menu_nodes(workspace, menu.pk)}


def _node_data(body: NodePatch) -> dict[str, Any]:
    data = body.model_dump(exclude_unset=True)
    return {k: v for k, v in data.items() if v is not None or k == "parent"}


@router.get("/bots/menus", response=with_errors({200: MenuList}), operation_id="bot_menus_list", summary="List menus")
@allow(*MANAGERS)
def list_menus(request: HttpRequest) -> dict[str, Any]:
    return {"items": queries.menus(context(request).workspace)}


@router.post("/bots/menus", response=with_errors({201: MenuDetail}), operation_id="bot_menus_create",
             summary="Create a menu")
@allow(*MANAGERS)
def create_menu(request: HttpRequest, body: MenuIn) -> Status[dict[str, Any]]:
    ctx = context(request)
    menu = services.create_menu(ctx.workspace, _data(body), actor=ctx.actor)
    return Status(201, _menu_detail(ctx.workspace, menu))


@router.get("/bots/menus/{int:menu_id}", response=with_errors({200: MenuDetail}), operation_id="bot_menus_get",
            summary="A menu with its options")
@allow(*MANAGERS)
def get_menu(request: HttpRequest, menu_id: int) -> dict[str, Any]:
    ctx = context(request)
    return _menu_detail(ctx.workspace, queries.menu(ctx.workspace, menu_id))


@router.patch("/bots/menus/{int:menu_id}", response=with_errors({200: MenuDetail}), operation_id="bot_menus_update",
              summary="Change a menu")
@allow(*MANAGERS)
def update_menu(request: HttpRequest, menu_id: int, body: MenuPatch) -> dict[str, Any]:
    ctx = context(request)
    return _menu_detail(ctx.workspace, services.update_menu(ctx.workspace, menu_id, _data(body), actor=ctx.actor))


@router.delete("/bots/menus/{int:menu_id}", response=with_errors({204: None}), operation_id="bot_menus_delete",
               summary="Delete a menu and its options")
@allow(*MANAGERS)
def delete_menu(request: HttpRequest, menu_id: int) -> Status[None]:
    ctx = context(request)
    services.delete_menu(ctx.workspace, menu_id, actor=ctx.actor)
    return Status(204, None)


@router.post("/bots/menus/{int:menu_id}/nodes", response=with_errors({201: NodeOut}), operation_id="bot_nodes_create",
             summary="Add an option to a menu")
@allow(*MANAGERS)
def create_node(request: HttpRequest, menu_id: int, body: NodeIn) -> Status[MenuNode]:
    ctx = context(request)
    return Status(201, services.create_node(ctx.workspace, menu_id, _node_data(body), actor=ctx.actor))


@router.patch("/bots/menu-nodes/{int:node_id}", response=with_errors({200: NodeOut}), operation_id="bot_nodes_update",
              summary="Change a menu option")
@allow(*MANAGERS)
def update_node(request: HttpRequest, node_id: int, body: NodePatch) -> MenuNode:
    ctx = context(request)
    return services.update_node(ctx.workspace, node_id, _node_data(body), actor=ctx.actor)


@router.delete("/bots/menu-nodes/{int:node_id}", response=with_errors({204: None}), operation_id="bot_nodes_delete",
               summary="Delete a menu option and the options under it")
@allow(*MANAGERS)
def delete_node(request: HttpRequest, node_id: int) -> Status[None]:
    ctx = context(request)
    services.delete_node(ctx.workspace, node_id, actor=ctx.actor)
    return Status(204, None)


# ---------------------------------------------------------------------------------------------
# incidents


class IncidentPatch(Input):
    title: str | None = None
    keywords: list[str] | None = Field(None, description="Contains-keywords; empty: every message")
    reply: str | None = None
    starts_at: dt.datetime | None = Field(None, description="Default: now")
    ends_at: dt.datetime | None = Field(None, description="Planned end; null: until ended")


class IncidentIn(IncidentPatch):
    title: str  # type: ignore[assignment]
    reply: str  # type: ignore[assignment]


class IncidentOut(Schema):
    id: int
    title: str
    keywords: list[str]
    reply: str
    status: str = Field(description="active or ended")
    starts_at: dt.datetime
    ends_at: dt.datetime | None
    ended_at: dt.datetime | None


class IncidentList(Schema):
    items: list[IncidentOut]
    next: int | None


class NotifyIn(Input):
    filter: dict[str, Any] | None = Field(None, description="A segment: member filters (tag, stage, keyword, source, "
                                                            "attribute \"key=value\", strength, q)")
    member_ids: list[int] | None = None
    phones: list[str] | None = None
    text: str | None = Field(None, description="Default: the incident's reply")


class NotificationOut(Schema):
    id: int
    incident: int
    status: str = Field(description="queued, running, done or failed")
    total: int
    processed: int
    target: dict[str, Any]
    text: str
    error: str
    created_at: dt.datetime
    finished_at: dt.datetime | None

    @staticmethod
    def resolve_incident(obj: IncidentNotification) -> int:
        return obj.incident_id


class NotificationList(Schema):
    items: list[NotificationOut]


@router.get("/bots/incidents", response=with_errors({200: IncidentList}), operation_id="incidents_list",
            summary="List incidents")
@allow(*MANAGERS)
def list_incidents(request: HttpRequest,
                   after: int | None = Query(None, description="Cursor: the `next` of the previous page"),  # noqa: B008
                   limit: int = Query(DEFAULT_PAGE, ge=1, le=MAX_PAGE)) -> dict[str, Any]:  # noqa: B008
    ctx = context(request)
    rows, next_cursor = keyset_page(scoped(Incident, ctx.workspace), after=after, limit=limit)
    return {"items": rows, "next": next_cursor}


@router.post("/bots/incidents", response=with_errors({201: IncidentOut}), operation_id="incidents_declare",
             summary="Declare an incident")
@allow(*MANAGERS)
def declare_incident(request: HttpRequest, body: IncidentIn) -> Status[Incident]:
    ctx = context(request)
    return Status(201, services.declare_incident(ctx.workspace, _data(body), actor=ctx.actor))


@router.get("/bots/incidents/{int:incident_id}", response=with_errors({200: IncidentOut}), operation_id="incidents_get",
            summary="One incident")
@allow(*MANAGERS)
def get_incident(request: HttpRequest, incident_id: int) -> Incident:
    return queries.incident(context(request).workspace, incident_id)


@router.patch("/bots/incidents/{int:incident_id}", response=with_errors({200: IncidentOut}),
              operation_id="incidents_update", summary="Change an incident")
@allow(*MANAGERS)
def update_incident(request: HttpRequest, incident_id: int, body: IncidentPatch) -> Incident:
    ctx = context(request)
    data = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k == "ends_at"}
    return services.update_incident(ctx.workspace, incident_id, data, actor=ctx.actor)


@router.post("/bots/incidents/{int:incident_id}/end", response=with_errors({200: IncidentOut}),
             operation_id="incidents_end", summary="End an incident (its reply stops at once)")
@allow(*MANAGERS)
def end_incident(request: HttpRequest, incident_id: int) -> Incident:
    ctx = context(request)
    return services.end_incident(ctx.workspace, incident_id, actor=ctx.actor)


@router.delete("/bots/incidents/{int:incident_id}", response=with_errors({204: None}), operation_id="incidents_delete",
               summary="Delete an incident")
@allow(*MANAGERS)
def delete_incident(request: HttpRequest, incident_id: int) -> Status[None]:
    ctx = context(request)
    services.delete_incident(ctx.workspace, incident_id, actor=ctx.actor)
    return Status(204, None)


@router.post("/bots/incidents/{int:incident_id}/notify", response=with_errors({202: NotificationOut}),
             operation_id="incidents_notify", summary="Notify affected members (a segment or a list)")
@allow(*MANAGERS)
def notify_incident(request: HttpRequest, incident_id: int, body: NotifyIn) -> Status[IncidentNotification]:
    """Sent in the background; poll the notification for ``processed`` / ``total``. Each member gets
    the message once per incident."""
    ctx = context(request)
    data = body.model_dump(exclude_unset=True)
    text = data.pop("text", None)
    target = {k: v for k, v in data.items() if v is not None}
    row = services.notify_incident(ctx.workspace, incident_id, target, actor=ctx.actor, text=text)
    return Status(202, row)


@router.get("/bots/incidents/{int:incident_id}/notifications", response=with_errors({200: NotificationList}),
            operation_id="incidents_notifications", summary="An incident's notifications and their progress")
@allow(*MANAGERS)
def list_notifications(request: HttpRequest, incident_id: int) -> dict[str, Any]:
    ctx = context(request)
    incident = queries.incident(ctx.workspace, incident_id)
    return {"items": queries.notifications(ctx.workspace, incident.pk)}


# ---------------------------------------------------------------------------------------------
# simulator


class SimulateIn(Input):
    text: str = Field(description="The message a member sends")
    channel: str = "wechat"
    member_id: int | None = Field(None, description="Answer as this member (live data); default: an unknown member")
    at: dt.datetime | None = Field(None, description="When it is sent (time windows, incidents); default now")


class SimulateOut(Schema):
    content: str = Field(description="The reply text; empty: the channel's default reply")
    outcome: str = Field(description="answered or handoff")
    source: str = Field(description="hook, incident, menu, rule, handoff or none")
    rule_id: int | None
    incident_id: int | None
    menu_id: int | None
    node_id: int | None


@router.post("/bots/simulate", response=with_errors({200: SimulateOut}), operation_id="bots_simulate",
             summary="The bot's reply to a message, without a member sending it")
@allow(*MANAGERS)
def simulate(request: HttpRequest, body: SimulateIn) -> dict[str, Any]:
    """Menu steps are remembered per API key (send 菜单, then 1 …), apart from every member's session."""
    ctx = context(request)
    answer = services.simulate(ctx.workspace, body.text, channel=body.channel, member_id=body.member_id, at=body.at,
                               actor=ctx.actor)
    return answer


routers: list[Router] = [router]
