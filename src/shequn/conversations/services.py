"""Every write of the conversations domain: keyword auto-reply rules (create, import, update, delete)
and the tags a rule applies; and :func:`auto_reply`, the bot's answer to an inbound message.

Each rule change bumps the workspace's ``RuleSetVersion`` in the same transaction, so every process
recompiles the rule set on the next message after the change commits (see ``queries.rulebook``)."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import re2
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils.translation import gettext as _

from shequn.core import audit
from shequn.core import cache as settings_cache
from shequn.core.clock import now
from shequn.core.errors import Conflict, ShequnError, ValidationError
from shequn.core.models import Workspace
from shequn.core.tasks import enqueue_on_commit
from shequn.core.tenancy import get_scoped, scoped

from . import live, matching, queries
from . import menus as menu_engine
from .models import (
    AutoReplyRule,
    Incident,
    IncidentNotification,
    IncidentStatus,
    LiveData,
    MatchType,
    Menu,
    MenuNode,
    MenuSession,
    NodeAction,
    NotificationStatus,
    ReplyType,
    RuleSetVersion,
)

MAX_NAME = 100
MAX_PATTERNS = 100
MAX_KEYWORD_CHARS = 100
MAX_REGEX_CHARS = 300
MAX_REPLY_BYTES = 2048
MAX_PRIORITY = 1_000_000
MAX_WINDOWS = 20
MAX_CHANNELS = 20
MAX_IMPORT = 50_000
DEFAULT_PRIORITY = 100

RULE_FIELDS = ("name", "match_type", "patterns", "reply", "priority", "channels", "windows", "outside_windows",
               "enabled", "tag")
_CHANNEL_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _field_error(field: str, message: str, code: str = "invalid_field", **details: Any) -> ValidationError:
    return ValidationError(message, code=code, details={"field": field, **details})


# ---------------------------------------------------------------------------------------------
# validation


def clean_patterns(match_type: str, raw: Any) -> list[str]:
    """The patterns of a rule, stripped and de-duplicated (keywords by their normalised form).

    Accepts a list of strings, or one string with a pattern per line."""
    if isinstance(raw, str):
        raw = raw.splitlines()
    if not isinstance(raw, list | tuple) or not all(isinstance(p, str) for p in raw):
        raise _field_error("patterns", _("patterns must be a list of texts"))
    out: list[str] = []
    seen: set[str] = set()
    for text in raw:
        pattern = text.strip()
        if not pattern:
            continue
        if match_type == MatchType.REGEX:
            if len(pattern) > MAX_REGEX_CHARS:
                raise _field_error("patterns", _("a regular expression may have at most %(n)s characters")
                                   % {"n": MAX_REGEX_CHARS}, pattern=pattern[:50])
            try:
                matching.compile_regex(pattern)
            except re2.error:
                raise _field_error("patterns", _("%(pattern)s is not a regular expression the bot can run: it uses "
                                                 "syntax RE2 does not have (backreferences, look-ahead or "
                                                 "look-behind) or is too large") % {"pattern": pattern[:50]},
                                   code="invalid_regex", pattern=pattern[:50]) from None
            key = pattern
        else:
            key = matching.normalize(pattern)
            if not key:
                continue
            if len(key) > MAX_KEYWORD_CHARS:
                raise _field_error("patterns", _("a keyword may have at most %(n)s characters") % {"n": MAX_KEYWORD_CHARS},
                                   pattern=pattern[:50])
        if key not in seen:
            seen.add(key)
            out.append(pattern)
    if not out:
        raise _field_error("patterns", _("a rule needs at least one keyword"))
    if len(out) > MAX_PATTERNS:
        raise _field_error("patterns", _("a rule may have at most %(n)s keywords") % {"n": MAX_PATTERNS})
    return out


def clean_reply(raw: Any) -> tuple[str, dict[str, Any]]:
    """``(reply_type, payload)`` of a reply given as ``{"type": "text", "content": "…"}`` or as a text."""
    if isinstance(raw, str):
        raw = {"type": ReplyType.TEXT, "content": raw}
    if not isinstance(raw, Mapping):
        raise _field_error("reply", _("the reply must be a text or an object with a type"))
    kind = str(raw.get("type") or ReplyType.TEXT)
    if kind not in ReplyType.values:
        raise _field_error("reply", _("reply type must be one of: %(types)s") % {"types": ", ".join(ReplyType.values)})
    content = raw.get("content")
    if not isinstance(content, str) or not content.strip():
        raise _field_error("reply", _("the reply text is empty"))
    text = content.strip()
    if _CONTROL_RE.search(text):
        raise _field_error("reply", _("the reply text contains control characters"))
    if len(text.encode("utf-8")) > MAX_REPLY_BYTES:
        raise _field_error("reply", _("the reply text is longer than %(n)s bytes, WeChat's limit") % {"n": MAX_REPLY_BYTES})
    return kind, {"content": text}


def _clean_int(field: str, raw: Any, low: int, high: int) -> int:
    if isinstance(raw, bool):
        raise _field_error(field, _("%(field)s must be a whole number from %(low)s to %(high)s")
                           % {"field": field, "low": low, "high": high})
    try:
        value = int(str(raw).strip()) if isinstance(raw, str) else int(raw)
    except (TypeError, ValueError):
        value = low - 1
    if isinstance(raw, float) and raw != value:
        value = low - 1
    if not low <= value <= high:
        raise _field_error(field, _("%(field)s must be a whole number from %(low)s to %(high)s")
                           % {"field": field, "low": low, "high": high})
    return value


def _clean_bool(field: str, raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise _field_error(field, _("%(field)s must be true or false") % {"field": field})
    return raw


def clean_channels(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [p for p in re.split(r"[,\s]+", raw) if p]
    if not isinstance(raw, list | tuple) or not all(isinstance(c, str) for c in raw):
        raise _field_error("channels", _("channels must be a list of channel names"))
    names = sorted({c.strip().lower() for c in raw if c.strip()})
    for name in names:
        if not _CHANNEL_RE.match(name):
            raise _field_error("channels", _("%(name)s is not a channel name (letters, digits, _ . -)") % {"name": name[:64]})
    if len(names) > MAX_CHANNELS:
        raise _field_error("channels", _("a rule may name at most %(n)s channels") % {"n": MAX_CHANNELS})
    return names


def _clock_text(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def clean_windows(raw: Any) -> list[dict[str, Any]]:
    """Time windows as ``[{"days": [1…7], "start": "HH:MM", "end": "HH:MM"}]`` (ISO weekdays, Monday = 1)."""
    if raw is None:
        return []
    if not isinstance(raw, list | tuple):
        raise _field_error("windows", _("windows must be a list"))
    if len(raw) > MAX_WINDOWS:
        raise _field_error("windows", _("a rule may have at most %(n)s time windows") % {"n": MAX_WINDOWS})
    out: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise _field_error("windows", _("each time window needs days, start and end"), index=index)
        days = item.get("days")
        if (not isinstance(days, list | tuple) or not days
                or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 7 for d in days)):
            raise _field_error("windows", _("days are weekdays from 1 (Monday) to 7 (Sunday)"), index=index)
        try:
            start = matching.parse_clock(item.get("start", ""))
            end = matching.parse_clock(item.get("end", ""))
        except ValueError:
            raise _field_error("windows", _("start and end are times of day like 09:00 (end may be 24:00)"),
                               index=index) from None
        if start == end or start == matching.MINUTES_PER_DAY:
            raise _field_error("windows", _("a time window must not start when it ends; use 00:00–24:00 for "
                                            "the whole day"), index=index)
        out.append({"days": sorted(set(days)), "start": _clock_text(start), "end": _clock_text(end)})
    return out


def clean_tag(raw: Any) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise _field_error("tag", _("the tag must be a text"))
    from shequn.members import services as members

    text = raw.strip()
    if not text:
        return ""
    try:
        return members.clean_name(text, "tag")
    except ShequnError:
        raise _field_error("tag", _("a tag has 1–64 characters and no '/'")) from None


def clean_name(raw: Any) -> str:
    text = raw.strip() if isinstance(raw, str) else ""
    if not text or len(text) > MAX_NAME or _CONTROL_RE.search(text):
        raise _field_error("name", _("the rule needs a name of 1–%(n)s characters") % {"n": MAX_NAME})
    return text


def clean_rule(data: Mapping[str, Any], current: AutoReplyRule | None = None) -> dict[str, Any]:
    """The model values of a rule from ``data`` (every field for a new rule; the given fields over
    ``current`` for a change). Raises ValidationError naming the field."""
    if not isinstance(data, Mapping):
        raise ValidationError(_("a rule is an object of fields"), code="invalid_rule")
    unknown = sorted(set(data) - set(RULE_FIELDS))
    if unknown:
        raise ValidationError(_("unknown fields: %(fields)s") % {"fields": ", ".join(map(str, unknown))},
                              code="unknown_field", details={"fields": unknown})

    def given(name: str, default: Any) -> Any:
        if name in data:
            return data[name]
        if current is not None:
            return getattr(current, name)
        return default

    if current is None:
        for required in ("name", "match_type", "patterns", "reply"):
            if required not in data:
                raise _field_error(required, _("%(field)s is required") % {"field": required})
    match_type = given("match_type", None)
    if match_type not in MatchType.values:
        raise _field_error("match_type", _("match type must be one of: %(types)s")
                           % {"types": ", ".join(MatchType.values)})
    if "reply" in data:
        reply_type, reply = clean_reply(data["reply"])
    else:
        assert current is not None
        reply_type, reply = current.reply_type, current.reply
    windows = clean_windows(given("windows", []))
    outside = _clean_bool("outside_windows", given("outside_windows", False))
    if outside and not windows:
        raise _field_error("outside_windows", _("'outside the time windows' needs at least one time window"))
    return {
        "name": clean_name(given("name", "")),
        "match_type": match_type,
        "patterns": clean_patterns(match_type, given("patterns", [])),
        "reply_type": reply_type,
        "reply": reply,
        "priority": _clean_int("priority", given("priority", DEFAULT_PRIORITY), 0, MAX_PRIORITY),
        "channels": clean_channels(given("channels", [])),
        "windows": windows,
        "outside_windows": outside,
        "enabled": _clean_bool("enabled", given("enabled", True)),
        "tag": clean_tag(given("tag", "")),
    }


# ---------------------------------------------------------------------------------------------
# rule writes


def _bump_version(workspace: Workspace) -> None:
    """Bump the rule set's version (creating its row on first use). Called first in every rule
    write: the row lock it takes serialises the rule changes of a workspace."""
    settings_cache.forget(workspace.pk)  # a later read in this unit of work sees the new version
    if RuleSetVersion.objects.filter(workspace=workspace).update(version=F("version") + 1):
        return
    try:
        with transaction.atomic():
            RuleSetVersion.objects.create(workspace=workspace, version=1, generation=secrets.randbits(62))
    except IntegrityError:  # created by a concurrent first change: bump it
        RuleSetVersion.objects.filter(workspace=workspace).update(version=F("version") + 1)


def _name_taken(name: str) -> Conflict:
    return Conflict(_("there is already a rule named %(name)s") % {"name": name}, code="rule_name_taken",
                    details={"field": "name"})


def _audit_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: values[k] for k in ("name", "match_type", "patterns", "priority", "channels", "enabled", "tag")
            if k in values}


@transaction.atomic
def create_rule(workspace: Workspace, data: Mapping[str, Any], *, actor: str) -> AutoReplyRule:
    """Create one auto-reply rule from ``data`` (fields: ``RULE_FIELDS``)."""
    values = clean_rule(data)
    _bump_version(workspace)
    rule = AutoReplyRule(workspace=workspace, **values)
    try:
        with transaction.atomic():
            rule.save()
    except IntegrityError:
        raise _name_taken(values["name"]) from None
    audit.record(workspace, actor, "autoreply.create", rule, _audit_values(values))
    return rule


@transaction.atomic
def import_rules(workspace: Workspace, items: Sequence[Mapping[str, Any]], *, actor: str) -> list[AutoReplyRule]:
    """Create many rules at once (a keyword list from a spreadsheet): all or none. An invalid item
    raises its error with ``details["index"]``."""
    if len(items) > MAX_IMPORT:
        raise ValidationError(_("at most %(n)s rules per import") % {"n": MAX_IMPORT}, code="too_many_rules")
    cleaned: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, item in enumerate(items):
        try:
            values = clean_rule(item)
        except ShequnError as exc:
            details = exc.details if isinstance(exc.details, dict) else {}
            raise type(exc)(exc.message, code=exc.code, details={**details, "index": index}) from None
        if values["name"] in names:
            exc = _name_taken(values["name"])
            raise Conflict(exc.message, code=exc.code, details={"field": "name", "index": index})
        names.add(values["name"])
        cleaned.append(values)
    if not cleaned:
        return []
    _bump_version(workspace)
    taken = set(scoped(AutoReplyRule, workspace).filter(name__in=names).values_list("name", flat=True))
    if taken:
        first = min(taken)
        exc = _name_taken(first)
        raise Conflict(exc.message, code=exc.code,
                       details={"field": "name", "index": next(i for i, v in enumerate(cleaned) if v["name"] == first)})
    try:
        with transaction.atomic():
            rows = AutoReplyRule.objects.bulk_create([AutoReplyRule(workspace=workspace, **v) for v in cleaned],
                                                     batch_size=1000)
    except IntegrityError:
        raise Conflict(_("a rule with one of these names was created at the same time"),
                       code="rule_name_taken") from None
    if rows and rows[0].pk is None:  # backends that do not return ids from bulk inserts
        rows = list(scoped(AutoReplyRule, workspace).filter(name__in=names))
    for row in rows:
        audit.record(workspace, actor, "autoreply.create", row, _audit_values(row.__dict__))
    return rows


@transaction.atomic
def update_rule(workspace: Workspace, rule_id: int, data: Mapping[str, Any], *, actor: str) -> AutoReplyRule:
    """Change the given fields of a rule; the others keep their values."""
    _bump_version(workspace)
    rule = get_scoped(AutoReplyRule, workspace, rule_id, for_update=True)
    values = clean_rule(data, rule)
    changed = [k for k, v in values.items() if getattr(rule, k) != v]
    if not changed:
        return rule
    for key in changed:
        setattr(rule, key, values[key])
    try:
        with transaction.atomic():
            rule.save(update_fields=[*changed, "updated_at"])
    except IntegrityError:
        raise _name_taken(values["name"]) from None
    audit.record(workspace, actor, "autoreply.update", rule,
                 {"fields": changed, **_audit_values({k: values[k] for k in changed})})
    return rule


@transaction.atomic
def delete_rule(workspace: Workspace, rule_id: int, *, actor: str) -> None:
    _bump_version(workspace)
    rule = get_scoped(AutoReplyRule, workspace, rule_id, for_update=True)
    audit.record(workspace, actor, "autoreply.delete", rule, _audit_values(rule.__dict__))
    rule.delete()


# ---------------------------------------------------------------------------------------------
# answering


@dataclass(frozen=True)
class AutoReply:
    """The answer of a rule to a message."""

    rule_id: int
    rule_name: str
    reply_type: str
    reply: Mapping[str, Any]
    tag: str = ""

    @property
    def content(self) -> str:
        return str(self.reply.get("content", ""))


def auto_reply(workspace: Workspace, text: str, *, channel: str, identity: Mapping[str, str] | None = None,
               at: dt.datetime | None = None) -> AutoReply | None:
    """The keyword rules' answer to ``text`` received on ``channel`` (at ``at``, now when None), or
    None when no rule answers (menus, incidents and hooks are not consulted: see :func:`answer`).

    It reads (one row when the compiled rule set is current) and writes nothing now. When the rule
    tags the member and ``identity`` (``{"kind", "namespace", "value"}``) says who sent the message,
    tagging is enqueued for after the current transaction commits."""
    rule = queries.match_rule(workspace, text, channel=channel, at=at)
    if rule is None:
        return None
    _tag_after_commit(workspace, rule, identity)
    return AutoReply(rule_id=rule.id, rule_name=rule.name, reply_type=rule.reply_type, reply=rule.reply, tag=rule.tag)


def _tag_after_commit(workspace: Workspace, rule: matching.CompiledRule, identity: Mapping[str, str] | None) -> None:
    if rule.tag and identity:
        from . import tasks

        enqueue_on_commit(tasks.tag_member, workspace.pk, dict(identity), rule.tag, rule.id)


# ---------------------------------------------------------------------------------------------
# the bot's answer: hooks, incidents, menus, keyword rules, handoff


ANSWERED = "answered"
HANDOFF = "handoff"

HANDOFF_KEYWORDS = ("人工", "客服", "真人", "转接")
"""A message containing one of these (normalised) asks for a person: ``bot_outcome`` is "handoff"
even when a rule answers it (the rule's text is still sent, e.g. opening hours)."""
HANDOFF_WORDS = frozenset({"human", "agent", "operator", "staff"})
"""English requests for a person, as whole words."""


@dataclass(frozen=True)
class Answer:
    """The bot's answer to an inbound message.

    ``content``: the text to send (empty: the channel's default reply, if any). ``outcome``:
    ``"answered"`` or ``"handoff"`` (a person must take over), recorded as ``properties.bot_outcome``
    on the message's interaction. ``source``: what answered — ``hook``, ``incident``, ``menu``, ``rule``,
    ``handoff`` (asked for a person, nothing else answered) or ``none`` (nothing could answer).
    ``rule_id`` / ``incident_id`` / ``menu_id`` / ``node_id`` say which object answered, if one did."""

    content: str
    outcome: str = ANSWERED
    source: str = "hook"
    reply_type: str = ReplyType.TEXT
    rule_id: int | None = None
    incident_id: int | None = None
    menu_id: int | None = None
    node_id: int | None = None


MemberId = Callable[[], int | None]
ReplyHook = Callable[[Workspace, MemberId, str, dt.datetime], Answer | None]

REPLY_HOOKS: list[ReplyHook] = []
"""Functions consulted first, with (workspace, a function giving the member id or None, normalised text,
time sent) — the member is looked up only if a hook calls that function; the
first that returns an :class:`Answer` answers. They run on the fast reply path inside the recording
transaction: read-only and quick (e.g. the inbox's CSAT answers). Register from ``AppConfig.ready()``."""


def asks_for_human(s: str) -> bool:
    """Whether the normalised text ``s`` asks for a person (:data:`HANDOFF_KEYWORDS`, :data:`HANDOFF_WORDS`)."""
    if any(k in s for k in HANDOFF_KEYWORDS):
        return True
    if s.isascii():
        return any(w.strip(".,!?") in HANDOFF_WORDS for w in s.split())
    return False


def subject_of(identity: Mapping[str, str] | None) -> str | None:
    """The menu-session key of a channel identity (``kind:namespace:value``)."""
    if not identity or not identity.get("value"):
        return None
    return f"{identity.get('kind', '')}:{identity.get('namespace', '') or ''}:{identity['value']}"[:200]


class _Member:
    """The sender's member id, looked up once and only when needed (one indexed query)."""

    def __init__(self, workspace: Workspace, identity: Mapping[str, str] | None, member_id: int | None) -> None:
        self.workspace, self.identity = workspace, identity
        self._id, self._known = member_id, member_id is not None or not identity

    @property
    def id(self) -> int | None:
        if not self._known:
            from shequn.members import services as members

            try:
                found = members.find_member_id(self.workspace, self.identity or {})
            except ShequnError:
                found = None
            self._id, self._known = found, True
        return self._id


def answer(workspace: Workspace, text: str, *, channel: str, identity: Mapping[str, str] | None = None,
           member_id: int | None = None, at: dt.datetime | None = None, subject: str | None = None) -> Answer | None:
    """The bot's answer to ``text`` that the member known by ``identity`` (or ``member_id``) sent on
    ``channel`` at ``at`` (now when None); None for an empty text.

    In order (docs/bots.md): :data:`REPLY_HOOKS`; an active incident whose keywords the text
    contains; the menus (a trigger opens one; digits, ``*`` and ``#`` move in the open one); the
    keyword rules; a request for a person. What none of them answers is an :class:`Answer` with an
    empty content and outcome ``handoff`` (source ``none``). ``subject`` keys the menu session
    (default: the identity; the console's simulator passes its own).

    Runs inside the transaction that records the message: reads, plus the member's menu session
    (written here, so a retried message replays the reply stored with the first delivery and sees the
    state it left, ADR 0014). A rule's tag is applied after commit."""
    at = at or now()
    s = matching.normalize(text[:matching.MAX_INPUT_CHARS])
    if not s:
        return None
    member = _Member(workspace, identity, member_id)
    for hook in REPLY_HOOKS:
        hooked = hook(workspace, lambda: member.id, s, at)
        if hooked is not None:
            return hooked
    bot = queries.bot(workspace)
    if bot is not None:
        incident = bot.incident_for(s, at)
        if incident is not None:
            return Answer(content=incident.reply, source="incident", incident_id=incident.id)
        if bot.menus:
            subject = subject or subject_of(identity) or (f"member:{member_id}" if member_id else None)
            if subject is not None:
                answered = _menu_answer(workspace, bot, s, subject, member, at)
                if answered is not None:
                    return answered
    human = asks_for_human(s)
    rule = bot.rules.match_normalized(s, channel, at) if bot is not None else None
    if rule is not None:
        _tag_after_commit(workspace, rule, identity)
        return Answer(content=str(rule.reply.get("content", "")), outcome=HANDOFF if human else ANSWERED,
                      source="rule", reply_type=rule.reply_type, rule_id=rule.id)
    if human:
        return Answer(content=_handoff_text(bot.menus[0] if bot is not None and bot.menus else None),
                      outcome=HANDOFF, source="handoff")
    return Answer(content="", outcome=HANDOFF, source="none")


def _handoff_text(menu: menu_engine.CompiledMenu | None, node: menu_engine.Node | None = None) -> str:
    if node is not None and node.text.strip():
        return node.text.strip()
    if menu is not None and menu.handoff_text.strip():
        return menu.handoff_text.strip()
    return _("A colleague will reply to you here shortly.")


def _menu_answer(workspace: Workspace, bot: queries.Bot, s: str, subject: str, member: _Member,
                 at: dt.datetime) -> Answer | None:
    opened = bot.triggers.get(s)
    if opened is not None:
        _save_session(workspace, subject, opened, None, at)
        return Answer(content=opened.listing(None), source="menu", menu_id=opened.id)
    if not menu_engine.is_navigation(s):
        return None
    session = queries.menu_session(workspace, subject)
    if session is None:
        return None
    menu = bot.menus_by_id.get(session.menu_id)
    if menu is None:  # the menu was disabled or deleted meanwhile
        return None
    if session.expires_at <= at:
        _save_session(workspace, subject, menu, None, at)
        return Answer(content=_("The menu timed out; here is the main menu again.") + "\n" + menu.listing(None),
                      source="menu", menu_id=menu.id)
    current = menu.nodes.get(session.node_id) if session.node_id is not None else None
    if s in menu_engine.BACK or s in menu_engine.HOME:
        target = menu.parent(current) if s in menu_engine.BACK else None
        _save_session(workspace, subject, menu, target, at)
        return Answer(content=menu.listing(target), source="menu", menu_id=menu.id,
                      node_id=target.id if target is not None else None)
    chosen = menu.options(current).get(s)
    if chosen is None:
        _save_session(workspace, subject, menu, current, at)
        return Answer(content=_("There is no option %(key)s.") % {"key": s} + "\n" + menu.listing(current),
                      source="menu", menu_id=menu.id, node_id=current.id if current is not None else None)
    if chosen.action == NodeAction.SUBMENU:
        _save_session(workspace, subject, menu, chosen, at)
        return Answer(content=menu.listing(chosen), source="menu", menu_id=menu.id, node_id=chosen.id)
    if chosen.action == NodeAction.HANDOFF:
        _end_session(workspace, subject)
        return Answer(content=_handoff_text(menu, chosen), outcome=HANDOFF, source="menu", menu_id=menu.id,
                      node_id=chosen.id)
    _save_session(workspace, subject, menu, current, at)
    if chosen.action == NodeAction.LIVE:
        content = live.answer(workspace, chosen.live, member.id, at)
    else:
        content = chosen.text.strip() or chosen.label
    return Answer(content=_fit(content), source="menu", menu_id=menu.id, node_id=chosen.id)


def _fit(text: str) -> str:
    """``text`` cut to WeChat's 2,048 bytes."""
    data = text.encode("utf-8")
    if len(data) <= MAX_REPLY_BYTES:
        return text
    return data[:MAX_REPLY_BYTES - 3].decode("utf-8", "ignore") + "…"


def _save_session(workspace: Workspace, subject: str, menu: menu_engine.CompiledMenu, node: menu_engine.Node | None,
                  at: dt.datetime) -> None:
    """Put ``subject`` at ``node`` of ``menu`` until ``timeout_seconds`` after ``at`` (an upsert backed by
    the unique (workspace, subject) constraint)."""
    values = {"menu_id": menu.id, "node_id": node.id if node is not None else None,
              "expires_at": at + dt.timedelta(seconds=menu.timeout_seconds), "updated_at": now()}
    if MenuSession.objects.filter(workspace=workspace, subject=subject).update(**values):
        return
    try:
        with transaction.atomic():
            MenuSession.objects.create(workspace=workspace, subject=subject, **values)
    except IntegrityError:  # a concurrent message of the same member created it
        MenuSession.objects.filter(workspace=workspace, subject=subject).update(**values)


def _end_session(workspace: Workspace, subject: str) -> None:
    MenuSession.objects.filter(workspace=workspace, subject=subject).delete()


@transaction.atomic
def apply_rule_tag(workspace: Workspace, identity: Mapping[str, str], tag: str, rule_id: int) -> bool:
    """Tag the member known by ``identity`` with ``tag`` (the tag of rule ``rule_id``, which answered
    them), creating the member if the message that matched is not recorded yet (recording runs in
    its own task, in any order with this one). Idempotent."""
    from shequn.members import services as members

    member = members.upsert_member(workspace, [identity], actor=f"autoreply:{rule_id}").member
    members.add_tags(workspace, member.pk, [tag], actor=f"autoreply:{rule_id}")
    return True


# ---------------------------------------------------------------------------------------------
# menus (docs/menus.md)

MENU_FIELDS = ("name", "triggers", "prompt", "handoff_text", "timeout_seconds", "enabled")
NODE_FIELDS = ("parent", "key", "label", "action", "text", "live")
MAX_TRIGGERS = 20
MAX_NODES = 200
MAX_DEPTH = 5
MIN_TIMEOUT, MAX_TIMEOUT = 30, 24 * 3600
DEFAULT_TIMEOUT = 300
_KEY_RE = re.compile(r"^[0-9]{1,2}$")


def _clean_text(field: str, raw: Any, *, required: bool = False, max_bytes: int = MAX_REPLY_BYTES) -> str:
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise _field_error(field, _("%(field)s must be a text") % {"field": field})
    text = raw.strip()
    if required and not text:
        raise _field_error(field, _("%(field)s is required") % {"field": field})
    if _CONTROL_RE.search(text):
        raise _field_error(field, _("the reply text contains control characters"))
    if len(text.encode("utf-8")) > max_bytes:
        raise _field_error(field, _("the reply text is longer than %(n)s bytes, WeChat's limit") % {"n": max_bytes})
    return text


def _clean_terms(field: str, raw: Any, *, limit: int) -> list[str]:
    """A list of keywords (or one text, one per line or comma-separated), stripped and de-duplicated
    by their normalised form."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [p for p in re.split(r"[\n,，]+", raw)]
    if not isinstance(raw, list | tuple) or not all(isinstance(p, str) for p in raw):
        raise _field_error(field, _("%(field)s must be a list of texts") % {"field": field})
    out: list[str] = []
    seen: set[str] = set()
    for text in raw:
        term = text.strip()
        key = matching.normalize(term)
        if not key or key in seen:
            continue
        if len(key) > MAX_KEYWORD_CHARS:
            raise _field_error(field, _("a keyword may have at most %(n)s characters") % {"n": MAX_KEYWORD_CHARS})
        seen.add(key)
        out.append(term)
    if len(out) > limit:
        raise _field_error(field, _("at most %(n)s keywords") % {"n": limit})
    return out


def clean_menu(data: Mapping[str, Any], current: Any = None) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValidationError(_("a menu is an object of fields"), code="invalid_menu")
    unknown = sorted(set(data) - set(MENU_FIELDS))
    if unknown:
        raise ValidationError(_("unknown fields: %(fields)s") % {"fields": ", ".join(map(str, unknown))},
                              code="unknown_field", details={"fields": unknown})

    def given(name: str, default: Any) -> Any:
        if name in data:
            return data[name]
        return getattr(current, name) if current is not None else default

    name = given("name", "")
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > MAX_NAME or _CONTROL_RE.search(name):
        raise _field_error("name", _("the menu needs a name of 1–%(n)s characters") % {"n": MAX_NAME})
    triggers = _clean_terms("triggers", given("triggers", ["菜单", "menu"]), limit=MAX_TRIGGERS)
    if not triggers:
        raise _field_error("triggers", _("a menu needs at least one trigger text, e.g. 菜单"))
    for t in triggers:
        if menu_engine.is_navigation(matching.normalize(t)):
            raise _field_error("triggers", _("%(text)s is a menu input (digits, * or #) and cannot open a menu")
                               % {"text": t})
    return {
        "name": name,
        "triggers": triggers,
        "prompt": _clean_text("prompt", given("prompt", "")),
        "handoff_text": _clean_text("handoff_text", given("handoff_text", "")),
        "timeout_seconds": _clean_int("timeout_seconds", given("timeout_seconds", DEFAULT_TIMEOUT),
                                      MIN_TIMEOUT, MAX_TIMEOUT),
        "enabled": _clean_bool("enabled", given("enabled", True)),
    }


def _menu_name_taken(name: str) -> Conflict:
    return Conflict(_("there is already a menu named %(name)s") % {"name": name}, code="menu_name_taken",
                    details={"field": "name"})


@transaction.atomic
def create_menu(workspace: Workspace, data: Mapping[str, Any], *, actor: str) -> Menu:
    values = clean_menu(data)
    _bump_version(workspace)
    menu = Menu(workspace=workspace, **values)
    try:
        with transaction.atomic():
            menu.save()
    except IntegrityError:
        raise _menu_name_taken(values["name"]) from None
    audit.record(workspace, actor, "menu.create", menu, {"name": menu.name, "triggers": menu.triggers})
    return menu


@transaction.atomic
def update_menu(workspace: Workspace, menu_id: int, data: Mapping[str, Any], *, actor: str) -> Menu:
    _bump_version(workspace)
    menu = get_scoped(Menu, workspace, menu_id, for_update=True)
    values = clean_menu(data, menu)
    changed = [k for k, v in values.items() if getattr(menu, k) != v]
    if not changed:
        return menu
    for key in changed:
        setattr(menu, key, values[key])
    try:
        with transaction.atomic():
            menu.save(update_fields=[*changed, "updated_at"])
    except IntegrityError:
        raise _menu_name_taken(values["name"]) from None
    audit.record(workspace, actor, "menu.update", menu, {"fields": changed})
    return menu


@transaction.atomic
def delete_menu(workspace: Workspace, menu_id: int, *, actor: str) -> None:
    _bump_version(workspace)
    menu = get_scoped(Menu, workspace, menu_id, for_update=True)
    audit.record(workspace, actor, "menu.delete", menu, {"name": menu.name})
    menu.delete()


def _depth(node: MenuNode | None) -> int:
    depth = 0
    while node is not None:
        depth += 1
        node = node.parent
    return depth


def clean_node(workspace: Workspace, menu: Menu, data: Mapping[str, Any], current: MenuNode | None = None
               ) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValidationError(_("a menu option is an object of fields"), code="invalid_node")
    unknown = sorted(set(data) - set(NODE_FIELDS))
    if unknown:
        raise ValidationError(_("unknown fields: %(fields)s") % {"fields": ", ".join(map(str, unknown))},
                              code="unknown_field", details={"fields": unknown})

    def given(name: str, default: Any) -> Any:
        if name in data:
            return data[name]
        return getattr(current, name) if current is not None else default

    parent: MenuNode | None
    if "parent" in data:
        raw = data["parent"]
        if raw in (None, "", 0):
            parent = None
        else:
            try:
                parent_id = int(raw)
            except (TypeError, ValueError):
                raise _field_error("parent", _("parent must be the id of a submenu option")) from None
            parent = (scoped(MenuNode, workspace).filter(pk=parent_id, menu=menu).select_related("parent__parent__parent")
                      .first())
            if parent is None or parent.action != NodeAction.SUBMENU:
                raise _field_error("parent", _("parent must be the id of a submenu option of this menu"))
            ancestor: MenuNode | None = parent
            while ancestor is not None and current is not None:
                if ancestor.pk == current.pk:
                    raise _field_error("parent", _("an option cannot be moved under itself"))
                ancestor = ancestor.parent
    else:
        parent = current.parent if current is not None else None
    if _depth(parent) >= MAX_DEPTH:
        raise _field_error("parent", _("menus may be at most %(n)s levels deep") % {"n": MAX_DEPTH})
    key = given("key", "")
    key = matching.normalize(str(key)) if isinstance(key, str | int) and not isinstance(key, bool) else ""
    if not _KEY_RE.match(key):
        raise _field_error("key", _("the key is what the member types: 1 or 2 digits"))
    label = given("label", "")
    label = label.strip() if isinstance(label, str) else ""
    if not label or len(label) > 60 or _CONTROL_RE.search(label):
        raise _field_error("label", _("the option needs a label of 1–60 characters"))
    action = given("action", "")
    if action not in NodeAction.values:
        raise _field_error("action", _("action must be one of: %(actions)s") % {"actions": ", ".join(NodeAction.values)})
    text = _clean_text("text", given("text", ""), required=action == NodeAction.TEXT)
    live_kind = given("live", "") or ""
    if action == NodeAction.LIVE:
        if live_kind not in LiveData.values:
            raise _field_error("live", _("live data must be one of: %(kinds)s") % {"kinds": ", ".join(LiveData.values)})
    else:
        live_kind = ""
    return {"parent": parent, "key": key, "label": label, "action": action, "text": text, "live": live_kind}


def _key_taken(key: str) -> Conflict:
    return Conflict(_("this level already has an option %(key)s") % {"key": key}, code="menu_key_taken",
                    details={"field": "key"})


@transaction.atomic
def create_node(workspace: Workspace, menu_id: int, data: Mapping[str, Any], *, actor: str) -> MenuNode:
    _bump_version(workspace)
    menu = get_scoped(Menu, workspace, menu_id, for_update=True)
    if scoped(MenuNode, workspace).filter(menu=menu).count() >= MAX_NODES:
        raise ValidationError(_("a menu may have at most %(n)s options") % {"n": MAX_NODES}, code="too_many_nodes")
    values = clean_node(workspace, menu, data)
    node = MenuNode(workspace=workspace, menu=menu, **values)
    try:
        with transaction.atomic():
            node.save()
    except IntegrityError:
        raise _key_taken(values["key"]) from None
    audit.record(workspace, actor, "menu.node.create", node, {"menu": menu.pk, "key": node.key, "action": node.action})
    return node


@transaction.atomic
def update_node(workspace: Workspace, node_id: int, data: Mapping[str, Any], *, actor: str) -> MenuNode:
    _bump_version(workspace)
    node = get_scoped(MenuNode, workspace, node_id, for_update=True)
    values = clean_node(workspace, node.menu, data, node)
    if node.action == NodeAction.SUBMENU and values["action"] != NodeAction.SUBMENU and node.children.exists():
        raise _field_error("action", _("this option has options under it: delete or move them first"))
    changed = [k for k, v in values.items() if getattr(node, k) != v]
    if not changed:
        return node
    for k in changed:
        setattr(node, k, values[k])
    try:
        with transaction.atomic():
            node.save(update_fields=changed)
    except IntegrityError:
        raise _key_taken(values["key"]) from None
    audit.record(workspace, actor, "menu.node.update", node, {"fields": changed})
    return node


@transaction.atomic
def delete_node(workspace: Workspace, node_id: int, *, actor: str) -> None:
    """Delete an option and every option under it."""
    _bump_version(workspace)
    node = get_scoped(MenuNode, workspace, node_id, for_update=True)
    audit.record(workspace, actor, "menu.node.delete", node, {"menu": node.menu_id, "key": node.key})
    node.delete()


# ---------------------------------------------------------------------------------------------
# incidents (docs/incidents.md)

INCIDENT_FIELDS = ("title", "keywords", "reply", "starts_at", "ends_at")
MAX_INCIDENT_KEYWORDS = 50
MAX_LIST_TARGET = 10_000


def _clean_time(field: str, raw: Any, *, required: bool) -> dt.datetime | None:
    if raw in (None, ""):
        if required:
            raise _field_error(field, _("%(field)s is required") % {"field": field})
        return None
    value = raw
    if isinstance(raw, str):
        from django.utils.dateparse import parse_datetime

        value = parse_datetime(raw.strip())
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise _field_error(field, _("%(field)s must be a date and time with a time zone") % {"field": field})
    return value


def clean_incident(data: Mapping[str, Any], current: Incident | None = None) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValidationError(_("an incident is an object of fields"), code="invalid_incident")
    unknown = sorted(set(data) - set(INCIDENT_FIELDS))
    if unknown:
        raise ValidationError(_("unknown fields: %(fields)s") % {"fields": ", ".join(map(str, unknown))},
                              code="unknown_field", details={"fields": unknown})

    def given(name: str, default: Any) -> Any:
        if name in data:
            return data[name]
        return getattr(current, name) if current is not None else default

    title = given("title", "")
    title = title.strip() if isinstance(title, str) else ""
    if not title or len(title) > 200 or _CONTROL_RE.search(title):
        raise _field_error("title", _("the incident needs a title of 1–200 characters"))
    starts_at = _clean_time("starts_at", given("starts_at", None), required=False) or (
        current.starts_at if current is not None else now())
    ends_at = _clean_time("ends_at", given("ends_at", None), required=False)
    if ends_at is not None and ends_at <= starts_at:
        raise _field_error("ends_at", _("the end must be after the start"))
    return {
        "title": title,
        "keywords": _clean_terms("keywords", given("keywords", []), limit=MAX_INCIDENT_KEYWORDS),
        "reply": _clean_text("reply", given("reply", ""), required=True),
        "starts_at": starts_at,
        "ends_at": ends_at,
    }


@transaction.atomic
def declare_incident(workspace: Workspace, data: Mapping[str, Any], *, actor: str) -> Incident:
    """Declare an outage: from ``starts_at`` (now when not given) matching messages get its reply."""
    values = clean_incident(data)
    _bump_version(workspace)
    incident = Incident.objects.create(workspace=workspace, status=IncidentStatus.ACTIVE, **values)
    audit.record(workspace, actor, "incident.declare", incident,
                 {"title": incident.title, "keywords": incident.keywords})
    return incident


@transaction.atomic
def update_incident(workspace: Workspace, incident_id: int, data: Mapping[str, Any], *, actor: str) -> Incident:
    _bump_version(workspace)
    incident = get_scoped(Incident, workspace, incident_id, for_update=True)
    values = clean_incident(data, incident)
    changed = [k for k, v in values.items() if getattr(incident, k) != v]
    if changed:
        for k in changed:
            setattr(incident, k, values[k])
        incident.save(update_fields=[*changed, "updated_at"])
        audit.record(workspace, actor, "incident.update", incident, {"fields": changed})
    return incident


@transaction.atomic
def end_incident(workspace: Workspace, incident_id: int, *, actor: str, at: dt.datetime | None = None) -> Incident:
    """End an incident: its reply stops at once. Ending an ended incident changes nothing."""
    _bump_version(workspace)
    incident = get_scoped(Incident, workspace, incident_id, for_update=True)
    if incident.status == IncidentStatus.ENDED:
        return incident
    incident.status = IncidentStatus.ENDED
    incident.ended_at = at or now()
    incident.save(update_fields=["status", "ended_at", "updated_at"])
    audit.record(workspace, actor, "incident.end", incident, {"title": incident.title})
    return incident


@transaction.atomic
def delete_incident(workspace: Workspace, incident_id: int, *, actor: str) -> None:
    _bump_version(workspace)
    incident = get_scoped(Incident, workspace, incident_id, for_update=True)
    audit.record(workspace, actor, "incident.delete", incident, {"title": incident.title})
    incident.delete()


FILTER_FIELDS = ("q", "tag", "keyword", "stage", "strength", "source", "attribute")


def _member_filter(raw: Any) -> Any:
    from shequn.members.queries import MemberFilter

    if not isinstance(raw, Mapping):
        raise _field_error("filter", _("the segment is an object of member filters"))
    unknown = sorted(set(raw) - set(FILTER_FIELDS))
    if unknown:
        raise _field_error("filter", _("unknown member filters: %(fields)s") % {"fields": ", ".join(map(str, unknown))})
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if value in (None, ""):
            continue
        if key == "strength":
            values[key] = _clean_int("strength", value, 0, 1000)
        elif isinstance(value, str) and len(value) <= 200:
            values[key] = value.strip()
        else:
            raise _field_error("filter", _("member filter %(name)s must be a text") % {"name": key})
    if not values:
        raise _field_error("filter", _("give at least one member filter (a tag, a stage…); to tell everyone, "
                                       "use a broadcast campaign"))
    return MemberFilter(**values)


def _target_members(workspace: Workspace, target: Mapping[str, Any]) -> Any:
    """The queryset of member ids a notification targets, in id order."""
    from shequn.members import queries as members_q
    from shequn.members.models import Member

    if "filter" in target:
        qs = members_q.filter_members(workspace, _member_filter(target["filter"]))
    else:
        qs = scoped(Member, workspace).filter(pk__in=list(target.get("member_ids", [])))
    return qs.order_by("pk").values_list("pk", flat=True)


def clean_target(workspace: Workspace, raw: Any) -> dict[str, Any]:
    """``{"filter": {…member filters…}}`` (a segment), ``{"member_ids": [...]}`` or ``{"phones": [...]}``
    (phones are resolved to members now; unknown phones are reported in ``unknown_phones``)."""
    from shequn.members import queries as member_queries

    if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in ("filter", "member_ids", "phones"):
        raise _field_error("target", _("the target is one of: filter (a segment), member_ids or phones"))
    if "filter" in raw:
        _member_filter(raw["filter"])
        return {"filter": {k: v for k, v in raw["filter"].items() if v not in (None, "")}}
    values = raw.get("member_ids", raw.get("phones"))
    if isinstance(values, str):
        values = [v for v in re.split(r"[\s,，;]+", values) if v]
    if not isinstance(values, list | tuple) or not values:
        raise _field_error("target", _("the list of members is empty"))
    if len(values) > MAX_LIST_TARGET:
        raise _field_error("target", _("at most %(n)s members per list; use a segment for more") % {"n": MAX_LIST_TARGET})
    if "member_ids" in raw:
        try:
            ids = sorted({int(v) for v in values})
        except (TypeError, ValueError):
            raise _field_error("target", _("member ids must be whole numbers")) from None
        return {"member_ids": ids}
    ids, unknown = member_queries.member_ids_by_phone(workspace, [str(v) for v in values])
    return {"member_ids": sorted(ids), "unknown_phones": [p[:32] for p in unknown[:100]]}


def _outbound() -> Any:
    import importlib

    try:
        module = importlib.import_module("shequn.outbound.services")
    except ImportError:
        return None
    return module if hasattr(module, "send_text") else None


@transaction.atomic
def notify_incident(workspace: Workspace, incident_id: int, target: Any, *, actor: str,
                    text: str | None = None) -> IncidentNotification:
    """Tell the affected members about an incident, in the background: a segment or a list of members
    (see :func:`clean_target`); ``text`` defaults to the incident's reply. Each member gets the message
    once per incident (key ``incident:<id>:<member id>``), however often it is notified."""
    incident = get_scoped(Incident, workspace, incident_id, for_update=True)
    if incident.status != IncidentStatus.ACTIVE:
        raise Conflict(_("the incident has ended"), code="incident_ended")
    if _outbound() is None:
        raise Conflict(_("outbound messaging is not available, so members cannot be notified"),
                       code="outbound_unavailable")
    cleaned = clean_target(workspace, target)
    message = _clean_text("text", text if text is not None else incident.reply, required=True)
    total = _target_members(workspace, cleaned).count()
    notification = IncidentNotification.objects.create(workspace=workspace, incident=incident, target=cleaned,
                                                       text=message, total=total, created_by=actor[:100])
    audit.record(workspace, actor, "incident.notify", incident, {"notification": notification.pk, "total": total})
    from . import tasks

    enqueue_on_commit(tasks.send_incident_notification, notification.pk)
    return notification


NOTIFY_BATCH = 200


def run_notification(workspace: Workspace, notification_id: int, *, batch: int = NOTIFY_BATCH) -> IncidentNotification:
    """Send a notification's messages from where it stopped (``cursor``), one committed batch at a time
    so the console can show ``processed`` / ``total`` while it runs. Idempotent: a rerun (a task
    delivered twice, a worker restarted) resumes after the cursor, and the outbox key makes a repeated
    send a no-op."""
    outbound = _outbound()
    row = get_scoped(IncidentNotification, workspace, notification_id)
    if row.status in (NotificationStatus.DONE, NotificationStatus.FAILED):
        return row
    if outbound is None:
        scoped(IncidentNotification, workspace).filter(pk=row.pk).update(
            status=NotificationStatus.FAILED, error="outbound messaging is not available", finished_at=now())
        row.refresh_from_db()
        return row
    scoped(IncidentNotification, workspace).filter(pk=row.pk, status=NotificationStatus.QUEUED).update(
        status=NotificationStatus.RUNNING)
    incident_id = row.incident_id
    while True:
        with transaction.atomic():
            row = get_scoped(IncidentNotification, workspace, notification_id, for_update=True)
            ids = list(_target_members(workspace, row.target).filter(pk__gt=row.cursor)[:batch])
            for member_id in ids:
                outbound.send_text(workspace, member_id, row.text, purpose="incident", actor=f"incident:{incident_id}",
                                   key=f"incident:{incident_id}:{member_id}")
            if ids:
                IncidentNotification.objects.filter(pk=row.pk).update(
                    cursor=ids[-1], processed=F("processed") + len(ids), status=NotificationStatus.RUNNING)
            if len(ids) < batch:
                IncidentNotification.objects.filter(pk=row.pk).update(status=NotificationStatus.DONE, finished_at=now())
                break
    row.refresh_from_db()
    return row


# ---------------------------------------------------------------------------------------------
# simulator


def simulate(workspace: Workspace, text: str, *, channel: str = "wechat", member_id: int | None = None,
             at: dt.datetime | None = None, actor: str) -> dict[str, Any]:
    """What the bot would answer ``text`` (as member ``member_id``, or an unknown member). The menu
    session is the simulator's own (``simulator:<actor>``), so an operator can walk a menu step by
    step; nothing else is written (no tag, no interaction)."""
    from shequn.members.models import Member

    if member_id is not None:
        get_scoped(Member, workspace, member_id)
    if not isinstance(text, str) or not text.strip():
        raise _field_error("text", _("type a message to try"))
    with transaction.atomic():
        result = answer(workspace, text, channel=channel, member_id=member_id, at=at,
                        subject=f"simulator:{actor}"[:200])
    if result is None:
        result = Answer(content="", outcome=HANDOFF, source="none")
    return {"content": result.content, "outcome": result.outcome, "source": result.source, "rule_id": result.rule_id,
            "incident_id": result.incident_id, "menu_id": result.menu_id, "node_id": result.node_id}
