from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shequn import cli as shequn_cli
from shequn.core import services as core
from shequn.core.models import ApiKey, StaffMembership, Workspace
from shequn.interactions import services as interactions
from shequn.members import imports, services
from shequn.members.models import ImportJob, Member

MEMBERS = "phone,name,city,tags\n13800138000,王小明,杭州,VIP\n13900139000,李娜,上海,\n"


def test_no_command_prints_help(shequn):
    code, out, _ = shequn()
    assert code == 2 and "createworkspace" in out and "import" in out


def test_createworkspace_with_owner(shequn, db):
    code, out, err = shequn("createworkspace", "shop", "小店", "--owner", "bob", "--password", "Xq7-long-enough",
                            "--timezone", "Asia/Hong_Kong", "--country", "hk")
    assert code == 0, err
    ws = Workspace.objects.get(slug="shop")
    assert (ws.name, ws.default_timezone, ws.default_country) == ("小店", "Asia/Hong_Kong", "HK")
    assert f"Workspace shop created (id {ws.pk})" in out
    owner = StaffMembership.objects.get(workspace=ws)
    assert (owner.user.username, owner.role, owner.user.check_password("Xq7-long-enough")) == ("bob", "owner", True)

    code, _, err = shequn("createworkspace", "shop", "again")
    assert code == 2 and err.startswith("error: workspace 'shop' already exists")
    code, _, err = shequn("createworkspace", "other", "x", "--timezone", "Mars/Olympus")
    assert code == 2 and "unknown time zone" in err
    code, _, err = shequn("createworkspace", "other", "x", "--owner", "eve", "--password", "123")
    assert code == 2 and "error:" in err
    assert not Workspace.objects.filter(slug="other").exists()


def test_apikey_create_list_revoke(shequn, ws):
    code, out, err = shequn("apikey", "create", "--workspace", "tea", "--name", "pos-sync", "--role", "clerk")
    assert code == 0 and "shown only once" in err
    secret = out.strip()
    key = core.authenticate_api_key(secret)
    assert (key.workspace_id, key.name, key.role) == (ws.pk, "pos-sync", "clerk")

    code, out, _ = shequn("apikey", "list", "--workspace", "tea")
    assert code == 0
    header, row = out.strip().splitlines()
    assert header.split()[:4] == ["ID", "NAME", "PREFIX", "ROLE"]
    assert row.split()[:4] == [str(key.pk), "pos-sync", f"sq_{key.prefix}_…", "clerk"] and row.endswith("active")
    assert secret not in out

    code, out, _ = shequn("apikey", "revoke", "--workspace", "tea", key.pk)
    assert code == 0 and ApiKey.objects.get(pk=key.pk).revoked_at is not None
    assert shequn("apikey", "list", "--workspace", "tea")[1].strip().endswith("revoked")


def test_apikey_of_another_workspace_cannot_be_revoked(shequn, ws, other_ws):
    key, _ = core.create_api_key(other_ws, "theirs")
    code, _, err = shequn("apikey", "revoke", "--workspace", "tea", key.pk)
    assert code == 2 and "not found" in err
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_unknown_workspace(shequn, db, tmp_path):
    code, _, err = shequn("export", "members", "--workspace", "nowhere")
    assert (code, err.strip()) == (2, "error: workspace 'nowhere' not found")


def test_import_with_row_errors_then_fixed(shequn, ws, tmp_path):
    path = tmp_path / "members.csv"
    path.write_text("phone,name,birthday\n13800138000,王小明,1990-05-01\n12,坏,\n13900139000,李娜,1992-02-30\n",
                    encoding="utf-8")
    code, out, _ = shequn("import", "members", path, "--workspace", "tea")
    assert code == 1
    assert "created:   1" in out and "errors:    2" in out
    assert "row 2 (line 3) [phone]: not a possible phone number: '12'" in out
    assert "row 3 (line 4) [birthday]:" in out
    report = tmp_path / "members.csv.errors.csv"
    rows = list(csv.reader(io.StringIO(report.read_text(encoding="utf-8-sig"))))
    assert rows[0] == ["row", "line", "field", "code", "reason"]
    assert [r[:4] for r in rows[1:]] == [["2", "3", "phone", "invalid_phone"], ["3", "4", "birthday", "invalid_field"]]

    path.write_text("phone,name\n13800138000,王小明\n13900139000,李娜\n", encoding="utf-8")
    code, out, _ = shequn("import", "members", path, "--workspace", "tea")
    assert code == 0 and "created:   1" in out and "unchanged: 1" in out
    assert not report.exists()


def test_import_dry_run_writes_nothing(shequn, ws, tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(MEMBERS, encoding="utf-8")
    code, out, _ = shequn("import", "members", path, "--workspace", "tea", "--dry-run")
    assert code == 0 and "dry run" in out and "created:   2" in out
    assert Member.objects.count() == 0
    assert ImportJob.objects.get().dry_run


def test_import_many_rows_shows_more_than_the_first_errors(shequn, ws, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("phone\n" + "1\n" * 25, encoding="utf-8")
    code, out, _ = shequn("import", "members", path, "--workspace", "tea")
    assert code == 1
    assert out.count("[phone]") == shequn_cli.ERRORS_SHOWN
    assert "All 25 row errors are in" in out
    assert len((tmp_path / "bad.csv.errors.csv").read_text(encoding="utf-8-sig").splitlines()) == 26


def test_import_bad_file_and_bad_usage(shequn, ws, tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("phone,shoe_size\n13800138000,42\n", encoding="utf-8")
    code, _, err = shequn("import", "members", path, "--workspace", "tea")
    assert code == 2 and "error: Unknown column(s): shoe_size" in err
    code, _, err = shequn("import", "members", tmp_path / "missing.csv", "--workspace", "tea")
    assert code == 2 and "cannot read" in err
    with pytest.raises(SystemExit) as exc:
        shequn("import", "pets", path, "--workspace", "tea")
    assert exc.value.code == 2


def test_import_interactions_jsonl(shequn, ws, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"identities": [{"kind": "phone", "value": "13800138000"}], "type": "message", '
                    '"channel": "wechat", "occurred_at": "2026-06-01T10:00:00Z", "source": "wx", "external_id": "1"}\n',
                    encoding="utf-8")
    assert shequn("import", "interactions", path, "--workspace", "tea")[0] == 0
    code, out, _ = shequn("import", "interactions", path, "--workspace", "tea")
    assert code == 0 and "duplicate: 1" in out and "created:   0" in out


def test_import_resume(shequn, ws, tmp_path, monkeypatch):
    data = ("phone\n" + "".join(f"1380013800{i}\n" for i in range(4))).encode()
    job = imports.create_import_job(ws, "members", "m.csv", data, dry_run=False, enqueue=False)

    def crash(outcome):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        imports.run_import(job, on_row=crash, chunk_rows=2)
    job.refresh_from_db()
    assert (job.status, job.processed_rows) == ("failed", 2)
    monkeypatch.chdir(tmp_path)
    code, out, _ = shequn("import", "resume", job.pk, "--workspace", "tea")
    assert code == 0 and "created:   4" in out
    assert Member.objects.count() == 4
    code, _, err = shequn("import", "resume", job.pk, "--workspace", "tea")
    assert code == 2 and "already done" in err


def test_export_members_and_interactions(shequn, ws, tmp_path):
    m = services.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}], {"display_name": "王小明"}).member
    interactions.ingest(ws, {"member_id": m.pk, "type": "visit", "channel": "store", "source": "pos",
                             "external_id": "v1", "occurred_at": "2026-06-01T10:00:00+08:00"})
    target = tmp_path / "out.csv"
    code, _, err = shequn("export", "members", "--workspace", "tea", "-o", target, "--bom")
    assert code == 0 and "1 rows written" in err
    raw = target.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and "王小明".encode() in raw
    code, out, _ = shequn("export", "members", "--workspace", "tea", "--tag", "nothing")
    assert code == 0 and out.strip().startswith("phone,") and len(out.strip().splitlines()) == 1
    code, out, _ = shequn("export", "interactions", "--workspace", "tea", "--since", "2026-06-01")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].startswith("member_id,type") and f"{m.pk},visit,store,in" in lines[1]
    code, _, err = shequn("export", "interactions", "--workspace", "tea", "--since", "yesterday")
    assert code == 2 and "since must be a date" in err


@pytest.fixture
def fake_bench(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "bench").mkdir(parents=True)
    (root / "bench" / "__init__.py").write_text("")
    (root / "bench" / "_harness.py").write_text("")
    (root / "bench" / "hello.py").write_text(
        "import json\n\ndef main(argv):\n    print(json.dumps({'bench': 'hello', 'argv': argv}))\n    return 3\n")
    monkeypatch.setattr(shequn_cli, "bench_root", lambda: root)
    saved = {k: v for k, v in sys.modules.items() if k == "bench" or k.startswith("bench.")}
    for k in saved:
        del sys.modules[k]
    yield root
    for k in [k for k in sys.modules if k == "bench" or k.startswith("bench.")]:
        del sys.modules[k]
    sys.modules.update(saved)
    while str(root) in sys.path:
        sys.path.remove(str(root))


def test_bench_lists_and_runs(shequn, fake_bench):
    code, out, _ = shequn("bench")
    assert (code, out.split()[-1:]) == (0, ["hello"])
    code, out, err = shequn("bench", "nope")
    assert code == 2 and "unknown benchmark 'nope'" in err and "hello" in out
    code, out, _ = shequn("bench", "hello", "--quick", "--extra", "1")
    assert code == 3 and '"argv": ["--quick", "--extra", "1"]' in out


def test_bench_finds_the_repository_benchmarks():
    root = shequn_cli.bench_root()
    assert root is not None and (root / "src" / "shequn").is_dir()
    assert {"ingest", "members_list"} <= set(shequn_cli.available_benchmarks(root))


# ---------------------------------------------------------------------------------------------
# the installed command, in its own process, against its own database


def _bin() -> Path:
    return Path(sys.executable).parent / "shequn"


def test_installed_command_help():
    result = subprocess.run([str(_bin()), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("demo", "serve", "migrate", "worker", "import", "export", "createworkspace", "apikey", "bench"):
        assert command in result.stdout


def test_installed_command_against_a_fresh_database(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SHEQUN_"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", SHEQUN_DATA_DIR=str(tmp_path / "data"),
               SHEQUN_LANGUAGE="en")

    def sh(*args):
        return subprocess.run([str(_bin()), *map(str, args)], capture_output=True, text=True, timeout=300, env=env,
                              cwd=tmp_path)

    result = sh("migrate", "-v", "0")
    assert result.returncode == 0, result.stderr
    result = sh("createworkspace", "shop", "小店", "--owner", "bob", "--password", "Xq7-long-enough")
    assert result.returncode == 0, result.stderr
    assert "Workspace shop created" in result.stdout
    result = sh("createworkspace", "shop", "again")
    assert result.returncode == 2 and "error: workspace 'shop' already exists" in result.stderr
    (tmp_path / "m.csv").write_text(MEMBERS, encoding="utf-8")
    result = sh("import", "members", "m.csv", "--workspace", "shop")
    assert result.returncode == 0, result.stderr
    assert "created:   2" in result.stdout
    result = sh("export", "members", "--workspace", "shop")
    assert result.returncode == 0 and "+8613800138000" in result.stdout and "王小明" in result.stdout
    assert (tmp_path / "data" / "imports").is_dir()
    result = sh("worker", "--help")
    assert result.returncode == 0 and "--batch" in result.stdout


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_serves_the_console_and_runs_imports_in_its_worker(tmp_path):
    """`shequn demo` end to end: migrate, build a small demo, serve it with gunicorn, and run an import
    job in its background worker; SIGTERM stops the server and the worker."""
    import signal
    import time
    import urllib.request

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SHEQUN_"))}
    env.update(SHEQUN_DATA_DIR=str(tmp_path), SHEQUN_LANGUAGE="en", DJANGO_SETTINGS_MODULE="shequn.settings")
    port = _free_port()
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    with out.open("w") as out_fh, err.open("w") as err_fh:
        proc = subprocess.Popen([str(_bin()), "demo", "--port", str(port), "--members", "40", "--interactions", "400"],
                                env=env, cwd=tmp_path, stdout=out_fh, stderr=err_fh)
    try:
        deadline = time.monotonic() + 240
        while "Press Ctrl-C" not in out.read_text() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        banner = out.read_text()
        assert f"http://127.0.0.1:{port}/w/demo/" in banner and "Password:" in banner, err.read_text()

        def get(path):
            for _attempt in range(60):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                        return response.status, response.read().decode()
                except OSError:
                    time.sleep(0.5)
            raise AssertionError(f"{path} did not answer")

        status, body = get("/login/")
        assert status == 200 and "csrfmiddlewaretoken" in body
        assert get("/api/docs")[0] == 200

        script = (
            "import django, time; django.setup()\n"
            "from shequn.core.models import Workspace\n"
            "from shequn.members import imports\n"
            "from shequn.members.models import ImportJob\n"
            "ws = Workspace.objects.get(slug='demo')\n"
            "job = imports.create_import_job(ws, 'members', 'x.csv', b'phone,name\\n13800001111,Demo Import\\n', dry_run=False)\n"
            "for _ in range(120):\n"
            "    job.refresh_from_db()\n"
            "    if job.status == 'done': break\n"
            "    time.sleep(0.5)\n"
            "print(job.status, job.created_count)\n"
        )
        result = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=120)
        assert result.stdout.split() == ["done", "1"], result.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err.read_text()


def test_loyalty_verify_and_wechat_connect_are_reachable(tmp_path, monkeypatch):
    import subprocess
    import sys

    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/c.sqlite3", "SHEQUN_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "shequn.cli"]
    assert subprocess.run([*run, "migrate"], env=env, capture_output=True, timeout=300).returncode == 0
    assert subprocess.run([*run, "createworkspace", "tea", "Tea"], env=env, capture_output=True, timeout=120).returncode == 0
    ok = subprocess.run([*run, "loyalty", "verify", "--workspace", "tea"], env=env, capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    wx = subprocess.run([*run, "wechat", "connect", "--workspace", "tea", "--app-id", "wx1234567890abcdef",
                         "--app-secret", "s" * 32, "--token", "tok123", "--mode", "plaintext"],
                        env=env, capture_output=True, text=True, timeout=120)
    assert wx.returncode == 0, wx.stderr
    assert "/wechat/" in wx.stdout
