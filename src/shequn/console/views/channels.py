"""Console pages of the channels: the Official Account connection (owners connect, operators set the
reply texts) and channel QR codes (渠道活码) with their QR image and stats."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from shequn.channels import code_services, qr, services
from shequn.channels import queries as channel_queries
from shequn.channels.models import ChannelCode, CodeKind, WeChatAccount, WeChatMode
from shequn.console.access import actor, console_view, has_role
from shequn.console.charts import FONT
from shequn.console.errors import error_field, error_text
from shequn.console.forms import ConsoleForm, split_names
from shequn.core.clock import now
from shequn.core.errors import NotFound, ShequnError
from shequn.core.models import Role

PERIODS = (7, 30, 90, 180)
DEFAULT_PERIOD = 30


# ---------------------------------------------------------------------------------------------
# forms (shape only; the services check the meaning)


class ConnectForm(ConsoleForm):
    app_id = forms.CharField(max_length=32, label=gettext_lazy("AppID (开发者ID)"))
    app_secret = forms.CharField(max_length=64, label=gettext_lazy("AppSecret (开发者密码)"),
                                 widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}))
    token = forms.CharField(max_length=32, label=gettext_lazy("Token (令牌)"),
                            widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}))
    encoding_aes_key = forms.CharField(max_length=43, required=False, label=gettext_lazy("EncodingAESKey (消息加解密密钥)"),
                                       widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
                                       help_text=gettext_lazy("43 characters; needed in compatible and safe mode."))
    mode = forms.ChoiceField(choices=WeChatMode.choices, initial=WeChatMode.SAFE,
                             label=gettext_lazy("Message encryption (消息加解密方式)"))
    timestamp_tolerance = forms.IntegerField(required=False, min_value=0, label=gettext_lazy("Timestamp tolerance (seconds)"),
                                             help_text=gettext_lazy("0 = off; e.g. 300 refuses requests more than five minutes old."))


class EditConnectionForm(ConnectForm):
    """Editing a connection: an empty secret field keeps the stored value (they are never shown)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["app_id"].disabled = True
        keep = gettext_lazy("Leave empty to keep the current value.")
        for name in ("app_secret", "token", "encoding_aes_key"):
            self.fields[name].required = False
            self.fields[name].help_text = keep


class RepliesForm(ConsoleForm):
    welcome_text = forms.CharField(required=False, max_length=2048, widget=forms.Textarea(attrs={"rows": 3}),
                                   label=gettext_lazy("Welcome text (reply to a new follower)"))
    reply_text = forms.CharField(required=False, max_length=2048, widget=forms.Textarea(attrs={"rows": 3}),
                                 label=gettext_lazy("Default auto-reply (to any message nothing else answers)"))


class CodeForm(ConsoleForm):
    account = forms.TypedChoiceField(coerce=int, label=gettext_lazy("Official Account"))
    kind = forms.ChoiceField(choices=CodeKind.choices, label=gettext_lazy("Kind"))
    name = forms.CharField(max_length=100, label=gettext_lazy("Name"),
                           help_text=gettext_lazy("Where the code is put up, e.g. “西湖店门口海报”."))
    scene = forms.CharField(max_length=64, label=gettext_lazy("Scene"),
                            help_text=gettext_lazy("1–64 letters, digits, “-”, “_” or “.”; printed in the code, "
                                                   "cannot change later."))
    welcome_text = forms.CharField(required=False, max_length=2048, widget=forms.Textarea(attrs={"rows": 3}),
                                   label=gettext_lazy("Welcome text"),
                                   help_text=gettext_lazy("Reply to a new follower who scanned this code; empty: "
                                                          "the account's welcome text."))
    tags = forms.CharField(required=False, max_length=1000, label=gettext_lazy("Tags"),
                           help_text=gettext_lazy("Given to a new follower who scanned this code; separate with "
                                                  "commas."))

    def __init__(self, *args: Any, accounts: list[WeChatAccount], editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["account"].choices = [(a.pk, a.app_id) for a in accounts]
        if editing:
            self.fields["account"].disabled = True
            self.fields["scene"].disabled = True

    def clean_tags(self) -> list[str]:
        return split_names(self.cleaned_data["tags"])


# ---------------------------------------------------------------------------------------------
# the Official Account


def _mask(secret: str) -> str:
    """Enough of a secret to recognise it, never enough to use it."""
    if not secret:
        return "—"
    if len(secret) <= 8:
        return "•" * 6
    return f"{secret[:2]}••••••{secret[-2:]}"


def _account_rows(request: HttpRequest, accounts: list[WeChatAccount]) -> list[dict[str, Any]]:
    return [{
        "account": a,
        "server_url": request.build_absolute_uri(channel_queries.server_path(a)),
        "secret_hint": _mask(a.app_secret), "token_hint": _mask(a.token), "aes_hint": _mask(a.encoding_aes_key),
        "replies_form": RepliesForm(initial={"welcome_text": a.welcome_text, "reply_text": a.reply_text},
                                    prefix=f"a{a.pk}"),
    } for a in accounts]


def _add_form_error(form: forms.Form, exc: ShequnError) -> None:
    field = error_field(exc)
    form.add_error(field if field in form.fields else None, error_text(exc))


@console_view(read=Role.OPERATOR, write=Role.OWNER)
def wechat_accounts(request: HttpRequest) -> HttpResponse:
    """The connected accounts with their server URLs; owners connect another one here."""
    ws = request.workspace  # type: ignore[attr-defined]
    form = ConnectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            account, _path = services.connect_account(
                ws, data["app_id"], data["app_secret"], data["token"], data["encoding_aes_key"], data["mode"],
                actor(request), timestamp_tolerance=data["timestamp_tolerance"])
        except ShequnError as exc:
            _add_form_error(form, exc)
        else:
            messages.success(request, _("Account %(app_id)s connected. Paste its server URL into WeChat's "
                                        "server settings.") % {"app_id": account.app_id})
            return redirect(reverse("console:channels_wechat", kwargs={"slug": ws.slug}) + f"#account-{account.pk}")
    accounts = channel_queries.accounts(ws)
    return render(request, "console/channels/wechat.html", {
        "rows": _account_rows(request, accounts), "form": form,
        "can_connect": has_role(request.role, Role.OWNER),  # type: ignore[attr-defined]
        "example_url": request.build_absolute_uri("/wechat/") + "…/",
    })


@console_view(read=Role.OWNER)
def wechat_account_edit(request: HttpRequest, account_id: int) -> HttpResponse:
    """Change a connection (new Token, key or mode); the server URL and the reply texts stay."""
    ws = request.workspace  # type: ignore[attr-defined]
    account = channel_queries.account(ws, account_id)
    initial = {"app_id": account.app_id, "mode": account.mode, "timestamp_tolerance": account.timestamp_tolerance}
    form = EditConnectionForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.connect_account(
                ws, account.app_id, data["app_secret"] or account.app_secret, data["token"] or account.token,
                data["encoding_aes_key"] or (account.encoding_aes_key if data["mode"] != WeChatMode.PLAINTEXT else ""),
                data["mode"], actor(request), timestamp_tolerance=data["timestamp_tolerance"])
        except ShequnError as exc:
            _add_form_error(form, exc)
        else:
            messages.success(request, _("Connection of %(app_id)s saved.") % {"app_id": account.app_id})
            return redirect("console:channels_wechat", slug=ws.slug)
    return render(request, "console/channels/wechat_edit.html", {
        "account": account, "form": form,
        "server_url": request.build_absolute_uri(channel_queries.server_path(account)),
        "secret_hint": _mask(account.app_secret), "token_hint": _mask(account.token),
        "aes_hint": _mask(account.encoding_aes_key),
    })


@require_POST
@console_view(read=Role.OPERATOR)
def wechat_replies(request: HttpRequest, account_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    account = channel_queries.account(ws, account_id)
    form = RepliesForm(request.POST, prefix=f"a{account.pk}")
    if form.is_valid():
        try:
            services.set_auto_replies(ws, account.pk, welcome_text=form.cleaned_data["welcome_text"],
                                      reply_text=form.cleaned_data["reply_text"], actor=actor(request))
        except ShequnError as exc:
            messages.error(request, error_text(exc))
        else:
            messages.success(request, _("Reply texts of %(app_id)s saved.") % {"app_id": account.app_id})
    else:
        messages.error(request, " ".join(str(e) for errors in form.errors.values() for e in errors))
    return redirect(reverse("console:channels_wechat", kwargs={"slug": ws.slug}) + f"#account-{account.pk}")


# ---------------------------------------------------------------------------------------------
# channel codes


def _period(request: HttpRequest) -> int:
    try:
        days = int(request.GET.get("days", DEFAULT_PERIOD))
    except ValueError:
        return DEFAULT_PERIOD
    return days if days in PERIODS else DEFAULT_PERIOD


def _window(ws: Any, days: int) -> tuple[dt.date, dt.date]:
    today = channel_queries.local_day(ws, now())
    return today - dt.timedelta(days=days - 1), today


@console_view(read=Role.OPERATOR)
def code_list(request: HttpRequest) -> HttpResponse:
    """Every code with its stats over the chosen period, side by side (three queries in all)."""
    ws = request.workspace  # type: ignore[attr-defined]
    days = _period(request)
    since, until = _window(ws, days)
    codes = list(channel_queries.codes(ws))
    stats = channel_queries.code_stats(ws, since=since, until=until)
    empty = channel_queries.CodeStats()
    rows = [{"code": c, "stats": stats.get(c.pk, empty)} for c in codes]
    totals = channel_queries.CodeStats(**{f: sum(getattr(r["stats"], f) for r in rows)
                                          for f in channel_queries.STAT_FIELDS})
    return render(request, "console/channels/codes.html", {
        "rows": rows, "totals": totals, "days": days, "periods": PERIODS, "since": since, "until": until,
        "has_accounts": bool(channel_queries.accounts(ws)) if not codes else True,
        "several_accounts": len({c.account_id for c in codes}) > 1,
        "figure": _comparison_figure(rows) if rows else None,
    })


def _code_form(request: HttpRequest, data: Any = None, *, editing: bool = False,
               initial: dict[str, Any] | None = None) -> CodeForm:
    ws = request.workspace  # type: ignore[attr-defined]
    return CodeForm(data, initial=initial, accounts=channel_queries.accounts(ws), editing=editing)


@console_view(read=Role.OPERATOR)
def code_new(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    kind = request.GET.get("kind", "")
    form = _code_form(request, request.POST or None,
                      initial={"kind": kind if kind in CodeKind.values else CodeKind.POSTER})
    if not form.fields["account"].choices:  # type: ignore[attr-defined]
        messages.error(request, _("Connect an Official Account first: codes belong to an account."))
        return redirect("console:channels_wechat", slug=ws.slug)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            code = code_services.create_code(ws, data["account"], kind=data["kind"], name=data["name"],
                                             scene=data["scene"], welcome_text=data["welcome_text"],
                                             tags=data["tags"], actor=actor(request))
        except NotFound:
            raise
        except ShequnError as exc:
            _add_form_error(form, exc)
        else:
            messages.success(request, _("Code “%(name)s” created.") % {"name": code.name})
            return redirect("console:channels_code", slug=ws.slug, code_id=code.pk)
    return render(request, "console/channels/code_form.html", {"form": form, "code": None})


@console_view(read=Role.OPERATOR)
def code_edit(request: HttpRequest, code_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    code = channel_queries.code(ws, code_id)
    initial = {"account": code.account_id, "kind": code.kind, "name": code.name, "scene": code.scene,
               "welcome_text": code.welcome_text, "tags": ", ".join(code.tags)}
    form = _code_form(request, request.POST or None, editing=True, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            code_services.update_code(ws, code.pk, kind=data["kind"], name=data["name"],
                                      welcome_text=data["welcome_text"], tags=data["tags"], actor=actor(request))
        except NotFound:
            raise
        except ShequnError as exc:
            _add_form_error(form, exc)
        else:
            messages.success(request, _("Code “%(name)s” saved.") % {"name": data["name"]})
            return redirect("console:channels_code", slug=ws.slug, code_id=code.pk)
    return render(request, "console/channels/code_form.html", {"form": form, "code": code})


@require_POST
@console_view(read=Role.OPERATOR)
def code_set_active(request: HttpRequest, code_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    active = request.POST.get("active") == "1"
    code = code_services.update_code(ws, code_id, active=active, actor=actor(request))
    if active:
        messages.success(request, _("Code “%(name)s” is active again.") % {"name": code.name})
    else:
        messages.success(request, _("Code “%(name)s” deactivated: its scans are still counted, but new followers "
                                    "get the account's welcome and no tags.") % {"name": code.name})
    return redirect("console:channels_code", slug=ws.slug, code_id=code.pk)


@console_view(read=Role.OPERATOR)
def code_detail(request: HttpRequest, code_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    code = channel_queries.code(ws, code_id)
    days = _period(request)
    since, until = _window(ws, days)
    series = channel_queries.code_series(ws, code.pk, since, until)
    period = channel_queries.code_stats(ws, [code.pk], since=since, until=until).get(code.pk, channel_queries.CodeStats())
    total = channel_queries.code_stats(ws, [code.pk]).get(code.pk, channel_queries.CodeStats())
    return render(request, "console/channels/code_detail.html", {
        "code": code, "days": days, "periods": PERIODS, "since": since, "until": until,
        "period": period, "total": total, "figure": _series_figure(series),
    })


def _image(request: HttpRequest, code: ChannelCode, kind: str) -> HttpResponse:
    body, content_type = (qr.svg(code.url), "image/svg+xml") if kind == "svg" else (qr.png(code.url), "image/png")
    response = HttpResponse(body, content_type=content_type)
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="qr-{code.scene}.{kind}"'
    response["Cache-Control"] = "private, max-age=3600"
    return response


@console_view(read=Role.OPERATOR)
def code_qr_svg(request: HttpRequest, code_id: int) -> HttpResponse:
    return _image(request, channel_queries.code(request.workspace, code_id), "svg")  # type: ignore[attr-defined]


@console_view(read=Role.OPERATOR)
def code_qr_png(request: HttpRequest, code_id: int) -> HttpResponse:
    return _image(request, channel_queries.code(request.workspace, code_id), "png")  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# charts (Plotly figure specifications, drawn by console.js)

COLOURS = {"scans": "#94a3b8", "follows": "#2f9e8f", "unfollows": "#d64545", "conversions": "#f0b429"}


def _labels() -> dict[str, str]:
    return {"scans": _("Scans"), "follows": _("New follows"), "unfollows": _("Unfollows within 7 days"),
            "conversions": _("First purchases")}


def _layout(**extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "font": FONT, "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "margin": {"l": 50, "r": 20, "t": 10, "b": 40}, "height": 320, "barmode": "group",
        "legend": {"orientation": "h", "y": -0.18}, "showlegend": True,
        "yaxis": {"rangemode": "tozero", "gridcolor": "#e5e9ef", "tickformat": "d"},
    }
    layout.update(extra)
    return layout


def _series_figure(series: list[channel_queries.DayStats]) -> dict[str, Any]:
    """Per day: scans as bars, new follows, early unfollows and first purchases as lines."""
    labels = _labels()
    x = [d.day.isoformat() for d in series]
    data: list[dict[str, Any]] = [{
        "type": "bar", "name": labels["scans"], "x": x, "y": [d.stats.scans for d in series],
        "marker": {"color": COLOURS["scans"]}, "hovertemplate": "%{x}: %{y}<extra>" + labels["scans"] + "</extra>",
    }]
    for field in ("follows", "unfollows", "conversions"):
        data.append({
            "type": "scatter", "mode": "lines+markers", "name": labels[field], "x": x,
            "y": [getattr(d.stats, field) for d in series], "line": {"color": COLOURS[field], "width": 2},
            "marker": {"size": 5}, "hovertemplate": "%{x}: %{y}<extra>" + labels[field] + "</extra>",
        })
    return {"data": data, "layout": _layout(xaxis={"type": "date", "gridcolor": "#eef1f5"})}


def _comparison_figure(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One group of bars per code: scans, new follows, early unfollows, first purchases."""
    labels = _labels()
    names = [r["code"].name for r in rows]
    data = [{
        "type": "bar", "name": labels[field], "x": names, "y": [getattr(r["stats"], field) for r in rows],
        "marker": {"color": COLOURS[field]}, "hovertemplate": "%{x}: %{y}<extra>" + labels[field] + "</extra>",
    } for field in ("scans", "follows", "unfollows", "conversions")]
    return {"data": data, "layout": _layout()}


urlpatterns: list[URLPattern] = [
    path("channels/wechat/", wechat_accounts, name="channels_wechat"),
    path("channels/wechat/<int:account_id>/", wechat_account_edit, name="channels_wechat_edit"),
    path("channels/wechat/<int:account_id>/replies/", wechat_replies, name="channels_wechat_replies"),
    path("channels/codes/", code_list, name="channels_codes"),
    path("channels/codes/new/", code_new, name="channels_code_new"),
    path("channels/codes/<int:code_id>/", code_detail, name="channels_code"),
    path("channels/codes/<int:code_id>/edit/", code_edit, name="channels_code_edit"),
    path("channels/codes/<int:code_id>/active/", code_set_active, name="channels_code_active"),
    path("channels/codes/<int:code_id>/qr.svg", code_qr_svg, name="channels_code_qr_svg"),
    path("channels/codes/<int:code_id>/qr.png", code_qr_png, name="channels_code_qr_png"),
]
