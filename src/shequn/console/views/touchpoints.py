"""The touchpoint registry (edit form) and the touchpoint map."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _

from shequn.console import charts, queries
from shequn.console.access import actor, console_view
from shequn.console.errors import error_field, error_text
from shequn.console.forms import TouchpointForm
from shequn.core.errors import ShequnError
from shequn.core.models import Role
from shequn.interactions import services as interactions
from shequn.interactions import touchpoint_map

MAP_DAYS = 90


def _initial(tp: Any) -> dict[str, Any]:
    return {field: getattr(tp, field) for field in ("code", *interactions.TOUCHPOINT_FIELDS)}


@console_view(read=Role.OPERATOR)
def touchpoints(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    stage_choices = [(s.key, s.name) for s in queries.stages(ws)]
    editing = None
    if request.method == "POST":
        editing = queries.touchpoint_by_code(ws, request.POST.get("code", ""))
        form = TouchpointForm(request.POST, stage_choices=stage_choices, editing=editing is not None)
        if form.is_valid():
            data = {k: v for k, v in form.cleaned_data.items() if k != "code"}
            try:
                tp = interactions.save_touchpoint(ws, form.cleaned_data["code"], data, actor=actor(request))
            except ShequnError as exc:
                field = error_field(exc)
                form.add_error(field if field in form.fields else None, error_text(exc))
            else:
                messages.success(request, _("Touchpoint “%(name)s” saved.") % {"name": tp.name})
                return redirect("console:touchpoints", slug=ws.slug)
    else:
        code = request.GET.get("edit", "")
        editing = queries.touchpoint_by_code(ws, code) if code else None
        form = TouchpointForm(initial=_initial(editing) if editing else None, stage_choices=stage_choices,
                              editing=editing is not None)

    result = touchpoint_map.compute(ws, days=MAP_DAYS)
    points = list(result.points)
    figure = charts.touchpoint_map_figure(points, result.value_threshold, result.complexity_threshold,
                                          touchpoint_map.quadrant_labels())
    return render(request, "console/touchpoints.html", {
        "form": form, "editing": editing, "touchpoints": queries.touchpoints(ws), "figure": figure,
        "points": points, "flagged": result.flagged, "quiet_trusted": result.quiet_trusted,
        "days": result.window_days, "median": result.conversation_median,
        "stage_names": dict(stage_choices),
    })
