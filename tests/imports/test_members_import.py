from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest
from django.test import override_settings

from shequn.core.errors import Conflict, ValidationError
from shequn.core.models import AuditEntry
from shequn.members import imports, services, tasks
from shequn.members.models import (
    Identity,
    ImportJob,
    ImportStatus,
    Keyword,
    Member,
    MemberKeyword,
    MemberStatus,
    MemberTag,
    Tag,
)

HEADER = "phone,email,wechat_openid,wechat_appid,name,gender,birthday,city,tags,keywords,attr:level,attr:vip,source_channel\n"


@pytest.fixture
def attrs(ws):
    services.define_attribute(ws, "level", "等级", "number", actor="t")
    services.define_attribute(ws, "vip", "VIP", "boolean", actor="t")
    services.define_attribute(ws, "size", "杯型", "choice", ["中杯", "大杯"], actor="t")
    services.define_attribute(ws, "since", "入会日", "date", actor="t")
    return ws


def snapshot():
    return (Member.objects.count(), Identity.objects.count(), MemberTag.objects.count(), MemberKeyword.objects.count(),
            Tag.objects.count(), Keyword.objects.count(), AuditEntry.objects.count())


def test_happy_path_creates_members_with_everything(attrs, run):
    ws = attrs
    text = HEADER + (
        "138 0013 8000,Li.Na@Example.com,oA1,wx1,李娜,女,1992-03-04,杭州,VIP|奶茶控,口味/水果茶|口味/奶茶/芝士,3,是,门店海报\n"
        "+86 139-0013-9000,,,,王伟,m,,上海,VIP,,2.5,false,\n"
    )
    report, rows = run(ws, text)
    assert (report.status, report.created, report.updated, report.unchanged, report.errors) == ("done", 2, 0, 0, 0)
    assert [rows[1].status, rows[2].status] == ["created", "created"]
    li = Member.objects.get(pk=rows[1].member_id)
    assert (li.display_name, li.gender, li.birthday, li.city, li.source_channel) == (
        "李娜", "female", dt.date(1992, 3, 4), "杭州", "门店海报")
    assert li.attributes == {"level": 3, "vip": True}
    assert sorted(Identity.objects.filter(member=li).values_list("kind", "namespace", "value")) == [
        ("email", "", "li.na@example.com"), ("phone", "", "+8613800138000"), ("wechat_openid", "wx1", "oA1")]
    assert sorted(MemberTag.objects.filter(member=li).values_list("tag__name", flat=True)) == ["VIP", "奶茶控"]
    assert sorted(MemberKeyword.objects.filter(member=li).values_list("keyword__path", flat=True)) == [
        "口味/奶茶/芝士", "口味/水果茶"]
    assert Keyword.objects.get(path="口味/奶茶/芝士").depth == 3
    wang = Member.objects.get(pk=rows[2].member_id)
    assert (wang.gender, wang.attributes) == ("male", {"level": 2.5, "vip": False})
    assert Identity.objects.get(member=wang).value == "+8613900139000"
    job = ImportJob.objects.get(pk=report.job_id)
    assert (job.total_rows, job.processed_rows, job.finished_at is not None) == (2, 2, True)


def test_row_errors_name_the_row_the_line_and_the_reason(attrs, run):
    ws = attrs
    text = (
        "phone,name,gender,birthday,attr:level,attr:colour\n"
        '13800138000,"两行\n的名字",,,1,\n'    # row 1, lines 2-3: fine
        "12,坏手机,,,,\n"                       # row 2, line 4
        "13900139000,坏生日,,1992-13-01,,\n"    # row 3, line 5
        "13700137000,未知属性,,,,红\n"          # row 4, line 6
        "\n"                                    # blank: skipped, not a row
        "13600136000,坏性别,robot,,,\n"         # row 5, line 8
        "13500135000,坏数字,,,abc,\n"           # row 6, line 9
        ",没有身份,,,,\n"                        # row 7, line 10
    )
    report, rows = run(ws, text)
    assert (report.total_rows, report.created, report.errors) == (7, 1, 6)
    got = {n: (o.line, o.status, o.field, o.code) for n, o in rows.items()}
    assert got == {
        1: (2, "created", "", ""),
        2: (4, "error", "phone", "invalid_phone"),
        3: (5, "error", "birthday", "invalid_field"),
        4: (6, "error", "attr:colour", "unknown_attribute"),
        5: (8, "error", "gender", "invalid_field"),
        6: (9, "error", "attr:level", "invalid_attribute"),
        7: (10, "error", "", "no_identity"),
    }
    assert "'12'" in rows[2].reason
    assert "1992-13-01" in rows[3].reason
    assert "colour" in rows[4].reason
    assert "gender must be one of" in rows[5].reason
    assert Member.objects.get().display_name == "两行\n的名字"
    job = ImportJob.objects.get(pk=report.job_id)
    assert job.errors[0] == {"row": 2, "line": 4, "field": "phone", "code": "invalid_phone", "reason": rows[2].reason}
    assert [e["row"] for e in job.errors] == [2, 3, 4, 5, 6, 7]


def test_rerun_of_the_same_file_is_idempotent(attrs, run):
    ws = attrs
    text = HEADER + (
        "13800138000,a@example.com,oA1,wx1,李娜,女,1992-03-04,杭州,VIP|奶茶控,口味/水果茶,3,是,门店海报\n"
        "13900139000,,,,王伟,男,,上海,VIP,口味/纯茶,,,\n"
    )
    run(ws, text)
    before = snapshot()
    report, rows = run(ws, text)
    assert (report.created, report.updated, report.unchanged, report.errors) == (0, 0, 2, 0)
    assert {o.status for o in rows.values()} == {"unchanged"}
    assert snapshot() == before


def test_dry_run_writes_nothing_and_predicts_the_real_run(attrs, run):
    ws = attrs
    a = services.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}], {"display_name": "甲", "city": "杭州"}).member
    services.add_tags(ws, a.pk, ["VIP"], actor="t")
    b = services.upsert_member(ws, [{"kind": "email", "value": "b@example.com"}], {"display_name": "乙"}).member
    c = services.upsert_member(ws, [{"kind": "wechat_openid", "value": "oC", "namespace": "wx1"}],
                               {"display_name": "丙", "source_channel": "海报"}).member
    text = HEADER + (
        "13800138000,,,,甲,,,杭州,VIP,,,,\n"              # 1 existing, nothing new: unchanged
        "13800138000,,,,甲,,,上海,,,,,\n"                 # 2 existing, city changes: updated
        "13300133000,,,,新人,,,,新客,,,,\n"              # 3 new: created
        "13300133000,,,,新人,,,,新客,,,,\n"              # 4 same as row 3: unchanged
        "13300133000,,,,新人,,,,老客,,,,\n"              # 5 adds a tag to row 3's member: updated
        ",b@example.com,oC,wx1,,,,,,,,,\n"             # 6 links two stored members: merge, updated
        ",,oC,wx1,,,,,,,,,\n"                          # 7 after the merge: unchanged
        ",,oC,wx1,,,,,,,,,门店\n"                        # 8 source already set (first wins): unchanged
        "13200132000,,,,x,,1990-02-31,,,,,,\n"          # 9 error
        ",d@example.com,,,丁,,,,,口味/纯茶,7,是,\n"      # 10 new
        ",D@Example.com,,,丁,,,,,口味/纯茶,7,yes,\n"     # 11 same person, same values: unchanged
        ",d@example.com,,,丁,,,,,,8,,\n"                 # 12 attribute changes: updated
    )
    before = snapshot()
    dry, predicted = run(ws, text, dry_run=True, chunk_rows=4)
    assert snapshot() == before
    assert Member.objects.get(pk=c.pk).status == MemberStatus.ACTIVE
    assert dry.dry_run and dry.status == "done"
    expected = ["unchanged", "updated", "created", "unchanged", "updated", "updated", "unchanged", "unchanged",
                "error", "created", "unchanged", "updated"]
    assert [predicted[i].status for i in range(1, 13)] == expected
    assert (dry.created, dry.updated, dry.unchanged, dry.errors) == (2, 4, 5, 1)

    real, actual = run(ws, text, chunk_rows=4)
    assert [actual[i].status for i in range(1, 13)] == expected
    assert (real.created, real.updated, real.unchanged, real.errors) == (dry.created, dry.updated, dry.unchanged,
                                                                        dry.errors)
    assert predicted[1].member_id == actual[1].member_id == a.pk
    assert predicted[6].member_id == actual[6].member_id == b.pk
    assert Member.objects.get(pk=c.pk).status == MemberStatus.MERGED
    assert Member.objects.get(pk=b.pk).source_channel == "海报"


def test_progress_is_reported_after_every_chunk(ws, run):
    lines = "".join(f"1380013800{i},会员{i}\n" for i in range(5))
    seen = []

    def progress(done, total):
        job = ImportJob.objects.order_by("-pk").first()
        seen.append((done, total, job.processed_rows))

    report, _ = run(ws, "phone,name\n" + lines, chunk_rows=2, progress=progress)
    assert seen == [(0, 5, 0), (2, 5, 2), (4, 5, 4), (5, 5, 5)]
    assert report.created == 5


def test_export_then_import_round_trips(attrs, other_ws, run):
    ws = attrs
    text = (
        "phone,email,wechat_openid,wechat_appid,wechat_unionid,external_id,external_system,name,gender,birthday,"
        "city,timezone,language,tags,keywords,source_channel,source_code,attr:level,attr:vip,attr:size,attr:since\n"
        "13800138000|13900139000,a@example.com,oA|oB,wx1|wx2,uA,E1,pos,李娜,female,1992-03-04,杭州,Asia/Shanghai,zh,"
        "VIP|奶茶控,口味/水果茶|口味/奶茶,海报,P-01,3,true,大杯,2024-01-02\n"
        "13700137000,,,,,E2|E3,crm,=HYPERLINK(\"http://x\"),,,,,,'引号,,,,1.5,false,,\n"
        ",c@example.com,oC,wx1,,,,-王,other,,,,,,,,,,,,\n"
    )
    first, _ = run(ws, text)
    assert first.created == 3 and first.errors == 0
    out = io.StringIO()
    assert imports.export_members_csv(ws, out) == 3
    exported = out.getvalue()
    assert "'=HYPERLINK" in exported and "''引号" in exported and "'-王" in exported
    assert "+8613800138000|+8613900139000" in exported and "oA|oB,wx1|wx2" in exported

    again, rows = run(ws, exported)
    assert (again.unchanged, again.errors) == (3, 0)

    for key, label, type_, choices in [("level", "l", "number", []), ("vip", "v", "boolean", []),
                                       ("size", "s", "choice", ["中杯", "大杯"]), ("since", "d", "date", [])]:
        services.define_attribute(other_ws, key, label, type_, choices, actor="t")
    moved, _ = run(other_ws, exported)
    assert (moved.created, moved.errors) == (3, 0)
    out2 = io.StringIO()
    imports.export_members_csv(other_ws, out2)
    assert out2.getvalue() == exported
    copy = Member.objects.get(workspace=other_ws, display_name='=HYPERLINK("http://x")')
    assert copy.attributes == {"level": 1.5, "vip": False}


def test_export_with_a_filter(ws):
    a = services.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}], {"display_name": "甲"}).member
    services.upsert_member(ws, [{"kind": "phone", "value": "13900139000"}], {"display_name": "乙"})
    services.add_tags(ws, a.pk, ["VIP"], actor="t")
    out = io.StringIO()
    assert imports.export_members_csv(ws, out, {"tag": "VIP"}) == 1
    assert "甲" in out.getvalue() and "乙" not in out.getvalue()


def test_unknown_column_is_refused_before_any_row(ws):
    data = "phone,name,favourite_colour,attr:level\n13800138000,甲,red,1\n".encode()
    with pytest.raises(ValidationError) as exc:
        imports.create_import_job(ws, "members", "m.csv", data, dry_run=False)
    assert exc.value.code == "unknown_column"
    assert exc.value.details == {"columns": ["favourite_colour"]}
    assert "favourite_colour" in exc.value.message
    assert ImportJob.objects.count() == 0 and Member.objects.count() == 0


def test_header_problems(ws):
    for data, code in [(b"phone,name,Phone\n1,2,3\n", "duplicate_column"), (b"name,city\nx,y\n", "no_identity_column"),
                       (b"\n\n", "empty_file"), (b"\xff\xfe\x00\x81\x00", "invalid_encoding")]:
        with pytest.raises(ValidationError) as exc:
            imports.create_import_job(ws, "members", "m.csv", data, dry_run=False)
        assert exc.value.code == code
    assert ImportJob.objects.count() == 0
    assert not any((Path(imports.settings.DATA_DIR) / "imports").iterdir())


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8", "gb18030"])
def test_bom_and_gb18030_files(ws, run, encoding):
    text = "手机,name,city\n"  # a header in the wrong words is still refused the same way
    with pytest.raises(ValidationError):
        run(ws, text.encode(encoding))
    data = "phone,name,city,tags\r\n13800138000,王小明,杭州,老客|奶茶控\r\n".encode(encoding)
    report, rows = run(ws, data)
    assert report.created == 1
    member = Member.objects.get()
    assert (member.display_name, member.city) == ("王小明", "杭州")
    assert set(MemberTag.objects.values_list("tag__name", flat=True)) == {"老客", "奶茶控"}


def test_job_file_is_stored_with_a_safe_name(ws, settings):
    job = imports.create_import_job(ws, "members", "../../etc/会员 名单.csv", b"phone\n13800138000\n", dry_run=True,
                                    enqueue=False)
    path = Path(job.file_path)
    assert path.parent == Path(settings.DATA_DIR) / "imports"
    assert path.name.startswith(f"{job.pk}-") and ".." not in path.name and "/" not in path.name[len(str(job.pk)):]
    assert path.read_bytes() == b"phone\n13800138000\n"
    assert job.filename == "../../etc/会员 名单.csv" and job.status == ImportStatus.QUEUED


def test_size_limit(ws, monkeypatch):
    monkeypatch.setattr(imports, "MAX_IMPORT_BYTES", 10)
    with pytest.raises(ValidationError) as exc:
        imports.create_import_job(ws, "members", "m.csv", b"phone\n13800138000\n", dry_run=False)
    assert exc.value.code == "file_too_large"


IMMEDIATE = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}


@override_settings(TASKS=IMMEDIATE)
def test_job_runs_in_the_background_after_commit(ws, django_capture_on_commit_callbacks):
    data = "phone,name\n13800138000,甲\n13900139000,乙\n12,坏\n".encode()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        job = imports.create_import_job(ws, "members", "m.csv", data, dry_run=False)
        assert ImportJob.objects.get(pk=job.pk).status == ImportStatus.QUEUED
    assert len(callbacks) == 1
    job.refresh_from_db()
    assert (job.status, job.total_rows, job.processed_rows, job.created_count, job.error_count) == ("done", 3, 3, 2, 1)
    assert job.errors == [{"row": 3, "line": 4, "field": "phone", "code": "invalid_phone",
                           "reason": "not a possible phone number: '12'"}]
    # Delivered again: a finished job is not run again.
    before = snapshot()
    assert tasks.run_import_job.call(job.pk) == "done"
    assert snapshot() == before
    assert tasks.run_import_job.call(999999) == "missing"


@override_settings(TASKS=IMMEDIATE)
def test_dry_run_job_in_the_background(ws, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job = imports.create_import_job(ws, "members", "m.csv", b"phone\n13800138000\n", dry_run=True)
    job.refresh_from_db()
    assert (job.status, job.created_count) == ("done", 1)
    assert Member.objects.count() == 0


def test_interrupted_job_resumes_after_the_last_committed_chunk(ws, run):
    data = ("phone,name\n" + "".join(f"1380013800{i},会员{i}\n" for i in range(7))).encode()
    job = imports.create_import_job(ws, "members", "m.csv", data, dry_run=False, enqueue=False)
    calls = []

    def stop_after_first_chunk(outcome):
        calls.append(outcome.row)
        if len(calls) == 3:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError):
        imports.run_import(job, on_row=stop_after_first_chunk, chunk_rows=3)
    job.refresh_from_db()
    assert (job.status, job.processed_rows, job.created_count) == ("failed", 3, 3)
    assert "Stopped after row 3" in job.message and "RuntimeError: worker lost" in job.message
    assert imports.run_import(job).status == "failed"  # a failed job waits to be resumed explicitly

    imports.resume_import_job(ws, job.pk, enqueue=False)
    rows = []
    report = imports.run_import(job, on_row=rows.append, chunk_rows=3)
    assert [o.row for o in rows] == [4, 5, 6, 7]
    assert (report.status, report.processed_rows, report.created, report.unchanged) == ("done", 7, 7, 0)
    assert Member.objects.count() == 7
    with pytest.raises(Conflict):
        imports.resume_import_job(ws, job.pk)


def test_job_left_running_by_a_dead_worker_is_resumed_by_the_task(ws):
    data = ("phone\n" + "".join(f"1390013900{i}\n" for i in range(4))).encode()
    job = imports.create_import_job(ws, "members", "m.csv", data, dry_run=False, enqueue=False)
    imports.run_import(job, on_row=lambda o: None, chunk_rows=2)  # the whole file
    ImportJob.objects.filter(pk=job.pk).update(status=ImportStatus.RUNNING, processed_rows=2, created_count=2,
                                               finished_at=None)
    Member.objects.filter(identities__value__in=["+8613900139002", "+8613900139003"]).delete()
    assert tasks.run_import_job.call(job.pk) == "done"
    job.refresh_from_db()
    assert (job.processed_rows, job.created_count) == (4, 4)
    assert Member.objects.count() == 4


def test_resume_is_scoped_to_the_workspace(ws, other_ws):
    job = imports.create_import_job(ws, "members", "m.csv", b"phone\n13800138000\n", dry_run=False, enqueue=False)
    from shequn.core.errors import NotFound

    with pytest.raises(NotFound):
        imports.resume_import_job(other_ws, job.pk)


def test_cell_escaping_round_trips():
    for value in ["=1+2", "+x", "-", "@a", "'", "''", "'=x", "plain", "", "+8613800138000", "-5", "1e5", "\ttab"]:
        assert imports.unescape_cell(imports.escape_cell(value)) == value
    assert imports.escape_cell("=SUM(A1)") == "'=SUM(A1)"
    assert imports.escape_cell("+8613800138000") == "+8613800138000"
