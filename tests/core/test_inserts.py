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


@pytest.fixture
def account():
    from shequn.channels import services as channels
    from shequn.core import services as core

    ws = core.create_workspace("ins", "Inserts")
    acc, _ = channels.connect_account(ws, "wx5b1e0c3f9a7d2e44", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "tok123",
                                      "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx", "safe", "test")
    return acc


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
    monkeypatch.setattr(inserts, "_statements", {})
    monkeypatch.setattr(Workspace, "save", lambda self, *args, **kwargs: None)
    with pytest.raises(TypeError, match="overrides save"):
        inserts.insert_new(Workspace(slug="x", name="x"))
    # django_tasks_db sets run_after in a pre_save receiver: refused unless the caller did that work.
    row = DBTaskResult(args_kwargs={"args": [], "kwargs": {}}, task_path="x.y", backend_name="default")
    with pytest.raises(TypeError, match="receivers"):
        inserts.insert_new(row)
    saved = inserts.insert_new(_message(account, "k3"))
    with pytest.raises(ValueError, match="primary key"):
        inserts.insert_new(saved)


def _task_rows():
    return list(DBTaskResult.objects.filter(task_path="shequn.channels.tasks.record_inbound").values_list("args_kwargs", flat=True))


def test_a_row_and_its_task_are_stored_together(account):
    from shequn.channels import tasks
    from shequn.core.tasks import insert_with_task

    with transaction.atomic():
        record = insert_with_task(_message(account, "t1"), tasks.record_inbound)
    assert record.pk is not None and not record._state.adding
    assert _task_rows() == [{"args": [record.pk], "kwargs": {}}]
    stored = DBTaskResult.objects.get(task_path="shequn.channels.tasks.record_inbound")
    assert stored.status == "READY" and stored.queue_name == "default" and stored.run_after.year == 9999
    assert InboundMessage.objects.get(pk=record.pk).payload == {"Content": "积分", "n": 1.5}


def test_a_rolled_back_transaction_keeps_neither(account):
    from shequn.channels import tasks
    from shequn.core.tasks import insert_with_task

    class Abort(Exception):
        pass

    with pytest.raises(Abort), transaction.atomic():
        insert_with_task(_message(account, "t2"), tasks.record_inbound)
        raise Abort
    assert _task_rows() == [] and not InboundMessage.objects.filter(dedup_key="t2").exists()


def test_a_duplicate_row_enqueues_nothing(account):
    from shequn.channels import tasks
    from shequn.core.tasks import insert_with_task

    with transaction.atomic():
        first = insert_with_task(_message(account, "t3"), tasks.record_inbound)
    with pytest.raises(IntegrityError), transaction.atomic():
        insert_with_task(_message(account, "t3"), tasks.record_inbound)
    assert _task_rows() == [{"args": [first.pk], "kwargs": {}}]
