"""Per-process caches of per-workspace settings, kept current by version rows (ADR 0015).

Settings that the hot paths read for every message (stage rules, webhook subscriptions, keyword
rules, touchpoints …) change rarely. Each domain keeps them in a :class:`VersionedCache`: a small
per-process LRU of ``workspace id → (version, value)``. The version is a row of the domain's own
version table (``workspace`` primary key, ``version`` column) that every edit of those settings
changes **in the same transaction** (:func:`bump`). A reader first reads the current version, then
loads the value only when its copy carries another version, so a change committed by any process is
seen by the next message every process handles, and a concurrent change can at worst cause one
needless reload — never an old value kept under a new version.

Versions of every registered domain are read together: :func:`versions` reads them all with one
query (one scalar subquery per domain, its SQL built once per process), and inside a :func:`scope`
(a request, an ``ingest_batch``) that read is made once per workspace. :func:`bump` forgets the
scope's versions of the workspace, so a write followed by a read in the same scope sees its own
change.

New version values are random (not ``+ 1``): a value written by a transaction that rolls back is
never written again by another, so a cache entry loaded inside a rolled-back transaction can never
be mistaken for a committed state."""

from __future__ import annotations

import contextlib
import contextvars
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from django.db import IntegrityError, models, transaction

T = TypeVar("T")

_sources: dict[str, tuple[type[models.Model], tuple[str, ...]]] = {}
_scope: contextvars.ContextVar[dict[int, dict[str, Any]] | None] = contextvars.ContextVar("shequn_versions",
                                                                                       default=None)
_CREATED = ""  # the key of the workspace's created_at among the versions


def register(name: str, model: type[models.Model], fields: tuple[str, ...] = ("version",)) -> None:
    """Declare ``model`` (one row per workspace, ``workspace`` as primary key or unique) as the
    version source ``name``. Call from an AppConfig.ready()."""
    _sources[name] = (model, tuple(fields))


def new_version() -> int:
    return secrets.randbits(62)


def bump(model: type[models.Model], workspace_id: int, field: str = "version") -> int:
    """Give the workspace's version row of ``model`` a new random value (creating the row on first
    use), in the caller's transaction, and return it. The row lock it takes serialises edits."""
    value = new_version()
    if not model._default_manager.filter(workspace_id=workspace_id).update(**{field: value}):
        try:
            with transaction.atomic():
                model._default_manager.create(workspace_id=workspace_id, **{field: value})
        except IntegrityError:  # created by a concurrent first edit: change it
            model._default_manager.filter(workspace_id=workspace_id).update(**{field: value})
    forget(workspace_id)
    return value


def version_columns(outer_workspace_id: str) -> list[str]:
    """SQL expressions reading every registered version, one scalar subquery per column, for the
    workspace whose id is ``outer_workspace_id`` — ``%s`` (a parameter) or a quoted column of an outer
    query. Another query that selects them reads the versions with its own row (:func:`prime`).
    Only quoted table and column names of the models go into the text."""
    from django.db import connection

    qn = connection.ops.quote_name
    parts = []
    for model, fields in _sources.values():
        ws_column = qn(model._meta.get_field("workspace").column)
        table = qn(model._meta.db_table)
        for f in fields:
            column = qn(model._meta.get_field(f).column)
            parts.append(f"(SELECT {column} FROM {table} WHERE {ws_column} = {outer_workspace_id})")  # noqa: S608
    return parts


def version_fields() -> list[Any]:
    """The model fields of :func:`version_columns`, in their order (for the types of a statement that
    compares versions it read earlier)."""
    return [model._meta.get_field(f) for model, fields in _sources.values() for f in fields]


def sources_key() -> tuple[Any, ...]:
    """Changes when a version source is registered: the key of SQL built from :func:`version_columns`."""
    return tuple((n, m, f) for n, (m, f) in _sources.items())


def _versions_sql() -> tuple[str, int]:
    """The one query that reads every registered version of a workspace (and its creation time):
    built once per process from the models' table and column names, so a message pays for running
    it, not for the ORM compiling it. Returns the SQL and how many times it takes the workspace id."""
    from django.db import connection

    from shequn.core.models import Workspace

    key = (connection.vendor, sources_key())
    cached = _sql_cache.get(key)
    if cached is not None:
        return cached
    qn = connection.ops.quote_name
    parts = [qn(Workspace._meta.get_field("created_at").column), *version_columns("%s")]
    # Only quoted table and column names from the models go into the text; the id is a parameter.
    sql = f"SELECT {', '.join(parts)} FROM {qn(Workspace._meta.db_table)} WHERE {qn(Workspace._meta.pk.column)} = %s"  # noqa: S608
    built = (sql, sql.count("%s"))
    _sql_cache[key] = built
    return built


_sql_cache: dict[Any, tuple[str, int]] = {}


def forget(workspace_id: int) -> None:
    memo = _scope.get()
    if memo is not None:
        memo.pop(workspace_id, None)


def _found(row: Any) -> dict[str, Any]:
    """The versions of a row ``(created_at, *values of version_columns())``, or of no row."""
    found: dict[str, Any] = {_CREATED: None}
    values = iter(row[1:] if row else ())
    for name, (_model, fields) in _sources.items():
        got = tuple(next(values, None) for _f in fields)
        found[name] = None if all(v is None for v in got) else (got[0] if len(got) == 1 else got)
    if row:
        found[_CREATED] = row[0]
    return found


def prime(workspace_id: int, created_at: Any, values: Any) -> None:
    """Keep, in the current :func:`scope`, the versions of the workspace that another query read with
    :func:`version_columns` (``values`` in their order) — that query's read counts as this scope's one
    read. Outside a scope nothing is kept."""
    memo = _scope.get()
    if memo is not None:
        memo[workspace_id] = _found((created_at, *values))


def versions(workspace_id: int) -> dict[str, Any]:
    """The current version of every registered source for the workspace (None: no row yet), and the
    workspace's creation time: one query, made once per workspace inside a :func:`scope`."""
    memo = _scope.get()
    if memo is not None and workspace_id in memo:
        return memo[workspace_id]
    from django.db import connection

    sql, n = _versions_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, [workspace_id] * n)
        row = cursor.fetchone()
    found = _found(row)
    if memo is not None:
        memo[workspace_id] = found
    return found


def version(name: str, workspace_id: int) -> Any:
    return versions(workspace_id).get(name)


@contextlib.contextmanager
def scope() -> Iterator[None]:
    """Read the versions of a workspace at most once until the block ends (nested scopes share the
    outer one). Use around one unit of work: a request, a batch of interactions."""
    if _scope.get() is not None:
        yield
        return
    token = _scope.set({})
    try:
        yield
    finally:
        _scope.reset(token)


class VersionedCache(Generic[T]):
    """A per-process LRU of one value per workspace, valid for one version of the source ``name``."""

    def __init__(self, name: str, size: int = 512) -> None:
        self.name = name
        self.size = size
        self._data: OrderedDict[int, tuple[Any, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, workspace_id: int, load: Callable[[], T]) -> T:
        """The value for the workspace at its current version; ``load`` (called without the lock,
        after the version was read) builds it when this process has no copy of that version."""
        found = versions(workspace_id)
        # The workspace's creation time goes with the version: a workspace id used again (SQLite
        # after a rolled-back test, a restored backup) never meets its predecessor's entries.
        current = (found.get(_CREATED), found.get(self.name))
        with self._lock:
            hit = self._data.get(workspace_id)
            if hit is not None and hit[0] == current:
                self._data.move_to_end(workspace_id)
                return hit[1]
        value = load()
        with self._lock:
            self._data[workspace_id] = (current, value)
            self._data.move_to_end(workspace_id)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class VersionedAdminMixin:
    """For the Django admin of cached settings: every save and delete there changes the workspace's
    version in the same transaction (``version_model``), as the domain's service functions do."""

    version_model: type[models.Model]

    def save_model(self, request: Any, obj: Any, form: Any, change: Any) -> None:
        with transaction.atomic():
            bump(self.version_model, obj.workspace_id)
            super().save_model(request, obj, form, change)  # type: ignore[misc]

    def delete_model(self, request: Any, obj: Any) -> None:
        with transaction.atomic():
            bump(self.version_model, obj.workspace_id)
            super().delete_model(request, obj)  # type: ignore[misc]

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        with transaction.atomic():
            for workspace_id in sorted(set(queryset.values_list("workspace_id", flat=True))):
                bump(self.version_model, workspace_id)
            super().delete_queryset(request, queryset)  # type: ignore[misc]
