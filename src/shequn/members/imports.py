"""Bulk files: the import job machinery (members and interactions), the members CSV import, and the
members / interactions CSV exports.

An import is an ``ImportJob`` row plus the uploaded file, stored under ``DATA_DIR/imports``. The
work is done by :func:`run_import` (called by the ``members.tasks.run_import_job`` task, by the
``shequn import`` command and by tests). Every row goes through the domain write path
(``members.services`` for members, ``interactions.services.ingest_batch`` for interactions), in
chunks: each chunk is one transaction that also advances the job's counters, so the counters always
describe exactly what is committed, a poller sees progress after every chunk, and a job stopped half
way resumes after the last committed chunk.

A dry run writes nothing. It validates every row and predicts its outcome (created / updated /
unchanged / duplicate / error) by replaying the write path's decisions against what is stored plus
what the earlier rows of the same file would have written (see docs/import-export.md).
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date
from itertools import islice
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils.text import get_valid_filename
from django.utils.translation import gettext as _

from shequn.core.clock import now
from shequn.core.errors import Conflict, ShequnError, ValidationError
from shequn.core.models import Workspace
from shequn.core.tenancy import get_scoped, scoped

from . import services
from .models import (
    AttributeDefinition,
    Identity,
    IdentityKind,
    ImportJob,
    ImportKind,
    ImportStatus,
    Member,
    MemberKeyword,
    MemberStatus,
    MemberTag,
)
from .normalize import normalize_identity
from .queries import MemberFilter, filter_members

LinkModel = TypeVar("LinkModel", Identity, MemberTag, MemberKeyword)

MAX_IMPORT_BYTES = 200 * 1024 * 1024
MEMBER_CHUNK_ROWS = 500
MAX_STORED_ERRORS = 1000
EXPORT_CHUNK_ROWS = 1000
READ_BLOCK_BYTES = 1 << 20
ENCODINGS = ("utf-8-sig", "gb18030")
MULTI_SEPARATOR = "|"

IDENTITY_COLUMNS = ("phone", "email", "wechat_openid", "wechat_unionid", "external_id")
MEMBER_COLUMNS = (
    "phone", "email", "wechat_openid", "wechat_appid", "wechat_unionid", "external_id", "external_system",
    "name", "gender", "birthday", "city", "timezone", "language", "tags", "keywords", "source_channel",
    "source_code",
)
ATTR_PREFIX = "attr:"
# CSV column -> Member field given to upsert_member's profile.
PROFILE_COLUMNS = {
    "name": "display_name", "gender": "gender", "birthday": "birthday", "city": "city", "timezone": "timezone",
    "language": "language", "source_channel": "source_channel", "source_code": "source_code",
}
_FIELD_TO_COLUMN = {v: k for k, v in PROFILE_COLUMNS.items()}

STATUS_CREATED = "created"
STATUS_UPDATED = "updated"
STATUS_UNCHANGED = "unchanged"
STATUS_DUPLICATE = "duplicate"
STATUS_ERROR = "error"

ProgressCallback = Callable[[int, int], None]


# ---------------------------------------------------------------------------------------------
# rows, outcomes and reports


@dataclass(frozen=True)
class SourceRow:
    """One data row of a file: its 1-based number among the data rows, and the file line it starts on."""

    row: int
    line: int
    cells: Any


@dataclass(frozen=True)
class RowOutcome:
    """What happened (or, in a dry run, would happen) to one data row."""

    row: int
    line: int
    status: str
    member_id: int | None = None
    interaction_id: int | None = None
    field: str = ""
    code: str = ""
    reason: str = ""

    def error_entry(self) -> dict[str, Any]:
        return {"row": self.row, "line": self.line, "field": self.field, "code": self.code, "reason": self.reason}


class RowError(Exception):
    """A bad row found before it reaches the write path (the field is the file's column name)."""

    def __init__(self, reason: str, *, code: str, field: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.field = field


def error_outcome(src: SourceRow, *, code: str, reason: str, field: str = "") -> RowOutcome:
    return RowOutcome(row=src.row, line=src.line, status=STATUS_ERROR, field=field, code=code, reason=reason)


def outcome_from_shequn_error(src: SourceRow, exc: ShequnError, field_names: Mapping[str, str] | None = None) -> RowOutcome:
    details = exc.details if isinstance(exc.details, Mapping) else {}
    raw_field = str(details.get("field") or "")
    name = (field_names or {}).get(raw_field, raw_field)
    return error_outcome(src, code=exc.code, reason=exc.message, field=name)


@dataclass
class ImportReport:
    """The state of a job after :func:`run_import` (counts as stored on the job)."""

    job_id: int
    kind: str
    dry_run: bool
    status: str
    total_rows: int
    processed_rows: int
    created: int
    updated: int
    unchanged: int
    errors: int
    error_rows: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""

    @classmethod
    def from_job(cls, job: ImportJob) -> ImportReport:
        return cls(job_id=job.pk, kind=job.kind, dry_run=job.dry_run, status=job.status, total_rows=job.total_rows,
                   processed_rows=job.processed_rows, created=job.created_count, updated=job.updated_count,
                   unchanged=job.unchanged_count, errors=job.error_count, error_rows=list(job.errors),
                   message=job.message)

    @property
    def ok(self) -> bool:
        return self.status == ImportStatus.DONE and self.errors == 0


class Processor(Protocol):
    """One kind of import: how to count, read and process the rows of a validated file."""

    chunk_rows: int

    def count(self) -> int: ...

    def rows(self) -> Generator[SourceRow, None, None]: ...

    def process(self, rows: list[SourceRow]) -> list[RowOutcome]: ...


# ---------------------------------------------------------------------------------------------
# text files: encoding, CSV reading, cell escaping


def detect_encoding(blocks: Callable[[], Iterable[bytes]]) -> str:
    """Return the first of UTF-8 (with or without BOM) and GB18030 that decodes every byte."""
    for encoding in ENCODINGS:
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        try:
            for block in blocks():
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            continue
        return encoding
    raise ValidationError(_("The file is neither UTF-8 nor GB18030 text."), code="invalid_encoding")


def file_blocks(path: Path) -> Callable[[], Iterator[bytes]]:
    def blocks() -> Iterator[bytes]:
        with path.open("rb") as fh:
            while block := fh.read(READ_BLOCK_BYTES):
                yield block
    return blocks


def bytes_blocks(data: bytes) -> Callable[[], Iterator[bytes]]:
    view = memoryview(data)

    def blocks() -> Iterator[bytes]:
        for start in range(0, len(view), READ_BLOCK_BYTES):
            yield bytes(view[start:start + READ_BLOCK_BYTES])
    return blocks


def _blank(cells: Sequence[str]) -> bool:
    return not any(c.strip() for c in cells)


def _csv_records(path: Path, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (line the record starts on, cells) for every non-blank CSV record, header included."""
    with path.open("r", encoding=encoding, newline="") as fh:
        reader = csv.reader(fh)
        last_line = 0
        try:
            for cells in reader:
                start = last_line + 1
                last_line = reader.line_num
                if cells and not _blank(cells):
                    yield start, cells
        except csv.Error as exc:
            raise ValidationError(_("Line %(line)s is not valid CSV: %(error)s") % {"line": last_line + 1, "error": exc},
                                  code="invalid_csv") from None


class CsvFile:
    """A CSV file with a header row; blank records are skipped and not counted."""

    def __init__(self, path: Path, encoding: str) -> None:
        self.path = path
        self.encoding = encoding
        with closing(_csv_records(path, encoding)) as records:
            first = next(records, None)
        if first is None:
            raise ValidationError(_("The file is empty: a header row is needed."), code="empty_file")
        self.header_line, self.header = first

    def count(self) -> int:
        return sum(1 for _record in _csv_records(self.path, self.encoding)) - 1

    def rows(self) -> Generator[SourceRow, None, None]:
        records = _csv_records(self.path, self.encoding)
        next(records, None)
        for number, (line, cells) in enumerate(records, start=1):
            yield SourceRow(row=number, line=line, cells=cells)


def header_names(cells: Sequence[str], prefixes: Sequence[str]) -> list[str]:
    """Normalise header cells: trimmed, lower-case, except the part after a prefix such as ``prop:``
    (property names keep their case; attribute keys are lower-case slugs anyway)."""
    out = []
    for cell in cells:
        text = cell.replace("\ufeff", "").strip()
        lowered = text.lower()
        for prefix in prefixes:
            if lowered.startswith(prefix):
                text = prefix + text[len(prefix):].strip()
                break
        else:
            text = lowered
        out.append(text)
    return out


def check_header(names: Sequence[str], allowed: Sequence[str], prefixes: Sequence[str]) -> None:
    """Unknown and repeated columns are an error for the whole file, before any row is read."""
    unknown = [n for n in names if n and n not in allowed and not any(n.startswith(p) and len(n) > len(p) for p in prefixes)]
    if unknown:
        raise ValidationError(
            _("Unknown column(s): %(columns)s. Allowed columns: %(allowed)s.")
            % {"columns": ", ".join(unknown), "allowed": ", ".join([*allowed, *(p + "<name>" for p in prefixes)])},
            code="unknown_column", details={"columns": unknown})
    present = [n for n in names if n]
    repeated = sorted({n for n in present if present.count(n) > 1})
    if repeated:
        raise ValidationError(_("Repeated column(s): %(columns)s.") % {"columns": ", ".join(repeated)},
                              code="duplicate_column", details={"columns": repeated})


def cells_by_name(names: Sequence[str], cells: Sequence[str]) -> dict[str, str]:
    """Map column names to trimmed, unescaped cell values. A value under a column without a header,
    or past the last column, is a row error."""
    out: dict[str, str] = {}
    for i, cell in enumerate(cells):
        value = unescape_cell(cell.strip())
        name = names[i] if i < len(names) else ""
        if not name:
            if value:
                raise RowError(_("Value %(value)r is in column %(column)s, which has no header.")
                               % {"value": value[:50], "column": i + 1}, code="unnamed_column")
            continue
        out[name] = value
    return out


# Cells that a spreadsheet would read as a formula are written with a leading apostrophe, and the
# apostrophe is removed again on import, so an export round-trips and never runs as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def escape_cell(value: str) -> str:
    if value and (value[0] == "'" or (value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(value))):
        return "'" + value
    return value


def unescape_cell(value: str) -> str:
    if len(value) > 1 and value[0] == "'" and (value[1] == "'" or value[1:].startswith(_FORMULA_START)):
        return value[1:]
    return value


def split_multi(text: str) -> list[str]:
    return [part.strip() for part in text.split(MULTI_SEPARATOR) if part.strip()]


# ---------------------------------------------------------------------------------------------
# jobs


def _safe_name(filename: str) -> str:
    base = Path(str(filename).replace("\\", "/")).name
    try:
        name = get_valid_filename(base)
    except Exception:  # noqa: BLE001 - Django raises SuspiciousFileOperation for names like ".."
        name = ""
    return name[-120:] or "upload"


def _actor(job: ImportJob) -> str:
    return f"user:{job.created_by_id}" if job.created_by_id else f"task:import:{job.pk}"


def open_processor(job: ImportJob, workspace: Workspace, path: Path) -> Processor:
    """Check the file of ``job`` (encoding, header) and return the processor that imports it."""
    if not path.is_file():
        raise ValidationError(_("The uploaded file of import %(id)s is missing (%(path)s).") % {"id": job.pk, "path": path},
                              code="missing_file")
    encoding = detect_encoding(file_blocks(path))
    if job.kind == ImportKind.MEMBERS:
        return MembersProcessor(workspace, CsvFile(path, encoding), dry_run=job.dry_run, actor=_actor(job),
                                job_id=job.pk)
    if job.kind == ImportKind.INTERACTIONS:
        from shequn.interactions import files

        return files.open_interactions_file(workspace, path, encoding, filename=job.filename, dry_run=job.dry_run,
                                            actor=_actor(job))
    raise ValidationError(_("Unknown import kind %(kind)r.") % {"kind": job.kind}, code="invalid_kind")


def create_import_job(workspace: Workspace, kind: str, filename: str, data: bytes, *, dry_run: bool,
                      user: AbstractBaseUser | None = None, enqueue: bool = True) -> ImportJob:
    """Store an uploaded file and create its job; the job runs in the background after commit.

    The file is checked at once (size, encoding, columns), so an unusable file is refused here rather
    than failing later. ``enqueue=False`` leaves the job for the caller to run (the CLI runs it in
    process with :func:`run_import`)."""
    from .tasks import run_import_job

    if kind not in ImportKind.values:
        raise ValidationError(_("kind must be one of %(kinds)s") % {"kinds": ", ".join(ImportKind.values)},
                              code="invalid_kind", details={"field": "kind"})
    if len(data) > MAX_IMPORT_BYTES:
        raise ValidationError(_("The file is larger than %(mb)s MB; split it into smaller files.")
                              % {"mb": MAX_IMPORT_BYTES // (1024 * 1024)}, code="file_too_large")
    if not data.strip():
        raise ValidationError(_("The file is empty."), code="empty_file")
    safe = _safe_name(filename)
    folder = Path(settings.DATA_DIR) / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    path: Path | None = None
    try:
        with transaction.atomic():
            job = ImportJob.objects.create(workspace=workspace, kind=kind, filename=str(filename)[:255] or safe,
                                           file_path="", dry_run=bool(dry_run), created_by=user)
            path = folder / f"{job.pk}-{safe}"
            path.write_bytes(data)
            open_processor(job, workspace, path)  # refuses a bad file before the job is committed
            job.file_path = str(path)
            job.save(update_fields=["file_path"])
            if enqueue:
                from shequn.core.tasks import enqueue_on_commit

                enqueue_on_commit(run_import_job, job.pk)
    except BaseException:
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    return job


def resume_import_job(workspace: Workspace, job_id: int, *, enqueue: bool = True) -> ImportJob:
    """Queue again a job that a stopped worker left running, or that failed: a real import continues
    after its last committed chunk, a dry run starts over. A finished job is not run again."""
    from .tasks import run_import_job

    with transaction.atomic():
        job = get_scoped(ImportJob, workspace, job_id, for_update=True)
        if job.status == ImportStatus.DONE:
            raise Conflict(_("Import %(id)s is already done.") % {"id": job.pk}, code="import_done")
        job.status = ImportStatus.QUEUED
        job.message = ""
        job.finished_at = None
        job.save(update_fields=["status", "message", "finished_at"])
        if enqueue:
            from shequn.core.tasks import enqueue_on_commit

            enqueue_on_commit(run_import_job, job.pk)
    return job


def _fail(job_id: int, message: str) -> None:
    ImportJob.objects.filter(pk=job_id).exclude(status=ImportStatus.DONE).update(
        status=ImportStatus.FAILED, message=message[:5000], finished_at=now())


def _skip(source: Iterator[SourceRow], count: int) -> None:
    for _row in islice(source, count):
        pass


def run_import(job: ImportJob, progress: ProgressCallback | None = None, *,
               on_row: Callable[[RowOutcome], None] | None = None, chunk_rows: int | None = None) -> ImportReport:
    """Run (or resume) ``job`` and return its report.

    ``progress(processed, total)`` is called once the rows are counted and after every committed
    chunk; ``on_row(outcome)`` receives the outcome of every row processed by this call, after its
    chunk is committed. A job that is done or failed is not run again (see resume_import_job).
    A file that cannot be imported at all marks the job failed and raises ValidationError."""
    job_id = job.pk
    claimed = ImportJob.objects.filter(pk=job_id, status__in=[ImportStatus.QUEUED, ImportStatus.RUNNING]) \
        .update(status=ImportStatus.RUNNING)
    job = ImportJob.objects.select_related("workspace").get(pk=job_id)
    if not claimed:
        return ImportReport.from_job(job)
    workspace = job.workspace
    try:
        processor = open_processor(job, workspace, Path(job.file_path))
        total = processor.count()
    except ShequnError as exc:
        _fail(job_id, exc.message)
        raise
    except Exception as exc:
        _fail(job_id, _("The file could not be read: %(error)s") % {"error": exc})
        raise
    if job.dry_run:
        # A dry run keeps its predictions in memory, so it always starts from the first row and
        # writes absolute counts: running it twice, even at once, ends with the same report.
        ImportJob.objects.filter(pk=job_id).update(total_rows=total, processed_rows=0, created_count=0,
                                                    updated_count=0, unchanged_count=0, error_count=0, errors=[],
                                                    message="")
    else:
        ImportJob.objects.filter(pk=job_id).update(total_rows=total)
    size = max(1, chunk_rows or processor.chunk_rows)
    source: Generator[SourceRow, None, None] = processor.rows()
    position = 0
    dry_counts = {"processed": 0, STATUS_CREATED: 0, STATUS_UPDATED: 0, STATUS_UNCHANGED: 0, STATUS_ERROR: 0}
    dry_errors: list[dict[str, Any]] = []
    if progress:
        start = 0 if job.dry_run else min(job.processed_rows, total)
        progress(start, total)
    try:
        while True:
            with transaction.atomic():
                locked = ImportJob.objects.select_for_update().get(pk=job_id)
                if locked.status != ImportStatus.RUNNING:
                    break  # another runner of the same job finished it
                offset = dry_counts["processed"] if job.dry_run else locked.processed_rows
                if offset < position:
                    source, position = processor.rows(), 0
                _skip(source, offset - position)
                position = offset
                batch = list(islice(source, size))
                position += len(batch)
                outcomes = processor.process(batch) if batch else []
                finished = not batch or offset + len(batch) >= total
                _record(locked, outcomes, offset + len(batch), dry_counts, dry_errors, finished=finished)
            if on_row:
                for outcome in outcomes:
                    on_row(outcome)
            if progress and batch:
                progress(min(offset + len(batch), total), total)
            if finished:
                break
    except BaseException as exc:
        reached = ImportJob.objects.filter(pk=job_id).values_list("processed_rows", flat=True).first() or 0
        how = _("Run the dry run again.") if job.dry_run else _("Resume the import to continue from there.")
        reason = _("interrupted") if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        _fail(job_id, _("Stopped after row %(row)s (%(reason)s). %(how)s") % {"row": reached, "reason": reason, "how": how})
        raise
    finally:
        source.close()
    return ImportReport.from_job(ImportJob.objects.get(pk=job_id))


def _count_key(status: str) -> str:
    return STATUS_UNCHANGED if status == STATUS_DUPLICATE else status


def _record(job: ImportJob, outcomes: list[RowOutcome], processed: int, dry_counts: dict[str, int],
            dry_errors: list[dict[str, Any]], *, finished: bool) -> None:
    """Write the counters of one chunk onto the locked job row (inside the chunk's transaction)."""
    if job.dry_run:
        dry_counts["processed"] = processed
        for o in outcomes:
            dry_counts[_count_key(o.status)] += 1
            if o.status == STATUS_ERROR and len(dry_errors) < MAX_STORED_ERRORS:
                dry_errors.append(o.error_entry())
        job.processed_rows = processed
        job.created_count = dry_counts[STATUS_CREATED]
        job.updated_count = dry_counts[STATUS_UPDATED]
        job.unchanged_count = dry_counts[STATUS_UNCHANGED]
        job.error_count = dry_counts[STATUS_ERROR]
        job.errors = list(dry_errors)
    else:
        counts = {STATUS_CREATED: 0, STATUS_UPDATED: 0, STATUS_UNCHANGED: 0, STATUS_ERROR: 0}
        for o in outcomes:
            counts[_count_key(o.status)] += 1
        job.processed_rows = processed
        job.created_count += counts[STATUS_CREATED]
        job.updated_count += counts[STATUS_UPDATED]
        job.unchanged_count += counts[STATUS_UNCHANGED]
        job.error_count += counts[STATUS_ERROR]
        room = MAX_STORED_ERRORS - len(job.errors)
        if room > 0:
            job.errors = [*job.errors, *[o.error_entry() for o in outcomes if o.status == STATUS_ERROR][:room]]
    fields = ["processed_rows", "created_count", "updated_count", "unchanged_count", "error_count", "errors"]
    if finished:
        job.status = ImportStatus.DONE
        job.finished_at = now()
        job.message = ""
        fields += ["status", "finished_at", "message"]
    job.save(update_fields=fields)


# ---------------------------------------------------------------------------------------------
# members CSV


IdentityKey = tuple[str, str, str]


@dataclass
class MemberRow:
    identities: list[services.IdentityRef]
    profile: dict[str, Any]
    attributes: dict[str, Any]
    tags: list[str]
    keywords: list[str]

    @property
    def keys(self) -> list[IdentityKey]:
        return [(r.kind, r.namespace, r.value) for r in self.identities]


def _paired_namespaces(values: list[str], raw_namespaces: str, value_column: str, ns_column: str) -> list[str]:
    namespaces = [part.strip() for part in raw_namespaces.split(MULTI_SEPARATOR)] if raw_namespaces else []
    if not namespaces:
        namespaces = [""] * len(values)
    elif len(namespaces) == 1:
        namespaces = namespaces * len(values)
    elif len(namespaces) != len(values):
        raise RowError(_("%(ns)s must hold one value, or one for each value of %(col)s (separated by |).")
                       % {"ns": ns_column, "col": value_column}, code="invalid_field", field=ns_column)
    for ns in namespaces:
        if len(ns) > 64:
            raise RowError(_("%(ns)s is longer than 64 characters.") % {"ns": ns_column}, code="invalid_field",
                           field=ns_column)
    return namespaces


def _identity_refs(workspace: Workspace, values: Mapping[str, str]) -> list[services.IdentityRef]:
    refs: list[services.IdentityRef] = []
    specs = [
        ("phone", IdentityKind.PHONE, None),
        ("email", IdentityKind.EMAIL, None),
        ("wechat_openid", IdentityKind.WECHAT_OPENID, "wechat_appid"),
        ("wechat_unionid", IdentityKind.WECHAT_UNIONID, None),
        ("external_id", IdentityKind.EXTERNAL, "external_system"),
    ]
    for column, kind, ns_column in specs:
        items = split_multi(values.get(column, ""))
        if not items:
            continue
        namespaces = (_paired_namespaces(items, values.get(ns_column, ""), column, ns_column) if ns_column
                      else [""] * len(items))
        for item, ns in zip(items, namespaces, strict=True):
            try:
                value = normalize_identity(kind, item, workspace.default_country)
            except ShequnError as exc:
                raise RowError(exc.message, code=exc.code, field=column) from None
            ref = services.IdentityRef(kind=kind, value=value, namespace=ns)
            if ref not in refs:
                refs.append(ref)
    return refs


def _keyword_path(raw: str) -> str:
    parts = [services.clean_name(p, "keyword") for p in raw.split("/") if p.strip()]
    if not parts:
        raise ValidationError(_("invalid keyword path %(path)r") % {"path": raw}, code="invalid_keyword")
    path = "/".join(parts)
    if len(path) > 512:
        raise ValidationError(_("keyword path is longer than 512 characters"), code="invalid_keyword")
    return path


def of_members(model: type[LinkModel], workspace: Workspace, member_ids: Iterable[int]) -> QuerySet[LinkModel]:
    """Rows of a per-member table (identities, tag and keyword links) of ``member_ids``, scoped through
    the member's workspace. Scoping on the member (a primary-key join) rather than on the table's own
    ``workspace_id`` keeps SQLite, which has no statistics, seeking by member instead of scanning the
    workspace's whole index: the cost stays per member, whatever the size of the workspace."""
    ids = list(member_ids)
    return model._default_manager.filter(member__workspace=workspace, member_id__in=ids)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


class MembersProcessor:
    """Imports members CSV rows through upsert_member + add_tags + add_keywords, or predicts them."""

    chunk_rows = MEMBER_CHUNK_ROWS

    def __init__(self, workspace: Workspace, csv_file: CsvFile, *, dry_run: bool, actor: str, job_id: int) -> None:
        self.workspace = workspace
        self.file = csv_file
        self.dry_run = dry_run
        self.actor = actor
        self.reason = f"identities listed in one row of import {job_id}"
        self.names = header_names(csv_file.header, [ATTR_PREFIX])
        check_header(self.names, MEMBER_COLUMNS, [ATTR_PREFIX])
        if not any(n in IDENTITY_COLUMNS for n in self.names):
            raise ValidationError(
                _("The file needs at least one identity column: %(columns)s.") % {"columns": ", ".join(IDENTITY_COLUMNS)},
                code="no_identity_column")
        keys = [n[len(ATTR_PREFIX):] for n in self.names if n.startswith(ATTR_PREFIX)]
        self.definitions = {d.key: d for d in scoped(AttributeDefinition, workspace).filter(key__in=keys)}
        self.planner = MemberPlanner(workspace) if dry_run else None

    def count(self) -> int:
        return self.file.count()

    def rows(self) -> Generator[SourceRow, None, None]:
        return self.file.rows()

    # -- parsing ------------------------------------------------------------------------------

    def parse(self, src: SourceRow) -> MemberRow:
        values = cells_by_name(self.names, src.cells)
        refs = _identity_refs(self.workspace, values)
        if not refs:
            raise RowError(_("A row needs at least one identity: %(columns)s.") % {"columns": ", ".join(IDENTITY_COLUMNS)},
                           code="no_identity")
        raw_profile = {fld: values[col] for col, fld in PROFILE_COLUMNS.items() if values.get(col)}
        try:
            profile = services.clean_profile(self.workspace, raw_profile)
        except ShequnError as exc:
            details = exc.details if isinstance(exc.details, Mapping) else {}
            column = _FIELD_TO_COLUMN.get(str(details.get("field") or ""), "")
            raise RowError(exc.message, code=exc.code, field=column) from None
        attributes: dict[str, Any] = {}
        for name, raw in values.items():
            if not name.startswith(ATTR_PREFIX) or not raw:
                continue
            key = name[len(ATTR_PREFIX):]
            definition = self.definitions.get(key)
            if definition is None:
                raise RowError(_("unknown attribute %(key)r") % {"key": key}, code="unknown_attribute", field=name)
            try:
                attributes[key] = services.convert_attribute(definition, raw)
            except (ValueError, ArithmeticError, TypeError):
                raise RowError(_("attribute %(key)r expects %(type)s, got %(value)r")
                               % {"key": key, "type": definition.type, "value": raw}, code="invalid_attribute",
                               field=name) from None
        try:
            tags = _unique(services.clean_name(t, "tag") for t in split_multi(values.get("tags", "")))
        except ShequnError as exc:
            raise RowError(exc.message, code=exc.code, field="tags") from None
        try:
            keywords = _unique(_keyword_path(k) for k in split_multi(values.get("keywords", "")))
        except ShequnError as exc:
            raise RowError(exc.message, code=exc.code, field="keywords") from None
        return MemberRow(identities=refs, profile=profile, attributes=attributes, tags=tags, keywords=keywords)

    # -- processing ---------------------------------------------------------------------------

    def process(self, rows: list[SourceRow]) -> list[RowOutcome]:
        parsed: list[tuple[SourceRow, MemberRow | RowOutcome]] = []
        for src in rows:
            try:
                parsed.append((src, self.parse(src)))
            except RowError as exc:
                parsed.append((src, error_outcome(src, code=exc.code, reason=exc.reason, field=exc.field)))
        if self.planner is not None:
            self.planner.prefetch([p for _src, p in parsed if isinstance(p, MemberRow)])
        out: list[RowOutcome] = []
        for src, item in parsed:
            if isinstance(item, RowOutcome):
                out.append(item)
            elif self.planner is not None:
                status, member_id = self.planner.apply(item)
                out.append(RowOutcome(row=src.row, line=src.line, status=status, member_id=member_id))
            else:
                out.append(self._write(src, item))
        return out

    def _write(self, src: SourceRow, row: MemberRow) -> RowOutcome:
        ws = self.workspace
        try:
            with transaction.atomic():
                result = services.upsert_member(ws, row.identities, row.profile, row.attributes, overwrite=True,
                                                actor=self.actor, reason=self.reason)
                member_id = result.member.pk
                changed = result.created or result.changed
                # Only the tags and keywords the member lacks are added, so that a re-run changes nothing
                # and leaves no audit entry (a member created just now has none yet).
                missing_tags, missing_keywords = row.tags, row.keywords
                if row.tags and not result.created:
                    have = set(of_members(MemberTag, ws, [member_id]).filter(tag__name__in=row.tags)
                               .values_list("tag__name", flat=True))
                    missing_tags = [t for t in row.tags if t not in have]
                if row.keywords and not result.created:
                    have = set(of_members(MemberKeyword, ws, [member_id]).filter(keyword__path__in=row.keywords)
                               .values_list("keyword__path", flat=True))
                    missing_keywords = [k for k in row.keywords if k not in have]
                if missing_tags:
                    services.add_tags(ws, member_id, missing_tags, actor=self.actor)
                    changed = True
                if missing_keywords:
                    services.add_keywords(ws, member_id, missing_keywords, actor=self.actor)
                    changed = True
        except ShequnError as exc:
            names = {**_FIELD_TO_COLUMN, **{k: ATTR_PREFIX + k for k in row.attributes}}
            return outcome_from_shequn_error(src, exc, names)
        status = STATUS_CREATED if result.created else STATUS_UPDATED if changed else STATUS_UNCHANGED
        return RowOutcome(row=src.row, line=src.line, status=status, member_id=member_id)


_VIRTUAL_BASE = 1 << 62  # keys of members a dry run would create: newer (greater) than any stored id


_SHARED_FIELDS = ("gender", "city", "timezone", "language", "source_channel", "source_code")


class _PlannedMember:
    """The profile, attributes, tags and keywords of one member as a dry run sees it. Small on
    purpose: a dry run keeps one per member it meets (see docs/import-export.md)."""

    __slots__ = (*services.PROFILE_FIELDS, *services.SOURCE_FIELDS, "attributes", "tags", "keywords")

    def __init__(self, profile: Mapping[str, Any], attributes: dict[str, Any], tags: tuple[str, ...],
                 keywords: tuple[str, ...]) -> None:
        for key in (*services.PROFILE_FIELDS, *services.SOURCE_FIELDS):
            setattr(self, key, profile.get(key, None if key == "birthday" else ""))
        self.attributes = attributes
        self.tags = tags
        self.keywords = keywords


def _identity_key(key: IdentityKey) -> str:
    return "\x1f".join(key)


class MemberPlanner:
    """Predicts, without writing, what upsert_member + add_tags + add_keywords would do to each row
    of a file, given what is stored and what the earlier rows of the file would have written: the
    same identity lookup, the same merge of several matching members into the oldest, the same
    profile rules (``services.apply_profile``), the same tag and keyword links."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        # identity -> member key, for every identity met so far (stored, or that the run would add)
        self.owner: dict[str, int] = {}
        self.alias: dict[int, int] = {}  # merged member key -> the key it was merged into
        self.members: dict[int, _PlannedMember] = {}
        self.next_key = _VIRTUAL_BASE
        self._strings: dict[str, str] = {}  # one copy of each repeated text (tags, cities …)

    def _shared(self, text: str) -> str:
        return self._strings.setdefault(text, text)

    def _resolve(self, key: int) -> int:
        while key in self.alias:
            key = self.alias[key]
        return key

    def prefetch(self, rows: Sequence[MemberRow]) -> None:
        """Look up, in a few queries, the stored owners of this chunk's new identities and load them.
        Every identity of an applied row is in ``owner`` afterwards, so each is looked up once."""
        wanted = {_identity_key(k): k for row in rows for k in row.keys if _identity_key(k) not in self.owner}
        values = sorted({k[2] for k in wanted.values()})
        found: set[int] = set()
        for start in range(0, len(values), 500):
            for mid, kind, ns, value in scoped(Identity, self.workspace).filter(value__in=values[start:start + 500]) \
                    .values_list("member_id", "kind", "namespace", "value"):
                key = _identity_key((kind, ns, value))
                if key in wanted:
                    self.owner[key] = mid
                    found.add(self._resolve(mid))
        self._load(found)

    def _load(self, ids: set[int]) -> None:
        ids = {i for i in ids if i not in self.members and i < _VIRTUAL_BASE}
        if not ids:
            return
        fields = (*services.PROFILE_FIELDS, *services.SOURCE_FIELDS)
        tags: dict[int, list[str]] = {i: [] for i in ids}
        keywords: dict[int, list[str]] = {i: [] for i in ids}
        for mid, name in of_members(MemberTag, self.workspace, ids).values_list("member_id", "tag__name"):
            tags[mid].append(self._shared(name))
        for mid, path in of_members(MemberKeyword, self.workspace, ids).values_list("member_id", "keyword__path"):
            keywords[mid].append(self._shared(path))
        for values in scoped(Member, self.workspace).filter(pk__in=ids).values("pk", "attributes", *fields):
            pk = values.pop("pk")
            attributes = dict(values.pop("attributes") or {})
            self.members[pk] = _PlannedMember(values, attributes, tuple(tags[pk]), tuple(keywords[pk]))

    def _merge(self, survivor_key: int, absorbed_key: int) -> None:
        s, a = self.members[survivor_key], self.members[absorbed_key]
        for key in (*services.PROFILE_FIELDS, *services.SOURCE_FIELDS):
            if getattr(s, key) in (None, "") and getattr(a, key) not in (None, ""):
                setattr(s, key, getattr(a, key))
        s.attributes.update({k: v for k, v in a.attributes.items() if s.attributes.get(k) in (None, "")})
        s.tags = (*s.tags, *(t for t in a.tags if t not in s.tags))
        s.keywords = (*s.keywords, *(k for k in a.keywords if k not in s.keywords))
        self.alias[absorbed_key] = survivor_key
        del self.members[absorbed_key]

    def apply(self, row: MemberRow) -> tuple[str, int | None]:
        keys = [_identity_key(k) for k in row.keys]
        owners: list[int] = []
        for k in keys:
            if k in self.owner:
                key = self._resolve(self.owner[k])
                if key not in owners:
                    owners.append(key)
        profile = {f: self._shared(v) if f in _SHARED_FIELDS and isinstance(v, str) else v
                   for f, v in row.profile.items()}
        tags = tuple(self._shared(t) for t in row.tags)
        keywords = tuple(self._shared(k) for k in row.keywords)
        if not owners:
            key = self.next_key
            self.next_key += 1
            self.members[key] = _PlannedMember(profile, {k: v for k, v in row.attributes.items() if v is not None},
                                               tags, keywords)
            for k in keys:
                self.owner[k] = key
            return STATUS_CREATED, None
        owners.sort()
        survivor_key = owners[0]
        survivor = self.members[survivor_key]
        changed = len(owners) > 1
        for other in owners[1:]:
            self._merge(survivor_key, other)
        for k in keys:
            if k not in self.owner:
                self.owner[k] = survivor_key
                changed = True
        changed |= services.apply_profile(survivor, profile, row.attributes, overwrite=True)  # type: ignore[arg-type]
        new_tags = tuple(t for t in tags if t not in survivor.tags)
        new_keywords = tuple(k for k in keywords if k not in survivor.keywords)
        if new_tags or new_keywords:
            survivor.tags += new_tags
            survivor.keywords += new_keywords
            changed = True
        status = STATUS_UPDATED if changed else STATUS_UNCHANGED
        return status, survivor_key if survivor_key < _VIRTUAL_BASE else None


# ---------------------------------------------------------------------------------------------
# exports


class _Writable(Protocol):
    def write(self, s: str, /) -> Any: ...


def member_export_columns(workspace: Workspace) -> list[str]:
    keys = scoped(AttributeDefinition, workspace).order_by("key").values_list("key", flat=True)
    return [*MEMBER_COLUMNS, *(ATTR_PREFIX + k for k in keys)]


def _attribute_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _namespace_cell(namespaces: list[str]) -> str:
    if not namespaces or all(ns == namespaces[0] for ns in namespaces):
        return namespaces[0] if namespaces else ""
    return MULTI_SEPARATOR.join(namespaces)


def _identity_values(idents: Mapping[str, list[tuple[str, str]]], kind: str) -> str:
    return MULTI_SEPARATOR.join(value for value, _ns in idents.get(kind, []))


def _identity_namespaces(idents: Mapping[str, list[tuple[str, str]]], kind: str) -> str:
    return _namespace_cell([ns for _value, ns in idents.get(kind, [])])


def export_members_csv(workspace: Workspace, out: _Writable | IO[str],
                       filters: MemberFilter | Mapping[str, Any] | None = None) -> int:
    """Write the workspace's active members (optionally filtered) as CSV with the import's columns,
    so that the file imports back unchanged. Reads in keyset chunks; returns the number of rows."""
    if filters is None:
        qs = scoped(Member, workspace).filter(status=MemberStatus.ACTIVE)
    else:
        qs = filter_members(workspace, filters if isinstance(filters, MemberFilter) else MemberFilter(**filters))
    columns = member_export_columns(workspace)
    attr_keys = [c[len(ATTR_PREFIX):] for c in columns if c.startswith(ATTR_PREFIX)]
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    fields = ("display_name", "gender", "birthday", "city", "timezone", "language", "source_channel", "source_code")
    last = 0
    written = 0
    while True:
        chunk = list(qs.filter(pk__gt=last).order_by("pk").values("pk", "attributes", *fields)[:EXPORT_CHUNK_ROWS])
        if not chunk:
            return written
        ids = [m["pk"] for m in chunk]
        last = ids[-1]
        identities: dict[int, dict[str, list[tuple[str, str]]]] = {i: {} for i in ids}
        for mid, kind, ns, value in of_members(Identity, workspace, ids).order_by("pk") \
                .values_list("member_id", "kind", "namespace", "value"):
            identities[mid].setdefault(kind, []).append((value, ns))
        tags: dict[int, list[str]] = {i: [] for i in ids}
        for mid, name in of_members(MemberTag, workspace, ids).values_list("member_id", "tag__name"):
            tags[mid].append(name)
        keywords: dict[int, list[str]] = {i: [] for i in ids}
        for mid, path in of_members(MemberKeyword, workspace, ids).values_list("member_id", "keyword__path"):
            keywords[mid].append(path)
        for m in chunk:
            idents = identities[m["pk"]]
            birthday = m["birthday"]
            row = [
                _identity_values(idents, IdentityKind.PHONE), _identity_values(idents, IdentityKind.EMAIL),
                _identity_values(idents, IdentityKind.WECHAT_OPENID),
                _identity_namespaces(idents, IdentityKind.WECHAT_OPENID),
                _identity_values(idents, IdentityKind.WECHAT_UNIONID),
                _identity_values(idents, IdentityKind.EXTERNAL), _identity_namespaces(idents, IdentityKind.EXTERNAL),
                m["display_name"], m["gender"], birthday.isoformat() if isinstance(birthday, date) else "",
                m["city"], m["timezone"], m["language"],
                MULTI_SEPARATOR.join(sorted(tags[m["pk"]])), MULTI_SEPARATOR.join(sorted(keywords[m["pk"]])),
                m["source_channel"], m["source_code"],
                *(_attribute_cell((m["attributes"] or {}).get(k)) for k in attr_keys),
            ]
            writer.writerow([escape_cell(str(v)) for v in row])
            written += 1


def export_interactions_csv(workspace: Workspace, out: _Writable | IO[str], since: Any = None,
                            until: Any = None) -> int:
    """Write the workspace's interactions as CSV in the interactions import's columns (see
    ``shequn.interactions.files.export_interactions_csv``)."""
    from shequn.interactions import files

    return files.export_interactions_csv(workspace, out, since=since, until=until)
