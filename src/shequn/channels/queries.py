"""Reads of the channels domain (no writes)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import QuerySet, Sum
from django.urls import reverse
from django.utils.translation import gettext as _

from shequn.core.errors import NotFound
from shequn.core.models import Workspace
from shequn.core.prepared import Prepared, column_types, in_use
from shequn.core.tenancy import get_scoped, scoped

from .models import ChannelCode, ChannelCodeDay, InboundMessage, WeChatAccount


def account_by_endpoint_key(endpoint_key: str) -> WeChatAccount | None:
    """The account whose server URL carries ``endpoint_key``, with its workspace.

    The key is the account's locator and is unguessable; the request must still be signed with that
    account's token, so a key alone writes nothing."""
    if not endpoint_key:
        return None
    return WeChatAccount.objects.select_related("workspace").filter(endpoint_key=endpoint_key).first()


def account_for_message(endpoint_key: str, *, with_versions: bool = True) -> WeChatAccount | None:
    """:func:`account_by_endpoint_key` for a message pushed by WeChat: the same account with its
    workspace, from a query built once (not compiled by the ORM per message), and — ``with_versions``
    — the workspace's settings versions read by the same query into the current settings scope
    (``core.cache.prime``), so the answer makes one query fewer (ADR 0005). With the versions, the row
    is also remembered in this process for :func:`remembered_account`."""
    if not endpoint_key:
        return None
    from django.db import connection

    query = _account_sql(with_versions)
    if in_use(connection):
        row = query.prepared.first_row(connection, [endpoint_key])
    else:
        with connection.cursor() as cursor:
            cursor.execute(query.sql, [endpoint_key])
            row = cursor.fetchone()
    if row is None:
        forget_account(endpoint_key)
        return None
    account = _account_from_row(row, query)
    if query.with_versions:
        with _remembered_lock:
            _remembered[endpoint_key] = (time.monotonic() + REMEMBER_FOR, row, query)
            _remembered.move_to_end(endpoint_key)
            while len(_remembered) > REMEMBERED_ACCOUNTS:
                _remembered.popitem(last=False)
    return account


def _account_from_row(row: tuple, query: _AccountQuery) -> WeChatAccount:
    """New account and workspace instances from a row of ``query`` (priming the settings scope with
    its versions, when it reads them)."""
    from django.db import DEFAULT_DB_ALIAS, connection

    from shequn.core import cache as settings_cache

    account_fields, workspace_fields = query.account_fields, query.workspace_fields
    n_account, n_workspace = len(account_fields), len(workspace_fields)

    def converted(fields: list[tuple[str, list, object]], values: tuple) -> list:
        out = []
        for (_name, converters, expression), value in zip(fields, values, strict=True):
            for convert in converters:
                value = convert(value, expression, connection)
            out.append(value)
        return out

    account = WeChatAccount.from_db(DEFAULT_DB_ALIAS, [f[0] for f in account_fields],
                                    converted(account_fields, row[:n_account]))
    workspace = Workspace.from_db(DEFAULT_DB_ALIAS, [f[0] for f in workspace_fields],
                                  converted(workspace_fields, row[n_account:n_account + n_workspace]))
    WeChatAccount._meta.get_field("workspace").set_cached_value(account, workspace)
    if query.with_versions:
        rest = row[n_account + n_workspace:]
        settings_cache.prime(workspace.pk, rest[0], rest[1:1 + query.n_versions])
    return account


REMEMBERED_ACCOUNTS = 1024
"""Accounts whose last-read row this process keeps for :func:`remembered_account` (least recently
read first out)."""
REMEMBER_FOR = 60.0
"""Seconds a remembered row is used before the account is read again, however often it is confirmed
(a bound on what the row versions are trusted for)."""

_remembered: OrderedDict[str, tuple[float, tuple, _AccountQuery]] = OrderedDict()
_remembered_lock = threading.Lock()


@dataclass(frozen=True)
class Remembered:
    """An account as this process last read it, to answer a message without reading it again: the
    message's insert confirms it (:func:`unchanged`)."""

    account: WeChatAccount
    """New instances (account and workspace) built from the remembered row, this request's own."""
    confirm: list
    """The parameters of :func:`unchanged`'s condition: what must still be true when the row is
    inserted."""


def remembered_account(endpoint_key: str) -> Remembered | None:
    """The account of ``endpoint_key`` as :func:`account_for_message` last read it in this process,
    with its settings versions primed into the current scope as that read primed them; None when
    there is none.

    Nothing from it may be trusted before the confirmation: an answer computed from it is stored by
    an insert conditioned on :func:`unchanged` — account and workspace rows not updated since and
    the same settings versions — and when that inserts nothing the answer is made again from a
    fresh read (ADR 0005)."""
    with _remembered_lock:
        found = _remembered.get(endpoint_key)
        if found is not None:
            if found[0] < time.monotonic():
                del _remembered[endpoint_key]
                return None
            _remembered.move_to_end(endpoint_key)
    if found is None:
        return None
    _until, row, query = found
    account = _account_from_row(row, query)
    n_rows = len(query.account_fields) + len(query.workspace_fields)
    rest = row[n_rows:]
    n_versions = query.n_versions
    versions = [rest[0], *rest[1:1 + n_versions]]  # the workspace's creation time, then its versions
    if len(rest) > 1 + n_versions:  # PostgreSQL: the rows' xmin
        account_xmin, workspace_xmin = rest[1 + n_versions:]
        return Remembered(account=account, confirm=[account.pk, account_xmin, workspace_xmin, *versions])
    return Remembered(account=account, confirm=[account.pk, *row[:n_rows], *versions])


def forget_account(endpoint_key: str) -> None:
    """Drop what this process remembers of the account of ``endpoint_key`` (its next message reads it)."""
    with _remembered_lock:
        _remembered.pop(endpoint_key, None)


def forget_accounts() -> None:
    """Drop everything this process remembers of accounts (an account or a workspace was edited here)."""
    with _remembered_lock:
        _remembered.clear()


def forget_accounts_on_edit(sender: Any, **kwargs: Any) -> None:
    """``post_save``/``post_delete`` receiver of accounts and workspaces: :func:`forget_accounts`."""
    forget_accounts()


_unchanged_cache: dict[object, Any] = {}


def unchanged() -> Any:
    """The condition (``core.inserts.Where``) that the account read for :func:`remembered_account`
    is still current: its row and its workspace's row not updated since — on PostgreSQL the same
    ``xmin`` (any update makes a new row version), on SQLite the same value in every column — and
    the workspace has the same creation time and settings versions. Built once per process."""
    from django.db import connection

    from shequn.core import cache as settings_cache
    from shequn.core.inserts import Where

    key = (connection.vendor, settings_cache.sources_key())
    cached = _unchanged_cache.get(key)
    if cached is not None:
        return cached
    qn = connection.ops.quote_name
    account_meta, workspace_meta = WeChatAccount._meta, Workspace._meta
    account_table, workspace_table, ws_id, joined = _account_join()
    created = workspace_meta.get_field("created_at")
    version_fields = settings_cache.version_fields()
    if connection.vendor != "postgresql":
        # No row version to compare: every column the account query read, as read (``IS`` is
        # equality that holds for two NULLs). A value written back unchanged confirms, rightly.
        compared = _account_columns(with_versions=True)
        sql = (f"EXISTS (SELECT 1 FROM {joined} "  # noqa: S608
               f"WHERE {account_table}.{qn(account_meta.pk.column)} = %s AND "
               + " AND ".join(f"{c} IS %s" for c in compared) + ")")
        built = _unchanged_cache[key] = Where(label="wechat_account_unchanged", sql=sql,
                                              types=("bigint",) + ("unknown",) * len(compared))
        return built
    versions = ", ".join(settings_cache.version_columns(ws_id))
    # Only quoted table and column names of the models go into the text; every value is a parameter.
    sql = (f"EXISTS (SELECT 1 FROM {joined} "  # noqa: S608
           f"WHERE {account_table}.{qn(account_meta.pk.column)} = %s AND {account_table}.xmin = %s "
           f"AND {workspace_table}.xmin = %s AND ROW({workspace_table}.{qn(created.column)}, {versions}) "
           f"IS NOT DISTINCT FROM ROW({', '.join(['%s'] * (1 + len(version_fields)))}))")
    types = tuple(column_types([account_meta.pk], connection)) + ("xid", "xid") + tuple(
        column_types([created, *version_fields], connection))
    built = _unchanged_cache[key] = Where(label="wechat_account_unchanged", sql=sql, types=types)
    return built


def _account_columns(with_versions: bool) -> list[str]:
    """The columns the account query reads, in its row's order: every column of the account and of
    its workspace, then — ``with_versions`` — the workspace's creation time and settings versions."""
    from django.db import connection

    from shequn.core import cache as settings_cache

    qn = connection.ops.quote_name
    account_table, workspace_table, ws_id, _joined = _account_join()
    columns = [*(f"{account_table}.{qn(f.column)}" for f in WeChatAccount._meta.concrete_fields),
               *(f"{workspace_table}.{qn(f.column)}" for f in Workspace._meta.concrete_fields)]
    if with_versions:
        columns += [f"{workspace_table}.{qn(Workspace._meta.get_field('created_at').column)}",
                    *settings_cache.version_columns(ws_id)]
    return columns


def _account_join() -> tuple[str, str, str, str]:
    """The quoted account and workspace tables, the account's workspace-id column, and the two
    tables joined (a ``FROM`` list), for the queries on an account with its workspace."""
    from django.db import connection

    qn = connection.ops.quote_name
    account_meta, workspace_meta = WeChatAccount._meta, Workspace._meta
    account_table, workspace_table = qn(account_meta.db_table), qn(workspace_meta.db_table)
    ws_id = f"{account_table}.{qn(account_meta.get_field('workspace').column)}"
    joined = f"{account_table} INNER JOIN {workspace_table} ON {workspace_table}.{qn(workspace_meta.pk.column)} = {ws_id}"
    return account_table, workspace_table, ws_id, joined


@dataclass(frozen=True)
class _AccountQuery:
    """The query of :func:`account_for_message`, built once per process."""

    sql: str
    prepared: Prepared
    """Its prepared form (``core.prepared``: on PostgreSQL, planning this join with its version
    subqueries costs more than running it)."""
    account_fields: list
    workspace_fields: list
    """Per selected field: its attribute name, the converters the ORM would apply to its value and
    their expression."""
    with_versions: bool
    """The row also holds the workspace's creation time and settings versions — and on PostgreSQL
    ends with the two rows' ``xmin`` —, so it can be remembered and confirmed later
    (:func:`remembered_account`)."""
    n_versions: int
    """How many settings versions follow the workspace's creation time (``with_versions``)."""


_account_sql_cache: dict[object, _AccountQuery] = {}


def _account_sql(with_versions: bool) -> _AccountQuery:
    """The query of :func:`account_for_message`; built once per process."""
    from django.db import connection

    from shequn.core import cache as settings_cache

    key = (connection.vendor, with_versions, settings_cache.sources_key())
    cached = _account_sql_cache.get(key)
    if cached is not None:
        return cached
    qn = connection.ops.quote_name
    account_meta, workspace_meta = WeChatAccount._meta, Workspace._meta
    account_table, workspace_table, _ws_id, joined = _account_join()

    def selected(meta, table_alias: str) -> list[tuple[str, list, object]]:
        out = []
        for f in meta.concrete_fields:
            col = f.get_col(table_alias)
            out.append((f.attname, connection.ops.get_db_converters(col) + col.get_db_converters(connection), col))
        return out

    account_fields = selected(account_meta, account_meta.db_table)
    workspace_fields = selected(workspace_meta, workspace_meta.db_table)
    columns = _account_columns(with_versions)
    if with_versions and connection.vendor == "postgresql":
        columns += [f"{account_table}.xmin::text", f"{workspace_table}.xmin::text"]
    # Only quoted table and column names of the models go into the text; the key is a parameter.
    sql = (f"SELECT {', '.join(columns)} FROM {joined} "  # noqa: S608
           f"WHERE {account_table}.{qn(account_meta.get_field('endpoint_key').column)} = %s")
    prepared = Prepared(f"wechat_account{'_versions' if with_versions else ''}", sql,
                        column_types([account_meta.get_field("endpoint_key")], connection))
    built = _account_sql_cache[key] = _AccountQuery(
        sql=sql, prepared=prepared, account_fields=account_fields, workspace_fields=workspace_fields,
        with_versions=with_versions, n_versions=len(settings_cache.version_fields()) if with_versions else 0)
    return built


def server_path(account: WeChatAccount) -> str:
    """The path of the account's server URL (服务器地址), e.g. ``/wechat/<endpoint_key>/``."""
    return reverse("wechat:endpoint", kwargs={"endpoint_key": account.endpoint_key})


def accounts(workspace: Workspace) -> list[WeChatAccount]:
    return list(scoped(WeChatAccount, workspace).order_by("app_id"))


def find_inbound(account: WeChatAccount, dedup_key: str) -> InboundMessage | None:
    return scoped(InboundMessage, account.workspace_id).filter(account=account, dedup_key=dedup_key).first()


def account(workspace: Workspace, account_id: int) -> WeChatAccount:
    """One account of ``workspace`` (NotFound for another workspace's)."""
    return get_scoped(WeChatAccount, workspace, account_id)


# ---------------------------------------------------------------------------------------------
# channel codes


@dataclass(frozen=True)
class CodeInfo:
    """What the fast path needs to know about a channel code."""

    id: int
    scene: str
    welcome_text: str
    tags: tuple[str, ...]
    active: bool


CODE_CACHE_SIZE = 4096
_code_cache: OrderedDict[tuple[int, str, str], CodeInfo | None] = OrderedDict()
_code_cache_lock = threading.Lock()


def code_for_scene(account: WeChatAccount, scene: str) -> CodeInfo | None:
    """The code of ``account`` with ``scene`` (active or not), or None — read on the fast path.

    Answers are kept in a small per-process LRU cache keyed by the account's ``codes_version``, a
    random value every change of the account's codes replaces in the same transaction. The endpoint
    reads the account row for every request, so every process sees a change as soon as it commits;
    pass an account fetched for this request, not one kept from before a change."""
    if not scene:
        return None
    key = (account.pk, account.codes_version, scene)
    with _code_cache_lock:
        if key in _code_cache:
            _code_cache.move_to_end(key)
            return _code_cache[key]
    row = (ChannelCode.objects.filter(workspace_id=account.workspace_id, account=account, scene=scene)
           .values_list("pk", "welcome_text", "tags", "active").first())
    info = None if row is None else CodeInfo(id=row[0], scene=scene, welcome_text=row[1],
                                             tags=tuple(str(t) for t in row[2] or ()), active=row[3])
    with _code_cache_lock:
        _code_cache[key] = info
        while len(_code_cache) > CODE_CACHE_SIZE:
            _code_cache.popitem(last=False)
    return info


def clear_code_cache() -> None:
    with _code_cache_lock:
        _code_cache.clear()


def codes(workspace: Workspace, *, account_id: int | None = None, active: bool | None = None) -> QuerySet[ChannelCode]:
    """The workspace's channel codes, newest first, with their account."""
    qs = scoped(ChannelCode, workspace).select_related("account")
    if account_id is not None:
        qs = qs.filter(account_id=account_id)
    if active is not None:
        qs = qs.filter(active=active)
    return qs.order_by("-pk")


def code(workspace: Workspace, code_id: int) -> ChannelCode:
    """One code of ``workspace`` with its account (NotFound for another workspace's)."""
    try:
        return scoped(ChannelCode, workspace).select_related("account").get(pk=code_id)
    except (ChannelCode.DoesNotExist, ValueError, TypeError):
        raise NotFound(_("channel code %(id)s not found") % {"id": code_id}) from None


STAT_FIELDS = ("scans", "scanners", "follows", "unfollows", "conversions")


@dataclass(frozen=True)
class CodeStats:
    """A code's counters over a period (see docs/channel-codes.md for each definition)."""

    scans: int = 0
    scanners: int = 0
    follows: int = 0
    unfollows: int = 0
    conversions: int = 0

    @property
    def unfollow_rate(self) -> float | None:
        """Unfollows within 7 days per follow."""
        return self.unfollows / self.follows if self.follows else None

    @property
    def conversion_rate(self) -> float | None:
        """First purchases per member who scanned."""
        return self.conversions / self.scanners if self.scanners else None

    def as_dict(self) -> dict[str, int | float | None]:
        return {**{f: getattr(self, f) for f in STAT_FIELDS}, "unfollow_rate": self.unfollow_rate,
                "conversion_rate": self.conversion_rate}


def code_stats(workspace: Workspace, code_ids: list[int] | None = None, *, since: dt.date | None = None,
               until: dt.date | None = None) -> dict[int, CodeStats]:
    """Counters per code (all codes of the workspace, or ``code_ids``), optionally for the days
    ``since``..``until`` (inclusive): one grouped query over the daily counters. Codes without any
    activity are absent; use ``CodeStats()`` for them."""
    qs = scoped(ChannelCodeDay, workspace)
    if code_ids is not None:
        qs = qs.filter(code_id__in=code_ids)
    if since is not None:
        qs = qs.filter(day__gte=since)
    if until is not None:
        qs = qs.filter(day__lte=until)
    rows = qs.values("code_id").annotate(**{f"t_{f}": Sum(f) for f in STAT_FIELDS}).order_by()
    return {r["code_id"]: CodeStats(**{f: int(r[f"t_{f}"] or 0) for f in STAT_FIELDS}) for r in rows}


@dataclass(frozen=True)
class DayStats:
    day: dt.date
    stats: CodeStats


def code_series(workspace: Workspace, code_id: int, since: dt.date, until: dt.date) -> list[DayStats]:
    """One row per day from ``since`` to ``until`` (inclusive), zeros on quiet days."""
    found = {r["day"]: CodeStats(**{f: r[f] for f in STAT_FIELDS})
             for r in scoped(ChannelCodeDay, workspace).filter(code_id=code_id, day__gte=since, day__lte=until)
             .values("day", *STAT_FIELDS)}
    out: list[DayStats] = []
    day = since
    while day <= until:
        out.append(DayStats(day=day, stats=found.get(day, CodeStats())))
        day += dt.timedelta(days=1)
    return out


def local_day(workspace: Workspace, at: dt.datetime) -> dt.date:
    """The calendar day of ``at`` in the workspace's time zone: the day a counter is kept under."""
    return at.astimezone(ZoneInfo(workspace.default_timezone)).date()
