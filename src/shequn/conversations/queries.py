"""Reads of the conversations domain (no writes), and the per-process cache of compiled bots.

Each process keeps the compiled :class:`Bot` (keyword :class:`~.matching.RuleBook`, menus, active
incidents) of the workspaces it has answered for, keyed by workspace and tagged with the version of
the workspace's bot configuration (``RuleSetVersion``, bumped by every rule, menu and incident write). Every message reads the version of
``RuleSetVersion`` (with the workspace's other settings versions, ``core.cache``); a rule change anywhere (another process, another machine) bumps the version in
its own transaction, and the next message a process sees for that workspace compiles the rule set
again. The version is read *before* the rules, so a concurrent change can at worst make a process
compile once more — never keep an old rule set under a new version."""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from shequn.core import cache as settings_cache
from shequn.core.models import Workspace
from shequn.core.tenancy import get_scoped, scoped

from . import menus as menu_engine
from .matching import CompiledRule, RuleBook, RuleSpec, normalize
from .models import (
    AutoReplyRule,
    Incident,
    IncidentNotification,
    IncidentStatus,
    Menu,
    MenuNode,
    MenuSession,
)

CACHE_SIZE = 256
"""Compiled rule sets kept per process (least recently used first out)."""

_cache: OrderedDict[int, Bot] = OrderedDict()
_lock = threading.Lock()


def rules(workspace: Workspace) -> list[AutoReplyRule]:
    """Every rule of ``workspace`` in the order they are tried (priority, then id)."""
    return list(scoped(AutoReplyRule, workspace).order_by("priority", "id"))


def rule(workspace: Workspace, rule_id: int) -> AutoReplyRule:
    return get_scoped(AutoReplyRule, workspace, rule_id)


VERSION_SOURCE = "conversations.rules"
"""The name of ``RuleSetVersion`` among the version sources read together (``core.cache``, ADR 0015)."""


def version_key(workspace: Workspace) -> tuple[Any, ...] | None:
    """What identifies the current compiled form of the workspace's rules, or None when it never had
    any. Read with the workspace's other settings versions (``core.cache.versions``): one query, or
    none inside a ``core.cache.scope`` whose versions were read already."""
    row = settings_cache.version(VERSION_SOURCE, workspace.pk)
    if row is None:
        return None
    return (row[0], row[1], workspace.default_timezone)


def spec_of(row: AutoReplyRule) -> RuleSpec:
    return RuleSpec(id=row.pk, name=row.name, match_type=row.match_type, patterns=list(row.patterns),
                    priority=row.priority, reply_type=row.reply_type, reply=dict(row.reply),
                    channels=list(row.channels), windows=list(row.windows),
                    outside_windows=row.outside_windows, tag=row.tag)


def build_rulebook(workspace: Workspace, version: tuple[Any, ...] | None = None) -> RuleBook:
    """Compile the enabled rules of ``workspace`` (one query)."""
    rows = scoped(AutoReplyRule, workspace).filter(enabled=True).order_by("priority", "id")
    return RuleBook((spec_of(r) for r in rows.iterator(chunk_size=2000)), timezone=workspace.default_timezone,
                    version=version)


@dataclass(frozen=True)
class ActiveIncident:
    """What answering needs of an incident that is declared and not ended."""

    id: int
    title: str
    keywords: tuple[str, ...]
    reply: str
    starts_at: dt.datetime
    ends_at: dt.datetime | None

    def matches(self, s: str, at: dt.datetime) -> bool:
        if at < self.starts_at or (self.ends_at is not None and at >= self.ends_at):
            return False
        return not self.keywords or any(k in s for k in self.keywords)


@dataclass(eq=False)
class Bot:
    """The compiled bot configuration of one workspace at one version. Immutable once built."""

    version: Any
    rules: RuleBook
    menus: list[menu_engine.CompiledMenu] = field(default_factory=list)
    incidents: list[ActiveIncident] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.triggers = menu_engine.trigger_index(self.menus)
        self.menus_by_id = {m.id: m for m in self.menus}

    def incident_for(self, s: str, at: dt.datetime) -> ActiveIncident | None:
        """The incident that answers the normalised text ``s`` at ``at`` (the latest declared wins)."""
        for incident in self.incidents:
            if incident.matches(s, at):
                return incident
        return None


def build_bot(workspace: Workspace, version: tuple[Any, ...] | None = None) -> Bot:
    """Compile the workspace's enabled rules and menus and its active incidents (four queries)."""
    menu_rows = list(scoped(Menu, workspace).filter(enabled=True).order_by("name", "id"))
    node_rows = (list(scoped(MenuNode, workspace).filter(menu__in=[m.pk for m in menu_rows])
                      .values_list("id", "menu_id", "parent_id", "key", "label", "action", "text", "live"))
                 if menu_rows else [])
    compiled = menu_engine.compile_menus(
        [menu_engine.MenuSpec(m.pk, m.name, list(m.triggers), m.prompt, m.handoff_text, m.timeout_seconds)
         for m in menu_rows],
        [menu_engine.NodeSpec(*row) for row in node_rows])
    incidents = [ActiveIncident(i.pk, i.title, tuple(k for k in dict.fromkeys(normalize(x) for x in i.keywords) if k),
                                i.reply, i.starts_at, i.ends_at)
                 for i in scoped(Incident, workspace).filter(status=IncidentStatus.ACTIVE).order_by("-starts_at", "-id")]
    return Bot(version=version, rules=build_rulebook(workspace, version), menus=compiled, incidents=incidents)


def bot(workspace: Workspace) -> Bot | None:
    """The compiled bot of ``workspace``, from this process's cache when it is current (one query);
    None when the workspace never had a rule, menu or incident."""
    key = version_key(workspace)
    if key is None:
        return None
    with _lock:
        cached = _cache.get(workspace.pk)
        if cached is not None and cached.version == key:
            _cache.move_to_end(workspace.pk)
            return cached
    built = build_bot(workspace, key)
    with _lock:
        _cache[workspace.pk] = built
        _cache.move_to_end(workspace.pk)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return built


def rulebook(workspace: Workspace) -> RuleBook | None:
    """The compiled rule set of ``workspace``, from this process's cache when it is current."""
    current = bot(workspace)
    return current.rules if current is not None else None


def match_rule(workspace: Workspace, text: str, *, channel: str, at: dt.datetime | None = None) -> CompiledRule | None:
    """The rule that would answer ``text`` on ``channel`` at ``at`` (now when None), or None."""
    book = rulebook(workspace)
    if book is None:
        return None
    return book.match(text, channel=channel, at=at)


# ---------------------------------------------------------------------------------------------
# menus and incidents


def menus(workspace: Workspace) -> list[Menu]:
    return list(scoped(Menu, workspace).order_by("name", "id"))


def menu(workspace: Workspace, menu_id: int) -> Menu:
    return get_scoped(Menu, workspace, menu_id)


def menu_nodes(workspace: Workspace, menu_id: int) -> list[MenuNode]:
    """The nodes of a menu, in tree order (each parent before its children, options by key)."""
    rows = list(scoped(MenuNode, workspace).filter(menu_id=menu_id))
    children: dict[int | None, list[MenuNode]] = {}
    for row in rows:
        children.setdefault(row.parent_id, []).append(row)
    out: list[MenuNode] = []

    def walk(parent: int | None, depth: int) -> None:
        for row in sorted(children.get(parent, []), key=lambda r: menu_engine._key_order(r.key)):
            row.depth = depth  # type: ignore[attr-defined]
            out.append(row)
            walk(row.pk, depth + 1)

    walk(None, 0)
    return out


def menu_session(workspace: Workspace, subject: str) -> MenuSession | None:
    return scoped(MenuSession, workspace).filter(subject=subject).first()


def incidents(workspace: Workspace) -> list[Incident]:
    return list(scoped(Incident, workspace).order_by("-starts_at", "-id"))


def incident(workspace: Workspace, incident_id: int) -> Incident:
    return get_scoped(Incident, workspace, incident_id)


def notifications(workspace: Workspace, incident_id: int) -> list[IncidentNotification]:
    return list(scoped(IncidentNotification, workspace).filter(incident_id=incident_id).order_by("-created_at", "-id"))


def notification(workspace: Workspace, notification_id: int) -> IncidentNotification:
    return get_scoped(IncidentNotification, workspace, notification_id)
