"""Hot statements prepared once per PostgreSQL connection.

Django's psycopg backend binds parameters on the client and sends each statement as text, so the
server parses and plans it on every call. For the statements on the hottest paths — the points
ledger's earn and spend, the WeChat endpoint's account lookup and its message insert — planning
costs as much as running them (the account lookup: about 0.5 ms of planning for 0.3 ms of work on
this project's reference machine). A :class:`Prepared` statement is sent once per connection as
``PREPARE name (types) AS …`` and then run as ``EXECUTE name (…)``: the server keeps the plan.
A statement whose first row is all the caller needs (:meth:`Prepared.first_row`) is executed at the
protocol level instead, its parameters sent as typed values: no ``EXECUTE`` text to parse, no quoting.

Not done when the connection must not keep session state — ``DISABLE_SERVER_SIDE_CURSORS``, Django's
setting for transaction-pooling poolers such as PgBouncer — or when the database settings ask for
server-side binding (psycopg then prepares statements itself, by its ``prepare_threshold``); the
statement then runs as plain text. A prepared statement outlives a rolled-back transaction (prepared
statements are not transactional), so what is prepared on a connection is known without asking the
server: it is remembered per driver connection object, and a reconnection starts afresh.

Statement text holds quoted identifiers and placeholders only: every value is a parameter.
"""

from __future__ import annotations

import hashlib
import re
import select
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from psycopg import errors as psycopg_errors
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer

_PREPARED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_NAMED = re.compile(r"%\((\w+)\)s")
_POSITIONAL = re.compile(r"%s")
_NOT_NAME = re.compile(r"[^a-z0-9_]")


def prepares(connection: Any) -> bool:
    """Whether statements are prepared on ``connection`` (PostgreSQL with client-side binding and no
    transaction-pooling setting)."""
    if connection.vendor != "postgresql":
        return False
    db = connection.settings_dict
    return not (db.get("DISABLE_SERVER_SIDE_CURSORS") or db.get("OPTIONS", {}).get("server_side_binding") is True)


class Prepared:
    """One fixed PostgreSQL statement, prepared once per connection where :func:`prepares`.

    ``sql`` uses either named ``%(name)s`` parameters (``types`` maps each name to its PostgreSQL
    type, and :meth:`run` takes a mapping) or positional ``%s`` ones (``types`` lists them in order,
    and :meth:`run` takes a sequence). The types are declared because a parameter inside an
    expression has none the server could infer."""

    def __init__(self, label: str, sql: str, types: Mapping[str, str] | Sequence[str]) -> None:
        self.sql = sql
        digest = hashlib.sha1(sql.encode()).hexdigest()[:12]  # noqa: S324 - a name, not a secret
        self.name = f"shequn_{digest}_{_NOT_NAME.sub('_', label.lower())}"[:63]  # PostgreSQL's identifier length
        self.order: list[str] | None
        # The plain form with ``%s`` placeholders, for a connection that does not prepare: with
        # positional parameters it can be sent together with other statements (``run``'s ``then``).
        self.plain, self.plain_order = _NAMED.sub("%s", sql), _NAMED.findall(sql)
        if isinstance(types, Mapping):
            self.order = list(dict.fromkeys(self.plain_order))
            positional = _NAMED.sub(lambda m: f"${self.order.index(m.group(1)) + 1}", sql)  # type: ignore[union-attr]
            type_list = [types[name] for name in self.order]
        else:
            self.order = None
            type_list = list(types)
            if len(_POSITIONAL.findall(sql)) != len(type_list):
                raise ValueError(f"{label}: {len(type_list)} types for a different number of parameters")
            counter = iter(range(1, len(type_list) + 1))
            positional = _POSITIONAL.sub(lambda _m: f"${next(counter)}", sql)
        types_sql = f" ({', '.join(type_list)})" if type_list else ""
        self.prepare = f"PREPARE {self.name}{types_sql} AS {positional}"
        self.execute = f"EXECUTE {self.name}" + (f" ({', '.join(['%s'] * len(type_list))})" if type_list else "")

    def run(self, cursor: Any, params: Mapping[str, Any] | Sequence[Any], connection: Any,
            then: Sequence[tuple[str, Sequence[Any]]] = ()) -> None:
        """Run the statement with ``params`` on ``cursor`` (Django's or the driver's cursor of
        ``connection``); fetch its rows from ``cursor`` afterwards. ``then``: statements (text with
        ``%s`` placeholders, parameters) sent in the same text, after this one — where
        :func:`batches`; the server runs them in order, in one transaction when none is open."""
        if then and not batches(connection):
            raise ValueError("this connection cannot send several statements as one text")
        if not then and not prepares(connection):
            cursor.execute(self.sql, params)
            return
        sql, values = self.bound(params, connection, cursor)
        for text, extra in then:
            sql += ";\n" + text
            values += extra
        cursor.execute(sql, values)

    def first_row(self, connection: Any, params: Mapping[str, Any] | Sequence[Any], *,
                  meanwhile: Callable[[], object] | None = None) -> tuple | None:
        """Run the statement on ``connection`` (Django's) with ``params`` and return its first row,
        None when it returns none.

        Where :func:`in_use`, the prepared statement is executed at the protocol level: the
        parameters go as typed text values — no ``EXECUTE`` text for the server to parse and no
        quoting on the client, about 0.05–0.08 ms less for a 24-parameter insert on this project's
        reference machine — and the interpreter's lock is released while the server works. Errors
        are the plain statement's, as Django raises them. Elsewhere (and where Django must see the
        statement: query logging, execute wrappers) the plain statement runs on a Django cursor.

        ``meanwhile``: work that needs nothing from the database (it must not use this connection),
        called once: while the server runs the statement where it is executed at the protocol level,
        before the statement is run elsewhere. An error it raises is raised once the statement's
        result has been read; the statement has run by then."""
        if not in_use(connection) or connection.execute_wrappers:
            if meanwhile is not None:
                meanwhile()
            with connection.cursor() as cursor:
                cursor.execute(self.sql, params)
                return cursor.fetchone() if cursor.description is not None else None
        connection.ensure_connection()
        connection.validate_no_broken_transaction()
        with connection.wrap_database_errors:
            _sql, values = self.bound(params, connection)
            raw = connection.connection
            with raw.lock:
                transformer = Transformer(raw)
                dumped = transformer.dump_sequence(values, [PyFormat.TEXT] * len(values))
                if meanwhile is None:
                    result = raw.pgconn.exec_prepared(self.name.encode(), dumped)  # libpq waits; the GIL is released
                else:
                    result = _overlapped(raw.pgconn, self.name.encode(), dumped, meanwhile)
                if result.status == pq.ExecStatus.FATAL_ERROR:
                    raise psycopg_errors.error_from_result(result, encoding=raw.info.encoding)
            if result.status != pq.ExecStatus.TUPLES_OK or result.ntuples == 0:
                return None
            transformer.set_pgresult(result)
            return transformer.load_row(0, tuple)

    def bound(self, params: Mapping[str, Any] | Sequence[Any], connection: Any,
              cursor: Any = None) -> tuple[str, list[Any]]:
        """The text to send and its positional parameters: ``EXECUTE`` where the connection prepares
        (preparing the statement on it first, on ``cursor`` or a cursor of its own, if not done
        yet), the plain text otherwise. For a statement sent after another (``run``'s ``then``)."""
        if not prepares(connection):
            return self.plain, [params[n] for n in self.plain_order] if self.order is not None else list(params)  # type: ignore[call-overload]
        if connection.connection is None:
            connection.ensure_connection()
        raw = connection.connection
        done = _PREPARED.get(raw)
        if done is None:
            done = _PREPARED[raw] = set()
        if self.name not in done:
            if cursor is not None:
                cursor.execute(self.prepare)
            else:
                with connection.cursor() as own:
                    own.execute(self.prepare)
            done.add(self.name)
        return self.execute, [params[n] for n in self.order] if self.order is not None else list(params)  # type: ignore[call-overload]


def _overlapped(pgconn: Any, name: bytes, values: Sequence[bytes | None], meanwhile: Callable[[], object]) -> Any:
    """Send the prepared statement ``name``, run ``meanwhile`` while the server works on it, then
    wait for its result (polling the socket, so the interpreter's lock is free meanwhile: libpq's
    own blocking wait would hold it) and return it. Every result is read before an error of
    ``meanwhile`` is raised, so the connection is left ready for its next statement."""
    blocking = pgconn.nonblocking
    pgconn.nonblocking = 0  # the send returns once the whole message is written
    try:
        pgconn.send_query_prepared(name, values)
    finally:
        pgconn.nonblocking = blocking
    failure: BaseException | None = None
    try:
        meanwhile()
    except BaseException as exc:  # noqa: BLE001 - raised below, once the connection is drained
        failure = exc
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    results = []
    while True:
        pgconn.consume_input()
        while pgconn.is_busy():  # get_result would wait holding the lock: wait on the socket instead
            poller.poll()
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            break
        results.append(result)
    if failure is not None:
        raise failure
    if not results:
        raise psycopg_errors.OperationalError("the server sent no result for the statement")
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            return result
    return results[-1]


def batches(connection: Any) -> bool:
    """Whether several statements can be sent as one text on ``connection``: PostgreSQL with
    client-side parameter binding (Django's default; with server-side binding each text is one
    statement). Sent outside a transaction, they run in one implicit transaction: all or none."""
    return (connection.vendor == "postgresql"
            and connection.settings_dict.get("OPTIONS", {}).get("server_side_binding") is not True)


def in_use(connection: Any) -> bool:
    """Whether a caller that can run either form should run the prepared one: :func:`prepares`, and
    Django does not log queries (a test counting them sees each statement as written, once)."""
    return prepares(connection) and not connection.queries_logged


_TYPMOD = re.compile(r"\s*\([^)]*\)")


def column_types(fields: Sequence[Any], connection: Any) -> list[str]:
    """The PostgreSQL types of ``fields``' columns without their modifiers (``varchar(64)`` →
    ``varchar``), as parameter types of a :class:`Prepared` statement: the value then meets the
    column's own length or precision check when it is stored or compared, as a plain statement's
    would (a parameter typed ``varchar(64)`` would be cut to fit instead)."""
    out = []
    for field in fields:
        kind = field.db_type(connection)  # a foreign key's is its target's column type
        if kind is None:
            raise TypeError(f"{field} has no column type to prepare a statement with")
        out.append(_TYPMOD.sub("", kind))
    return out
