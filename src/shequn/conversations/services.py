"""Every write of the conversations domain: keyword auto-reply rules (create, import, update, delete)
and the tags a rule applies; and :func:`auto_reply`, the bot's answer to an inbound message.

Each rule change bumps the workspace's ``RuleSetVersion`` in the same transaction, so every process
recompiles the rule set on the next message after the change commits (see ``queries.rulebook``)."""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import re2
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils.translation import gettext as _

from shequn.core import audit
from shequn.core.errors import Conflict, ShequnError, ValidationError
from shequn.core.models import Workspace
from shequn.core.tasks import enqueue_on_commit
from shequn.core.tenancy import get_scoped, scoped

from . import matching, queries
from .models import AutoReplyRule, MatchType, ReplyType, RuleSetVersion

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
    """The bot's answer to ``text`` received on ``channel`` (at ``at``, now when None), or None when
    no rule answers.

    On the fast reply path: it reads (one row when the compiled rule set is current) and writes
    nothing now. When the rule tags the member and ``identity`` (``{"kind", "namespace", "value"}``)
    says who sent the message, tagging is enqueued for after the current transaction commits."""
    rule = queries.match_rule(workspace, text, channel=channel, at=at)
    if rule is None:
        return None
    if rule.tag and identity:
        from . import tasks

        enqueue_on_commit(tasks.tag_member, workspace.pk, dict(identity), rule.tag, rule.id)
    return AutoReply(rule_id=rule.id, rule_name=rule.name, reply_type=rule.reply_type, reply=rule.reply, tag=rule.tag)


@transaction.atomic
def apply_rule_tag(workspace: Workspace, identity: Mapping[str, str], tag: str, rule_id: int) -> bool:
    """Tag the member known by ``identity`` with ``tag`` (the tag of rule ``rule_id``, which answered
    them). Idempotent; False when no member has that identity."""
    from shequn.members import services as members

    member = members.find_member(workspace, identity)
    if member is None:
        return False
    members.add_tags(workspace, member.pk, [tag], actor=f"autoreply:{rule_id}")
    return True
