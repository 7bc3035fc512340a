"""The workspace dashboard and the funnel page."""

from __future__ import annotations

import datetime as dt

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from shequn.console import charts, queries
from shequn.console.access import console_view
from shequn.core.clock import now
from shequn.core.models import Role
from shequn.lifecycle import queries as lifecycle_queries

RECENT_DAYS = 30


@console_view(read=Role.AGENT)
def dashboard(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    funnel = lifecycle_queries.funnel(ws)
    strength = lifecycle_queries.strength_distribution(ws)
    return render(request, "console/dashboard.html", {
        # Every active member has exactly one strength level, so the distribution's sum is the total.
        "members_total": sum(int(r["members"]) for r in strength),
        "interactions_recent": queries.interactions_since(ws, now() - dt.timedelta(days=RECENT_DAYS)),
        "recent_days": RECENT_DAYS,
        "funnel_figure": charts.funnel_figure(funnel),
        "strength_figure": charts.strength_figure(strength),
        "stage_changes": lifecycle_queries.recent_changes(ws, limit=10),
    })


@console_view(read=Role.AGENT)
def funnel(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    rows = lifecycle_queries.funnel(ws)
    strength = lifecycle_queries.strength_distribution(ws)
    return render(request, "console/funnel.html", {
        "rows": rows, "strength": strength,
        "funnel_figure": charts.funnel_figure(rows), "strength_figure": charts.strength_figure(strength),
    })
