"""The ``shequn`` command: the demo, serving, workers, migrations, imports and exports, workspaces,
API keys and benchmarks. Thin: it parses arguments, calls services and queries, and prints.

Exit codes: 0 success; 1 an import finished with row errors; 2 bad usage, a bad file, or any
``ShequnError`` (printed as ``error: <message>`` on stderr).
"""

from __future__ import annotations

import argparse
import csv
import getpass
import importlib
import os
import pkgutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shequn.core.models import Workspace
    from shequn.members.imports import ImportReport, RowOutcome

SETTINGS_MODULE = "shequn.settings"
DEMO_SLUG = "demo"
ERRORS_SHOWN = 20
PASSTHROUGH = {"worker": "shequn_worker", "migrate": "migrate"}
# Two-word commands whose work lives in a domain's management command.
PASSTHROUGH_PAIRS = {("loyalty", "verify"): "shequn_loyalty_verify", ("wallet", "verify"): "shequn_wallet_verify",
                     ("wechat", "connect"): "shequn_wechat_connect"}
LANGUAGE_ENV = "SHEQUN_LANGUAGE"


class UsageError(Exception):
    """Bad arguments or an unusable file: printed as ``error: …``, exit code 2."""


# ---------------------------------------------------------------------------------------------
# set-up


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    import django

    django.setup()
    _activate_language()


def _activate_language() -> None:
    """Speak the language of ``SHEQUN_LANGUAGE`` or the locale (zh* → 简体中文, en* → English);
    otherwise the site's default language."""
    from django.conf import settings
    from django.utils import translation

    wanted = os.environ.get(LANGUAGE_ENV) or os.environ.get("LC_ALL") or os.environ.get("LANG") or ""
    wanted = wanted.lower()
    if wanted.startswith("zh"):
        translation.activate("zh-hans")
    elif wanted.startswith("en"):
        translation.activate("en")
    else:
        translation.activate(settings.LANGUAGE_CODE)


def _(text: str) -> str:
    from django.utils.translation import gettext

    return gettext(text)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:200]
    except (OSError, KeyError):
        return "cli"


def _workspace(slug: str) -> Workspace:
    from shequn.core.errors import NotFound
    from shequn.core.models import Workspace

    ws = Workspace.objects.filter(slug=slug).first()
    if ws is None:
        raise NotFound(_("workspace %(slug)r not found") % {"slug": slug}, code="workspace_not_found")
    return ws


def _err(message: str) -> None:
    print(_("error: %(message)s") % {"message": message}, file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# demo, serve, worker, migrate


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - printing the address, not binding it
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _server_env(host: str) -> dict[str, str]:
    """The environment of child processes: same settings; the bound host is an allowed host."""
    from django.conf import settings

    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    env["SHEQUN_DATA_DIR"] = str(settings.DATA_DIR)
    allowed = list(settings.ALLOWED_HOSTS)
    if host in ("0.0.0.0", "::"):  # noqa: S104
        allowed = ["*"]
    elif host and host not in allowed:
        allowed.append(host)
    env["SHEQUN_ALLOWED_HOSTS"] = ",".join(allowed)
    return env


def _gunicorn_argv(host: str, port: int, workers: int, threads: int, *extra: str) -> list[str]:
    """gunicorn serving the WSGI app; more gunicorn options can come from ``GUNICORN_CMD_ARGS``."""
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [sys.executable, "-m", "gunicorn", "shequn.wsgi:application", "--bind", bind, "--workers", str(workers),
            "--threads", str(threads), "--access-logfile", "-", "--graceful-timeout", "10", *extra]


def _unapplied_migrations() -> int:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))


def _stop(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in processes:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cmd_demo(ns: argparse.Namespace) -> int:
    from django.core.management import call_command
    from django.db import connections
    from tqdm import tqdm

    from shequn import demo
    from shequn.core import services as core_services
    from shequn.core.models import Workspace

    print(_("Preparing the database …"), file=sys.stderr)
    call_command("migrate", interactive=False, verbosity=0)
    existing = Workspace.objects.filter(slug=DEMO_SLUG).first()
    if existing is not None and ns.reset:
        print(_("Removing the old demo workspace …"), file=sys.stderr)
        core_services.delete_workspace(existing, actor="cli:demo --reset")
        existing = None
    if existing is None:
        print(_("Building the demo workspace: %(members)s members, about %(interactions)s interactions …")
              % {"members": ns.members, "interactions": ns.interactions}, file=sys.stderr)
        bars: dict[str, Any] = {}

        def progress(done: int, total: int, label: str) -> None:
            bar = bars.get(label)
            if bar is None:
                bar = bars[label] = tqdm(total=total, desc=label, unit="row", file=sys.stderr, leave=True)
            bar.total = total
            bar.update(done - bar.n)

        try:
            demo.build_demo(slug=DEMO_SLUG, members=ns.members, interactions=ns.interactions, progress=progress)
        finally:
            for bar in bars.values():
                bar.close()
    call_command("collectstatic", interactive=False, verbosity=0)
    demo_ws = Workspace.objects.get(slug=DEMO_SLUG)
    portal_phone = demo.portal_member_phone(demo_ws)
    connections.close_all()

    env = _server_env(ns.host)
    fake_wechat = None
    if not os.environ.get("SHEQUN_WECHAT_API_BASE"):
        # The demo's Official Account has placeholder credentials: its outbound messages (inbox replies,
        # sign-in codes, notices) go to a local stand-in of WeChat's API, never to the internet.
        from shequn.outbound.fake_wechat import FakeWeChatServer

        fake_wechat = FakeWeChatServer().start()
        env["SHEQUN_WECHAT_API_BASE"] = fake_wechat.base_url
    worker = subprocess.Popen([sys.executable, "-m", "shequn.cli", "worker"], env=env)  # noqa: S603
    server = subprocess.Popen(_gunicorn_argv(ns.host, ns.port, 2, 4, "--no-control-socket"), env=env)  # noqa: S603
    base = f"http://{_display_host(ns.host)}:{ns.port}"
    lines = [
        "",
        _("Shequn demo is running."),
        "  " + _("Console: %(url)s") % {"url": f"{base}/w/{DEMO_SLUG}/"},
        "  " + _("API docs: %(url)s") % {"url": f"{base}/api/docs"},
        "  " + _("Member portal: %(url)s (sign in as %(phone)s; the one-time code is in the console's Outbox)")
        % {"url": f"{base}/m/{DEMO_SLUG}/", "phone": portal_phone or "-"},
        "  " + _("Username: %(name)s") % {"name": demo.DEMO_USERNAME},
        "  " + _("Password: %(password)s") % {"password": demo.DEMO_PASSWORD},
        *(["  " + _("WeChat API: a local stand-in at %(url)s (demo only)") % {"url": fake_wechat.base_url}]
          if fake_wechat is not None else []),
        _("Press Ctrl-C to stop the server and the worker."),
        "",
    ]
    print("\n".join(lines), flush=True)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)  # stop both children on SIGTERM as on Ctrl-C
    try:
        while server.poll() is None and worker.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print(_("Stopping …"), file=sys.stderr)
    finally:
        _stop([server, worker])
        signal.signal(signal.SIGTERM, previous)
        if fake_wechat is not None:
            fake_wechat.stop()
    failed = [p.returncode for p in (server, worker) if p.returncode not in (0, -signal.SIGTERM, -signal.SIGINT)]
    return 1 if failed else 0


def cmd_serve(ns: argparse.Namespace) -> int:
    from django.core.management import call_command
    from django.db import connections

    pending = _unapplied_migrations()
    if pending:
        print(_("warning: %(n)s database migration(s) are not applied; run `shequn migrate` first.") % {"n": pending},
              file=sys.stderr)
    call_command("collectstatic", interactive=False, verbosity=0)
    connections.close_all()
    argv = _gunicorn_argv(ns.host, ns.port, ns.workers, ns.threads)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, _server_env(ns.host))  # noqa: S606 - replaces this process with gunicorn
    return 0  # pragma: no cover - execve does not return


def run_management(command: str, args: Sequence[str]) -> int:
    from django.core.management import execute_from_command_line

    execute_from_command_line(["shequn", command, *args])
    return 0


# ---------------------------------------------------------------------------------------------
# import / export


class _ErrorReport:
    """Writes every row error to ``FILE.errors.csv`` (created at the first error) and keeps the
    first few for the terminal."""

    COLUMNS = ("row", "line", "field", "code", "reason")

    def __init__(self, path: Path, *, append: bool = False) -> None:
        self.path = path
        self.append = append
        self.count = 0
        self.first: list[RowOutcome] = []
        self._fh: IO[str] | None = None
        self._writer: Any = None

    def __call__(self, outcome: RowOutcome) -> None:
        if outcome.status != "error":
            return
        if self._fh is None:
            new = not (self.append and self.path.exists())
            self._fh = self.path.open("a" if self.append else "w", encoding="utf-8-sig" if new else "utf-8",
                                      newline="")
            self._writer = csv.writer(self._fh)
            if new:
                self._writer.writerow(self.COLUMNS)
        self._writer.writerow([outcome.row, outcome.line, outcome.field, outcome.code, outcome.reason])
        self.count += 1
        if len(self.first) < ERRORS_SHOWN:
            self.first.append(outcome)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _print_report(report: ImportReport, errors: _ErrorReport) -> None:
    kind = _("members") if report.kind == "members" else _("interactions")
    head = _("Import %(id)s (%(kind)s)") % {"id": report.job_id, "kind": kind}
    if report.dry_run:
        head += " — " + _("dry run: nothing was written, these are the predicted results")
    print(head)
    print(_("  rows:      %(n)s") % {"n": report.processed_rows})
    print(_("  created:   %(n)s") % {"n": report.created})
    if report.kind == "members":
        print(_("  updated:   %(n)s") % {"n": report.updated})
        print(_("  unchanged: %(n)s") % {"n": report.unchanged})
    else:
        print(_("  duplicate: %(n)s") % {"n": report.unchanged})
    print(_("  errors:    %(n)s") % {"n": report.errors})
    if errors.first:
        print(_("First %(n)s row errors:") % {"n": len(errors.first)})
        for o in errors.first:
            where = _("row %(row)s (line %(line)s)") % {"row": o.row, "line": o.line}
            field = f" [{o.field}]" if o.field else ""
            print(f"  {where}{field}: {o.reason}")
    if errors.count:
        print(_("All %(n)s row errors are in %(path)s") % {"n": errors.count, "path": errors.path})


def _run_job(job: Any, errors_path: Path, *, append: bool) -> int:
    from tqdm import tqdm

    from shequn.members import imports

    errors = _ErrorReport(errors_path, append=append)
    bar = tqdm(total=None, unit="row", desc=_("importing"), file=sys.stderr, disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        report = imports.run_import(job, progress, on_row=errors)
    except KeyboardInterrupt:
        bar.close()
        errors.close()
        _err(_("interrupted. Continue with: shequn import resume %(id)s --workspace %(slug)s")
             % {"id": job.pk, "slug": job.workspace.slug})
        return 130
    finally:
        bar.close()
        errors.close()
    if not append and errors.count == 0 and errors_path.exists():
        errors_path.unlink()  # a report of an earlier run of this file would now be misleading
    _print_report(report, errors)
    if report.status != "done":
        _err(report.message or _("the import did not finish (status %(status)s)") % {"status": report.status})
        return 2
    return 0 if report.errors == 0 else 1


def cmd_import(ns: argparse.Namespace) -> int:
    from shequn.members import imports

    ws = _workspace(ns.workspace)
    if ns.kind == "resume":
        try:
            job_id = int(ns.file)
        except ValueError:
            raise UsageError(_("resume needs the number of an import job")) from None
        job = imports.resume_import_job(ws, job_id, enqueue=False)
        errors_path = Path(ns.errors) if ns.errors else Path.cwd() / f"{Path(job.filename).name}.errors.csv"
        return _run_job(job, errors_path, append=True)
    path = Path(ns.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(_("cannot read %(path)s: %(error)s") % {"path": path, "error": exc.strerror or exc}) from None
    job = imports.create_import_job(ws, ns.kind, path.name, data, dry_run=ns.dry_run, enqueue=False)
    del data
    errors_path = Path(ns.errors) if ns.errors else path.with_name(path.name + ".errors.csv")
    return _run_job(job, errors_path, append=False)


def cmd_export(ns: argparse.Namespace) -> int:
    from shequn.members import imports
    from shequn.members.queries import MemberFilter

    ws = _workspace(ns.workspace)
    filters = None
    if any((ns.tag, ns.keyword, ns.stage, ns.source, ns.attribute)):
        filters = MemberFilter(tag=ns.tag or "", keyword=ns.keyword or "", stage=ns.stage or "",
                               source=ns.source or "", attribute=ns.attribute or "")

    def writer(out: IO[str]) -> int:
        if ns.kind == "members":
            return imports.export_members_csv(ws, out, filters)
        return imports.export_interactions_csv(ws, out, since=ns.since, until=ns.until)

    if ns.output and ns.output != "-":
        target = Path(ns.output)
        try:
            with target.open("w", encoding="utf-8-sig" if ns.bom else "utf-8", newline="") as fh:
                count = writer(fh)
        except OSError as exc:
            raise UsageError(_("cannot write %(path)s: %(error)s") % {"path": target, "error": exc.strerror or exc}) from None
        print(_("%(n)s rows written to %(path)s") % {"n": count, "path": target}, file=sys.stderr)
    else:
        if ns.bom:
            sys.stdout.write("\ufeff")
        writer(sys.stdout)
        sys.stdout.flush()
    return 0


# ---------------------------------------------------------------------------------------------
# workspaces and API keys


def cmd_createworkspace(ns: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from django.contrib.auth import get_user_model
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError as DjangoValidationError
    from django.db import transaction

    from shequn.core import services as core
    from shequn.core.models import Role

    try:
        ZoneInfo(ns.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(_("unknown time zone %(tz)r") % {"tz": ns.timezone}) from None
    country = (ns.country or "").strip().upper()
    if len(country) != 2 or not country.isalpha():
        raise UsageError(_("--country must be a two-letter region code such as CN"))
    password = ns.password
    user_exists = False
    if ns.owner:
        user_exists = get_user_model().objects.filter(username=ns.owner).exists()
        if password is None and not user_exists and sys.stdin.isatty():
            password = getpass.getpass(_("Password for %(user)s: ") % {"user": ns.owner})
            if password != getpass.getpass(_("Password (again): ")):
                raise UsageError(_("the passwords do not match"))
        if password and not user_exists:
            try:
                validate_password(password)
            except DjangoValidationError as exc:
                raise UsageError(" ".join(exc.messages)) from None
    actor = _actor()
    with transaction.atomic():
        ws = core.create_workspace(ns.slug, ns.name, timezone=ns.timezone, country=country, actor=actor)
        if ns.owner:
            user = core.ensure_user(ns.owner, password or None)
            core.add_staff(ws, user, Role.OWNER, actor=actor)
    print(_("Workspace %(slug)s created (id %(id)s).") % {"slug": ws.slug, "id": ws.pk})
    if ns.owner:
        print(_("Owner: %(user)s") % {"user": ns.owner})
        if user_exists and ns.password:
            print(_("The user already existed; its password was not changed."), file=sys.stderr)
        elif not user_exists and not password:
            print(_("The user has no password yet: set one with `python -m django changepassword %(user)s`.")
                  % {"user": ns.owner}, file=sys.stderr)
    return 0


def cmd_apikey(ns: argparse.Namespace) -> int:
    from shequn.core import services as core
    from shequn.core.models import ApiKey
    from shequn.core.tenancy import scoped

    ws = _workspace(ns.workspace)
    if ns.action == "create":
        key, secret = core.create_api_key(ws, ns.name, role=ns.role, actor=_actor())
        print(_("API key %(id)s (%(name)s, role %(role)s) created for workspace %(slug)s. It is shown only once:")
              % {"id": key.pk, "name": key.name, "role": key.role, "slug": ws.slug}, file=sys.stderr)
        print(secret)
        return 0
    if ns.action == "revoke":
        key = core.revoke_api_key(ws, ns.id, actor=_actor())
        print(_("API key %(id)s (%(name)s) is revoked.") % {"id": key.pk, "name": key.name})
        return 0
    keys = list(scoped(ApiKey, ws).order_by("pk"))
    headers = ["ID", _("NAME"), _("PREFIX"), _("ROLE"), _("CREATED"), _("LAST USED"), _("STATUS")]
    rows = [[str(k.pk), k.name, f"sq_{k.prefix}_…", k.role, k.created_at.strftime("%Y-%m-%d %H:%M"),
             k.last_used_at.strftime("%Y-%m-%d %H:%M") if k.last_used_at else "-",
             _("revoked") if k.revoked_at else _("active")] for k in keys]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for r in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    if not rows:
        print(_("(no API keys)"), file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# benchmarks


def bench_root() -> Path | None:
    """The repository root holding ``bench/``: the parent of ``src/`` for an editable install, else
    the current directory."""
    import shequn

    candidates = [Path(shequn.__file__).resolve().parent.parent.parent, Path.cwd()]
    for root in candidates:
        if (root / "bench" / "__init__.py").is_file():
            return root
    return None


def available_benchmarks(root: Path) -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(root / "bench")])
                  if not m.name.startswith("_") and m.name != "chart")


def cmd_bench(ns: argparse.Namespace, extra: list[str]) -> int:
    root = bench_root()
    if root is None:
        print("error: no bench/ directory found: run this from a Shequn source checkout", file=sys.stderr)
        return 2
    names = available_benchmarks(root)
    if not ns.name or ns.name not in names:
        if ns.name:
            print(f"error: unknown benchmark {ns.name!r}", file=sys.stderr)
        print("Available benchmarks (shequn bench NAME [--quick]):")
        for name in names:
            print(f"  {name}")
        return 2 if ns.name else 0
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module(f"bench.{ns.name}")
    argv = (["--quick"] if ns.quick else []) + extra
    result = module.main(argv)
    return int(result or 0)


# ---------------------------------------------------------------------------------------------
# arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shequn", description="Shequn (社群): community marketing and social CRM.",
        epilog="Run `shequn COMMAND --help` for the options of a command. See docs/cli.md.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="migrate, build the demo workspace, and serve it with a worker")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--reset", action="store_true", help="delete the demo workspace and build it again")
    p.add_argument("--members", type=_positive_int, default=2000, help="members in a new demo (default 2000)")
    p.add_argument("--interactions", type=_positive_int, default=50000,
                   help="about this many interactions in a new demo (default 50000)")
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("serve", help="run the production web server (gunicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=_positive_int, default=(os.cpu_count() or 1) * 2 + 1,
                   help="gunicorn worker processes (default 2 × CPUs + 1)")
    p.add_argument("--threads", type=_positive_int, default=1, help="threads per worker (default 1)")
    p.set_defaults(handler=cmd_serve)

    sub.add_parser("migrate", help="apply database migrations (arguments go to Django's migrate)", add_help=False)
    sub.add_parser("worker", help="run a background worker (see `shequn worker --help`)", add_help=False)

    p = sub.add_parser("import", help="import a members or interactions file, with a progress bar",
                       description="Import FILE (members: CSV; interactions: CSV or JSONL). `shequn import resume "
                                   "JOB_ID` continues a job that was interrupted.")
    p.add_argument("kind", choices=["members", "interactions", "resume"])
    p.add_argument("file", metavar="FILE", help="the file to import (or the job id for resume)")
    p.add_argument("--workspace", required=True, metavar="SLUG")
    p.add_argument("--dry-run", action="store_true", help="validate and predict every row, write nothing")
    p.add_argument("--errors", metavar="PATH", help="where to write the row errors (default FILE.errors.csv)")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser("export", help="export members or interactions as CSV")
    p.add_argument("kind", choices=["members", "interactions"])
    p.add_argument("--workspace", required=True, metavar="SLUG")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    p.add_argument("--bom", action="store_true", help="start with a UTF-8 byte order mark (for Excel)")
    p.add_argument("--tag", help="members: only those with this tag")
    p.add_argument("--keyword", help="members: only those with this keyword (or one below it)")
    p.add_argument("--stage", help="members: only those at this stage key")
    p.add_argument("--source", help="members: only those acquired through this source channel")
    p.add_argument("--attribute", metavar="KEY=VALUE", help="members: only those with this attribute value")
    p.add_argument("--since", help="interactions: occurred at or after (ISO date or date-time)")
    p.add_argument("--until", help="interactions: occurred before (ISO date or date-time)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("createworkspace", help="create a workspace, optionally with an owner account")
    p.add_argument("slug", metavar="SLUG")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--owner", metavar="USERNAME", help="staff user to make owner (created if needed)")
    p.add_argument("--password", help="password of a new owner (prompted for when omitted on a terminal)")
    p.add_argument("--timezone", default="Asia/Shanghai")
    p.add_argument("--country", default="CN", help="region used to read local phone numbers (default CN)")
    p.set_defaults(handler=cmd_createworkspace)

    p = sub.add_parser("apikey", help="create, list or revoke API keys")
    keys = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    k = keys.add_parser("create", help="create a key and print its secret once")
    k.add_argument("--workspace", required=True, metavar="SLUG")
    k.add_argument("--name", required=True)
    k.add_argument("--role", default="operator", choices=["owner", "operator", "agent", "clerk"])
    k = keys.add_parser("list", help="list the keys of a workspace")
    k.add_argument("--workspace", required=True, metavar="SLUG")
    k = keys.add_parser("revoke", help="revoke a key")
    k.add_argument("--workspace", required=True, metavar="SLUG")
    k.add_argument("id", type=int, metavar="ID")
    p.set_defaults(handler=cmd_apikey)

    p = sub.add_parser("loyalty", help="`shequn loyalty verify --workspace SLUG`: prove every points balance")
    p.add_argument("action", choices=["verify"])
    p = sub.add_parser("wallet", help="`shequn wallet verify --workspace SLUG`: prove every stored-value balance")
    p.add_argument("action", choices=["verify"])
    p = sub.add_parser("wechat", help="`shequn wechat connect --workspace SLUG --app-id … --token …`: connect an "
                                      "Official Account and print its server URL")
    p.add_argument("action", choices=["connect"])

    p = sub.add_parser("bench", help="run a benchmark from bench/ (lists them without NAME)")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--quick", action="store_true", help="a small run that takes seconds")
    p.set_defaults(handler=None)
    return parser


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError("must be greater than zero")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in PASSTHROUGH:
        setup_django()
        return run_management(PASSTHROUGH[args[0]], args[1:])
    if len(args) >= 2 and (args[0], args[1]) in PASSTHROUGH_PAIRS:
        setup_django()
        return run_management(PASSTHROUGH_PAIRS[(args[0], args[1])], args[2:])
    parser = build_parser()
    ns, extra = parser.parse_known_args(args)
    if ns.command is None:
        parser.print_help()
        return 2
    if ns.command == "bench":
        return cmd_bench(ns, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    setup_django()
    from shequn.core.errors import ShequnError

    try:
        return int(ns.handler(ns))
    except ShequnError as exc:
        _err(exc.message)
        return 2
    except UsageError as exc:
        _err(str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())
