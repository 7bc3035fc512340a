"""One-row inserts on hot paths, with the statement compiled once per model and database.

``Model.objects.create()`` compiles its ``INSERT`` anew on every call: on the WeChat endpoint, whose
answer is two inserts (the message and its recording task), the ORM's query building was a third of
the answer time. :func:`insert_new` does what ``obj.save(force_insert=True)`` does for a plain model —
each field's ``pre_save`` (``auto_now_add``, defaults already set by the constructor) and
``get_db_prep_save`` (JSON, dates, UUIDs for this database), the auto primary key read back with
``RETURNING`` — from a statement built once from the model's metadata. Values are always passed as
parameters; only quoted table and column names are part of the statement text.

It sends no ``pre_save``/``post_save`` signals and calls no ``save()`` override: it refuses a model
with either, unless the caller says it does the receivers' work itself (``receivers_done=True``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model
from django.db.models.fields import AutoFieldMixin
from django.db.models.signals import post_save, pre_save

M = TypeVar("M", bound=Model)

_statements: dict[tuple[type[Model], str], tuple[str, list[Any], Any]] = {}


def statement_for(model: type[Model], alias: str) -> tuple[str, list[Any], Any]:
    """``(sql, fields, auto)``: the ``INSERT`` of one ``model`` row on database ``alias`` (parameters in
    the order of ``fields``; ``RETURNING`` the auto primary key ``auto``, when there is one)."""
    if model.save is not Model.save:
        raise TypeError(f"{model.__name__} overrides save(): insert it with the ORM")
    connection = connections[alias]
    meta = model._meta
    auto = meta.pk if isinstance(meta.pk, AutoFieldMixin) else None
    fields = [f for f in meta.local_concrete_fields if f is not auto]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    # Identifiers come from the model's metadata, quoted by the backend; every value is a parameter.
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608
    if auto is not None:
        sql += f" RETURNING {quote(auto.column)}"
    return sql, fields, auto


def insert_new(obj: M, using: str = DEFAULT_DB_ALIAS, *, receivers_done: bool = False) -> M:
    """Insert the new, unsaved instance ``obj`` into database ``using`` and return it, saved (its
    auto primary key set). Constraint violations raise ``IntegrityError`` as ``create()`` does.

    ``receivers_done``: the model has ``pre_save``/``post_save`` receivers and the caller has done
    their work itself; without it such a model is refused."""
    model = type(obj)
    if not receivers_done and (pre_save.has_listeners(model) or post_save.has_listeners(model)):
        raise TypeError(f"{model.__name__} has save signal receivers: insert it with the ORM")
    key = (model, using)
    entry = _statements.get(key)
    if entry is None:
        entry = _statements[key] = statement_for(model, using)
    sql, fields, auto = entry
    if auto is not None and getattr(obj, auto.attname) is not None:
        raise ValueError(f"{model.__name__}: the database assigns the primary key of a new row")
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(sql, values(obj, fields, connection))
        mark_saved(obj, using, auto, cursor.fetchone()[0] if auto is not None else None)
    return obj


def values(obj: Model, fields: list[Any], connection: Any) -> list[Any]:
    """The parameters of ``obj``'s insert, field by field, as the ORM prepares them."""
    return [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]


def mark_saved(obj: Model, using: str, auto: Any, pk: Any) -> None:
    """Record on ``obj`` that it is now a row of ``using`` (its auto primary key ``pk``)."""
    if auto is not None:
        setattr(obj, auto.attname, pk)
    obj._state.adding = False
    obj._state.db = using
