"""Console pages for engagement: the overview (tier distribution, programme settings, recent tier
changes), tiers, badges and tasks editing, and leaderboards with a chart."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from shequn.console.access import actor, console_view
from shequn.console.charts import FONT
from shequn.console.errors import error_field, error_text
from shequn.console.forms import ConsoleForm
from shequn.core.errors import ShequnError
from shequn.core.models import Role
from shequn.core.tenancy import get_scoped
from shequn.engagement import queries
from shequn.engagement import services as engagement
from shequn.engagement.models import Badge, Board, Period, Task, TaskRepeat, Tier, TierRequirement

TIER_COLOURS = ["#a5d8d3", "#6cc3b8", "#2f9e8f", "#f0b429", "#d97706", "#0b4f47"]


def _metric_choices() -> list[tuple[str, str]]:
    from shequn.interactions.models import InteractionType

    labels = {t.value: t.label for t in InteractionType}
    special = {"check_in": gettext_lazy("Daily check-in"), "streak": gettext_lazy("Consecutive check-in days"),
               "profile": gettext_lazy("Profile completed")}
    return [(m, str(special.get(m) or labels.get(m, m))) for m in engagement.valid_metrics()]


# ---------------------------------------------------------------------------------------------
# forms (shape only; the services check the meaning)


class ProgrammeForm(ConsoleForm):
    window_days = forms.IntegerField(min_value=1, max_value=3660, label=gettext_lazy("Window (days)"),
                                     help_text=gettext_lazy("Contribution and influence count over this many days."))
    review_days = forms.IntegerField(min_value=1, max_value=3660, label=gettext_lazy("Review after (days)"))
    invite_weight = forms.IntegerField(min_value=0, label=gettext_lazy("Influence per invite"))
    share_weight = forms.IntegerField(min_value=0, label=gettext_lazy("Influence per share"))
    checkin_points = forms.IntegerField(min_value=0, label=gettext_lazy("Points per check-in"))
    checkin_point_type = forms.CharField(max_length=32, label=gettext_lazy("Check-in point type"))


class TierForm(ConsoleForm):
    code = forms.SlugField(max_length=32, label=gettext_lazy("Code"))
    name = forms.CharField(max_length=64, label=gettext_lazy("Name"))
    rank = forms.IntegerField(min_value=0, max_value=1000, label=gettext_lazy("Rank"),
                              help_text=gettext_lazy("Higher is better; the lowest tier is where everyone starts."))
    min_contribution = forms.IntegerField(min_value=0, label=gettext_lazy("Minimum contribution (成长值)"))
    min_influence = forms.IntegerField(min_value=0, label=gettext_lazy("Minimum influence"))
    requires = forms.ChoiceField(choices=TierRequirement.choices, label=gettext_lazy("Requires"))
    multiplier = forms.DecimalField(max_digits=5, decimal_places=2, min_value=0.01, label=gettext_lazy("Points multiplier"))
    grace_days = forms.IntegerField(min_value=0, max_value=3660, label=gettext_lazy("Grace period (days)"))
    benefits = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3}),
                               label=gettext_lazy("Benefits"))


class BadgeForm(ConsoleForm):
    code = forms.SlugField(max_length=32, label=gettext_lazy("Code"))
    name = forms.CharField(max_length=64, label=gettext_lazy("Name"))
    icon = forms.CharField(required=False, max_length=8, label=gettext_lazy("Icon (emoji)"))
    description = forms.CharField(required=False, max_length=200, label=gettext_lazy("Description"))
    metric = forms.ChoiceField(label=gettext_lazy("Criterion"))
    threshold = forms.IntegerField(min_value=1, initial=1, label=gettext_lazy("Threshold"))
    ref = forms.CharField(required=False, max_length=32, label=gettext_lazy("Tier or task code"),
                          help_text=gettext_lazy("For the criteria “tier reached” and “task done”."))
    enabled = forms.BooleanField(required=False, initial=True, label=gettext_lazy("Enabled"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["metric"].choices = [
            *[c for c in _metric_choices() if c[0] != "profile"],
            ("tier", _("Tier reached")), ("task", _("Task done"))]


class TaskForm(ConsoleForm):
    code = forms.SlugField(max_length=32, label=gettext_lazy("Code"))
    name = forms.CharField(max_length=100, label=gettext_lazy("Name"))
    description = forms.CharField(required=False, max_length=200, label=gettext_lazy("Description"))
    metric = forms.ChoiceField(label=gettext_lazy("Counts"))
    target = forms.IntegerField(min_value=1, initial=1, label=gettext_lazy("Target"))
    repeat = forms.ChoiceField(choices=TaskRepeat.choices, label=gettext_lazy("Repeat"))
    points = forms.IntegerField(min_value=0, initial=0, label=gettext_lazy("Reward points"))
    point_type = forms.CharField(max_length=32, initial="points", label=gettext_lazy("Point type"))
    xp = forms.IntegerField(min_value=0, initial=0, label=gettext_lazy("XP"))
    badge = forms.CharField(required=False, max_length=32, label=gettext_lazy("Badge code"))
    enabled = forms.BooleanField(required=False, initial=True, label=gettext_lazy("Enabled"))
    position = forms.IntegerField(initial=100, label=gettext_lazy("Position"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["metric"].choices = _metric_choices()


def _apply(form: forms.Form, save: Any) -> Any:
    """Run a service with the form's data; show its error on the field at fault."""
    if not form.is_valid():
        return None
    try:
        return save(dict(form.cleaned_data))
    except ShequnError as exc:
        field = error_field(exc)
        form.add_error(field if field in form.fields else None, error_text(exc))
        return None


# ---------------------------------------------------------------------------------------------
# charts


def tier_figure(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "data": [{"type": "bar", "x": [r["name"] for r in rows], "y": [r["members"] for r in rows],
                  "marker": {"color": [TIER_COLOURS[i % len(TIER_COLOURS)] for i in range(len(rows))]},
                  "hovertemplate": "%{x}: %{y}<extra></extra>"}],
        "layout": {"font": FONT, "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)", "height": 300,
                   "margin": {"l": 60, "r": 20, "t": 20, "b": 50}, "showlegend": False,
                   "yaxis": {"title": {"text": _("Members")}, "rangemode": "tozero", "gridcolor": "#e5e9ef"}},
    }


def board_figure(rows: list[queries.Ranked]) -> dict[str, Any]:
    top = list(reversed(rows[:15]))
    return {
        "data": [{"type": "bar", "orientation": "h", "y": [f"{r.rank}. {r.name}" for r in top],
                  "x": [r.score for r in top], "marker": {"color": "#2f9e8f"}, "text": [r.score for r in top],
                  "textposition": "auto", "hovertemplate": "%{y}: %{x}<extra></extra>"}],
        "layout": {"font": FONT, "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
                   "height": max(220, 28 * len(top) + 60), "margin": {"l": 140, "r": 20, "t": 10, "b": 40},
                   "showlegend": False, "xaxis": {"rangemode": "tozero", "gridcolor": "#e5e9ef"}},
    }


# ---------------------------------------------------------------------------------------------
# overview and tiers


@console_view(read=Role.AGENT, write=Role.OPERATOR)
def overview(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    prog = engagement.programme(ws)
    if request.method == "POST":
        form = ProgrammeForm(request.POST)
        if _apply(form, lambda data: engagement.save_programme(ws, data, actor=actor(request))):
            messages.success(request, _("Programme settings saved."))
            return redirect("console:engagement", slug=ws.slug)
    else:
        form = ProgrammeForm(initial={k: getattr(prog, k) for k in engagement.PROGRAMME_FIELDS})
    dist = queries.tier_distribution(ws)
    return render(request, "console/engagement/overview.html", {
        "form": form, "tiers": queries.tiers(ws), "distribution": dist, "tier_figure": tier_figure(dist),
        "changes": queries.recent_tier_changes(ws, limit=15), "levels": queries.levels(ws),
        "streak_rewards": queries.streak_rewards(ws),
    })


def _tier_page(request: HttpRequest, tier: Tier | None) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    if request.method == "POST":
        form = TierForm(request.POST)
        saved = _apply(form, lambda data: engagement.save_tier(ws, {**data, "multiplier": str(data["multiplier"])},
                                                               tier_id=tier.pk if tier else None, actor=actor(request)))
        if saved is not None:
            messages.success(request, _("Tier “%(name)s” saved.") % {"name": saved.name})
            return redirect("console:engagement", slug=ws.slug)
    elif tier is not None:
        form = TierForm(initial={f: getattr(tier, f) for f in TierForm.base_fields})
    else:
        form = TierForm(initial={"multiplier": "1.00", "grace_days": 30, "min_contribution": 0, "min_influence": 0,
                                 "rank": len(queries.tiers(ws))})
    return render(request, "console/engagement/form.html", {
        "form": form, "object": tier, "kind": _("Tier"), "back": "console:engagement"})


@console_view(read=Role.OPERATOR)
def tier_new(request: HttpRequest) -> HttpResponse:
    return _tier_page(request, None)


@console_view(read=Role.OPERATOR)
def tier_edit(request: HttpRequest, tier_id: int) -> HttpResponse:
    return _tier_page(request, get_scoped(Tier, request.workspace, tier_id))  # type: ignore[attr-defined]


@require_POST
@console_view(read=Role.OPERATOR)
def tier_delete(request: HttpRequest, tier_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    try:
        engagement.delete_tier(ws, tier_id, actor=actor(request))
        messages.success(request, _("Tier deleted."))
    except ShequnError as exc:
        if exc.code == "not_found":
            raise
        messages.error(request, error_text(exc))
    return redirect("console:engagement", slug=ws.slug)


# ---------------------------------------------------------------------------------------------
# badges


@console_view(read=Role.AGENT)
def badge_list(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    counts = queries.badge_counts(ws)
    rows = [(b, counts.get(b.pk, 0)) for b in queries.badges(ws)]
    return render(request, "console/engagement/badges.html", {"rows": rows, "metrics": dict(_metric_choices())})


def _badge_page(request: HttpRequest, badge: Badge | None) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    if request.method == "POST":
        form = BadgeForm(request.POST)
        saved = _apply(form, lambda data: engagement.save_badge(ws, data, badge_id=badge.pk if badge else None,
                                                                actor=actor(request)))
        if saved is not None:
            messages.success(request, _("Badge “%(name)s” saved.") % {"name": saved.name})
            return redirect("console:engagement_badges", slug=ws.slug)
    elif badge is not None:
        form = BadgeForm(initial={f: getattr(badge, f) for f in BadgeForm.base_fields})
    else:
        form = BadgeForm()
    return render(request, "console/engagement/form.html", {
        "form": form, "object": badge, "kind": _("Badge"), "back": "console:engagement_badges"})


@console_view(read=Role.OPERATOR)
def badge_new(request: HttpRequest) -> HttpResponse:
    return _badge_page(request, None)


@console_view(read=Role.OPERATOR)
def badge_edit(request: HttpRequest, badge_id: int) -> HttpResponse:
    return _badge_page(request, get_scoped(Badge, request.workspace, badge_id))  # type: ignore[attr-defined]


@require_POST
@console_view(read=Role.OPERATOR)
def badge_delete(request: HttpRequest, badge_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    engagement.delete_badge(ws, badge_id, actor=actor(request))
    messages.success(request, _("Badge deleted."))
    return redirect("console:engagement_badges", slug=ws.slug)


# ---------------------------------------------------------------------------------------------
# tasks


@console_view(read=Role.AGENT)
def task_list(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    done = queries.task_completions(ws)
    rows = [(t, done.get(t.pk, 0)) for t in queries.tasks(ws)]
    return render(request, "console/engagement/tasks.html", {"rows": rows, "metrics": dict(_metric_choices())})


def _task_page(request: HttpRequest, task: Task | None) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    if request.method == "POST":
        form = TaskForm(request.POST)
        saved = _apply(form, lambda data: engagement.save_task(ws, data, task_id=task.pk if task else None,
                                                               actor=actor(request)))
        if saved is not None:
            messages.success(request, _("Task “%(name)s” saved.") % {"name": saved.name})
            return redirect("console:engagement_tasks", slug=ws.slug)
    elif task is not None:
        initial = {f: getattr(task, f) for f in TaskForm.base_fields if f != "badge"}
        initial["badge"] = task.badge.code if task.badge else ""
        form = TaskForm(initial=initial)
    else:
        form = TaskForm()
    return render(request, "console/engagement/form.html", {
        "form": form, "object": task, "kind": _("Task"), "back": "console:engagement_tasks"})


@console_view(read=Role.OPERATOR)
def task_new(request: HttpRequest) -> HttpResponse:
    return _task_page(request, None)


@console_view(read=Role.OPERATOR)
def task_edit(request: HttpRequest, task_id: int) -> HttpResponse:
    return _task_page(request, get_scoped(Task, request.workspace, task_id))  # type: ignore[attr-defined]


@require_POST
@console_view(read=Role.OPERATOR)
def task_delete(request: HttpRequest, task_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    engagement.delete_task(ws, task_id, actor=actor(request))
    messages.success(request, _("Task deleted."))
    return redirect("console:engagement_tasks", slug=ws.slug)


# ---------------------------------------------------------------------------------------------
# leaderboards


@console_view(read=Role.AGENT)
def leaderboards(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    board = request.GET.get("board", Board.POINTS)
    if board not in Board.values:
        board = Board.POINTS
    periods = engagement.BOARD_PERIODS[board]
    period = request.GET.get("period", periods[0])
    if period not in periods:
        period = periods[0]
    rows = queries.leaderboard(ws, board, period, limit=50)
    _period, start = queries.board_period(ws, board, period)
    return render(request, "console/engagement/leaderboards.html", {
        "board": board, "period": period, "period_start": None if period == Period.ALL else start,
        "boards": [(b.value, b.label, [(p, Period(p).label) for p in engagement.BOARD_PERIODS[b.value]]) for b in Board],
        "rows": rows, "figure": board_figure(rows),
    })


urlpatterns: list[URLPattern] = [
    path("engagement/", overview, name="engagement"),
    path("engagement/tiers/new/", tier_new, name="engagement_tier_new"),
    path("engagement/tiers/<int:tier_id>/", tier_edit, name="engagement_tier_edit"),
    path("engagement/tiers/<int:tier_id>/delete/", tier_delete, name="engagement_tier_delete"),
    path("engagement/badges/", badge_list, name="engagement_badges"),
    path("engagement/badges/new/", badge_new, name="engagement_badge_new"),
    path("engagement/badges/<int:badge_id>/", badge_edit, name="engagement_badge_edit"),
    path("engagement/badges/<int:badge_id>/delete/", badge_delete, name="engagement_badge_delete"),
    path("engagement/tasks/", task_list, name="engagement_tasks"),
    path("engagement/tasks/new/", task_new, name="engagement_task_new"),
    path("engagement/tasks/<int:task_id>/", task_edit, name="engagement_task_edit"),
    path("engagement/tasks/<int:task_id>/delete/", task_delete, name="engagement_task_delete"),
    path("engagement/leaderboards/", leaderboards, name="engagement_leaderboards"),
]
