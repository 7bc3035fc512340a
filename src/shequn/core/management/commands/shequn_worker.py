"""``shequn worker``: the periodic scheduler plus the task worker of the configured backend.

Run as many of these as you like, on as many machines as you like:

* the scheduler thread fires due ``PeriodicSchedule`` rows; the claim in ``run_due_periodic()`` makes
  each run fire exactly once however many workers run the loop;
* the drain thread runs every registered drain (``core.tasks.register_drain``: tables whose waiting
  rows are their own queue, such as the WeChat messages to record) as soon as rows wait, and polls
  every ``--interval`` seconds when none do; drains claim rows, so every worker can run them;
* the task worker is django_tasks_db's ``Worker`` for the database backend (the embedded default) or
  an RQ worker (with RQ's scheduler, so delayed tasks fire) for ``django_tasks_rq.RQBackend``.

``--batch`` (alias ``--burst``) runs the due periodic schedules once, runs the drains until nothing
waits, works until the queue is empty and exits. ``--check`` enqueues the built-in ``ping`` task and waits for a running worker to answer it.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
from argparse import ArgumentParser, ArgumentTypeError
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections, connections
from django.utils.crypto import get_random_string
from django_tasks import DEFAULT_TASK_BACKEND_ALIAS, TaskResultStatus, task_backends
from django_tasks.backends.base import BaseTaskBackend
from django_tasks.checks import check_tasks
from django_tasks.exceptions import InvalidTaskBackendError
from django_tasks_db.backend import DatabaseBackend

from shequn.core.builtin_tasks import ping
from shequn.core.sqlite.base import take_checkpoints, yield_to_requests
from shequn.core.tasks import run_drains, run_due_periodic, sync_periodic_schedules

logger = logging.getLogger("shequn.tasks")

_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

MIN_DRAIN_INTERVAL = 0.01
"""The drains' shortest idle poll (``--interval 0`` would spin them)."""


def _positive_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ArgumentTypeError("must be a finite number greater than zero")
    return number


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ArgumentTypeError("must be a finite number, zero or greater")
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ArgumentTypeError("must be greater than zero")
    return number


def _worker_id(value: str) -> str:
    if not value or len(value) > 64:
        raise ArgumentTypeError("worker id must be 1..64 characters")
    return value


def _default_worker_id() -> str:
    return f"{socket.gethostname()[:36]}.{os.getpid()}.{get_random_string(6)}"


def _redacted_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
        if parts.port:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


class _LoopThread(threading.Thread):
    """A daemon thread looping until :meth:`stop`, waiting ``interval`` seconds between idle turns."""

    stop_timeout = 10.0

    def __init__(self, name: str, interval: float) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self._stop_event = threading.Event()

    def stop(self, timeout: float | None = None) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(self.stop_timeout if timeout is None else timeout)


class SchedulerThread(_LoopThread):
    """Calls ``run_due_periodic()`` every ``interval`` seconds until stopped."""

    def __init__(self, interval: float) -> None:
        super().__init__("shequn-scheduler", interval)

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                close_old_connections()
                try:
                    run_due_periodic()
                except Exception:
                    logger.exception("Scheduler tick failed; retrying in %ss", self.interval)
                self._stop_event.wait(self.interval)
        finally:
            connections.close_all()


class DrainThread(_LoopThread):
    """Runs the drains (``run_drains()``) again at once while they find rows, and every ``interval``
    seconds once nothing waits, until stopped."""

    stop_timeout = 30.0

    def __init__(self, interval: float) -> None:
        super().__init__("shequn-drains", interval)

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                try:
                    busy = any(run_drains().values())
                except Exception:
                    logger.exception("Drains failed; retrying in %ss", self.interval)
                    busy = False
                if not busy:
                    close_old_connections()
                    self._stop_event.wait(self.interval)
        finally:
            connections.close_all()


def drain_all(limit_rounds: int = 100_000) -> int:
    """Run the drains until nothing waits (``--batch``); rows settled in all."""
    total = 0
    for _ in range(limit_rounds):
        done = sum(run_drains().values())
        if not done:
            break
        total += done
    return total


class Command(BaseCommand):
    help = (
        "Run a Shequn background worker: syncs and fires periodic schedules, and runs tasks from the "
        "configured backend (database queue or Redis/RQ)."
    )
    # A worker needs sound models and task backends, not the web layer: the full system checks would
    # import the URLconf and every view. The task-backend checks run explicitly in handle().
    requires_system_checks = [Tags.models]

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--backend",
            default=DEFAULT_TASK_BACKEND_ALIAS,
            dest="backend_name",
            help="Alias in settings.TASKS to work on (default: %(default)r).",
        )
        parser.add_argument(
            "--queue-name",
            default="",
            help="Queues to process, comma separated (default: every queue the backend declares).",
        )
        parser.add_argument(
            "--batch",
            "--burst",
            action="store_true",
            dest="batch",
            help="Fire due periodic schedules once, run every task that is ready, then exit.",
        )
        parser.add_argument(
            "--interval",
            type=_non_negative_float,
            default=1.0,
            help="Database backend: seconds to wait between polls of an empty queue (default: %(default)s).",
        )
        parser.add_argument(
            "--max-tasks",
            type=_positive_int,
            default=None,
            help="Exit after running this many tasks.",
        )
        parser.add_argument(
            "--worker-id",
            type=_worker_id,
            default=None,
            help="Unique name of this worker (default: <host>.<pid>.<random>).",
        )
        parser.add_argument(
            "--no-scheduler",
            action="store_false",
            dest="scheduler",
            help="Do not sync or fire periodic schedules in this process.",
        )
        parser.add_argument(
            "--no-drains",
            action="store_false",
            dest="drains",
            help="Do not run the drains (rows that are their own queue, e.g. WeChat messages to record) here.",
        )
        parser.add_argument(
            "--scheduler-interval",
            type=_positive_float,
            default=5.0,
            help="Seconds between two looks at the periodic schedules (default: %(default)s).",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Enqueue the built-in ping task and wait until a running worker answers it, then exit.",
        )
        parser.add_argument(
            "--check-timeout",
            type=_positive_float,
            default=30.0,
            help="Seconds --check waits for an answer (default: %(default)s).",
        )

    # ----------------------------------------------------------------------------------------------

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity: int = options["verbosity"]
        self._configure_logging(verbosity)
        # On SQLite the worker's commits checkpoint the log, so that requests never do, and the
        # worker lets requests waiting for the write lock go first (shequn.core.sqlite.base): before
        # this process opens a connection.
        take_checkpoints()
        yield_to_requests()
        backend_name: str = options["backend_name"]
        try:
            backend = task_backends[backend_name]
        except InvalidTaskBackendError as exc:
            raise CommandError(str(exc)) from exc

        self._check_task_backends()
        if options["check"]:
            self._check(backend, options["check_timeout"])
            return

        kind = self._backend_kind(backend)
        queue_names = self._queue_names(backend, options["queue_name"])
        worker_id: str = options["worker_id"] or _default_worker_id()
        batch: bool = options["batch"]

        previous_handlers = {sig: signal.getsignal(sig) for sig in _HANDLED_SIGNALS}
        scheduler_thread: SchedulerThread | None = None
        drain_thread: DrainThread | None = None
        try:
            self._install_startup_signal_handlers()
            self._announce(backend, kind, queue_names, worker_id, options)
            if options["scheduler"]:
                created = sync_periodic_schedules()
                if created:
                    self.stdout.write(f"Created periodic schedules: {', '.join(created)}")
                if batch:
                    fired = run_due_periodic()
                    if fired:
                        self.stdout.write(f"Fired periodic schedules: {', '.join(fired)}")
                else:
                    scheduler_thread = SchedulerThread(options["scheduler_interval"])
                    scheduler_thread.start()
            if options["drains"]:
                if batch:
                    drained = drain_all()
                    if drained:
                        self.stdout.write(f"Drained {drained} waiting row(s)")
                else:
                    drain_thread = DrainThread(max(options["interval"], MIN_DRAIN_INTERVAL))
                    drain_thread.start()
            # The worker may fork (RQ runs each job in a child process); no connection of this
            # thread must be shared with a child.
            connections.close_all()
            if kind == "database":
                self._run_database_worker(backend, queue_names, worker_id, options)
            else:
                self._run_rq_worker(queue_names, worker_id, options, verbosity)
        finally:
            if drain_thread is not None:
                drain_thread.stop()
            if scheduler_thread is not None:
                scheduler_thread.stop()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        self.stdout.write(f"Worker {worker_id} stopped.")

    # ----------------------------------------------------------------------------------------------

    def _configure_logging(self, verbosity: int) -> None:
        level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
        for name in ("shequn.tasks", "django_tasks", "django_tasks_db"):
            task_logger = logging.getLogger(name)
            task_logger.setLevel(level)
            if not task_logger.hasHandlers():
                task_logger.addHandler(logging.StreamHandler(self.stdout))

    @staticmethod
    def _check_task_backends() -> None:
        problems = [message for message in check_tasks() if message.is_serious()]
        if problems:
            raise CommandError(
                "Task backend misconfigured:\n" + "\n".join(str(message) for message in problems)
            )

    @staticmethod
    def _backend_kind(backend: BaseTaskBackend) -> str:
        if isinstance(backend, DatabaseBackend):
            return "database"
        try:
            from django_tasks_rq import RQBackend
        except ImportError:  # django_rq missing: cannot be the RQ backend either
            RQBackend = None  # noqa: N806
        if RQBackend is not None and isinstance(backend, RQBackend):
            return "redis"
        raise CommandError(
            f"Backend {backend.alias!r} ({type(backend).__module__}.{type(backend).__name__}) has no worker: "
            "shequn worker runs django_tasks_db.DatabaseBackend or django_tasks_rq.RQBackend "
            "(set SHEQUN_TASK_BROKER to 'database' or 'redis')."
        )

    @staticmethod
    def _queue_names(backend: BaseTaskBackend, requested: str) -> list[str]:
        declared = sorted(backend.queues)
        if not requested:
            return declared
        names = [name.strip() for name in requested.split(",") if name.strip()]
        unknown = [name for name in names if name not in backend.queues]
        if unknown:
            raise CommandError(
                f"Unknown queue(s) {', '.join(unknown)}; backend {backend.alias!r} declares {', '.join(declared)}"
            )
        return names

    def _announce(
        self,
        backend: BaseTaskBackend,
        kind: str,
        queue_names: list[str],
        worker_id: str,
        options: dict[str, Any],
    ) -> None:
        backend_path = f"{type(backend).__module__}.{type(backend).__name__}"
        self.stdout.write(f"Shequn worker {worker_id} (pid {os.getpid()})")
        if kind == "database":
            conn = connections["default"]
            db = conn.settings_dict
            where = db["NAME"] if conn.vendor == "sqlite" else f"{db.get('HOST') or 'localhost'}/{db['NAME']}"
            self.stdout.write(f"  backend:   {backend.alias} = {backend_path} (database queue, {conn.vendor} {where})")
        else:
            queue_urls = {
                _redacted_url(str(settings.RQ_QUEUES[name].get("URL", "")))
                for name in queue_names
                if name in getattr(settings, "RQ_QUEUES", {})
            }
            self.stdout.write(
                f"  backend:   {backend.alias} = {backend_path} (Redis broker {', '.join(sorted(queue_urls))})"
            )
        self.stdout.write(f"  queues:    {', '.join(queue_names)}")
        if options["scheduler"]:
            scheduler = (
                "one pass (batch)" if options["batch"] else f"every {options['scheduler_interval']:g}s"
            )
        else:
            scheduler = "off"
        self.stdout.write(f"  scheduler: {scheduler}")
        if options["drains"]:
            idle = max(options["interval"], MIN_DRAIN_INTERVAL)
            drains = "until nothing waits (batch)" if options["batch"] else f"continuous, polled every {idle:g}s when idle"
        else:
            drains = "off"
        self.stdout.write(f"  drains:    {drains}")
        self.stdout.write(
            f"  mode:      {'batch (exit when the queue is empty)' if options['batch'] else 'continuous'}"
        )

    @staticmethod
    def _install_startup_signal_handlers() -> None:
        """Until the task worker installs its own handlers, SIGINT/SIGTERM end startup cleanly."""

        def stop_during_startup(signum: int, frame: FrameType | None) -> None:
            logger.warning("Received %s during startup - exiting.", signal.strsignal(signum))
            raise SystemExit(0)

        for sig in _HANDLED_SIGNALS:
            signal.signal(sig, stop_during_startup)

    # ----------------------------------------------------------------------------------------------

    def _run_database_worker(
        self, backend: BaseTaskBackend, queue_names: list[str], worker_id: str, options: dict[str, Any]
    ) -> None:
        from django_tasks_db.management.commands.db_worker import Worker

        worker = Worker(
            queue_names=queue_names,
            interval=options["interval"],
            batch=options["batch"],
            backend_name=backend.alias,
            startup_delay=not options["batch"],
            max_tasks=options["max_tasks"],
            worker_id=worker_id,
            excluded_queue_names=[],
        )
        # SIGINT/SIGTERM: finish the running task then exit; a second signal aborts it.
        worker.configure_signals()
        try:
            worker.run()
        except SystemExit as exc:
            # The worker's signal handler exits via sys.exit(); 0 is a clean stop.
            if exc.code not in (0, None):
                raise

    def _run_rq_worker(
        self, queue_names: list[str], worker_id: str, options: dict[str, Any], verbosity: int
    ) -> None:
        from django_rq.workers import get_worker
        from django_tasks_rq import Job
        from redis.exceptions import ConnectionError as RedisConnectionError

        level = "WARNING" if verbosity == 0 else "INFO" if verbosity == 1 else "DEBUG"
        try:
            worker = get_worker(*queue_names, job_class=Job, name=worker_id)
            # RQ installs its own SIGINT/SIGTERM handlers: warm shutdown after the current job,
            # a second signal kills the job. with_scheduler moves due delayed (run_after) jobs onto
            # their queue; in burst mode it does so once before working.
            worker.work(
                burst=options["batch"],
                with_scheduler=True,
                logging_level=level,
                max_jobs=options["max_tasks"],
            )
        except RedisConnectionError as exc:
            raise CommandError(f"Cannot reach Redis for the task queue: {exc}") from exc

    # ----------------------------------------------------------------------------------------------

    def _check(self, backend: BaseTaskBackend, timeout: float) -> None:
        token = get_random_string(24)
        task = ping if backend.alias == ping.backend else ping.using(backend=backend.alias)
        try:
            result = task.enqueue(token)
        except Exception as exc:
            raise CommandError(
                f"Could not enqueue the ping task on backend {backend.alias!r}: {exc}"
            ) from exc
        self.stdout.write(
            f"Enqueued ping {result.id} on backend {backend.alias!r}; waiting up to {timeout:g}s for a worker"
        )
        deadline = time.monotonic() + timeout
        while True:
            result.refresh()
            if result.status == TaskResultStatus.SUCCESSFUL:
                if result.return_value != token:
                    raise CommandError(
                        f"ping {result.id} returned {result.return_value!r}, expected {token!r}"
                    )
                workers = ", ".join(result.worker_ids) or "?"
                self.stdout.write(self.style.SUCCESS(f"OK: ping {result.id} answered by worker {workers}"))
                return
            if result.status == TaskResultStatus.FAILED:
                errors = "; ".join(
                    error.traceback.strip().splitlines()[-1] for error in result.errors if error.traceback
                )
                raise CommandError(f"ping {result.id} failed: {errors or 'unknown error'}")
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"No worker ran ping {result.id} within {timeout:g}s (status {result.status}). "
                    "Is `shequn worker` running for this backend?"
                )
            time.sleep(0.2)
