"""Background work: enqueue-on-commit, delayed tasks and periodic schedules on the Django Tasks API.

Shequn has one background-task framework: tasks are plain module-level functions decorated with
``django_tasks.task`` and run by ``shequn worker`` (the ``shequn_worker`` management command) on the
backend configured in ``settings.TASKS`` — the database queue (``django_tasks_db``) by default, RQ on
Redis when ``SHEQUN_TASK_BROKER=redis``.

Rules for every task in this project:

* **Arguments are ids and JSON values.** Never pass model instances, querysets or open files; pass
  primary keys and reload the rows inside the task. Arguments are serialised to JSON by every backend.
* **Enqueue after commit.** Use :func:`enqueue_on_commit` from code that runs inside a transaction, so a
  task never starts before the rows it reads are visible, and never starts at all if the transaction
  rolls back.
* **Task bodies must be idempotent.** Delivery is at least once: a worker can die after a task's side
  effects but before its result is recorded, Redis can hand a job to a new worker after a crash, and a
  periodic run can be enqueued again if the transaction recording its claim fails after the enqueue.
  Running a task twice with the same arguments must leave the same state as running it once (check
  state before acting, use unique constraints / ``update_or_create``, record what has been sent).

Periodic tasks are declared with :func:`register_periodic` (from an app's ``tasks`` module or its
``AppConfig.ready()``), written to ``core.PeriodicSchedule`` by :func:`sync_periodic_schedules` when a
worker starts, and fired by :func:`run_due_periodic`, which every worker's scheduler thread calls.
Each due run is claimed with a conditional ``UPDATE`` on ``next_run_at``, so however many workers run
the loop, exactly one of them enqueues a given run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules, import_string
from django_tasks.base import Task

from . import clock
from .models import PeriodicSchedule

logger = logging.getLogger("shequn.tasks")

__all__ = [
    "PERIODIC_REGISTRY",
    "DRAIN_REGISTRY",
    "DrainDefinition",
    "PeriodicDefinition",
    "enqueue_on_commit",
    "register_drain",
    "register_periodic",
    "run_drains",
    "run_due_periodic",
    "sync_periodic_schedules",
]

_NAME_MAX = PeriodicSchedule._meta.get_field("name").max_length or 100
_TASK_PATH_MAX = PeriodicSchedule._meta.get_field("task_path").max_length or 200
_TASK_ID_MAX = PeriodicSchedule._meta.get_field("last_task_id").max_length or 64


def _require_aware(value: datetime, what: str) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if timezone.is_naive(value):
        raise ValueError(f"{what} must be timezone-aware (got naive {value.isoformat()})")


def _require_json(args: tuple[Any, ...], kwargs: dict[str, Any], task: Task[Any, Any]) -> None:
    try:
        json.dumps([list(args), kwargs])
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"Arguments for task {task.module_path} must be JSON values (pass ids, not objects): {exc}"
        ) from exc


# --------------------------------------------------------------------------------------------------
# Enqueue on commit
# --------------------------------------------------------------------------------------------------


def enqueue_on_commit(
    task: Task[Any, Any], *args: Any, run_after: datetime | None = None, **kwargs: Any
) -> None:
    """Enqueue ``task(*args, **kwargs)`` once the current transaction commits.

    Inside ``transaction.atomic()`` the task is enqueued only after the outermost block commits and is
    dropped if it rolls back; outside a transaction (autocommit) it is enqueued immediately and enqueue
    errors propagate to the caller. After a commit the data is already saved, so an enqueue failure
    there (e.g. Redis down) is logged on ``shequn.tasks`` at ERROR level instead of failing the caller.

    ``run_after`` (an aware datetime) delays the task: no worker starts it before that time.
    """
    if not isinstance(task, Task):
        raise TypeError(f"enqueue_on_commit() needs a django_tasks Task, got {type(task).__name__}")
    if run_after is not None:
        _require_aware(run_after, "run_after")
        # ``using()`` re-validates the task against its backend (rejects run_after if unsupported).
        task = task.using(run_after=run_after)
    _require_json(args, kwargs, task)

    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        task.enqueue(*args, **kwargs)
        return

    bound_task = task

    def _enqueue_after_commit() -> None:
        try:
            result = bound_task.enqueue(*args, **kwargs)
        except Exception:
            logger.exception(
                "Could not enqueue task %s after commit (args=%r kwargs=%r)",
                bound_task.module_path,
                args,
                kwargs,
            )
            return
        logger.debug("Enqueued task %s id=%s after commit", bound_task.module_path, result.id)

    transaction.on_commit(_enqueue_after_commit)


# --------------------------------------------------------------------------------------------------
# Drains: tables whose waiting rows are their own queue
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrainDefinition:
    """A table whose rows wait for work by being in it (an unprocessed flag on an indexed column),
    and the function that does that work: ``drain(limit) -> int`` processes up to ``limit`` waiting
    rows, oldest first, and returns how many it processed (0: nothing waits, or every waiting row is
    being processed by another worker)."""

    name: str
    drain_path: str


DRAIN_REGISTRY: dict[str, DrainDefinition] = {}


def register_drain(name: str, drain_path: str) -> DrainDefinition:
    """Declare a drain (from an app's ``tasks`` module). Every ``shequn worker`` runs every drain in a
    thread of its own, continuously (``--no-drains`` leaves them to other workers).

    A drain is the right shape for work that follows each row of a hot insert path: the row is the
    queue entry, so the insert that answers a request writes nothing else (no task row, no broker
    call), and a worker finds the row by the partial index that holds exactly the waiting rows. The
    drain function must claim rows so that several workers can run it at once (``FOR UPDATE SKIP
    LOCKED`` on PostgreSQL) and be idempotent like every task."""
    if not name or len(name) > _NAME_MAX:
        raise ValueError(f"drain name must be 1..{_NAME_MAX} characters")
    definition = DrainDefinition(name=name, drain_path=drain_path)
    existing = DRAIN_REGISTRY.get(name)
    if existing is not None and existing != definition:
        raise ValueError(f"drain {name!r} is already registered as {existing.drain_path}")
    DRAIN_REGISTRY[name] = definition
    return definition


def run_drains(limit: int = 100) -> dict[str, int]:
    """Run every registered drain once (up to ``limit`` rows each); rows processed, by drain. A drain
    that fails is logged and counts 0, so one broken drain does not stop the others."""
    autodiscover_periodic()
    done: dict[str, int] = {}
    for definition in sorted(DRAIN_REGISTRY.values(), key=lambda d: d.name):
        try:
            done[definition.name] = int(import_string(definition.drain_path)(limit))
        except Exception:
            logger.exception("Drain %s (%s) failed", definition.name, definition.drain_path)
            done[definition.name] = 0
    return done


# --------------------------------------------------------------------------------------------------
# Periodic schedules
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeriodicDefinition:
    """The code-declared default for one periodic schedule."""

    name: str
    task_path: str
    interval_seconds: int


PERIODIC_REGISTRY: dict[str, PeriodicDefinition] = {}
"""Periodic schedules declared in code, by name. Written to the database by sync_periodic_schedules()."""


def register_periodic(name: str, task_path: str, interval_seconds: int) -> PeriodicDefinition:
    """Declare that the task at ``task_path`` runs every ``interval_seconds`` seconds.

    Call it at import time of an app's ``tasks`` module (workers autodiscover those) or from
    ``AppConfig.ready()``. Registering the same name again with the same values is a no-op; with
    different values it is an error, so two apps cannot silently fight over one schedule.
    The task must take no arguments.
    """
    if not name or len(name) > _NAME_MAX:
        raise ValueError(f"Periodic schedule name must be 1..{_NAME_MAX} characters: {name!r}")
    if not task_path or len(task_path) > _TASK_PATH_MAX or "." not in task_path:
        raise ValueError(
            f"task_path must be a dotted path of at most {_TASK_PATH_MAX} characters: {task_path!r}"
        )
    if isinstance(interval_seconds, bool) or not isinstance(interval_seconds, int) or interval_seconds < 1:
        raise ValueError(f"interval_seconds must be a positive integer, got {interval_seconds!r}")
    definition = PeriodicDefinition(name=name, task_path=task_path, interval_seconds=interval_seconds)
    existing = PERIODIC_REGISTRY.get(name)
    if existing is not None and existing != definition:
        raise ValueError(f"Periodic schedule {name!r} is already registered as {existing}")
    PERIODIC_REGISTRY[name] = definition
    return definition


def autodiscover_periodic() -> None:
    """Import every installed app's ``tasks`` module, so their register_periodic() calls have run."""
    autodiscover_modules("tasks")


def sync_periodic_schedules(now: datetime | None = None) -> list[str]:
    """Upsert one ``PeriodicSchedule`` row per registered definition; return the names created.

    Existing rows get the registered ``task_path`` and ``interval_seconds`` but keep ``next_run_at``,
    ``last_run_at`` and ``enabled`` (operators may disable a schedule). New rows are due at once.
    Rows whose name is no longer registered are left alone (they may have been added by operators).
    """
    now = now or clock.now()
    _require_aware(now, "now")
    autodiscover_periodic()
    created_names: list[str] = []
    for definition in sorted(PERIODIC_REGISTRY.values(), key=lambda d: d.name):
        _, created = PeriodicSchedule.objects.update_or_create(
            name=definition.name,
            defaults={"task_path": definition.task_path, "interval_seconds": definition.interval_seconds},
            create_defaults={
                "task_path": definition.task_path,
                "interval_seconds": definition.interval_seconds,
                "next_run_at": now,
            },
        )
        if created:
            created_names.append(definition.name)
    return created_names


def _next_run_after(previous: datetime, interval_seconds: int, now: datetime) -> datetime:
    """The first slot after ``now`` on the grid ``previous + k * interval`` (missed runs are not replayed)."""
    step = timedelta(seconds=max(1, interval_seconds))
    following = previous + step
    if following > now:
        return following
    missed = (now - previous) // step
    return previous + step * (missed + 1)


def _resolve_task(task_path: str) -> Task[Any, Any]:
    target = import_string(task_path)
    if not isinstance(target, Task):
        raise TypeError(f"{task_path} is not a django_tasks Task (decorate it with @task)")
    return target


def run_due_periodic(now: datetime | None = None) -> list[str]:
    """Enqueue every enabled schedule that is due at ``now``; return the names this call fired.

    Safe to call from any number of workers at once: each due run is claimed with
    ``UPDATE … SET next_run_at = <next> WHERE pk = <pk> AND next_run_at = <value we read>``; only the
    caller whose UPDATE changed the row enqueues the task. The claim, the enqueue and the recorded
    ``last_task_id`` share one transaction, so with the database backend a claimed run is never lost
    nor doubled; with Redis a failed commit after the enqueue can at worst repeat a run (bodies are
    idempotent). A schedule that fails to import or enqueue is logged and retried on the next tick.
    """
    now = now or clock.now()
    _require_aware(now, "now")
    fired: list[str] = []
    due = list(
        PeriodicSchedule.objects.filter(enabled=True, next_run_at__lte=now).order_by("next_run_at", "pk")
    )
    for schedule in due:
        try:
            task = _resolve_task(schedule.task_path)
        except (ImportError, TypeError):
            logger.exception("Periodic schedule %s: cannot load task %s", schedule.name, schedule.task_path)
            continue
        next_run_at = _next_run_after(schedule.next_run_at, schedule.interval_seconds, now)
        try:
            with transaction.atomic():
                claimed = PeriodicSchedule.objects.filter(
                    pk=schedule.pk, enabled=True, next_run_at=schedule.next_run_at
                ).update(next_run_at=next_run_at, last_run_at=now)
                if claimed != 1:
                    logger.debug("Periodic schedule %s: run already claimed by another worker", schedule.name)
                    continue
                result = task.enqueue()
                PeriodicSchedule.objects.filter(pk=schedule.pk).update(
                    last_task_id=str(result.id)[:_TASK_ID_MAX]
                )
        except Exception:
            logger.exception(
                "Periodic schedule %s: could not claim and enqueue %s", schedule.name, schedule.task_path
            )
            continue
        logger.info("Periodic schedule %s fired task %s id=%s", schedule.name, schedule.task_path, result.id)
        fired.append(schedule.name)
    return fired
