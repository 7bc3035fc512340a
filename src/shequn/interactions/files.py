"""Bulk interaction files: JSONL and CSV imports fed to ``services.ingest_batch`` in chunks, and the
interactions CSV export. The job machinery (ImportJob, chunks, progress, resume) is the members
domain's (``shequn.members.imports``); this module knows the file formats and the event shape.

* **JSONL**: one event object per line, exactly what ``ingest_batch`` accepts.
* **CSV**: one event per row. The member is ``member_id`` or identity columns (``phone``, ``email``,
  ``wechat_openid`` + ``wechat_appid``, ``wechat_unionid``, ``member_external_id`` +
  ``member_external_system``); ``external_id`` is the event's own idempotency key (with ``source``);
  ``prop:<name>`` columns become properties.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import IO, Any, Protocol

from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from shequn.core.errors import ShequnError, ValidationError
from shequn.core.models import Workspace
from shequn.core.tenancy import scoped
from shequn.members import queries as member_queries
from shequn.members import services as members
from shequn.members.imports import (
    STATUS_CREATED,
    STATUS_DUPLICATE,
    STATUS_ERROR,
    CsvFile,
    RowError,
    RowOutcome,
    SourceRow,
    cells_by_name,
    check_header,
    error_outcome,
    escape_cell,
    header_names,
)

from . import services
from .models import Interaction, Touchpoint

INTERACTION_CHUNK_ROWS = 1000
EXPORT_CHUNK_ROWS = 1000
PROPERTY_SCAN_ROWS = 5000
PROP_PREFIX = "prop:"

EVENT_COLUMNS = ("type", "channel", "direction", "touchpoint", "occurred_at", "source", "external_id", "amount",
                 "currency")
MEMBER_COLUMNS = ("member_id", "phone", "email", "wechat_openid", "wechat_appid", "wechat_unionid",
                  "member_external_id", "member_external_system")
CSV_COLUMNS = (*MEMBER_COLUMNS, *EVENT_COLUMNS)
REQUIRED_COLUMNS = ("type", "channel", "occurred_at")
EXPORT_COLUMNS = ("member_id", *EVENT_COLUMNS)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")

# (column, identity kind, namespace column)
_IDENTITY_COLUMNS = (
    ("phone", "phone", None),
    ("email", "email", None),
    ("wechat_openid", "wechat_openid", "wechat_appid"),
    ("wechat_unionid", "wechat_unionid", None),
    ("member_external_id", "external", "member_external_system"),
)


class EventSource(Protocol):
    def count(self) -> int: ...

    def rows(self) -> Generator[SourceRow, None, None]: ...

    def event(self, src: SourceRow) -> dict[str, Any]: ...


# ---------------------------------------------------------------------------------------------
# property cells: JSON literals are decoded, anything else is text


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def decode_property(text: str) -> Any:
    """``5`` → 5, ``true`` → True, ``{"a": 1}`` → a dict, ``"5"`` → the string 5, ``hello`` → "hello"."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


def encode_property(value: Any) -> str:
    """The inverse of :func:`decode_property`: text that would decode as something else is quoted."""
    if isinstance(value, str):
        if value == "" or decode_property(value) != value or value.strip() != value:
            return json.dumps(value, ensure_ascii=False)
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


# ---------------------------------------------------------------------------------------------
# file formats


class JsonLinesFile:
    """One JSON object per line; blank lines are skipped and not counted."""

    def __init__(self, path: Path, encoding: str) -> None:
        self.path = path
        self.encoding = encoding
        with closing(self.rows()) as rows:
            if next(rows, None) is None:
                raise ValidationError(_("The file is empty."), code="empty_file")

    def count(self) -> int:
        with self.path.open("r", encoding=self.encoding) as fh:
            return sum(1 for line in fh if line.strip())

    def rows(self) -> Generator[SourceRow, None, None]:
        with self.path.open("r", encoding=self.encoding) as fh:
            number = 0
            for line_no, line in enumerate(fh, start=1):
                if line.strip():
                    number += 1
                    yield SourceRow(row=number, line=line_no, cells=line)

    def event(self, src: SourceRow) -> dict[str, Any]:
        try:
            value = json.loads(src.cells)
        except ValueError as exc:
            raise RowError(_("The line is not valid JSON: %(error)s") % {"error": exc}, code="invalid_json") from None
        if not isinstance(value, dict):
            raise RowError(_("Each line must be one JSON object."), code="invalid_event")
        return value


class CsvEventsFile:
    """A CSV file of events (columns in the module docstring)."""

    def __init__(self, csv_file: CsvFile) -> None:
        self.file = csv_file
        self.names = header_names(csv_file.header, [PROP_PREFIX])
        check_header(self.names, CSV_COLUMNS, [PROP_PREFIX])
        missing = [c for c in REQUIRED_COLUMNS if c not in self.names]
        if missing:
            raise ValidationError(_("Missing column(s): %(columns)s.") % {"columns": ", ".join(missing)},
                                  code="missing_column", details={"columns": missing})
        if not any(n in MEMBER_COLUMNS and n not in ("wechat_appid", "member_external_system") for n in self.names):
            raise ValidationError(
                _("The file needs member_id or an identity column (phone, email, wechat_openid, wechat_unionid, "
                  "member_external_id)."), code="no_identity_column")

    def count(self) -> int:
        return self.file.count()

    def rows(self) -> Generator[SourceRow, None, None]:
        return self.file.rows()

    def event(self, src: SourceRow) -> dict[str, Any]:
        values = cells_by_name(self.names, src.cells)
        event: dict[str, Any] = {}
        if values.get("member_id"):
            event["member_id"] = values["member_id"]
        identities = []
        for column, kind, ns_column in _IDENTITY_COLUMNS:
            if values.get(column):
                identity = {"kind": kind, "value": values[column]}
                if ns_column and values.get(ns_column):
                    identity["namespace"] = values[ns_column]
                identities.append(identity)
        if identities:
            event["identities"] = identities
        for column in EVENT_COLUMNS:
            if values.get(column):
                event[column] = values[column]
        properties = {name[len(PROP_PREFIX):]: decode_property(value) for name, value in values.items()
                      if name.startswith(PROP_PREFIX) and value}
        if properties:
            event["properties"] = properties
        return event


def _is_jsonl(path: Path, filename: str, encoding: str) -> bool:
    suffix = Path(filename or path.name).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return True
    if suffix == ".csv":
        return False
    with path.open("r", encoding=encoding) as fh:
        for line in fh:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def open_interactions_file(workspace: Workspace, path: Path, encoding: str, *, filename: str, dry_run: bool,
                           actor: str) -> InteractionsProcessor:
    """Check an interactions file (format, columns) and return the processor that imports it."""
    source: EventSource
    if _is_jsonl(path, filename, encoding):
        source = JsonLinesFile(path, encoding)
    else:
        source = CsvEventsFile(CsvFile(path, encoding))
    return InteractionsProcessor(workspace, source, dry_run=dry_run, actor=actor)


# ---------------------------------------------------------------------------------------------
# processing


class InteractionsProcessor:
    chunk_rows = INTERACTION_CHUNK_ROWS

    def __init__(self, workspace: Workspace, source: EventSource, *, dry_run: bool, actor: str) -> None:
        self.workspace = workspace
        self.source = source
        self.actor = actor
        self.planner = InteractionPlanner(workspace) if dry_run else None

    def count(self) -> int:
        return self.source.count()

    def rows(self) -> Generator[SourceRow, None, None]:
        return self.source.rows()

    def process(self, rows: list[SourceRow]) -> list[RowOutcome]:
        outcomes: list[RowOutcome | None] = [None] * len(rows)
        events: list[dict[str, Any]] = []
        where: list[int] = []
        for i, src in enumerate(rows):
            try:
                events.append(self.source.event(src))
                where.append(i)
            except RowError as exc:
                outcomes[i] = error_outcome(src, code=exc.code, reason=exc.reason, field=exc.field)
        if events:
            if self.planner is not None:
                results = self.planner.predict(events)
            else:
                results = services.ingest_batch(self.workspace, events, actor=self.actor)
            for result, i in zip(results, where, strict=True):
                outcomes[i] = _outcome(rows[i], result)
        return [o for o in outcomes if o is not None]


def _outcome(src: SourceRow, result: services.RowResult) -> RowOutcome:
    if result.status == STATUS_ERROR:
        error = result.error or {}
        details = error.get("details")
        fld = details.get("field", "") if isinstance(details, Mapping) else ""
        return error_outcome(src, code=str(error.get("code", "error")), reason=str(error.get("message", "")),
                             field=str(fld or ""))
    status = STATUS_CREATED if result.status == STATUS_CREATED else STATUS_DUPLICATE
    return RowOutcome(row=src.row, line=src.line, status=status, member_id=result.member_id,
                      interaction_id=result.id)


class InteractionPlanner:
    """Predicts, without writing, what ``ingest_batch`` would answer for each chunk of a file: the
    same validation, the same duplicate rules (inside the chunk, against what is stored, and against
    what the earlier chunks of the file would have stored), the same member checks."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.touchpoints = dict(scoped(Touchpoint, workspace).values_list("code", "id"))
        self.created_keys: set[tuple[str, str]] = set()

    def predict(self, events: Sequence[Mapping[str, Any]]) -> list[services.RowResult]:
        ws = self.workspace
        triage = services.triage_batch(ws, events, pending_keys=self.created_keys)
        results, todo = triage.results, triage.todo
        valid_ids = member_queries.existing_ids(ws, {c.member_id for c in todo if c.member_id})
        for c in todo:
            try:
                if c.member_id:
                    if c.member_id not in valid_ids:
                        raise ValidationError(f"member {c.member_id} not found", code="unknown_member",
                                              details={"field": "member_id"})
                else:
                    services.identity_key(c)
                    members.clean_identities(ws, c.identities)
                    members.clean_profile(ws, c.profile)
            except ShequnError as exc:
                results[c.index] = services.RowResult(index=c.index, status=STATUS_ERROR, error=exc.as_dict())
                continue
            results[c.index] = services.RowResult(index=c.index, status=STATUS_CREATED, member_id=c.member_id)
            if c.external_id is not None:
                self.created_keys.add((c.source, c.external_id))
        return results


# ---------------------------------------------------------------------------------------------
# export


class _Writable(Protocol):
    def write(self, s: str, /) -> Any: ...


def _bound(value: Any, name: str) -> dt.datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        parsed: dt.datetime | None = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime.combine(value, dt.time(), tzinfo=timezone.get_default_timezone())
    else:
        parsed = parse_datetime(str(value).strip())
        if parsed is None:
            try:
                day = dt.date.fromisoformat(str(value).strip())
            except ValueError:
                raise ValidationError(_("%(name)s must be a date or an ISO 8601 date-time.") % {"name": name},
                                      code="invalid_time", details={"field": name}) from None
            parsed = dt.datetime.combine(day, dt.time(), tzinfo=timezone.get_default_timezone())
    assert parsed is not None
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.get_default_timezone())
    return parsed


def export_interactions_csv(workspace: Workspace, out: _Writable | IO[str], since: Any = None,
                            until: Any = None) -> int:
    """Write interactions with ``since <= occurred_at < until`` as CSV, oldest first, in the columns
    of the CSV import (``member_id``, the event columns and one ``prop:<name>`` column per property
    name found). Reads in keyset chunks; returns the number of rows. Dates without a time zone are
    read in the server's time zone."""
    import csv

    qs = scoped(Interaction, workspace)
    start, end = _bound(since, "since"), _bound(until, "until")
    if start is not None:
        qs = qs.filter(occurred_at__gte=start)
    if end is not None:
        qs = qs.filter(occurred_at__lt=end)

    names: set[str] = set()
    for chunk in _pages(qs, ("properties",), PROPERTY_SCAN_ROWS):
        for *_key, props in chunk:
            if isinstance(props, Mapping):
                names.update(str(k) for k in props)
    prop_names = sorted(names)

    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*EXPORT_COLUMNS, *(PROP_PREFIX + n for n in prop_names)])
    written = 0
    fields = ("member_id", "type", "channel", "direction", "touchpoint__code", "source", "external_id", "amount",
              "currency", "properties")
    for chunk in _pages(qs, fields, EXPORT_CHUNK_ROWS):
        for (occurred_at, _pk, member_id, itype, channel, direction, tp_code, source, external_id, amount, currency,
             props) in chunk:
            props = props if isinstance(props, Mapping) else {}
            row = [str(member_id), itype, channel, direction, tp_code or "", occurred_at.isoformat(), source,
                   external_id or "", "" if amount is None else str(amount), currency,
                   *(encode_property(props[n]) if n in props else "" for n in prop_names)]
            writer.writerow([escape_cell(v) for v in row])
            written += 1
    return written


def _pages(qs: QuerySet[Interaction], fields: Sequence[str], size: int) -> Iterator[list[tuple[Any, ...]]]:
    """Keyset pages of ``(occurred_at, pk, *fields)`` in time order. Each page starts with a plain
    ``occurred_at >= t`` bound, so the (workspace, occurred_at) index seeks straight to it."""
    cursor: tuple[dt.datetime, int] | None = None
    while True:
        page = qs
        if cursor is not None:
            at, pk = cursor
            page = qs.filter(occurred_at__gte=at).filter(Q(occurred_at__gt=at) | Q(occurred_at=at, pk__gt=pk))
        rows = list(page.order_by("occurred_at", "pk").values_list("occurred_at", "pk", *fields)[:size])
        if not rows:
            return
        yield rows
        cursor = (rows[-1][0], rows[-1][1])
