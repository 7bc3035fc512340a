"""One-row inserts on hot paths, with the statement and the value preparation planned once.

``Model.objects.create()`` compiles its ``INSERT`` anew on every call: on the WeChat endpoint, whose
answer is one insert (the message, holding its reply), the ORM's query building was a third of the
answer time. :func:`insert_new` does what ``obj.save(force_insert=True)`` does for a plain model —
each field's ``pre_save`` (``auto_now_add``, defaults already set by the constructor) and
``get_db_prep_save`` (JSON, dates, UUIDs for this database), the auto primary key read back with
``RETURNING`` — from a :class:`Plan` built once per model and database:

* the statement, in Django's form and in the driver's own (``?`` placeholders on SQLite), so that
  no per-call rewriting is needed;
* for each field, whether ``pre_save`` is a plain attribute read, and which Python types the field's
  ``get_db_prep_save`` returns unchanged on this database (``str`` for a ``CharField``, ``int`` for an
  ``IntegerField``…; exact field classes only, so a subclass that converts is never skipped). Any
  other value goes through ``get_db_prep_save`` as in the ORM.

On PostgreSQL the statement is prepared once per connection (``core.prepared``): planning an insert
into a table with several indexes costs the server about as much as the insert. It runs on the
driver's cursor inside Django's error wrapping (``IntegrityError`` is
Django's, a broken transaction is refused as the ORM refuses it). When Django logs queries
(``DEBUG``, ``assertNumQueries``) or execute wrappers are installed, it runs through Django's cursor
instead, so the statement is seen by them. Values are always parameters; only quoted table and
column names are part of the statement text.

:func:`insert_new_where` inserts the row only if a condition holds when the statement runs
(``INSERT … SELECT … WHERE``): a write that also confirms, in the same round trip, what the caller
read earlier.

It sends no ``pre_save``/``post_save`` signals and calls no ``save()`` override: it refuses a model
with either, unless the caller says it does the receivers' work itself (``receivers_done=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import ForeignKey, Model
from django.db.models import fields as f
from django.db.models.fields import AutoFieldMixin
from django.db.models.signals import post_save, pre_save
from psycopg import pq

from .prepared import Prepared, column_types, in_use, prepares

M = TypeVar("M", bound=Model)

_NONE = type(None)
_TEXT = frozenset({str, _NONE})
_INTEGER = frozenset({int, _NONE})
# Field classes whose get_db_prep_save returns these types unchanged (Field.get_prep_value resolves
# only lazy strings; to_python returns a str, an int, a bool or None as it is). Integer fields also
# pass through the backend's adapt_integerfield_value, checked per database below.
_PLAIN_TEXT: dict[type, frozenset[type]] = {f.CharField: _TEXT, f.TextField: _TEXT,
                                            f.BooleanField: frozenset({bool, _NONE})}
_PLAIN_INTEGER: dict[type, frozenset[type]] = {
    cls: _INTEGER for cls in (f.IntegerField, f.BigIntegerField, f.SmallIntegerField, f.PositiveIntegerField,
                              f.PositiveBigIntegerField, f.PositiveSmallIntegerField)}
_INTEGER_KEYS = (f.AutoField, f.BigAutoField, f.SmallAutoField)


@dataclass(frozen=True)
class Plan:
    """The insert of one row of a model on one database, planned once."""

    sql: str
    """The statement with Django's ``%s`` placeholders."""
    native_sql: str
    """The same statement in the driver's placeholder style."""
    fields: tuple[Any, ...]
    """The inserted fields, in parameter order."""
    steps: tuple[tuple[Any, str | None, frozenset[type]], ...]
    """Per field: the field, its attname when ``pre_save`` is a plain read, the types passed unchanged."""
    auto: Any
    """The auto primary key read back with ``RETURNING``, or None."""
    prepared: Prepared | None
    """The statement prepared once per connection (``core.prepared``), where the database prepares."""


@dataclass(frozen=True)
class Where:
    """A condition for :func:`insert_new_where`: SQL with ``%s`` placeholders (quoted identifiers
    only, every value a parameter), the PostgreSQL types of its parameters, and a label naming it."""

    label: str
    sql: str
    types: tuple[str, ...]


_plans: dict[tuple[type[Model], str, Where | None], Plan] = {}


def passes_unchanged(field: Any, connection: Any) -> frozenset[type]:
    """The value types ``field.get_db_prep_save`` returns unchanged on ``connection`` (a value of
    another type goes through it)."""
    kind = type(field)
    if kind in _PLAIN_TEXT:
        return _PLAIN_TEXT[kind]
    plain_integers = type(connection.ops).adapt_integerfield_value is BaseDatabaseOperations.adapt_integerfield_value
    if kind in _PLAIN_INTEGER and plain_integers:
        return _PLAIN_INTEGER[kind]
    if kind is ForeignKey and type(field.target_field) in _INTEGER_KEYS and plain_integers \
            and type(connection.ops).validate_autopk_value is BaseDatabaseOperations.validate_autopk_value:
        return _INTEGER
    return frozenset()


def plan_for(model: type[Model], alias: str, where: Where | None = None) -> Plan:
    """The :class:`Plan` of one ``model`` row on database ``alias`` (inserted only ``where`` the
    condition holds, when given), built on first use."""
    key = (model, alias, where)
    plan = _plans.get(key)
    if plan is not None:
        return plan
    if model.save is not Model.save:
        raise TypeError(f"{model.__name__} overrides save(): insert it with the ORM")
    connection = connections[alias]
    meta = model._meta
    auto = meta.pk if isinstance(meta.pk, AutoFieldMixin) else None
    fields = tuple(field for field in meta.local_concrete_fields if field is not auto)
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    # Identifiers come from the model's metadata, quoted by the backend; every value is a parameter.
    if where is None:
        sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608
    else:
        sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) SELECT {placeholders} WHERE {where.sql}"  # noqa: S608
    if auto is not None:
        sql += f" RETURNING {quote(auto.column)}"
    steps = tuple((field, field.attname if type(field).pre_save is f.Field.pre_save else None,
                   passes_unchanged(field, connection)) for field in fields)
    prepared = None
    if prepares(connection):
        label = f"insert_{meta.db_table}" + (f"_{where.label}" if where is not None else "")
        prepared = Prepared(label, sql, [*column_types(fields, connection), *(where.types if where else ())])
    plan = _plans[key] = Plan(sql=sql, native_sql=native(sql, connection), fields=fields, steps=steps, auto=auto,
                              prepared=prepared)
    return plan


def native(sql: str, connection: Any) -> str:
    """``sql`` (Django's ``%s`` placeholders, no literal ``%``) in the driver's placeholder style."""
    if connection.vendor == "sqlite":
        return sql.replace("%s", "?")
    return sql


def insert_new(obj: M, using: str = DEFAULT_DB_ALIAS, *, receivers_done: bool = False,
               meanwhile: Callable[[], object] | None = None) -> M:
    """Insert the new, unsaved instance ``obj`` into database ``using`` and return it, saved (its
    auto primary key set). Constraint violations raise ``IntegrityError`` as ``create()`` does.

    ``receivers_done``: the model has ``pre_save``/``post_save`` receivers and the caller has done
    their work itself; without it such a model is refused.

    ``meanwhile``: work that needs nothing from the database, done while the server runs the insert
    where it can (``core.prepared.Prepared.first_row``), before it elsewhere; the instance's own
    values (an ``auto_now_add`` time) are set by then."""
    plan = _checked_plan(obj, using, None, receivers_done)
    auto = plan.auto
    connection = connections[using]
    row = execute(connection, plan.sql, plan.native_sql, values(obj, plan, connection), fetch=auto is not None,
                  prepared=plan.prepared, meanwhile=meanwhile)
    mark_saved(obj, using, auto, row[0] if row is not None else None)
    return obj


def _checked_plan(obj: Model, using: str, where: Where | None, receivers_done: bool) -> Plan:
    """The plan of ``obj``'s insert, once ``obj`` is known to be one the plan inserts faithfully: no
    save signal receivers (unless their work is done), no primary key set for the database to assign."""
    model = type(obj)
    if not receivers_done and (pre_save.has_listeners(model) or post_save.has_listeners(model)):
        raise TypeError(f"{model.__name__} has save signal receivers: insert it with the ORM")
    plan = plan_for(model, using, where)
    if plan.auto is not None and getattr(obj, plan.auto.attname) is not None:
        raise ValueError(f"{model.__name__}: the database assigns the primary key of a new row")
    return plan


def insert_new_where(obj: M, where: Where, params: list[Any], using: str = DEFAULT_DB_ALIAS, *,
                     meanwhile: Callable[[], object] | None = None) -> bool:
    """Insert the new, unsaved instance ``obj`` as :func:`insert_new` does, only if the condition
    ``where`` (with ``params``) holds when the statement runs; whether it was inserted (``obj`` is
    then saved, its auto primary key set). PostgreSQL and SQLite; a model without an auto primary
    key is refused (the returned key is how an insert is told from none). ``meanwhile`` as for
    :func:`insert_new`."""
    plan = _checked_plan(obj, using, where, receivers_done=False)
    auto = plan.auto
    if auto is None:
        raise TypeError(f"{type(obj).__name__} has no auto primary key: a conditional insert cannot report itself")
    if len(params) != len(where.types):
        raise ValueError(f"{where.label}: {len(params)} parameters for {len(where.types)} placeholders")
    connection = connections[using]
    row = execute(connection, plan.sql, plan.native_sql, [*values(obj, plan, connection), *params], fetch=True,
                  prepared=plan.prepared, meanwhile=meanwhile)
    if row is None:
        return False
    mark_saved(obj, using, auto, row[0])
    return True


def values(obj: Model, plan: Plan, connection: Any) -> list[Any]:
    """The parameters of ``obj``'s insert, field by field, as the ORM prepares them."""
    out = []
    for field, attname, unchanged in plan.steps:
        value = getattr(obj, attname) if attname is not None else field.pre_save(obj, True)
        out.append(value if type(value) in unchanged else field.get_db_prep_save(value, connection))
    return out


def execute(connection: Any, sql: str, native_sql: str, params: list[Any], *, fetch: bool,
            prepared: Prepared | None = None, meanwhile: Callable[[], object] | None = None) -> Any:
    """Run one statement (``sql`` in Django's form, ``native_sql`` in the driver's) with ``params``
    and return its first row when ``fetch``. On the driver's cursor unless Django must see the
    statement (query logging, execute wrappers); as the ``prepared`` form of it, executed at the
    protocol level, when given and the connection prepares (``core.prepared``). ``meanwhile``: see
    :func:`insert_new`."""
    if prepared is not None and in_use(connection):  # it runs the plain statement where Django must see it
        row = prepared.first_row(connection, params, meanwhile=meanwhile)
        return row if fetch else None
    if meanwhile is not None:
        meanwhile()
    if connection.queries_logged or connection.execute_wrappers:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone() if fetch else None
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    with connection.wrap_database_errors:
        if connection.vendor == "sqlite":
            cursor = connection.connection.execute(native_sql, params)
        else:
            cursor = connection.create_cursor()
            cursor.execute(native_sql, params)
        try:
            return cursor.fetchone() if fetch else None
        finally:
            cursor.close()


def mark_saved(obj: Model, using: str, auto: Any, pk: Any) -> None:
    """Record on ``obj`` that it is now a row of ``using`` (its auto primary key ``pk``)."""
    if auto is not None:
        setattr(obj, auto.attname, pk)
    obj._state.adding = False
    obj._state.db = using


def single_statement_suffices(using: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether the caller, in its own outermost ``atomic()`` block on PostgreSQL, has sent nothing to
    the database yet — psycopg opens the transaction only with the first statement — and left nothing
    to run on commit: then a one-statement write (:func:`insert_new`) can be made after the block
    ends, atomic on its own, saving the ``BEGIN`` and ``COMMIT`` round trips. False elsewhere
    (SQLite's ``BEGIN IMMEDIATE`` is sent when the block starts; an enclosing transaction must hold
    the write)."""
    connection = connections[using]  # once: each attribute read through django.db.connection looks it up again
    if connection.vendor != "postgresql" or connection.savepoint_ids or connection.run_on_commit:
        return False
    raw = connection.connection
    if raw is None or len(getattr(connection, "atomic_blocks", ())) != 1:
        return False
    return raw.pgconn.transaction_status == pq.TransactionStatus.IDLE
