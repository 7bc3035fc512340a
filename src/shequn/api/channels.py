"""Channels: the connected WeChat Official Accounts (read; owners connect) and channel QR codes
(渠道活码): create, read, change, deactivate, their QR image and their stats."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _
from ninja import Router, Schema, Status
from pydantic import Field

from shequn.channels import code_services, qr, services
from shequn.channels import queries as channel_queries
from shequn.channels.models import ChannelCode, WeChatAccount
from shequn.core.clock import now

from .auth import MANAGERS, OWNERS, allow, context
from .errors import BadRequest
from .schemas import DEFAULT_PAGE, ErrorOut, Input, keyset_page, with_errors

router = Router(tags=["channels"])

MAX_STATS_DAYS = 366


class AccountOut(Schema):
    id: int
    app_id: str
    mode: str = Field(description="plaintext, compatible or safe")
    server_url: str = Field(description="Paste into WeChat: 设置与开发 › 基本配置 › 服务器配置 › 服务器地址(URL)")
    welcome_text: str
    reply_text: str
    timestamp_tolerance: int
    created_at: dt.datetime


class AccountList(Schema):
    items: list[AccountOut]


class ConnectIn(Input):
    app_id: str = Field(description="AppID (开发者ID), wx…")
    app_secret: str = Field(description="AppSecret (开发者密码); never returned")
    token: str = Field(description="Token (令牌), the same as in the WeChat console; never returned")
    encoding_aes_key: str = Field("", description="EncodingAESKey, 43 characters (compatible and safe mode); never returned")
    mode: str = Field("safe", description="plaintext, compatible or safe")
    timestamp_tolerance: int | None = Field(None, description="seconds; 0 = off; omitted: unchanged")
    welcome_text: str | None = Field(None, description="reply to a new follower; omitted: unchanged")
    reply_text: str | None = Field(None, description="default reply to any message; omitted: unchanged")


class Stats(Schema):
    scans: int = Field(description="every scan")
    scanners: int = Field(description="members who scanned for the first time")
    follows: int = Field(description="members who followed through the code (first time)")
    unfollows: int = Field(description="of those, unfollows within 7 days of the follow")
    conversions: int = Field(description="scanners who had never bought and bought after the scan")
    unfollow_rate: float | None
    conversion_rate: float | None


class CodeOut(Schema):
    id: int
    account_id: int
    app_id: str
    kind: str
    name: str
    scene: str
    welcome_text: str
    tags: list[str]
    ticket: str
    url: str = Field(description="what the QR image encodes")
    demo: bool = Field(description="made up by the demo data; not known to WeChat")
    active: bool
    created_by: str
    created_at: dt.datetime
    stats: Stats = Field(description="all time")


class CodeList(Schema):
    items: list[CodeOut]
    next: int | None


class CodeIn(Input):
    account_id: int
    kind: str = Field(description="poster, store, clerk, event or campaign")
    name: str
    scene: str = Field(description="1–64 letters, digits, -, _ or .; unique per account; cannot change")
    welcome_text: str = ""
    tags: list[str] = Field(default_factory=list, description="given to a new follower who scans the code")


class CodePatch(Input):
    kind: str | None = None
    name: str | None = None
    welcome_text: str | None = None
    tags: list[str] | None = None
    active: bool | None = Field(None, description="false deactivates: scans still count, no welcome or tags")


class DayOut(Schema):
    day: dt.date
    scans: int
    scanners: int
    follows: int
    unfollows: int
    conversions: int


class StatsOut(Schema):
    code_id: int
    since: dt.date
    until: dt.date
    totals: Stats = Field(description="over since..until")
    days: list[DayOut]


def _account_out(request: HttpRequest, account: WeChatAccount) -> dict[str, Any]:
    return {"id": account.pk, "app_id": account.app_id, "mode": account.mode,
            "server_url": request.build_absolute_uri(channel_queries.server_path(account)),
            "welcome_text": account.welcome_text, "reply_text": account.reply_text,
            "timestamp_tolerance": account.timestamp_tolerance, "created_at": account.created_at}


def _code_out(code: ChannelCode, stats: channel_queries.CodeStats) -> dict[str, Any]:
    return {"id": code.pk, "account_id": code.account_id, "app_id": code.account.app_id, "kind": code.kind,
            "name": code.name, "scene": code.scene, "welcome_text": code.welcome_text, "tags": list(code.tags),
            "ticket": code.ticket, "url": code.url, "demo": code.is_demo, "active": code.active,
            "created_by": code.created_by, "created_at": code.created_at, "stats": stats.as_dict()}


def _one(workspace: Any, code_id: int) -> dict[str, Any]:
    code = channel_queries.code(workspace, code_id)
    stats = channel_queries.code_stats(workspace, [code.pk]).get(code.pk, channel_queries.CodeStats())
    return _code_out(code, stats)


@router.get("/channels/wechat-accounts", response=with_errors({200: AccountList}),
            operation_id="wechat_accounts_list", summary="Connected WeChat Official Accounts")
@allow(*MANAGERS)
def list_accounts(request: HttpRequest) -> dict[str, Any]:
    """Without the secrets (AppSecret, Token, EncodingAESKey are never returned)."""
    ctx = context(request)
    return {"items": [_account_out(request, a) for a in channel_queries.accounts(ctx.workspace)]}


@router.post("/channels/wechat-accounts", response=with_errors({200: AccountOut}),
             operation_id="wechat_accounts_connect", summary="Connect an Official Account (or update its connection)")
@allow(*OWNERS)
def connect_account(request: HttpRequest, body: ConnectIn) -> dict[str, Any]:
    """Connecting the same AppID again updates it and keeps its server URL. Answers the server URL to
    paste into WeChat's console."""
    ctx = context(request)
    account, _path = services.connect_account(ctx.workspace, body.app_id, body.app_secret, body.token,
                                              body.encoding_aes_key, body.mode, ctx.actor,
                                              timestamp_tolerance=body.timestamp_tolerance)
    if body.welcome_text is not None or body.reply_text is not None:
        account = services.set_auto_replies(ctx.workspace, account.pk, welcome_text=body.welcome_text,
                                            reply_text=body.reply_text, actor=ctx.actor)
    return _account_out(request, account)


@router.get("/channel-codes", response=with_errors({200: CodeList}), operation_id="channel_codes_list",
            summary="List channel codes with their all-time stats")
@allow(*MANAGERS)
def list_codes(request: HttpRequest, account_id: int | None = None, active: bool | None = None,
               after: int | None = None, limit: int = DEFAULT_PAGE) -> dict[str, Any]:
    """Newest first; pass ``next`` back as ``after``."""
    ctx = context(request)
    rows, cursor = keyset_page(channel_queries.codes(ctx.workspace, account_id=account_id, active=active),
                               after=after, limit=limit)
    stats = channel_queries.code_stats(ctx.workspace, [c.pk for c in rows])
    empty = channel_queries.CodeStats()
    return {"items": [_code_out(c, stats.get(c.pk, empty)) for c in rows], "next": cursor}


@router.post("/channel-codes", response=with_errors({201: CodeOut, 502: ErrorOut}), operation_id="channel_codes_create",
             summary="Create a channel code (asks WeChat for its permanent QR code)")
@allow(*MANAGERS)
def create_code(request: HttpRequest, body: CodeIn) -> Status[dict[str, Any]]:
    """409 ``scene_taken`` when the account already has a code with this scene; 502
    ``wechat_api_error`` when WeChat did not give the QR code (nothing is stored)."""
    ctx = context(request)
    code = code_services.create_code(ctx.workspace, body.account_id, kind=body.kind, name=body.name, scene=body.scene,
                                     welcome_text=body.welcome_text, tags=body.tags, actor=ctx.actor)
    return Status(201, _one(ctx.workspace, code.pk))


@router.get("/channel-codes/{int:code_id}", response=with_errors({200: CodeOut}), operation_id="channel_codes_get",
            summary="One channel code")
@allow(*MANAGERS)
def get_code(request: HttpRequest, code_id: int) -> dict[str, Any]:
    return _one(context(request).workspace, code_id)


@router.patch("/channel-codes/{int:code_id}", response=with_errors({200: CodeOut}),
              operation_id="channel_codes_update", summary="Change or deactivate a channel code")
@allow(*MANAGERS)
def update_code(request: HttpRequest, code_id: int, body: CodePatch) -> dict[str, Any]:
    """The scene, ticket and URL never change (they are printed). Codes are not deleted: set
    ``active`` to false."""
    ctx = context(request)
    data = body.model_dump(exclude_unset=True)
    code_services.update_code(ctx.workspace, code_id, actor=ctx.actor, **{k: v for k, v in data.items() if v is not None})
    return _one(ctx.workspace, code_id)


@router.get("/channel-codes/{int:code_id}/qr.svg", response=with_errors({200: None}),
            operation_id="channel_codes_qr_svg", summary="The code's QR image (SVG)")
@allow(*MANAGERS)
def code_qr_svg(request: HttpRequest, code_id: int) -> HttpResponse:
    """``image/svg+xml``; ``?download=1`` asks the browser to save it."""
    code = channel_queries.code(context(request).workspace, code_id)
    return _image(request, qr.svg(code.url), "image/svg+xml", f"qr-{code.scene}.svg")


@router.get("/channel-codes/{int:code_id}/qr.png", response=with_errors({200: None}),
            operation_id="channel_codes_qr_png", summary="The code's QR image (PNG)")
@allow(*MANAGERS)
def code_qr_png(request: HttpRequest, code_id: int) -> HttpResponse:
    code = channel_queries.code(context(request).workspace, code_id)
    return _image(request, qr.png(code.url), "image/png", f"qr-{code.scene}.png")


def _image(request: HttpRequest, body: bytes, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type=content_type)
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@router.get("/channel-codes/{int:code_id}/stats", response=with_errors({200: StatsOut}),
            operation_id="channel_codes_stats", summary="A code's stats per day")
@allow(*MANAGERS)
def code_stats(request: HttpRequest, code_id: int, since: dt.date | None = None,
               until: dt.date | None = None) -> dict[str, Any]:
    """Days are calendar days in the workspace's time zone; ``until`` defaults to today and ``since``
    to 29 days before ``until``; at most 366 days per request."""
    ctx = context(request)
    code = channel_queries.code(ctx.workspace, code_id)
    until = until or channel_queries.local_day(ctx.workspace, now())
    since = since or until - dt.timedelta(days=29)
    if since > until or (until - since).days >= MAX_STATS_DAYS:
        raise BadRequest(_("since..until must span 1 to %(n)s days") % {"n": MAX_STATS_DAYS}, code="invalid_period")
    series = channel_queries.code_series(ctx.workspace, code.pk, since, until)
    totals = channel_queries.code_stats(ctx.workspace, [code.pk], since=since, until=until).get(
        code.pk, channel_queries.CodeStats())
    return {"code_id": code.pk, "since": since, "until": until, "totals": totals.as_dict(),
            "days": [{"day": d.day, **{f: getattr(d.stats, f) for f in channel_queries.STAT_FIELDS}} for d in series]}


routers: list[Router] = [router]
