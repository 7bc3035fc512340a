"""The background-task framework: enqueue-on-commit, delayed tasks, periodic claims, worker processes.

Database-mode tests run in this process against the test database. Broker-mode (Redis) tests start
real ``shequn_worker`` processes with ``SHEQUN_TASK_BROKER=redis``: settings read the environment at
import, so subprocesses are the faithful way to run the RQ configuration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections, transaction
from django.utils import timezone
from django_tasks import TaskContext, TaskResultStatus, task
from django_tasks_db.models import DBTaskResult

from shequn.core import tasks as core_tasks
from shequn.core.builtin_tasks import ping
from shequn.core.models import PeriodicSchedule
from shequn.core.tasks import (
    DRAIN_REGISTRY,
    PERIODIC_REGISTRY,
    enqueue_on_commit,
    register_drain,
    register_periodic,
    run_drains,
    run_due_periodic,
    sync_periodic_schedules,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PING_PATH = "shequn.core.builtin_tasks.ping"
PROBE_PATH = f"{__name__}.periodic_probe"
REDIS_TEST_URL = os.environ.get("SHEQUN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
KEY_PREFIX = "shequn-test:tasks:"


# --------------------------------------------------------------------------------------------------
# Tasks used by these tests (module level, so workers can import them by path)
# --------------------------------------------------------------------------------------------------


@task()
def periodic_probe() -> str:
    """A periodic task takes no arguments; this one does nothing."""
    return "probe"


@task(takes_context=True)
def redis_probe(context: TaskContext, token: str) -> str:
    """Record which worker ran ``token`` in Redis (broker-mode tests only).

    When the test sets ``expect_workers`` to N, the first runs wait (at most 20 s) until N workers have
    started a probe: that makes "the work was shared between the workers" deterministic instead of a
    matter of start-up timing. Runs are counted with HINCRBY, so a duplicate run shows as a count of 2.
    """
    import redis

    worker = context.task_result.worker_ids[-1] if context.task_result.worker_ids else "?"
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    client.sadd(KEY_PREFIX + "workers", worker)
    expected = int(client.get(KEY_PREFIX + "expect_workers") or 0)
    deadline = time.monotonic() + 20
    while int(client.scard(KEY_PREFIX + "workers")) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    client.hincrby(KEY_PREFIX + "runs", token, 1)
    client.rpush(KEY_PREFIX + "log", f"{token}|{worker}")
    return token


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def database_tasks(settings: Any) -> None:
    """Run in-process tests on the embedded database queue whatever SHEQUN_TASK_BROKER says."""
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """An empty periodic registry; the apps' own tasks modules are imported first, so they stay out."""
    core_tasks.autodiscover_periodic()
    saved = dict(PERIODIC_REGISTRY)
    PERIODIC_REGISTRY.clear()
    yield
    PERIODIC_REGISTRY.clear()
    PERIODIC_REGISTRY.update(saved)


def _queued(task_path: str = PING_PATH) -> list[DBTaskResult]:
    return list(DBTaskResult.objects.filter(task_path=task_path).order_by("enqueued_at"))


def _queued_args(task_path: str = PING_PATH) -> list[list[Any]]:
    return [row.args_kwargs["args"] for row in _queued(task_path)]


def _run_python(env: dict[str, str], code: str) -> Any:
    """Run ``code`` after django.setup() in another process; return the JSON its last line printed."""
    script = "import django\ndjango.setup()\n" + code
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_batch_worker() -> str:
    out = StringIO()
    call_command("shequn_worker", "--batch", "--no-scheduler", stdout=out)
    return out.getvalue()


# --------------------------------------------------------------------------------------------------
# enqueue_on_commit
# --------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_waits_for_commit_and_drops_on_rollback(database_tasks: None) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue_on_commit(ping, "rolled-back")
        assert _queued() == []
        raise RuntimeError("roll back")
    assert _queued() == [], "a rolled-back transaction must not enqueue anything"

    with transaction.atomic():
        enqueue_on_commit(ping, "committed")
        assert _queued() == [], "nothing is enqueued before the commit"
    assert _queued_args() == [["committed"]]


@pytest.mark.django_db(transaction=True)
def test_enqueue_on_commit_outside_a_transaction_enqueues_at_once(database_tasks: None) -> None:
    enqueue_on_commit(ping, "autocommit")
    assert _queued_args() == [["autocommit"]]


@pytest.mark.django_db
def test_enqueue_on_commit_respects_savepoint_rollback(
    database_tasks: None, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        enqueue_on_commit(ping, "outer")
        try:
            with transaction.atomic():
                enqueue_on_commit(ping, "inner")
                raise ValueError("roll back the savepoint only")
        except ValueError:
            pass
        assert _queued() == []
    assert len(callbacks) == 1
    assert _queued_args() == [["outer"]]


def test_enqueue_on_commit_validates_arguments(database_tasks: None) -> None:
    naive = datetime(2030, 1, 1, 12, 0)  # deliberately naive
    with pytest.raises(ValueError, match="timezone-aware"):
        enqueue_on_commit(ping, "x", run_after=naive)
    with pytest.raises(TypeError, match="JSON"):
        enqueue_on_commit(ping, object())
    with pytest.raises(TypeError, match="Task"):
        enqueue_on_commit(lambda: None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Delayed tasks and the batch worker
# --------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_batch_worker_runs_ready_tasks(database_tasks: None) -> None:
    for token in ("a", "b", "c"):
        enqueue_on_commit(ping, token)
    out = _run_batch_worker()
    assert "django_tasks_db" in out and "queues:    default" in out
    rows = _queued()
    assert [row.status for row in rows] == [TaskResultStatus.SUCCESSFUL] * 3
    assert sorted(row.return_value for row in rows) == ["a", "b", "c"]


@pytest.mark.django_db(transaction=True)
def test_delayed_task_is_not_run_before_its_time(database_tasks: None) -> None:
    run_after = timezone.now() + timedelta(seconds=3)
    enqueue_on_commit(ping, "later", run_after=run_after)
    enqueue_on_commit(ping, "now")

    _run_batch_worker()
    assert timezone.now() < run_after, "machine too slow: the batch ended after run_after, nothing proven"
    by_token = {row.args_kwargs["args"][0]: row for row in _queued()}
    assert by_token["now"].status == TaskResultStatus.SUCCESSFUL
    assert by_token["later"].status == TaskResultStatus.READY, (
        "a batch worker must not run a task before run_after"
    )
    assert by_token["later"].run_after == run_after

    time.sleep(max(0.0, (run_after - timezone.now()).total_seconds()) + 0.2)
    _run_batch_worker()
    later = DBTaskResult.objects.get(pk=by_token["later"].pk)
    assert later.status == TaskResultStatus.SUCCESSFUL
    assert later.return_value == "later"
    assert later.started_at is not None and later.started_at >= run_after


@pytest.mark.django_db(transaction=True)
def test_worker_check_fails_clearly_without_a_running_worker(database_tasks: None) -> None:
    with pytest.raises(CommandError, match="No worker ran ping"):
        call_command("shequn_worker", "--check", "--check-timeout", "0.5", stdout=StringIO())


# --------------------------------------------------------------------------------------------------
# Periodic schedules
# --------------------------------------------------------------------------------------------------


def test_register_periodic_validates_and_rejects_conflicts(clean_registry: None) -> None:
    register_periodic("probe", PROBE_PATH, 60)
    register_periodic("probe", PROBE_PATH, 60)  # same definition again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_periodic("probe", PROBE_PATH, 30)
    with pytest.raises(ValueError, match="positive integer"):
        register_periodic("zero", PROBE_PATH, 0)
    with pytest.raises(ValueError, match="dotted path"):
        register_periodic("bad", "nodots", 10)


@pytest.mark.django_db
def test_sync_periodic_schedules_upserts_and_keeps_next_run_at(clean_registry: None) -> None:
    t0 = timezone.now()
    register_periodic("probe", PROBE_PATH, 60)
    assert sync_periodic_schedules(now=t0) == ["probe"]
    row = PeriodicSchedule.objects.get(name="probe")
    assert (row.task_path, row.interval_seconds, row.next_run_at, row.enabled) == (PROBE_PATH, 60, t0, True)

    later_next = t0 + timedelta(hours=1)
    PeriodicSchedule.objects.filter(pk=row.pk).update(next_run_at=later_next, enabled=False)
    PERIODIC_REGISTRY.clear()
    register_periodic("probe", PROBE_PATH, 120)
    assert sync_periodic_schedules(now=t0 + timedelta(minutes=5)) == []
    row.refresh_from_db()
    assert row.interval_seconds == 120
    assert row.next_run_at == later_next, "an existing row keeps its next_run_at"
    assert row.enabled is False, "an operator's disable survives a sync"
    assert PeriodicSchedule.objects.count() == 1


@pytest.mark.django_db
def test_run_due_periodic_fires_once_and_advances(database_tasks: None) -> None:
    t0 = timezone.now()
    schedule = PeriodicSchedule.objects.create(
        name="probe", task_path=PROBE_PATH, interval_seconds=60, next_run_at=t0
    )
    PeriodicSchedule.objects.create(
        name="off", task_path=PROBE_PATH, interval_seconds=60, next_run_at=t0, enabled=False
    )
    PeriodicSchedule.objects.create(
        name="future", task_path=PROBE_PATH, interval_seconds=60, next_run_at=t0 + timedelta(seconds=1)
    )

    assert run_due_periodic(now=t0) == ["probe"]
    assert run_due_periodic(now=t0) == [], "the same run is not fired twice"
    schedule.refresh_from_db()
    assert schedule.next_run_at == t0 + timedelta(seconds=60)
    assert schedule.last_run_at == t0
    rows = _queued(PROBE_PATH)
    assert len(rows) == 1 and schedule.last_task_id == str(rows[0].pk)

    # A worker that was down for a long time fires once, then realigns on the interval grid.
    much_later = t0 + timedelta(seconds=60 * 10 + 5)
    assert sorted(run_due_periodic(now=much_later)) == ["future", "probe"]
    schedule.refresh_from_db()
    assert schedule.next_run_at == t0 + timedelta(seconds=60 * 11)
    assert len(_queued(PROBE_PATH)) == 3


@pytest.mark.django_db
def test_run_due_periodic_skips_a_broken_schedule_and_fires_the_rest(database_tasks: None) -> None:
    t0 = timezone.now()
    PeriodicSchedule.objects.create(
        name="broken", task_path="shequn.core.nowhere.task", interval_seconds=60, next_run_at=t0
    )
    PeriodicSchedule.objects.create(name="probe", task_path=PROBE_PATH, interval_seconds=60, next_run_at=t0)
    assert run_due_periodic(now=t0) == ["probe"]
    assert PeriodicSchedule.objects.get(name="broken").next_run_at == t0, (
        "a broken schedule is retried next tick"
    )


_CONTENDER_SCRIPT = """
import json, os, sys, time
from datetime import datetime
import django
django.setup()
from shequn.core import tasks

run_dir, me, contenders = sys.argv[1], sys.argv[2], int(sys.argv[3])
real_resolve = tasks._resolve_task


def resolve_after_everyone_has_read(task_path):
    # Every contender has read the due row (with the same next_run_at) before anyone claims it.
    open(os.path.join(run_dir, "read-" + me), "w").close()
    deadline = time.monotonic() + 60
    while sum(name.startswith("read-") for name in os.listdir(run_dir)) < contenders:
        if time.monotonic() > deadline:
            raise SystemExit("barrier timeout")
        time.sleep(0.01)
    return real_resolve(task_path)


tasks._resolve_task = resolve_after_everyone_has_read
print(json.dumps(tasks.run_due_periodic(now=datetime.fromisoformat(sys.argv[4]))))
"""


def _database_url_for_subprocesses(tmp_path: Path) -> str:
    """A DATABASE_URL other processes can open, holding what this (transactional) test committed."""
    connection = connections["default"]
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        # The test database may live in memory: copy it, schema and rows, into a file.
        target = tmp_path / "shared.sqlite3"
        import sqlite3

        connection.ensure_connection()
        destination = sqlite3.connect(target)
        connection.connection.backup(destination)
        destination.close()
        return f"sqlite:///{target}"
    if connection.vendor == "postgresql":
        user = settings_dict.get("USER") or ""
        password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
        credentials = f"{user}{password}@" if user else ""
        port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
        return f"postgres://{credentials}{settings_dict.get('HOST') or '127.0.0.1'}{port}/{settings_dict['NAME']}"
    pytest.skip(f"no subprocess DATABASE_URL for {connection.vendor}")


@pytest.mark.django_db(transaction=True)
def test_concurrent_run_due_periodic_fires_a_due_schedule_exactly_once(
    database_tasks: None, tmp_path: Path
) -> None:
    """Six scheduler processes read the same due row, then race on the claim: exactly one wins.

    Each contender is a separate Python process on the same database file (SQLite in WAL mode, as in
    production) or the same PostgreSQL database; a file barrier holds all of them between reading
    the due schedules and claiming, so every one issues its conditional UPDATE with the same stale
    ``next_run_at``.
    """
    contenders = 6
    t0 = timezone.now()
    PeriodicSchedule.objects.create(name="probe", task_path=PROBE_PATH, interval_seconds=300, next_run_at=t0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHEQUN_TASK_")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "shequn.settings",
            "DATABASE_URL": _database_url_for_subprocesses(tmp_path),
            "SHEQUN_DATA_DIR": str(tmp_path),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")])),
        }
    )
    run_dir = tmp_path / "barrier"
    run_dir.mkdir()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _CONTENDER_SCRIPT, str(run_dir), str(i), str(contenders), t0.isoformat()],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(contenders)
    ]
    fired: list[list[str]] = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert "Traceback" not in err, err
        fired.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(fired) == [[]] * (contenders - 1) + [["probe"]], fired

    report = _run_python(
        env,
        "import json\n"
        "from django_tasks_db.models import DBTaskResult\n"
        "from shequn.core.models import PeriodicSchedule\n"
        "schedule = PeriodicSchedule.objects.get(name='probe')\n"
        f"ids = [str(pk) for pk in DBTaskResult.objects.filter(task_path={PROBE_PATH!r}).values_list('pk', flat=True)]\n"
        "print(json.dumps({'ids': ids, 'last_task_id': schedule.last_task_id,"
        " 'next_run_at': schedule.next_run_at.isoformat()}))\n",
    )
    assert len(report["ids"]) == 1, "the due run was enqueued exactly once"
    assert report["last_task_id"] == report["ids"][0]
    assert datetime.fromisoformat(report["next_run_at"]) == t0 + timedelta(seconds=300)


@pytest.mark.django_db(transaction=True)
def test_batch_worker_syncs_fires_and_runs_periodic_tasks(database_tasks: None, clean_registry: None) -> None:
    register_periodic("probe", PROBE_PATH, 3600)
    out = StringIO()
    call_command("shequn_worker", "--batch", stdout=out)
    assert "Created periodic schedules: probe" in out.getvalue()
    assert "Fired periodic schedules: probe" in out.getvalue()
    rows = _queued(PROBE_PATH)
    assert [(row.status, row.return_value) for row in rows] == [(TaskResultStatus.SUCCESSFUL, "probe")]
    assert PeriodicSchedule.objects.get(name="probe").last_task_id == str(rows[0].pk)

    # Nothing is due any more: a second batch run fires nothing.
    call_command("shequn_worker", "--batch", stdout=StringIO())
    assert len(_queued(PROBE_PATH)) == 1


# --------------------------------------------------------------------------------------------------
# Broker mode: RQ on Redis, real worker processes
# --------------------------------------------------------------------------------------------------
# Drains
# --------------------------------------------------------------------------------------------------

WAITING: list[int] = []
"""The rows the test drain finds waiting (a stand-in for a table's partial index)."""
DRAINED: list[int] = []


def probe_drain(limit: int) -> int:
    """A drain over :data:`WAITING`: settles up to ``limit`` of them."""
    taken = WAITING[:limit]
    del WAITING[:limit]
    DRAINED.extend(taken)
    return len(taken)


def broken_drain(limit: int) -> int:
    raise RuntimeError("the table is gone")


@pytest.fixture
def drains() -> Iterator[None]:
    """Only the test drains are registered; the apps' own are put back afterwards."""
    core_tasks.autodiscover_periodic()
    saved = dict(DRAIN_REGISTRY)
    DRAIN_REGISTRY.clear()
    WAITING.clear()
    DRAINED.clear()
    register_drain("test.broken", f"{__name__}.broken_drain")
    register_drain("test.probe", f"{__name__}.probe_drain")
    yield
    DRAIN_REGISTRY.clear()
    DRAIN_REGISTRY.update(saved)


def test_register_drain_validates_and_rejects_conflicts(drains: None) -> None:
    assert register_drain("test.probe", f"{__name__}.probe_drain") == DRAIN_REGISTRY["test.probe"]  # same: fine
    with pytest.raises(ValueError, match="already registered"):
        register_drain("test.probe", f"{__name__}.broken_drain")
    with pytest.raises(ValueError, match="characters"):
        register_drain("", f"{__name__}.probe_drain")


def test_the_apps_register_the_wechat_recording_drain() -> None:
    core_tasks.autodiscover_periodic()
    assert DRAIN_REGISTRY["channels.record_inbound"].drain_path == "shequn.channels.services.record_waiting"


def test_a_failing_drain_is_logged_and_the_others_run(drains: None, caplog: pytest.LogCaptureFixture) -> None:
    WAITING.extend(range(5))
    assert run_drains(limit=3) == {"test.broken": 0, "test.probe": 3}
    assert run_drains(limit=3) == {"test.broken": 0, "test.probe": 2}
    assert run_drains(limit=3) == {"test.broken": 0, "test.probe": 0}
    assert DRAINED == [0, 1, 2, 3, 4]
    assert "Drain test.broken" in caplog.text and "the table is gone" in caplog.text


def test_the_drain_thread_goes_on_at_once_while_rows_wait_and_polls_when_idle(drains: None) -> None:
    from shequn.core.management.commands.shequn_worker import DrainThread

    WAITING.extend(range(250))  # three rounds of 100 at once, then idle
    thread = DrainThread(interval=30.0)
    started = time.monotonic()
    thread.start()
    deadline = started + 10
    while len(DRAINED) < 250 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert DRAINED == list(range(250)) and time.monotonic() - started < 10, "no idle wait between busy rounds"
    time.sleep(0.3)  # its last round found nothing: it waits its 30 s now
    WAITING.append(250)  # arrives while the thread waits
    time.sleep(0.3)
    assert DRAINED[-1] == 249
    thread.stop(timeout=5)
    assert not thread.is_alive()


@pytest.mark.django_db(transaction=True)
def test_the_batch_worker_drains_until_nothing_waits(database_tasks: None, drains: None) -> None:
    WAITING.extend(range(230))
    out = _run_batch_worker()
    assert DRAINED == list(range(230))
    assert "Drained 230 waiting row(s)" in out and "drains:    until nothing waits (batch)" in out
    WAITING.extend(range(3))
    out = StringIO()
    call_command("shequn_worker", "--batch", "--no-scheduler", "--no-drains", stdout=out)
    assert WAITING == [0, 1, 2] and "drains:    off" in out.getvalue()


# --------------------------------------------------------------------------------------------------


@pytest.fixture
def redis_db() -> Iterator[Any]:
    """DB 15 of the local Redis, flushed before and after. Skips when Redis is not reachable."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        reason = f"Redis not reachable at {REDIS_TEST_URL} ({exc}); start it or set SHEQUN_TEST_REDIS_URL"
        if os.environ.get("SHEQUN_REQUIRE_SERVICES") == "1":
            pytest.fail(f"SHEQUN_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _broker_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "shequn.settings",
            "SHEQUN_TASK_BROKER": "redis",
            "SHEQUN_REDIS_URL": REDIS_TEST_URL,
            "SHEQUN_DATA_DIR": str(tmp_path),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")])),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _enqueue_probes(env: dict[str, str], tokens: list[str], delay_seconds: float | None = None) -> list[str]:
    """Enqueue ``redis_probe(token)`` for each token from a broker-mode process; return the job ids.

    With ``delay_seconds`` the probes get ``run_after = now + delay`` computed at enqueue time.
    """
    code = (
        "import json\n"
        "from datetime import timedelta\n"
        "from django.utils import timezone\n"
        "from django_tasks import task_backends\n"
        "from tests.core.test_tasks import redis_probe\n"
        "assert type(task_backends['default']).__name__ == 'RQBackend'\n"
        f"delay = {delay_seconds!r}\n"
        "probe = redis_probe.using(run_after=timezone.now() + timedelta(seconds=delay)) if delay else redis_probe\n"
        f"print(json.dumps([probe.enqueue(token).id for token in {tokens!r}]))\n"
    )
    return list(_run_python(env, code))


def _start_worker(env: dict[str, str], worker_id: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "django", "shequn_worker", "--no-scheduler", "--worker-id", worker_id, *extra],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str]:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        pytest.fail(f"worker did not exit within {timeout}s:\n{out}")
    return process.returncode, out


@pytest.mark.redis
def test_two_redis_workers_share_the_queue_and_run_each_task_exactly_once(
    redis_db: Any, tmp_path: Path
) -> None:
    from rq.job import Job

    env = _broker_env(tmp_path)
    tokens = [f"t{i:02d}" for i in range(20)]
    job_ids = _enqueue_probes(env, tokens)
    assert len(set(job_ids)) == 20
    redis_db.set(KEY_PREFIX + "expect_workers", 2)

    workers = {name: _start_worker(env, name, "--burst") for name in ("rq-worker-a", "rq-worker-b")}
    outputs = {name: _finish(process) for name, process in workers.items()}
    for name, (code, out) in outputs.items():
        assert code == 0, f"{name} failed:\n{out}"
        assert "RQBackend" in out and "queues:    default" in out, out
        assert f"Worker {name} stopped." in out, out

    runs = {k.decode(): int(v) for k, v in redis_db.hgetall(KEY_PREFIX + "runs").items()}
    assert runs == dict.fromkeys(tokens, 1), "every task ran, and none ran twice"
    log = [entry.decode().split("|") for entry in redis_db.lrange(KEY_PREFIX + "log", 0, -1)]
    assert sorted(token for token, _ in log) == tokens
    per_worker = {name: sum(1 for _, worker in log if worker == name) for name in workers}
    assert set(worker for _, worker in log) == set(workers), "tasks ran only on the two named workers"
    assert all(count >= 1 for count in per_worker.values()), f"both workers took a share: {per_worker}"

    # RQ's own bookkeeping agrees: one successful execution per job, by one of the two workers.
    for job_id in job_ids:
        results = Job.fetch(job_id, connection=redis_db).results()
        assert len(results) == 1 and results[0].type == results[0].Type.SUCCESSFUL
        assert results[0].worker_name in workers


@pytest.mark.redis
def test_redis_delayed_task_waits_for_run_after(redis_db: Any, tmp_path: Path) -> None:
    from rq.job import Job
    from rq.registry import ScheduledJobRegistry

    env = _broker_env(tmp_path)
    [late_id] = _enqueue_probes(env, ["late"], delay_seconds=10)
    [now_id] = _enqueue_probes(env, ["now"])
    late_job = Job.fetch(late_id, connection=redis_db)
    run_after = ScheduledJobRegistry(late_job.origin, connection=redis_db).get_scheduled_time(late_job)

    code, out = _finish(_start_worker(env, "rq-early", "--burst"))
    assert code == 0, out
    assert timezone.now() < run_after, (
        "machine too slow: the first worker ended after run_after, nothing proven"
    )
    assert redis_db.hget(KEY_PREFIX + "runs", "now") == b"1"
    assert redis_db.hget(KEY_PREFIX + "runs", "late") is None, "a delayed task must not run before run_after"

    time.sleep(max(0.0, (run_after - timezone.now()).total_seconds()) + 0.5)
    code, out = _finish(_start_worker(env, "rq-late", "--burst"))
    assert code == 0, out
    assert redis_db.hget(KEY_PREFIX + "runs", "late") == b"1"
    assert redis_db.hget(KEY_PREFIX + "runs", "now") == b"1", "the task that already ran did not run again"
    assert late_id != now_id


@pytest.mark.redis
def test_redis_worker_answers_check_and_stops_cleanly_on_sigterm(redis_db: Any, tmp_path: Path) -> None:
    env = _broker_env(tmp_path)
    worker = _start_worker(env, "rq-continuous")
    try:
        check = subprocess.run(
            [sys.executable, "-m", "django", "shequn_worker", "--check", "--check-timeout", "30"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert "answered by worker rq-continuous" in check.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        code, out = _finish(worker, timeout=30)
    assert code == 0, out
    assert "warm shut down" in out and "Worker rq-continuous stopped." in out
