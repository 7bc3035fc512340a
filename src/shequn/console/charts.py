"""Plotly figure specifications (plain dicts) for the console's charts. The page embeds them with
``json_script`` and ``console.js`` draws them with the Plotly bundle served by the app."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.utils.translation import gettext as _

FONT = {"family": "-apple-system, 'Segoe UI', 'PingFang SC', 'Microsoft YaHei', 'Noto Sans CJK SC', sans-serif",
        "size": 13, "color": "#1f2933"}
STRENGTH_COLOURS = ["#cbd5e1", "#a5d8d3", "#6cc3b8", "#2f9e8f", "#13796d", "#0b4f47"]


def _layout(**extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "font": FONT, "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "margin": {"l": 60, "r": 20, "t": 20, "b": 50}, "showlegend": False,
    }
    layout.update(extra)
    return layout


def funnel_figure(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Members who reached each stage, in pipeline order, with the share kept from the stage before."""
    names = [str(r["name"]) for r in rows]
    reached = [int(r["reached"]) for r in rows]
    text = []
    for r in rows:
        conversion = r.get("conversion")
        text.append(f"{int(r['reached'])}" + (f" · {conversion * 100:.0f}%" if conversion is not None else ""))
    return {
        "data": [{
            "type": "funnel", "y": names, "x": reached, "text": text, "textinfo": "text",
            "marker": {"color": "#2f9e8f"}, "connector": {"fillcolor": "#e6f4f1"},
            "hovertemplate": "%{y}: %{x}<extra></extra>",
        }],
        "layout": _layout(margin={"l": 90, "r": 20, "t": 10, "b": 30}, height=320),
    }


def _count_axis_step(largest: int) -> int:
    """A whole-number tick step (1, 2, 5, 10, 20, 50 …) giving at most five intervals: member counts
    have no fractions."""
    magnitude = 1
    while True:
        for nice in (1, 2, 5):
            if largest <= 5 * nice * magnitude:
                return nice * magnitude
        magnitude *= 10


def strength_figure(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    largest = max((int(r["members"]) for r in rows), default=0)
    return {
        "data": [{
            "type": "bar", "x": [str(r["label"]) for r in rows], "y": [int(r["members"]) for r in rows],
            "marker": {"color": [STRENGTH_COLOURS[min(int(r["level"]), 5)] for r in rows]},
            "hovertemplate": "%{x}: %{y}<extra></extra>",
        }],
        "layout": _layout(height=320, yaxis={"title": {"text": _("Members")}, "rangemode": "tozero",
                                             "gridcolor": "#e5e9ef", "tick0": 0, "dtick": _count_axis_step(largest)}),
    }


def touchpoint_map_figure(points: Iterable[Any], value_threshold: float, complexity_threshold: float,
                          quadrant_labels: Mapping[str, str]) -> dict[str, Any]:
    """Value (x) against complexity (y); bubble area = conversations, colour = trust (red low, green high).
    The quadrant lines are the thresholds the map was computed with."""
    pts = list(points)
    biggest = max((p.conversations for p in pts), default=0) or 1
    sizes = [max(8.0, 46.0 * math.sqrt(p.conversations / biggest)) for p in pts]
    customdata = [[p.code, p.channel, p.conversations, round(p.trust * 100), str(p.quadrant)] for p in pts]
    hover = (
        "<b>%{text}</b> (%{customdata[0]})<br>"
        + _("Channel") + ": %{customdata[1]}<br>"
        + _("Value") + ": %{x:.2f} · " + _("Complexity") + ": %{y}<br>"
        + _("Conversations") + ": %{customdata[2]} · " + _("Trust") + ": %{customdata[3]}%<br>"
        + "%{customdata[4]}<extra></extra>"
    )
    shapes = [
        {"type": "line", "x0": value_threshold, "x1": value_threshold, "y0": 0.5, "y1": 5.5,
         "line": {"color": "#94a3b8", "dash": "dash", "width": 1}},
        {"type": "line", "x0": 0, "x1": 1, "y0": complexity_threshold, "y1": complexity_threshold,
         "line": {"color": "#94a3b8", "dash": "dash", "width": 1}},
    ]
    corner = {"showarrow": False, "font": {"color": "#64748b", "size": 12}}
    annotations = [
        {"x": 0.99, "y": 5.45, "xanchor": "right", "yanchor": "top",
         "text": quadrant_labels.get("high_value_high_complexity", ""), **corner},
        {"x": 0.01, "y": 5.45, "xanchor": "left", "yanchor": "top",
         "text": quadrant_labels.get("low_value_high_complexity", ""), **corner},
        {"x": 0.99, "y": 0.55, "xanchor": "right", "yanchor": "bottom",
         "text": quadrant_labels.get("high_value_low_complexity", ""), **corner},
        {"x": 0.01, "y": 0.55, "xanchor": "left", "yanchor": "bottom",
         "text": quadrant_labels.get("low_value_low_complexity", ""), **corner},
    ]
    return {
        "data": [{
            "type": "scatter", "mode": "markers+text", "x": [p.value for p in pts], "y": [p.complexity for p in pts],
            "text": [p.name for p in pts], "textposition": "top center", "customdata": customdata,
            "hovertemplate": hover,
            "marker": {
                "size": sizes, "color": [p.trust for p in pts], "cmin": 0, "cmax": 1,
                "colorscale": [[0, "#d64545"], [0.5, "#f0b429"], [1, "#2f9e6f"]],
                "line": {"color": "#ffffff", "width": 1}, "opacity": 0.85,
                "colorbar": {"title": {"text": _("Trust")}, "tickformat": ".0%", "thickness": 12},
            },
        }],
        "layout": _layout(
            height=480, shapes=shapes, annotations=annotations, margin={"l": 60, "r": 20, "t": 20, "b": 55},
            xaxis={"title": {"text": _("Value (importance × conversations)")}, "range": [-0.05, 1.1],
                   "tickformat": ".0%", "gridcolor": "#eef1f5", "zeroline": False},
            yaxis={"title": {"text": _("Complexity (1–5)")}, "range": [0.5, 5.5], "dtick": 1, "gridcolor": "#eef1f5",
                   "zeroline": False},
        ),
    }
