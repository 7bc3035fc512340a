"""Reads of the conversations domain (no writes), and the per-process cache of compiled rule sets.

Each process keeps the compiled :class:`~.matching.RuleBook` of the workspaces it has answered for,
keyed by workspace and tagged with the rule set's version. Every message costs one primary-key read
of ``RuleSetVersion``; a rule change anywhere (another process, another machine) bumps the version in
its own transaction, and the next message a process sees for that workspace compiles the rule set
again. The version is read *before* the rules, so a concurrent change can at worst make a process
compile once more — never keep an old rule set under a new version."""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from typing import Any

from shequn.core.models import Workspace
from shequn.core.tenancy import get_scoped, scoped

from .matching import CompiledRule, RuleBook, RuleSpec
from .models import AutoReplyRule, RuleSetVersion

CACHE_SIZE = 256
"""Compiled rule sets kept per process (least recently used first out)."""

_cache: OrderedDict[int, RuleBook] = OrderedDict()
_lock = threading.Lock()


def rules(workspace: Workspace) -> list[AutoReplyRule]:
    """Every rule of ``workspace`` in the order they are tried (priority, then id)."""
    return list(scoped(AutoReplyRule, workspace).order_by("priority", "id"))


def rule(workspace: Workspace, rule_id: int) -> AutoReplyRule:
    return get_scoped(AutoReplyRule, workspace, rule_id)


def version_key(workspace: Workspace) -> tuple[Any, ...] | None:
    """What identifies the current compiled form of the workspace's rules, or None when it never had any."""
    row = (RuleSetVersion.objects.filter(workspace_id=workspace.pk)
           .values_list("version", "generation").first())
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


def rulebook(workspace: Workspace) -> RuleBook | None:
    """The compiled rule set of ``workspace``, from this process's cache when it is current."""
    key = version_key(workspace)
    if key is None:
        return None
    with _lock:
        book = _cache.get(workspace.pk)
        if book is not None and book.version == key:
            _cache.move_to_end(workspace.pk)
            return book
    book = build_rulebook(workspace, key)
    with _lock:
        _cache[workspace.pk] = book
        _cache.move_to_end(workspace.pk)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return book


def match_rule(workspace: Workspace, text: str, *, channel: str, at: dt.datetime | None = None) -> CompiledRule | None:
    """The rule that would answer ``text`` on ``channel`` at ``at`` (now when None), or None."""
    book = rulebook(workspace)
    if book is None:
        return None
    return book.match(text, channel=channel, at=at)
