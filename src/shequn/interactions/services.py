"""The one write path for interactions: validation, member resolution, idempotent storage, and the
effects every new interaction has (member engagement, lifecycle stage, relationship strength,
touchpoint roll-ups). Single events are batches of one."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from shequn.core import cache as settings_cache
from shequn.core.errors import ShequnError, ValidationError
from shequn.core.models import Workspace
from shequn.core.tenancy import scoped

from .models import Direction, Interaction, InteractionType, Touchpoint, TouchpointDay, TouchpointsVersion

MAX_PROPERTIES_BYTES = 16_384
_TYPES = frozenset(InteractionType.values)
_DIRECTIONS = frozenset(Direction.values)
_FIELDS = frozenset({"member_id", "identities", "profile", "type", "channel", "direction", "touchpoint", "occurred_at",
                     "source", "external_id", "amount", "currency", "properties"})
UNFOLLOW_BLAME_WINDOW = dt.timedelta(days=7)


@dataclass
class RowResult:
    """Outcome of one submitted row: ``status`` is created, duplicate or error."""

    index: int
    status: str
    id: int | None = None
    member_id: int | None = None
    error: dict[str, Any] | None = None


@dataclass
class _Clean:
    index: int
    member_id: int | None
    identities: list[dict[str, str]]
    profile: dict[str, Any]
    type: str
    channel: str
    direction: str
    touchpoint_id: int | None
    occurred_at: dt.datetime
    source: str
    external_id: str | None
    amount: Decimal | None
    currency: str
    properties: dict[str, Any]


def _parse_time(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        parsed = parse_datetime(value.strip().replace(" ", "T", 1) if "T" not in value else value.strip())
        if parsed is None:
            raise ValidationError(f"occurred_at is not an ISO 8601 date-time: {value!r}", code="invalid_time",
                                  details={"field": "occurred_at"})
    else:
        raise ValidationError("occurred_at is required", code="invalid_time", details={"field": "occurred_at"})
    if timezone.is_naive(parsed):
        raise ValidationError("occurred_at must carry a time zone offset (e.g. +08:00 or Z)", code="invalid_time",
                              details={"field": "occurred_at"})
    return parsed


def _clean(workspace: Workspace, index: int, row: Mapping[str, Any], touchpoints: Mapping[str, int]) -> _Clean:
    if not isinstance(row, Mapping):
        raise ValidationError("each event must be an object", code="invalid_event")
    unknown = sorted(set(row) - _FIELDS)
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(unknown)}", code="invalid_field", details={"field": unknown[0]})
    itype = str(row.get("type") or "").strip()
    if itype not in _TYPES:
        raise ValidationError(f"type must be one of {', '.join(InteractionType.values)}", code="invalid_type",
                              details={"field": "type"})
    channel = str(row.get("channel") or "").strip()
    if not channel or len(channel) > 64:
        raise ValidationError("channel is required (1–64 characters)", code="invalid_field", details={"field": "channel"})
    direction = str(row.get("direction") or Direction.INBOUND).strip()
    if direction not in _DIRECTIONS:
        raise ValidationError("direction must be 'in' or 'out'", code="invalid_field", details={"field": "direction"})
    tp_code = row.get("touchpoint")
    touchpoint_id = None
    if tp_code not in (None, ""):
        touchpoint_id = touchpoints.get(str(tp_code))
        if touchpoint_id is None:
            raise ValidationError(f"unknown touchpoint {tp_code!r}", code="unknown_touchpoint",
                                  details={"field": "touchpoint"})
    amount = None
    if row.get("amount") not in (None, ""):
        try:
            amount = Decimal(str(row["amount"]))
        except InvalidOperation:
            raise ValidationError(f"amount is not a number: {row['amount']!r}", code="invalid_field",
                                  details={"field": "amount"}) from None
        if not amount.is_finite() or abs(amount) >= Decimal("1e12") or amount.as_tuple().exponent < -2:  # type: ignore[operator]
            raise ValidationError("amount must be a finite number with at most 2 decimals", code="invalid_field",
                                  details={"field": "amount"})
    props = row.get("properties") or {}
    if not isinstance(props, Mapping):
        raise ValidationError("properties must be an object", code="invalid_field", details={"field": "properties"})
    if props and len(json.dumps(props, ensure_ascii=False, default=str)) > MAX_PROPERTIES_BYTES:
        raise ValidationError("properties is larger than 16 KiB", code="invalid_field", details={"field": "properties"})
    ext = row.get("external_id")
    ext = None if ext in (None, "") else str(ext).strip()
    if ext is not None and len(ext) > 128:
        raise ValidationError("external_id is longer than 128 characters", code="invalid_field",
                              details={"field": "external_id"})
    source = str(row.get("source") or "api").strip()[:64]
    member_id = row.get("member_id")
    identities = list(row.get("identities") or [])
    if member_id in (None, "") and not identities:
        raise ValidationError("an event needs member_id or identities", code="no_member")
    if member_id not in (None, ""):
        try:
            member_id = int(member_id)
        except (TypeError, ValueError):
            raise ValidationError("member_id must be an integer", code="invalid_field", details={"field": "member_id"}) from None
    profile = row.get("profile") or {}
    if not isinstance(profile, Mapping):
        raise ValidationError("profile must be an object", code="invalid_field", details={"field": "profile"})
    return _Clean(index=index, member_id=member_id or None, identities=identities, profile=dict(profile), type=itype,
                  channel=channel, direction=direction, touchpoint_id=touchpoint_id,
                  occurred_at=_parse_time(row.get("occurred_at")), source=source, external_id=ext, amount=amount,
                  currency=str(row.get("currency") or "")[:3].upper(), properties=dict(props))


def ingest(workspace: Workspace, event: Mapping[str, Any], *, actor: str = "api") -> RowResult:
    """Store one interaction. Raises ValidationError for a bad event; a duplicate is not an error."""
    [result] = ingest_batch(workspace, [event], actor=actor)
    if result.status == "error":
        assert result.error is not None
        raise ValidationError(result.error["message"], code=result.error["code"], details=result.error.get("details"))
    return result


TOUCHPOINTS_SOURCE = "interactions.touchpoints"
_touchpoint_cache: settings_cache.VersionedCache[dict[str, int]] = settings_cache.VersionedCache(TOUCHPOINTS_SOURCE)


def bump_touchpoints_version(workspace_id: int) -> None:
    """Mark the workspace's touchpoint codes changed, in the transaction that changes them."""
    settings_cache.bump(TouchpointsVersion, workspace_id)


def touchpoint_ids(workspace: Workspace) -> dict[str, int]:
    """Touchpoint code → id of ``workspace``, from this process's cache while the touchpoints'
    version is unchanged (ADR 0015). Read only."""
    return _touchpoint_cache.get(workspace.pk,
                                 lambda: dict(scoped(Touchpoint, workspace).values_list("code", "id")))


@dataclass
class Triage:
    """A batch sorted before anything is written: ``results`` already holds the bad rows and the
    duplicates; ``todo`` are the rows to store; ``repeats`` maps an in-batch repeat to the row it repeats."""

    results: list[RowResult]
    todo: list[_Clean]
    repeats: dict[int, int]


def triage_batch(workspace: Workspace, events: Sequence[Mapping[str, Any]], *,
                 pending_keys: Collection[tuple[str, str]] = ()) -> Triage:
    """Validate every row and find duplicates — inside the batch, against what is stored, and against
    ``pending_keys`` (keys a dry run has already counted as created). Reads only."""
    touchpoints = touchpoint_ids(workspace)
    results: list[RowResult] = [RowResult(index=i, status="pending") for i in range(len(events))]
    clean: list[_Clean] = []
    for i, row in enumerate(events):
        try:
            clean.append(_clean(workspace, i, row, touchpoints))
        except ShequnError as exc:
            results[i] = RowResult(index=i, status="error", error=exc.as_dict())

    seen: dict[tuple[str, str], int] = {}
    repeats: dict[int, int] = {}
    fresh: list[_Clean] = []
    for c in clean:
        if c.external_id is not None:
            key = (c.source, c.external_id)
            if key in seen:
                repeats[c.index] = seen[key]
                results[c.index] = RowResult(index=c.index, status="duplicate")
                continue
            seen[key] = c.index
        fresh.append(c)
    stored = _stored_keys(workspace, [c for c in fresh if c.external_id is not None])
    todo = []
    for c in fresh:
        key = (c.source, c.external_id) if c.external_id is not None else None
        hit = stored.get(key) if key else None
        if hit is not None:
            results[c.index] = RowResult(index=c.index, status="duplicate", id=hit[0], member_id=hit[1])
        elif key is not None and key in pending_keys:
            results[c.index] = RowResult(index=c.index, status="duplicate")
        else:
            todo.append(c)
    return Triage(results=results, todo=todo, repeats=repeats)


def identity_key(c: _Clean) -> tuple[tuple[str, str, str], ...]:
    """The identities of a row as a hashable key; raises for identities that are not objects."""
    key = tuple(sorted((str(i.get("kind")), str(i.get("namespace") or ""), str(i.get("value")))
                       for i in c.identities if isinstance(i, Mapping)))
    if len(key) != len(c.identities):
        raise ValidationError("each identity must be an object {kind, value}", code="invalid_identity")
    return key


def ingest_batch(workspace: Workspace, events: Sequence[Mapping[str, Any]], *, actor: str = "api") -> list[RowResult]:
    """Store a batch. Good rows are stored, bad rows are reported with their reason, and rows whose
    ``(source, external_id)`` was already stored are reported as ``duplicate`` with the stored id.

    The cached settings the batch's handlers read (touchpoints, stage rules, subscriptions …) are
    checked against one read of the workspace's settings versions (``core.cache.scope``)."""
    with settings_cache.scope():
        return _ingest_batch(workspace, events, actor=actor)


def _ingest_batch(workspace: Workspace, events: Sequence[Mapping[str, Any]], *, actor: str) -> list[RowResult]:
    from shequn.members import queries as member_queries
    from shequn.members import services as members

    triage = triage_batch(workspace, events)
    results = triage.results

    # Resolve members (each distinct identity set once).
    valid_ids = member_queries.existing_ids(workspace, {c.member_id for c in triage.todo if c.member_id})
    cache: dict[tuple, int] = {}
    ready: list[tuple[_Clean, int]] = []
    for c in triage.todo:
        try:
            if c.member_id:
                if c.member_id not in valid_ids:
                    raise ValidationError(f"member {c.member_id} not found", code="unknown_member",
                                          details={"field": "member_id"})
                mid = c.member_id
            else:
                key = identity_key(c)
                if key in cache and not c.profile:
                    mid = cache[key]
                else:
                    up = members.upsert_member(workspace, c.identities, c.profile, overwrite=False, actor=actor,
                                               reason=f"identities seen together in a {c.type} event",
                                               at=c.occurred_at)
                    mid = cache[key] = up.member.pk
            ready.append((c, mid))
        except ShequnError as exc:
            results[c.index] = RowResult(index=c.index, status="error", error=exc.as_dict())

    for c, mid, row in _store(workspace, ready):
        if row is None:  # lost a race with a concurrent identical event
            hit = _stored_keys(workspace, [c]).get((c.source, c.external_id))
            results[c.index] = RowResult(index=c.index, status="duplicate", id=hit[0] if hit else None,
                                         member_id=hit[1] if hit else mid)
        else:
            results[c.index] = RowResult(index=c.index, status="created", id=row.pk, member_id=mid)
    # An in-batch repeat answers with the id of the row it repeats (stored now, or found stored).
    for index, first in triage.repeats.items():
        src = results[first]
        if src.status in ("created", "duplicate"):
            results[index].id, results[index].member_id = src.id, src.member_id
    return results


def _stored_keys(workspace: Workspace, rows: Iterable[_Clean]) -> dict[tuple[str, str | None], tuple[int, int]]:
    by_source: dict[str, list[str]] = defaultdict(list)
    for c in rows:
        if c.external_id is not None:
            by_source[c.source].append(c.external_id)
    out: dict[tuple[str, str | None], tuple[int, int]] = {}
    for source, ids in by_source.items():
        for start in range(0, len(ids), 900):
            for pk, ext, mid in scoped(Interaction, workspace).filter(source=source, external_id__in=ids[start:start + 900]) \
                    .values_list("pk", "external_id", "member_id"):
                out[(source, ext)] = (pk, mid)
    return out


def _store(workspace: Workspace, ready: list[tuple[_Clean, int]]) -> list[tuple[_Clean, int, Interaction | None]]:
    if not ready:
        return []
    objs = [Interaction(workspace=workspace, member_id=mid, origin_member_id=mid, type=c.type, channel=c.channel,
                        direction=c.direction, touchpoint_id=c.touchpoint_id, occurred_at=c.occurred_at,
                        source=c.source, external_id=c.external_id, amount=c.amount, currency=c.currency,
                        properties=c.properties) for c, mid in ready]
    try:
        with transaction.atomic():
            created = Interaction.objects.bulk_create(objs, batch_size=1000)
            _apply_effects(workspace, created)
        return [(c, mid, obj) for (c, mid), obj in zip(ready, created, strict=True)]
    except IntegrityError:
        pass
    # A concurrent writer stored one of our keys first: fall back to one savepoint per row.
    out: list[tuple[_Clean, int, Interaction | None]] = []
    for (c, mid), obj in zip(ready, objs, strict=True):
        obj.pk = None
        try:
            with transaction.atomic():
                obj.save(force_insert=True)
                _apply_effects(workspace, [obj])
            out.append((c, mid, obj))
        except IntegrityError:
            out.append((c, mid, None))
    return out


# Domains that react to new interactions (loyalty earn rules, journeys …) register a handler here
# from their AppConfig.ready(). Handlers run inside the storing transaction, once per stored row
# (never for duplicates), after lifecycle and touchpoint updates; they enqueue slow work on commit.
INTERACTION_HANDLERS: list[Callable[[Workspace, list[Interaction]], None]] = []


def _apply_effects(workspace: Workspace, rows: list[Interaction]) -> None:
    """Inside the storing transaction: everything derived from new interactions."""
    from shequn.lifecycle import services as lifecycle

    lifecycle.on_interactions(workspace, rows)
    _roll_up_touchpoints(workspace, rows)
    for handler in INTERACTION_HANDLERS:
        handler(workspace, rows)


def trust_signal(row: Interaction) -> int:
    """+1 for a positive signal, -1 for a negative one, 0 otherwise (see docs/touchpoints.md)."""
    props = row.properties or {}
    sentiment = str(props.get("sentiment", "")).lower()
    if sentiment in {"positive", "negative"}:
        return 1 if sentiment == "positive" else -1
    score = props.get("rating", props.get("score"))
    if row.type in {InteractionType.REVIEW, InteractionType.SATISFACTION} and score is not None:
        try:
            value = float(score)
        except (TypeError, ValueError):
            return 0
        if value >= 4:
            return 1
        if value <= 2:
            return -1
        return 0
    if row.type == InteractionType.SUPPORT_CONTACT and props.get("complaint"):
        return -1
    return 0


def _roll_up_touchpoints(workspace: Workspace, rows: list[Interaction]) -> None:
    tz = timezone.get_default_timezone()
    deltas: dict[tuple[int, dt.date], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        if row.type == InteractionType.UNFOLLOW:
            # An unfollow shortly after a contact counts against the touchpoint of that contact.
            blamed = (scoped(Interaction, workspace).filter(
                member_id=row.member_id, touchpoint__isnull=False, occurred_at__lte=row.occurred_at,
                occurred_at__gte=row.occurred_at - UNFOLLOW_BLAME_WINDOW).exclude(pk=row.pk)
                .order_by("-occurred_at").values_list("touchpoint_id", "occurred_at").first())
            if blamed is not None:
                deltas[(blamed[0], blamed[1].astimezone(tz).date())][3] += 1
            if row.touchpoint_id is None:
                continue
        if row.touchpoint_id is None:
            continue
        d = deltas[(row.touchpoint_id, row.occurred_at.astimezone(tz).date())]
        d[0] += 1
        d[1] += row.direction == Direction.INBOUND
        signal = trust_signal(row)
        d[2] += signal > 0
        d[3] += signal < 0
    if not deltas:
        return
    TouchpointDay.objects.bulk_create(
        [TouchpointDay(workspace=workspace, touchpoint_id=tp, day=day) for tp, day in deltas], ignore_conflicts=True)
    for (tp, day), (conv, inbound, pos, neg) in sorted(deltas.items()):
        TouchpointDay.objects.filter(touchpoint_id=tp, day=day).update(
            conversations=F("conversations") + conv, inbound=F("inbound") + inbound,
            positive=F("positive") + pos, negative=F("negative") + neg)


# ---------------------------------------------------------------------------------------------
# called by the members domain when members are merged / unmerged


def repoint_member(workspace: Workspace, *, from_member_ids: Sequence[int], to_member_id: int) -> int:
    return scoped(Interaction, workspace).filter(member_id__in=list(from_member_ids)).update(member_id=to_member_id)


def repoint_origin(workspace: Workspace, *, origin_member_ids: Sequence[int], from_member_id: int, to_member_id: int) -> int:
    return scoped(Interaction, workspace).filter(member_id=from_member_id, origin_member_id__in=list(origin_member_ids)) \
        .update(member_id=to_member_id)


# ---------------------------------------------------------------------------------------------
# touchpoint registry


RESERVED_TOUCHPOINT_CODES = frozenset({"map", "new"})  # path words of the API and console
TOUCHPOINT_FIELDS = ("name", "channel", "function", "segment", "lifecycle_stage", "importance", "complexity",
                     "consistency", "description")


def _clean_touchpoint(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in TOUCHPOINT_FIELDS:
            raise ValidationError(f"unknown touchpoint field {key!r}", code="invalid_field", details={"field": key})
        if key in {"importance", "complexity", "consistency"}:
            try:
                value = int(value)
            except (TypeError, ValueError):
                value = 0
            if not 1 <= value <= 5:
                raise ValidationError(f"{key} must be a whole number from 1 to 5", code="invalid_field",
                                      details={"field": key})
        else:
            value = str(value or "").strip()
            limit = Touchpoint._meta.get_field(key).max_length
            if limit and len(value) > limit:
                raise ValidationError(f"{key} is longer than {limit} characters", code="invalid_field",
                                      details={"field": key})
        out[key] = value
    return out


@transaction.atomic
def save_touchpoint(workspace: Workspace, code: str, data: Mapping[str, Any], *, actor: str) -> Touchpoint:
    """Create or update the touchpoint ``code``."""
    from django.utils.text import slugify

    from shequn.core import audit

    if not code or slugify(code) != code or len(code) > 64:
        raise ValidationError("code must be a slug (a-z, 0-9, - and _)", code="invalid_field", details={"field": "code"})
    if code in RESERVED_TOUCHPOINT_CODES:
        raise ValidationError(f"{code!r} is a reserved word; choose another code", code="reserved_code",
                              details={"field": "code"})
    values = _clean_touchpoint(data)
    tp = scoped(Touchpoint, workspace).select_for_update().filter(code=code).first()
    if tp is None:
        if not values.get("name") or not values.get("channel"):
            raise ValidationError("a new touchpoint needs a name and a channel", code="invalid_field")
        bump_touchpoints_version(workspace.pk)
        tp = Touchpoint.objects.create(workspace=workspace, code=code, **values)
        audit.record(workspace, actor, "touchpoint.create", tp)
    else:
        for k, v in values.items():
            setattr(tp, k, v)
        tp.save()
        audit.record(workspace, actor, "touchpoint.update", tp, {"fields": sorted(values)})
    return tp
