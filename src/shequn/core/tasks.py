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
from .prepared import Prepared, column_types, prepares

logger = logging.getLogger("shequn.tasks")

__all__ = [
    "PERIODIC_REGISTRY",
    "PeriodicDefinition",
    "enqueue_atomically",
    "enqueue_on_commit",
    "insert_with_task",
    "register_periodic",
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


def enqueue_atomically(task: Task[Any, Any], *args: Any, **kwargs: Any) -> None:
    """Enqueue ``task(*args, **kwargs)`` as part of the current transaction when the queue is the
    database queue on the same database (the embedded default): the task row commits or rolls back
    with the rows the task needs — one commit instead of two, and no enqueue lost between the commit
    and the broker. Any other backend (RQ on Redis), or no open transaction, falls back to
    :func:`enqueue_on_commit`, so a worker never sees a task before its data either way."""
    from django.db import DEFAULT_DB_ALIAS, router
    from django_tasks_db.backend import DatabaseBackend
    from django_tasks_db.models import DBTaskResult

    backend = task.get_backend()
    if (transaction.get_connection().in_atomic_block and isinstance(backend, DatabaseBackend)
            and router.db_for_write(DBTaskResult) == DEFAULT_DB_ALIAS):
        _require_json(args, kwargs, task)
        _insert_task_row(backend, task, args, kwargs)
        return
    enqueue_on_commit(task, *args, **kwargs)


_PER_CALL = ("id", "args_kwargs", "enqueued_at")
"""The task row's fields that change from one enqueue to the next; every other value is the task's own."""


@dataclass(frozen=True)
class _TaskRow:
    """The database queue's row for one task on one database, prepared once: the insert's plan and
    its parameters with the per-call slots (:data:`_PER_CALL`) left to fill."""

    plan: Any
    constants: tuple[Any, ...]
    slots: tuple[tuple[int, Any], ...]
    """(parameter index, field) of ``id``, ``args_kwargs`` and ``enqueued_at``, in that order."""
    path: str
    alias: str

    def params(self, backend: Any, args_kwargs: Any, connection: Any) -> list[Any]:
        """The insert's parameters for a new row holding ``args_kwargs``, prepared as the ORM would."""
        out = list(self.constants)
        (i_id, f_id), (i_args, f_args), (i_at, f_at) = self.slots
        out[i_id] = f_id.get_db_prep_save(backend._get_id(), connection)
        out[i_args] = f_args.get_db_prep_save(args_kwargs, connection)
        out[i_at] = f_at.get_db_prep_save(timezone.now(), connection)
        return out


_task_rows: dict[tuple[Any, ...], _TaskRow] = {}


def _task_row(backend: Any, task: Task[Any, Any], connection: Any) -> _TaskRow:
    """The prepared row ``backend.enqueue()`` writes for ``task``. The task is validated against its
    backend once per process, when its row is first prepared; the model's one ``pre_save`` receiver
    (``run_after`` None → the far future) is done here."""
    from django_tasks_db.models import DBTaskResult, get_date_max

    from .inserts import plan_for, values

    key = (task.func, task.priority, task.queue_name, task.run_after, backend.alias, connection.alias)
    row = _task_rows.get(key)
    if row is not None:
        return row
    backend.validate_task(task)
    template = DBTaskResult(id=backend._get_id(), args_kwargs={"args": [], "kwargs": {}}, priority=task.priority,
                            task_path=task.module_path, queue_name=task.queue_name,
                            run_after=task.run_after or get_date_max(), backend_name=backend.alias)
    plan = plan_for(DBTaskResult, connection.alias)
    names = [field.name for field in plan.fields]
    slots = tuple((names.index(name), plan.fields[names.index(name)]) for name in _PER_CALL)
    if len(_task_rows) >= 1024:
        _task_rows.clear()
    row = _task_rows[key] = _TaskRow(plan=plan, constants=tuple(values(template, plan, connection)), slots=slots,
                                     path=task.module_path, alias=backend.alias)
    return row


def _insert_task_row(backend: Any, task: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The row ``backend.enqueue()`` writes for ``task(*args, **kwargs)``, inserted from a row prepared
    once per task (``_task_row``, ``core.inserts``): on the WeChat endpoint the ORM's ``create()`` and
    the result object built for the ``task_enqueued`` signal were a fifth of the answer time. The
    signal, whose only receiver is django_tasks' debug log line, is replaced by that log line."""
    from django.db import connection
    from django_tasks.utils import normalize_json

    from .inserts import execute

    row = _task_row(backend, task, connection)
    if not kwargs and all(type(arg) is int for arg in args):  # ids need no normalising
        args_kwargs = {"args": list(args), "kwargs": {}}
    else:
        args_kwargs = normalize_json({"args": args, "kwargs": kwargs})
    params = row.params(backend, args_kwargs, connection)
    execute(connection, row.plan.sql, row.plan.native_sql, params, fetch=False, prepared=row.plan.prepared)
    logger.debug("Task id=%s path=%s enqueued backend=%s", params[row.slots[0][0]], row.path, row.alias)


def single_statement_suffices() -> bool:
    """Whether the caller, in its own outermost ``atomic()`` block on PostgreSQL, has sent nothing to
    the database yet — psycopg opens the transaction only with the first statement — and left nothing
    to run on commit: then a write that :func:`insert_with_task` makes in one statement can be made
    after the block ends, atomic on its own, saving the ``BEGIN`` and ``COMMIT`` round trips. False
    elsewhere (SQLite's ``BEGIN IMMEDIATE`` is sent when the block starts; an enclosing transaction
    must hold the write)."""
    from django.db import connection

    if connection.vendor != "postgresql" or connection.savepoint_ids or connection.run_on_commit:
        return False
    atomic_blocks = getattr(connection, "atomic_blocks", [])
    if len(atomic_blocks) != 1 or connection.connection is None:
        return False
    from psycopg.pq import TransactionStatus

    return connection.connection.info.transaction_status == TransactionStatus.IDLE


def insert_with_task(obj: Any, task: Task[Any, Any]) -> Any:
    """Insert the new row ``obj`` and enqueue ``task(obj.pk)`` as part of the current transaction (as
    :func:`enqueue_atomically` does); returns ``obj``, saved.

    On PostgreSQL with the database queue this is one statement — the row's ``INSERT … RETURNING``
    feeding the task row's ``INSERT`` in a data-modifying ``WITH`` — so storing a message and its
    processing costs one round trip to the server, not two; being one statement it is atomic outside a
    transaction too (:func:`single_statement_suffices`). Elsewhere: ``insert_new`` (``core.inserts``)
    then the task row prepared once per task (in a transaction) or :func:`enqueue_atomically`."""
    from django.db import DEFAULT_DB_ALIAS, connection, router
    from django.db.models.signals import post_save, pre_save
    from django_tasks_db.backend import DatabaseBackend
    from django_tasks_db.models import DBTaskResult

    from .inserts import execute, insert_new, mark_saved, plan_for, values

    backend = task.get_backend()
    model = type(obj)
    one_statement = connection.vendor == "postgresql"  # atomic by itself, in a transaction or not
    if not ((connection.in_atomic_block or one_statement) and isinstance(backend, DatabaseBackend)
            and router.db_for_write(DBTaskResult) == DEFAULT_DB_ALIAS and router.db_for_write(model) == DEFAULT_DB_ALIAS):
        insert_new(obj)
        enqueue_atomically(task, obj.pk)
        return obj
    if not one_statement:
        insert_new(obj)
        _insert_task_row(backend, task, (obj.pk,), {})
        return obj
    if pre_save.has_listeners(model) or post_save.has_listeners(model):
        raise TypeError(f"{model.__name__} has save signal receivers: insert it with the ORM")
    plan = plan_for(model, DEFAULT_DB_ALIAS)
    if getattr(obj, plan.auto.attname) is not None:
        raise ValueError(f"{model.__name__}: the database assigns the primary key of a new row")
    row = _task_row(backend, task, connection)
    task_params = row.params(backend, None, connection)
    args_at = row.slots[1][0]
    del task_params[args_at]  # built in the statement, from the new id
    sql, prepared = _pair_statement(model, row)
    found = execute(connection, sql, sql, [*values(obj, plan, connection), *task_params], fetch=True,
                    prepared=prepared)
    mark_saved(obj, DEFAULT_DB_ALIAS, plan.auto, found[0])
    logger.debug("Task id=%s path=%s enqueued backend=%s", task_params[row.slots[0][0]], row.path, row.alias)
    return obj


_pair_statements: dict[tuple[type, str], tuple[str, Prepared | None]] = {}


def _pair_statement(model: type, row: _TaskRow) -> tuple[str, Prepared | None]:
    """The ``WITH`` statement of :func:`insert_with_task` for ``model`` (PostgreSQL), built once, and
    its prepared form where the connection prepares (``core.prepared``)."""
    from django.db import connection

    from .inserts import plan_for

    key = (model, connection.alias)
    cached = _pair_statements.get(key)
    if cached is not None:
        return cached
    first = plan_for(model, connection.alias)
    auto = first.auto
    if auto is None:
        raise TypeError(f"{model.__name__} has no database-assigned primary key to give the task")
    quote = connection.ops.quote_name
    meta = row.plan.fields[0].model._meta
    task_fields = [f for f in row.plan.fields if f.name != "args_kwargs"]
    columns = ", ".join([*(quote(f.column) for f in task_fields), quote(meta.get_field("args_kwargs").column)])
    values = ", ".join([*(["%s"] * len(task_fields)),
                        f"jsonb_build_object('args', jsonb_build_array(stored.{quote(auto.column)}), 'kwargs', '{{}}'::jsonb)"])
    # Identifiers come from the models' metadata, quoted by the backend; every value is a parameter.
    sql = (f"WITH stored AS ({first.sql}), queued AS (INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608
           f"SELECT {values} FROM stored) SELECT {quote(auto.column)} FROM stored")
    prepared = (Prepared(f"insert_{model._meta.db_table}_task", sql, column_types([*first.fields, *task_fields], connection))
                if prepares(connection) else None)
    _pair_statements[key] = (sql, prepared)
    return sql, prepared


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
