"""Console pages: the points programme (point types, earn rules), a member's points and stored value,
and the liability reports of both, with charts.

Who may do what: operators change the programme, adjust points and refund stored-value payments;
agents read; clerks (the counter) look members up, see their balances and top up or take payments
from stored value. Every form that writes to a ledger carries an idempotency key made when the form
was drawn, so a double submit changes nothing twice."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from shequn.console.access import actor, console_view, has_role
from shequn.console.errors import error_field, error_text
from shequn.core import clock
from shequn.core.errors import NotFound, ShequnError
from shequn.core.models import Role
from shequn.core.tenancy import get_scoped
from shequn.interactions.models import Direction, InteractionType
from shequn.loyalty import periods
from shequn.loyalty import queries as loyalty_queries
from shequn.loyalty import services as loyalty
from shequn.loyalty.models import EarnRule, ExpiryPolicy, PointKind
from shequn.members import queries as member_queries
from shequn.members.models import Member
from shequn.wallet import queries as wallet_queries
from shequn.wallet import services as wallet

PAGE = 30
FONT = {"family": "-apple-system, 'Segoe UI', 'PingFang SC', 'Microsoft YaHei', 'Noto Sans CJK SC', sans-serif",
        "size": 13, "color": "#1f2933"}


def _layout(**extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {"font": FONT, "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
                              "margin": {"l": 60, "r": 20, "t": 20, "b": 50}, "height": 320,
                              "legend": {"orientation": "h", "y": -0.2}}
    layout.update(extra)
    return layout


def _new_key() -> str:
    return uuid.uuid4().hex


def _fail(form: forms.Form, exc: ShequnError) -> None:
    field = error_field(exc)
    form.add_error(field if field in form.fields else None, error_text(exc))


def _yuan(fen: int) -> str:
    return f"¥{fen / 100:,.2f}"


# ---------------------------------------------------------------------------------------------
# forms


class PointTypeForm(forms.Form):
    code = forms.SlugField(label=gettext_lazy("Code"), max_length=32)
    name = forms.CharField(label=gettext_lazy("Name"), max_length=64)
    kind = forms.ChoiceField(label=gettext_lazy("Kind"), choices=PointKind.choices)
    expiry_policy = forms.ChoiceField(label=gettext_lazy("Expiry"), choices=ExpiryPolicy.choices)
    expiry_period = forms.IntegerField(label=gettext_lazy("Expiry period"), min_value=0, initial=0)
    pending_days = forms.IntegerField(label=gettext_lazy("Pending days"), min_value=0, initial=0)
    transferable = forms.BooleanField(label=gettext_lazy("Transferable"), required=False)


class EarnRuleForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=100)
    point_type = forms.ChoiceField(label=gettext_lazy("Point type"))
    interaction_type = forms.ChoiceField(label=gettext_lazy("Interaction type"), choices=InteractionType.choices)
    direction = forms.ChoiceField(label=gettext_lazy("Direction"), required=False,
                                  choices=[("", gettext_lazy("either")), *Direction.choices])
    channel = forms.CharField(label=gettext_lazy("Channel"), max_length=64, required=False)
    min_amount = forms.DecimalField(label=gettext_lazy("Minimum amount (¥)"), required=False, min_value=0,
                                    decimal_places=2)
    points = forms.IntegerField(label=gettext_lazy("Fixed points"), min_value=0, initial=0)
    points_per_yuan = forms.DecimalField(label=gettext_lazy("Points per ¥"), required=False, min_value=0,
                                         decimal_places=4)
    member_cap_day = forms.IntegerField(label=gettext_lazy("Per member per day"), required=False, min_value=1)
    member_cap_month = forms.IntegerField(label=gettext_lazy("Per member per month"), required=False, min_value=1)
    global_cap_day = forms.IntegerField(label=gettext_lazy("All members per day"), required=False, min_value=1)
    priority = forms.IntegerField(label=gettext_lazy("Priority"), initial=100)
    enabled = forms.BooleanField(label=gettext_lazy("Enabled"), required=False, initial=True)

    def __init__(self, *args: Any, type_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["point_type"].choices = type_choices  # type: ignore[attr-defined]


class AdjustForm(forms.Form):
    point_type = forms.ChoiceField(label=gettext_lazy("Point type"))
    amount = forms.IntegerField(label=gettext_lazy("Points (negative takes away)"))
    reason = forms.CharField(label=gettext_lazy("Reason"), max_length=200)
    key = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, type_choices: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["point_type"].choices = type_choices  # type: ignore[attr-defined]


class MoneyForm(forms.Form):
    op = forms.ChoiceField(choices=[("top_up", "top_up"), ("pay", "pay")], widget=forms.HiddenInput)
    amount = forms.DecimalField(label=gettext_lazy("Amount (¥)"), min_value=0, decimal_places=2, max_digits=12)
    store = forms.CharField(label=gettext_lazy("Store"), max_length=64, required=False)
    reason = forms.CharField(label=gettext_lazy("Note"), max_length=200, required=False)
    key = forms.CharField(widget=forms.HiddenInput)


class RefundForm(forms.Form):
    amount = forms.DecimalField(label=gettext_lazy("Refund (¥)"), min_value=0, decimal_places=2, max_digits=12,
                                required=False)
    reason = forms.CharField(label=gettext_lazy("Reason"), max_length=200, required=False)
    key = forms.CharField(widget=forms.HiddenInput)


def _type_choices(ws: Any, *, spendable_only: bool = False) -> list[tuple[str, str]]:
    return [(t.code, f"{t.name} ({t.code})") for t in loyalty_queries.point_types(ws)
            if t.spendable or not spendable_only]


# ---------------------------------------------------------------------------------------------
# programme settings


@console_view(read=Role.OPERATOR)
def point_types(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    form = PointTypeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        code = data.pop("code")
        existing = {t.code for t in loyalty_queries.point_types(ws)}
        if code in existing:
            data.pop("kind")
        try:
            pt = loyalty.save_point_type(ws, code, data, actor=actor(request))
        except ShequnError as exc:
            _fail(form, exc)
        else:
            messages.success(request, _("Point type “%(name)s” saved.") % {"name": pt.name})
            return redirect("console:loyalty_point_types", slug=ws.slug)
    return render(request, "console/loyalty/point_types.html",
                  {"types": loyalty_queries.point_types(ws), "form": form})


@console_view(read=Role.OPERATOR)
def rule_list(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    return render(request, "console/loyalty/rules.html", {"rules": loyalty_queries.earn_rules(ws)})


def _save_rule(request: HttpRequest, form: EarnRuleForm, rule_id: int | None) -> bool:
    ws = request.workspace  # type: ignore[attr-defined]
    if not form.is_valid():
        return False
    data = {k: ("" if v is None else v) for k, v in form.cleaned_data.items()}
    try:
        rule = loyalty.save_earn_rule(ws, data, rule_id=rule_id, actor=actor(request))
    except NotFound:
        raise
    except ShequnError as exc:
        _fail(form, exc)
        return False
    messages.success(request, _("Earn rule “%(name)s” saved.") % {"name": rule.name})
    return True


@console_view(read=Role.OPERATOR)
def rule_new(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    form = EarnRuleForm(request.POST or None, type_choices=_type_choices(ws))
    if request.method == "POST" and _save_rule(request, form, None):
        return redirect("console:loyalty_rules", slug=ws.slug)
    return render(request, "console/loyalty/rule_form.html", {"form": form, "rule": None})


@console_view(read=Role.OPERATOR)
def rule_edit(request: HttpRequest, rule_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    rule = get_scoped(EarnRule, ws, rule_id)
    if request.method == "POST":
        form = EarnRuleForm(request.POST, type_choices=_type_choices(ws))
        if _save_rule(request, form, rule.pk):
            return redirect("console:loyalty_rules", slug=ws.slug)
    else:
        form = EarnRuleForm(type_choices=_type_choices(ws), initial={
            "name": rule.name, "point_type": rule.point_type.code, "interaction_type": rule.interaction_type,
            "direction": rule.direction, "channel": rule.channel, "min_amount": rule.min_amount,
            "points": rule.points, "points_per_yuan": rule.points_per_yuan, "member_cap_day": rule.member_cap_day,
            "member_cap_month": rule.member_cap_month, "global_cap_day": rule.global_cap_day,
            "priority": rule.priority, "enabled": rule.enabled})
    return render(request, "console/loyalty/rule_form.html", {"form": form, "rule": rule})


@require_POST
@console_view(read=Role.OPERATOR)
def rule_delete(request: HttpRequest, rule_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    rule = get_scoped(EarnRule, ws, rule_id)
    loyalty.delete_earn_rule(ws, rule.pk, actor=actor(request))
    messages.success(request, _("Earn rule “%(name)s” deleted.") % {"name": rule.name})
    return redirect("console:loyalty_rules", slug=ws.slug)


# ---------------------------------------------------------------------------------------------
# members: look-up, points panel, stored value


@console_view(read=Role.CLERK)
def member_lookup(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    q = request.GET.get("q", "").strip()
    found: list[Member] = []
    if q:
        found = list(member_queries.filter_members(ws, member_queries.MemberFilter(q=q)).order_by("-pk")[:20])
    held = wallet_queries.balances(ws, [m.pk for m in found])
    balances = {m.pk: _yuan(held.get(m.pk, 0)) for m in found}
    return render(request, "console/loyalty/lookup.html", {"q": q, "found": found, "wallets": balances})


def _member(request: HttpRequest, member_id: int) -> Member:
    return get_scoped(Member, request.workspace, member_id)  # type: ignore[attr-defined]


@console_view(read=Role.AGENT, write=Role.OPERATOR)
def member_points(request: HttpRequest, member_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    member = _member(request, member_id)
    choices = _type_choices(ws)
    form = AdjustForm(request.POST or None, type_choices=choices, initial={"key": _new_key()})
    if request.method == "POST" and form.is_valid():
        d = form.cleaned_data
        try:
            loyalty.adjust(ws, member.pk, d["point_type"], d["amount"], reason=d["reason"],
                           idempotency_key=f"console:{d['key']}", actor=actor(request))
        except ShequnError as exc:
            _fail(form, exc)
        else:
            messages.success(request, _("Points adjusted."))
            return redirect("console:loyalty_member", slug=ws.slug, member_id=member.pk)
    before = request.GET.get("before", "")
    rows = loyalty_queries.history(ws, member.pk, before_id=int(before) if before.isdigit() else None, limit=PAGE + 1)
    page = rows[:PAGE]
    draws = loyalty_queries.draws_of(ws, [e.pk for e in page])
    now = clock.now()
    balances = [(b, loyalty_queries.expiring(ws, member.pk, b.point_type, now=now, within=_days(30)))
                for b in loyalty_queries.balances(ws, member.pk)]
    names = {t.code: t.name for t in loyalty_queries.point_types(ws)}
    return render(request, "console/loyalty/member.html", {
        "member": member, "balances": balances, "names": names, "form": form,
        "entries": [(e, draws.get(e.pk, [])) for e in page],
        "next_before": page[-1].pk if len(rows) > PAGE else None,
        "can_adjust": has_role(request.role, Role.OPERATOR),  # type: ignore[attr-defined]
    })


def _days(n: int) -> Any:
    import datetime as dt

    return dt.timedelta(days=n)


def _fen(value: Any) -> int:
    """Yuan with at most two decimals, typed into a form, in fen."""
    return int((value * 100).to_integral_value())


@console_view(read=Role.CLERK)
def member_wallet(request: HttpRequest, member_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    member = _member(request, member_id)
    posted = request.method == "POST"
    money = MoneyForm(request.POST if posted else None, initial={"key": _new_key(), "op": "top_up"})
    if posted and money.is_valid():
        d = money.cleaned_data
        call = wallet.top_up if d["op"] == "top_up" else wallet.pay
        try:
            call(ws, member.pk, _fen(d["amount"]), idempotency_key=f"console:{d['key']}", actor=actor(request),
                 reason=d["reason"], store=d["store"])
        except ShequnError as exc:
            _fail(money, exc)
        else:
            messages.success(request, _("Stored value topped up.") if d["op"] == "top_up" else _("Payment taken."))
            return redirect("console:wallet_member", slug=ws.slug, member_id=member.pk)
    before = request.GET.get("before", "")
    rows = wallet_queries.history(ws, member.pk, before_id=int(before) if before.isdigit() else None, limit=PAGE + 1)
    page = rows[:PAGE]
    left = wallet_queries.refundable(ws, [e.pk for e in page if e.kind == "pay"])
    return render(request, "console/loyalty/wallet_member.html", {
        "member": member, "balance": _yuan(wallet_queries.balance(ws, member.pk)), "money": money,
        "entries": [{"e": e, "amount": ("+" if e.amount > 0 else "−") + _yuan(abs(e.amount)),
                     "balance_after": _yuan(e.balance_after), "left": left.get(e.pk),
                     "left_yuan": f"{left.get(e.pk, 0) / 100:.2f}"} for e in page],
        "next_before": page[-1].pk if len(rows) > PAGE else None,
        "refund_key": _new_key(),
        "can_refund": has_role(request.role, Role.OPERATOR),  # type: ignore[attr-defined]
    })


@require_POST
@console_view(read=Role.OPERATOR)
def wallet_refund(request: HttpRequest, member_id: int, payment_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    member = _member(request, member_id)
    form = RefundForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Enter the refund in yuan, with at most two decimals."))
    else:
        d = form.cleaned_data
        try:
            wallet.refund(ws, payment_id, _fen(d["amount"]) if d["amount"] is not None else None,
                          idempotency_key=f"console:{d['key']}:{payment_id}", actor=actor(request), reason=d["reason"])
        except ShequnError as exc:
            messages.error(request, error_text(exc))
        else:
            messages.success(request, _("Payment refunded."))
    return redirect("console:wallet_member", slug=ws.slug, member_id=member.pk)


# ---------------------------------------------------------------------------------------------
# liability reports


def points_liability_figures(report: loyalty_queries.PointsLiability) -> tuple[dict[str, Any], dict[str, Any]]:
    """Outstanding per point type (available, pending, of which expiring in 30 days), and issued vs
    redeemed per week for the spendable types."""
    names = [t.name for t in report.types]
    outstanding = {"data": [
        {"type": "bar", "name": _("Available"), "x": names, "y": [t.available for t in report.types],
         "marker": {"color": "#2f9e8f"}},
        {"type": "bar", "name": _("Pending"), "x": names, "y": [t.pending for t in report.types],
         "marker": {"color": "#a5d8d3"}},
        {"type": "bar", "name": _("Expiring in 30 days"), "x": names, "y": [t.expiring for t in report.types],
         "marker": {"color": "#e8a33d"}},
    ], "layout": _layout(barmode="group", yaxis={"title": {"text": _("Points")}, "rangemode": "tozero",
                                                    "gridcolor": "#e5e9ef"})}
    traces = []
    palette = ["#2f9e8f", "#c2410c", "#3b82f6", "#a855f7"]
    for i, t in enumerate([t for t in report.types if t.spendable]):
        weeks = report.weeks[t.code]
        x = [w.week.isoformat() for w in weeks]
        colour = palette[i % len(palette)]
        traces.append({"type": "scatter", "mode": "lines+markers", "name": _("%(type)s issued") % {"type": t.name},
                       "x": x, "y": [w.issued for w in weeks], "line": {"color": colour}})
        traces.append({"type": "scatter", "mode": "lines+markers", "name": _("%(type)s redeemed") % {"type": t.name},
                       "x": x, "y": [w.redeemed for w in weeks], "line": {"color": colour, "dash": "dot"}})
    flow = {"data": traces, "layout": _layout(yaxis={"title": {"text": _("Points per week")}, "rangemode": "tozero",
                                                     "gridcolor": "#e5e9ef"}, xaxis={"type": "date"})}
    return outstanding, flow


@console_view(read=Role.OPERATOR)
def points_liability(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    report = loyalty_queries.liability(ws, now=clock.now(), tz=periods.zone(ws.default_timezone))
    outstanding, flow = points_liability_figures(report)
    return render(request, "console/loyalty/liability.html", {
        "report": report, "outstanding_figure": outstanding, "flow_figure": flow})


@console_view(read=Role.OPERATOR)
def wallet_liability(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    report = wallet_queries.liability(ws, now=clock.now(), days=30, tz=periods.zone(ws.default_timezone))
    x = [d.day.isoformat() for d in report.days]
    figure = {"data": [
        {"type": "bar", "name": _("Top-ups"), "x": x, "y": [d.top_ups / 100 for d in report.days],
         "marker": {"color": "#2f9e8f"}},
        {"type": "bar", "name": _("Payments"), "x": x, "y": [d.payments / 100 for d in report.days],
         "marker": {"color": "#c2410c"}},
        {"type": "bar", "name": _("Refunds"), "x": x, "y": [d.refunds / 100 for d in report.days],
         "marker": {"color": "#e8a33d"}},
    ], "layout": _layout(barmode="group", yaxis={"title": {"text": "¥"}, "rangemode": "tozero", "gridcolor": "#e5e9ef"},
                         xaxis={"type": "date"})}
    months = [(m, _yuan(v)) for m, v in report.by_month]
    return render(request, "console/loyalty/wallet_liability.html", {
        "report": report, "outstanding": _yuan(report.outstanding), "months": months, "figure": figure,
        "topped_up": _yuan(report.topped_up), "paid": _yuan(report.paid), "refunded": _yuan(report.refunded)})


urlpatterns = [
    path("loyalty/point-types/", point_types, name="loyalty_point_types"),
    path("loyalty/rules/", rule_list, name="loyalty_rules"),
    path("loyalty/rules/new/", rule_new, name="loyalty_rule_new"),
    path("loyalty/rules/<int:rule_id>/", rule_edit, name="loyalty_rule_edit"),
    path("loyalty/rules/<int:rule_id>/delete/", rule_delete, name="loyalty_rule_delete"),
    path("loyalty/members/", member_lookup, name="loyalty_lookup"),
    path("loyalty/members/<int:member_id>/", member_points, name="loyalty_member"),
    path("loyalty/liability/", points_liability, name="loyalty_liability"),
    path("wallet/members/<int:member_id>/", member_wallet, name="wallet_member"),
    path("wallet/members/<int:member_id>/payments/<int:payment_id>/refund/", wallet_refund, name="wallet_refund"),
    path("wallet/liability/", wallet_liability, name="wallet_liability"),
]
