from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from django.test import override_settings

from shequn.core.errors import ValidationError
from shequn.interactions import files
from shequn.interactions import services as interactions
from shequn.interactions.models import Interaction
from shequn.members import imports, services
from shequn.members.models import Identity, Member


def line(**kw):
    base = {"identities": [{"kind": "phone", "value": "13800138000"}], "type": "message", "channel": "wechat",
            "occurred_at": "2026-06-01T10:00:00+08:00", "source": "wx"}
    base.update(kw)
    return json.dumps(base, ensure_ascii=False)


def test_jsonl_with_bad_rows(ws, run):
    text = "\n".join([
        line(external_id="m1", properties={"text": "你好"}),     # row 1, line 1
        "",                                                      # blank line: skipped
        "{not json",                                             # row 2, line 3
        "[1, 2]",                                                # row 3, line 4
        line(external_id="m2", type="teleport"),                 # row 4, line 5
        line(external_id="m3", occurred_at="2026-06-01T10:00:00"),  # row 5, line 6: naive time
        line(external_id="m1"),                                  # row 6, line 7: repeats row 1
        line(external_id="o1", type="purchase", amount="25.50"),  # row 7, line 8
        line(external_id="m4", member_id=999999, identities=[]),  # row 8, line 9
    ]) + "\n"
    report, rows = run(ws, text, kind="interactions", filename="events.jsonl")
    got = {n: (o.line, o.status, o.code, o.field) for n, o in rows.items()}
    assert got == {
        1: (1, "created", "", ""),
        2: (3, "error", "invalid_json", ""),
        3: (4, "error", "invalid_event", ""),
        4: (5, "error", "invalid_type", "type"),
        5: (6, "error", "invalid_time", "occurred_at"),
        6: (7, "duplicate", "", ""),
        7: (8, "created", "", ""),
        8: (9, "error", "unknown_member", "member_id"),
    }
    assert rows[6].interaction_id == rows[1].interaction_id
    assert "time zone" in rows[5].reason
    assert (report.total_rows, report.created, report.unchanged, report.errors) == (8, 2, 1, 5)
    assert Interaction.objects.count() == 2
    member = Member.objects.get()
    assert (member.interaction_count, member.purchase_count) == (2, 1)

    again, rows2 = run(ws, text, kind="interactions", filename="events.jsonl")
    assert (again.created, again.unchanged, again.errors) == (0, 3, 5)
    assert [rows2[n].status for n in (1, 6, 7)] == ["duplicate", "duplicate", "duplicate"]
    assert Interaction.objects.count() == 2


def test_csv_with_identities_properties_and_bad_rows(ws, run):
    services.define_attribute(ws, "level", "l", "number", actor="t")
    known = services.upsert_member(ws, [{"kind": "email", "value": "k@example.com"}]).member
    interactions.save_touchpoint(ws, "store-counter", {"name": "收银台", "channel": "store"}, actor="t")
    text = (
        "member_id,phone,wechat_openid,wechat_appid,member_external_id,member_external_system,type,channel,direction,"
        "touchpoint,occurred_at,source,external_id,amount,currency,prop:rating,prop:Note,prop:items\n"
        f"{known.pk},,,,,,review,store,in,store-counter,2026-06-01 10:00:00+08:00,pos,r1,,,5,好喝,\n"
        ",13800138000,,,,,purchase,store,in,,2026-06-01T11:00:00Z,pos,o1,18.00,cny,,,\"[\"\"多肉葡萄\"\"]\"\n"
        ",,oA,wx1,,,message,wechat,out,,2026-06-01T12:00:00+08:00,wx,m1,,,,\"\"\"5\"\"\",\n"
        ",,,,C-9,crm,visit,store,in,,2026-06-01T12:00:00+08:00,crm,v1,,,,,\n"
        ",,,,,,message,wechat,in,,2026-06-01T12:00:00+08:00,wx,m2,,,,,\n"           # no member
        ",13800138000,,,,,purchase,store,in,,2026-06-01T11:00:00Z,pos,o2,abc,,,,\n"  # bad amount
        "424242,,,,,,message,wechat,in,,2026-06-01T12:00:00+08:00,wx,m3,,,,,\n"     # unknown member
        ",13800138000,,,,,message,wechat,sideways,,2026-06-01T12:00:00+08:00,wx,m4,,,,,\n"
    )
    report, rows = run(ws, text, kind="interactions")
    assert [rows[n].status for n in range(1, 9)] == ["created"] * 4 + ["error"] * 4
    assert [(rows[n].code, rows[n].field) for n in range(5, 9)] == [
        ("no_member", ""), ("invalid_field", "amount"), ("unknown_member", "member_id"), ("invalid_field", "direction")]
    assert [rows[n].line for n in range(1, 9)] == list(range(2, 10))
    review = Interaction.objects.get(external_id="r1")
    assert (review.member_id, review.touchpoint.code, review.properties) == (known.pk, "store-counter",
                                                                              {"rating": 5, "Note": "好喝"})
    order = Interaction.objects.get(external_id="o1")
    assert (str(order.amount), order.currency, order.properties) == ("18.00", "CNY", {"items": ["多肉葡萄"]})
    assert order.occurred_at == dt.datetime(2026, 6, 1, 11, 0, tzinfo=dt.UTC)
    assert Interaction.objects.get(external_id="m1").properties == {"Note": "5"}
    assert Identity.objects.get(value="oA").namespace == "wx1"
    assert Identity.objects.get(value="C-9").namespace == "crm"
    assert (report.created, report.errors) == (4, 4)


def test_interactions_dry_run_predicts_and_writes_nothing(ws, run):
    m = services.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}]).member
    interactions.ingest(ws, {"member_id": m.pk, "type": "message", "channel": "wechat", "source": "wx",
                             "external_id": "old", "occurred_at": "2026-06-01T10:00:00+08:00"})
    text = "\n".join([
        line(external_id="old"),                                     # stored already: duplicate
        line(external_id="new1"),                                    # created
        line(external_id="new2", identities=[{"kind": "phone", "value": "12"}]),  # bad phone
        line(external_id="new1"),                                    # same chunk repeat: duplicate
        line(external_id="new1"),                                    # later chunk: duplicate of what row 2 stored
        line(external_id="new2", identities=[{"kind": "email", "value": "n@example.com"}]),  # row 3 failed: created
        line(),                                                      # no external id: created
        line(external_id="p", profile={"gender": "robot"}),          # bad profile
    ]) + "\n"
    before = (Interaction.objects.count(), Member.objects.count())
    dry, predicted = run(ws, text, kind="interactions", filename="e.jsonl", dry_run=True, chunk_rows=4)
    assert (Interaction.objects.count(), Member.objects.count()) == before
    expected = ["duplicate", "created", "error", "duplicate", "duplicate", "created", "created", "error"]
    assert [predicted[n].status for n in range(1, 9)] == expected
    real, actual = run(ws, text, kind="interactions", filename="e.jsonl", chunk_rows=4)
    assert [actual[n].status for n in range(1, 9)] == expected
    assert [actual[n].code for n in (3, 8)] == [predicted[n].code for n in (3, 8)] == ["invalid_phone", "invalid_field"]
    assert (dry.created, dry.unchanged, dry.errors) == (real.created, real.unchanged, real.errors) == (3, 3, 2)


def test_export_then_import_is_all_duplicates(ws, run):
    m = services.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}]).member
    props = [{"rating": 5, "text": "=cmd", "n": "12", "blank": "", "nested": {"a": [1, "x"]}, "flag": True}, {}, {"x": None}]
    for i, p in enumerate(props):
        interactions.ingest(ws, {"member_id": m.pk, "type": "review", "channel": "store", "source": "pos",
                                 "external_id": f"r{i}", "amount": "9.90" if i == 1 else None,
                                 "occurred_at": f"2026-06-0{i + 1}T10:00:00+08:00", "properties": p})
    out = io.StringIO()
    assert files.export_interactions_csv(ws, out) == 3
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(table[0]) == ["member_id", *files.EVENT_COLUMNS, "prop:blank", "prop:flag", "prop:n", "prop:nested",
                              "prop:rating", "prop:text", "prop:x"]
    assert [r["external_id"] for r in table] == ["r0", "r1", "r2"]
    assert table[0]["prop:text"] == "'=cmd" and table[0]["prop:n"] == '"12"' and table[1]["amount"] == "9.90"

    report, rows = run(ws, out.getvalue(), kind="interactions")
    assert (report.unchanged, report.created, report.errors) == (3, 0, 0)

    # The same file into a fresh copy of the data: every event comes back identical.
    Interaction.objects.all().delete()
    report, rows = run(ws, out.getvalue(), kind="interactions")
    assert report.created == 3
    assert [Interaction.objects.get(external_id=f"r{i}").properties for i in range(3)] == props

    window = io.StringIO()
    assert imports.export_interactions_csv(ws, window, since="2026-06-02", until=dt.date(2026, 6, 3)) == 1
    assert "r1" in window.getvalue()


@pytest.mark.parametrize("text,code", [
    ("member_id,type,channel\n1,message,wechat\n", "missing_column"),
    ("phone,type,channel,occurred_at,mood\n1,message,wechat,2026-06-01T10:00:00Z,ok\n", "unknown_column"),
    ("type,channel,occurred_at\nmessage,wechat,2026-06-01T10:00:00Z\n", "no_identity_column"),
])
def test_interactions_header_problems(ws, text, code):
    with pytest.raises(ValidationError) as exc:
        imports.create_import_job(ws, "interactions", "e.csv", text.encode(), dry_run=False)
    assert exc.value.code == code


def test_property_cells():
    for value in [5, 2.5, True, None, "5", "", " padded ", "hello", "NaN", {"a": 1}, [1, "x"], "中文"]:
        assert files.decode_property(files.encode_property(value)) == value
    assert files.decode_property("hello") == "hello" and files.decode_property("NaN") == "NaN"


def test_empty_files_are_refused(ws):
    for name, data in [("e.jsonl", b"\xef\xbb\xbf\n \n"), ("e.csv", b"\xef\xbb\xbf\n\n")]:
        with pytest.raises(ValidationError) as exc:
            imports.create_import_job(ws, "interactions", name, data, dry_run=False)
        assert exc.value.code == "empty_file"


@override_settings(TASKS={"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}})
def test_interactions_job_in_the_background(ws, django_capture_on_commit_callbacks):
    data = (line(external_id="a") + "\n" + line(external_id="b", type="nope") + "\n").encode()
    with django_capture_on_commit_callbacks(execute=True):
        job = imports.create_import_job(ws, "interactions", "events.ndjson", data, dry_run=False)
    job.refresh_from_db()
    assert (job.status, job.total_rows, job.created_count, job.error_count) == ("done", 2, 1, 1)
    assert job.errors[0]["row"] == 2 and job.errors[0]["code"] == "invalid_type"
    assert Interaction.objects.get().external_id == "a"
