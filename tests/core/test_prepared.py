"""core.prepared: hot statements prepared once per PostgreSQL connection, run as plain statements
elsewhere, with the same results and the same errors as the plain statement."""

from __future__ import annotations

import pytest
from django.db import DataError, connection, transaction

from shequn.channels import queries
from shequn.channels.models import InboundMessage
from shequn.core import inserts, prepared
from shequn.core.prepared import Prepared, column_types

pytestmark = pytest.mark.django_db


def test_named_and_positional_parameters_become_numbered_ones():
    named = Prepared("t", "SELECT %(a)s::int + %(b)s::int + %(a)s::int", {"a": "int", "b": "int", "unused": "text"})
    assert named.prepare.endswith("(int, int) AS SELECT $1::int + $2::int + $1::int")
    assert named.execute == f"EXECUTE {named.name} (%s, %s)"
    positional = Prepared("t", "SELECT %s, %s", ["text", "bigint"])
    assert positional.prepare.endswith("(text, bigint) AS SELECT $1, $2")
    with pytest.raises(ValueError, match="2 types"):
        Prepared("t", "SELECT %s", ["text", "text"])


def test_names_fit_postgresql_identifiers_and_differ_by_statement():
    a = Prepared("x" * 100, "SELECT %s", ["text"])
    b = Prepared("x" * 100, "SELECT %s + 1", ["int"])
    assert len(a.name) <= 63 and a.name != b.name
    bare = Prepared("My-Table.x", "SELECT 1", [])
    assert bare.name.endswith("_my_table_x") and bare.execute == f"EXECUTE {bare.name}"


def test_parameter_types_drop_modifiers_so_the_columns_own_checks_apply():
    fields = [InboundMessage._meta.get_field(name) for name in ("dedup_key", "account", "payload", "received_at")]
    types = column_types(fields, connection)
    assert all("(" not in t for t in types)


def _prepared_names() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.postgres
def test_prepared_once_per_connection_and_kept_after_a_rollback():
    statement = Prepared("test_sum", "SELECT %(a)s + %(b)s", {"a": "int", "b": "int"})
    with transaction.atomic():
        with connection.cursor() as cursor:
            statement.run(cursor, {"a": 2, "b": 3}, connection)
            assert cursor.fetchone() == (5,)
        transaction.set_rollback(True)
    assert statement.name in _prepared_names()
    with connection.cursor() as cursor:
        statement.run(cursor, {"a": 4, "b": 3}, connection)  # EXECUTE only: a second PREPARE would fail
        assert cursor.fetchone() == (7,)


@pytest.mark.postgres
def test_a_statement_without_parameters():
    statement = Prepared("test_none", "SELECT 7", [])
    with connection.cursor() as cursor:
        for _ in range(2):
            statement.run(cursor, [], connection)
            assert cursor.fetchone() == (7,)


@pytest.mark.postgres
def test_not_prepared_where_the_connection_must_not_keep_session_state(monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    assert not prepared.prepares(connection)
    statement = Prepared("test_pooled", "SELECT %s::int * 2", ["int"])
    with connection.cursor() as cursor:
        statement.run(cursor, [21], connection)
        assert cursor.fetchone() == (42,)
    assert statement.name not in _prepared_names()


@pytest.mark.postgres
@pytest.mark.parametrize("pooled", [False, True])
def test_statements_sent_after_it_in_the_same_text(monkeypatch, pooled):
    if pooled:  # not prepared: the plain text, its named parameters turned positional
        monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    statement = Prepared("test_then", "SELECT %(a)s::int + %(b)s::int, %(a)s::int", {"a": "int", "b": "int"})
    with connection.cursor() as cursor:
        statement.run(cursor, {"a": 1, "b": 2}, connection, then=[("SELECT %s::text", ["x;y"])])
        assert cursor.fetchone() == (3, 1)
        assert cursor.nextset() and cursor.fetchone() == ("x;y",)


@pytest.mark.postgres
def test_statements_sent_together_fail_together():
    from django.db import IntegrityError

    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE then_t (k int PRIMARY KEY)")
        statement = Prepared("test_then_fail", "INSERT INTO then_t VALUES (%s)", ["int"])
        with pytest.raises(IntegrityError), transaction.atomic():
            statement.run(cursor, [1], connection, then=[("INSERT INTO then_t VALUES (%s)", [1])])
        cursor.execute("SELECT count(*) FROM then_t")
        assert cursor.fetchone() == (0,)


def test_statements_are_not_sent_together_where_the_connection_cannot(monkeypatch):
    if connection.vendor == "postgresql":
        monkeypatch.setitem(connection.settings_dict, "OPTIONS",
                            {**connection.settings_dict.get("OPTIONS", {}), "server_side_binding": True})
    assert not prepared.batches(connection)
    with connection.cursor() as cursor, pytest.raises(ValueError):
        Prepared("t", "SELECT %s", ["int"]).run(cursor, [1], connection, then=[("SELECT 1", [])])


def test_sqlite_runs_the_plain_statement():
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    assert not prepared.prepares(connection)
    with connection.cursor() as cursor:
        Prepared("t", "SELECT %s + 1", ["int"]).run(cursor, [1], connection)
        assert cursor.fetchone() == (2,)


def test_the_account_lookup_finds_the_account_and_not_an_unknown_or_overlong_key(account):
    found = queries.account_for_message(account.endpoint_key)
    assert found is not None and found.pk == account.pk and found.workspace.slug == "prep"
    assert queries.account_for_message(account.endpoint_key + "x") is None
    assert queries.account_for_message("k" * 500) is None  # longer than the column: no match, no error


def test_an_overlong_value_is_refused_as_the_orm_refuses_it_never_cut(account):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite does not enforce lengths")
    row = InboundMessage(workspace=account.workspace, account=account, dedup_key="k" * 500, msg_type="text",
                         from_user="o", to_user="gh", payload={})
    with pytest.raises(DataError), transaction.atomic():
        inserts.insert_new(row)
    assert not InboundMessage.objects.filter(account=account).exists()


@pytest.mark.postgres
def test_first_row_runs_the_prepared_statement_with_typed_values_and_reads_them_back():
    import datetime as dt
    import json
    from decimal import Decimal

    from psycopg.types.json import Jsonb

    statement = Prepared("test_first_row", "SELECT %s, %s, %s, %s, %s, %s, %s",
                         ["bigint", "text", "timestamptz", "jsonb", "boolean", "numeric", "text"])
    at = dt.datetime(2026, 12, 6, 8, 30, 15, 123456, tzinfo=dt.UTC)
    values = [2**40, "关于「词」 'quoted' ;", at, Jsonb({"k": ["v", 1]}), True, Decimal("12.50"), None]
    with connection.cursor() as cursor:  # the plain statement on a Django cursor: the same values back
        cursor.execute(statement.sql, values)
        plain = cursor.fetchone()
    for _ in range(2):  # prepared by the first call, executed by both
        row = statement.first_row(connection, values)
        assert row == plain
        assert row[0] == 2**40 and row[1] == "关于「词」 'quoted' ;" and row[2] == at
        assert json.loads(row[3]) == {"k": ["v", 1]}  # Django reads JSON text and decodes it itself
        assert row[4] is True and row[5] == Decimal("12.50") and row[6] is None
    assert statement.name in _prepared_names()
    assert Prepared("test_no_rows", "SELECT 1 WHERE %s", ["boolean"]).first_row(connection, [False]) is None


@pytest.mark.postgres
def test_first_row_raises_the_plain_statements_errors_and_keeps_to_the_transaction():
    from django.db import IntegrityError

    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE first_row_t (k int PRIMARY KEY)")
    insert = Prepared("test_first_row_insert", "INSERT INTO first_row_t VALUES (%s)", ["int"])
    assert insert.first_row(connection, [1]) is None  # no rows to return
    with pytest.raises(IntegrityError), transaction.atomic():
        insert.first_row(connection, [2])
        insert.first_row(connection, [1])
    with transaction.atomic():
        insert.first_row(connection, [3])
        transaction.set_rollback(True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT k FROM first_row_t ORDER BY k")
        assert cursor.fetchall() == [(1,)]
    with pytest.raises(DataError):
        Prepared("test_first_row_bad", "SELECT %s", ["int"]).first_row(connection, ["not a number"])


def test_first_row_is_the_plain_statement_where_django_must_see_it():
    from django.test.utils import CaptureQueriesContext

    statement = Prepared("test_first_row_seen", "SELECT %s + 1", ["int"])
    with CaptureQueriesContext(connection) as seen:
        assert statement.first_row(connection, [41]) == (42,)
    assert [q["sql"] for q in seen.captured_queries] == ["SELECT 41 + 1"]


@pytest.mark.postgres
def test_work_meanwhile_is_done_once_while_the_statement_runs_and_its_error_raised_after_it():
    calls = []
    statement = Prepared("test_first_row_meanwhile", "SELECT %s::int * 3", ["int"])
    assert statement.first_row(connection, [5], meanwhile=lambda: calls.append("done")) == (15,)
    assert calls == ["done"]

    class Boom(Exception):
        pass

    def fail() -> None:
        raise Boom

    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE meanwhile_t (k int PRIMARY KEY)")
    insert = Prepared("test_meanwhile_insert", "INSERT INTO meanwhile_t VALUES (%s) RETURNING k", ["int"])
    with pytest.raises(Boom):
        insert.first_row(connection, [1], meanwhile=fail)
    # The statement ran (autocommit) and the connection is ready for the next one.
    assert statement.first_row(connection, [2]) == (6,)
    with connection.cursor() as cursor:
        cursor.execute("SELECT k FROM meanwhile_t")
        assert cursor.fetchall() == [(1,)]


def test_work_meanwhile_is_done_before_a_plain_statement():
    calls = []
    statement = Prepared("test_meanwhile_plain", "SELECT %s + 1", ["int"])
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as seen:  # Django sees the statement: the plain form
        assert statement.first_row(connection, [1], meanwhile=lambda: calls.append(len(seen.captured_queries))) == (2,)
    assert calls == [0]
