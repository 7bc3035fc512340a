"""core.inserts.insert_new: a one-row insert from a statement compiled once, with the ORM's value
preparation — the row reads back exactly as one the ORM created."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django_tasks_db.models import DBTaskResult

from shequn.channels.models import InboundMessage
from shequn.core import inserts
from shequn.core.models import Workspace

pytestmark = pytest.mark.django_db


def _message(account, key: str) -> InboundMessage:
    return InboundMessage(workspace=account.workspace, account=account, dedup_key=key, msg_type="text",
                          from_user="oUser", to_user="gh_x", reply_type="text", reply_content="你好 ]]>",
                          reply_meta={"rule": 3, "tags": ["会员", "vip"]}, payload={"Content": "积分", "n": 1.5})


def test_the_row_reads_back_as_the_orm_would_have_written_it(account):
    ours = inserts.insert_new(_message(account, "k1"))
    theirs = InboundMessage.objects.create(**{f.attname: getattr(_message(account, "k2"), f.attname)
                                             for f in InboundMessage._meta.concrete_fields if f.attname != "id"})
    assert ours.pk is not None and not ours._state.adding and ours.received_at is not None
    a, b = InboundMessage.objects.get(pk=ours.pk), InboundMessage.objects.get(pk=theirs.pk)
    for field in InboundMessage._meta.concrete_fields:
        if field.attname not in ("id", "dedup_key", "received_at"):
            assert getattr(a, field.attname) == getattr(b, field.attname), field.attname
    assert a.reply_meta == {"rule": 3, "tags": ["会员", "vip"]} and a.payload["n"] == 1.5
    assert abs((a.received_at - b.received_at).total_seconds()) < 5


def test_a_unique_violation_raises_and_leaves_the_transaction_usable(account):
    inserts.insert_new(_message(account, "same"))
    with pytest.raises(IntegrityError), transaction.atomic():
        inserts.insert_new(_message(account, "same"))
    assert InboundMessage.objects.filter(dedup_key="same").count() == 1


def test_models_it_cannot_insert_faithfully_are_refused(account, monkeypatch):
    monkeypatch.setattr(inserts, "_plans", {})
    monkeypatch.setattr(Workspace, "save", lambda self, *args, **kwargs: None)
    with pytest.raises(TypeError, match="overrides save"):
        inserts.insert_new(Workspace(slug="x", name="x"), receivers_done=True)
    # django_tasks_db sets run_after in a pre_save receiver: refused unless the caller did that work.
    row = DBTaskResult(args_kwargs={"args": [], "kwargs": {}}, task_path="x.y", backend_name="default")
    with pytest.raises(TypeError, match="receivers"):
        inserts.insert_new(row)
    saved = inserts.insert_new(_message(account, "k3"))
    with pytest.raises(ValueError, match="primary key"):
        inserts.insert_new(saved)


def _where(connection) -> inserts.Where:
    """A condition on another table: the workspace still has this name."""
    qn = connection.ops.quote_name
    return inserts.Where(label="test_ws_named", types=("bigint", "varchar"),
                         sql=f"EXISTS (SELECT 1 FROM {qn('core_workspace')} WHERE {qn('id')} = %s AND {qn('name')} = %s)")


def test_a_conditional_insert_writes_only_while_its_condition_holds(account):
    from django.db import connection

    ws = account.workspace
    first = _message(account, "c1")
    assert inserts.insert_new_where(first, _where(connection), [ws.pk, ws.name]) is True
    assert first.pk is not None and not first._state.adding
    stored = InboundMessage.objects.get(pk=first.pk)
    assert stored.reply_meta == {"rule": 3, "tags": ["会员", "vip"]} and stored.reply_content == "你好 ]]>"
    second = _message(account, "c2")
    assert inserts.insert_new_where(second, _where(connection), [ws.pk, ws.name + " (renamed)"]) is False
    assert second.pk is None and second._state.adding
    assert not InboundMessage.objects.filter(dedup_key="c2").exists()
    # the unique index still speaks: a conditional insert of a stored key raises as insert_new does
    with pytest.raises(IntegrityError), transaction.atomic():
        inserts.insert_new_where(_message(account, "c1"), _where(connection), [ws.pk, ws.name])


def test_a_conditional_insert_refuses_what_it_cannot_report(account):
    from django.db import connection

    with pytest.raises(ValueError, match="parameters"):
        inserts.insert_new_where(_message(account, "c3"), _where(connection), [account.workspace.pk])
    saved = inserts.insert_new(_message(account, "c4"))
    with pytest.raises(ValueError, match="primary key"):
        inserts.insert_new_where(saved, _where(connection), [account.workspace.pk, account.workspace.name])
    assert not InboundMessage.objects.filter(dedup_key="c3").exists()


def test_planned_values_are_the_orms_for_every_field_and_value_kind(account):
    """The plan passes str, int, bool and None through only where the field's own preparation would
    return them unchanged; anything else (a lazy string, a number in a text field, JSON, dates) goes
    through get_db_prep_save."""
    from django.db import connection
    from django.utils.functional import lazy

    obj = _message(account, "v1")
    obj.msg_type = lazy(lambda: "text", str)()  # a lazy string: resolved by the field
    obj.event = 5  # a number in a text field: made a str by the field
    plan = inserts.plan_for(InboundMessage, connection.alias)
    got = inserts.values(obj, plan, connection)
    obj2 = _message(account, "v1")
    obj2.msg_type, obj2.event = lazy(lambda: "text", str)(), 5
    want = [f.get_db_prep_save(f.pre_save(obj2, True), connection) for f in plan.fields]
    for field, a, b in zip(plan.fields, got, want, strict=True):
        if field.name == "received_at":
            continue  # auto_now_add: two calls, two instants
        assert type(a) is type(b), field.name
        assert (a.obj == b.obj) if hasattr(a, "obj") else a == b, field.name  # psycopg's Jsonb holds .obj
    assert got[[f.name for f in plan.fields].index("event")] == "5"
    assert got[[f.name for f in plan.fields].index("msg_type")] == "text"
    kinds = {f.name: unchanged for f, _a, unchanged in plan.steps}
    assert str in kinds["dedup_key"]
    # PostgreSQL's backend types integers itself (psycopg's Int4/Int8): they are always prepared there
    assert (int in kinds["account"]) == (connection.vendor == "sqlite")
    assert not kinds["payload"] and not kinds["received_at"]  # JSON and dates are always prepared


def test_statements_are_seen_by_query_logging_when_it_is_on(account):
    """With query logging on (DEBUG, assertNumQueries) the insert runs through Django's cursor and is
    logged; off, it runs on the driver's cursor. The rows are the same."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as logged:
        a = inserts.insert_new(_message(account, "q1"))
    assert any('INSERT INTO "channels_inboundmessage"' in q["sql"] for q in logged.captured_queries)
    b = inserts.insert_new(_message(account, "q2"))
    rows = {r.dedup_key: r for r in InboundMessage.objects.filter(pk__in=[a.pk, b.pk])}
    assert rows["q1"].reply_meta == rows["q2"].reply_meta and rows["q1"].payload == rows["q2"].payload


def test_work_meanwhile_sees_the_instances_own_values_and_is_done_once(account):
    from django.db import connection

    seen = []
    row = _message(account, "meanwhile-1")
    inserts.insert_new(row, meanwhile=lambda: seen.append(row.received_at))
    assert len(seen) == 1 and seen[0] is not None
    assert seen[0] == InboundMessage.objects.get(pk=row.pk).received_at
    again = _message(account, "meanwhile-2")
    ws = account.workspace
    assert inserts.insert_new_where(again, _where(connection), [ws.pk, ws.name], meanwhile=lambda: seen.append(1))
    assert seen[1:] == [1]
