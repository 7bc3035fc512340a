"""Stage rules: the list grouped by stage in pipeline order, create, edit, delete."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from shequn.console import queries
from shequn.console.access import actor, console_view
from shequn.console.errors import error_field, error_text
from shequn.console.forms import RuleForm
from shequn.core.errors import NotFound, ShequnError
from shequn.core.models import Role
from shequn.core.tenancy import get_scoped
from shequn.lifecycle import services as lifecycle
from shequn.lifecycle.models import StageRule


@console_view(read=Role.OPERATOR)
def rule_list(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    return render(request, "console/lifecycle/rules.html", {"groups": queries.rules_by_stage(ws)})


def _rule_form(request: HttpRequest, data: Any = None, initial: dict[str, Any] | None = None) -> RuleForm:
    ws = request.workspace  # type: ignore[attr-defined]
    return RuleForm(
        data, initial=initial,
        stage_choices=[(s.key, f"{s.position}. {s.name}") for s in queries.stages(ws)],
        touchpoint_choices=[(t.code, f"{t.name} ({t.code})") for t in queries.touchpoints(ws)],
    )


def _save(request: HttpRequest, form: RuleForm, rule_id: int | None) -> bool:
    ws = request.workspace  # type: ignore[attr-defined]
    if not form.is_valid():
        return False
    data = dict(form.cleaned_data)
    if data["min_amount"] is None:
        data["min_amount"] = ""
    try:
        rule = lifecycle.save_rule(ws, data, rule_id=rule_id, actor=actor(request))
    except NotFound:
        raise
    except ShequnError as exc:
        field = error_field(exc)
        form.add_error(field if field in form.fields else None, error_text(exc))
        return False
    messages.success(request, _("Rule “%(name)s” saved.") % {"name": rule.name})
    return True


@console_view(read=Role.OPERATOR)
def rule_new(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    if request.method == "POST":
        form = _rule_form(request, request.POST)
        if _save(request, form, None):
            return redirect("console:rules", slug=ws.slug)
    else:
        form = _rule_form(request, initial={"target_stage": request.GET.get("stage", "")})
    return render(request, "console/lifecycle/rule_form.html", {"form": form, "rule": None})


@console_view(read=Role.OPERATOR)
def rule_edit(request: HttpRequest, rule_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    rule = get_scoped(StageRule, ws, rule_id)
    if request.method == "POST":
        form = _rule_form(request, request.POST)
        if _save(request, form, rule.pk):
            return redirect("console:rules", slug=ws.slug)
    else:
        form = _rule_form(request, initial={
            "name": rule.name, "interaction_type": rule.interaction_type, "direction": rule.direction,
            "channel": rule.channel, "touchpoint": rule.touchpoint.code if rule.touchpoint else "",
            "min_amount": rule.min_amount, "min_count": rule.min_count, "target_stage": rule.target_stage.key,
            "allow_backward": rule.allow_backward, "priority": rule.priority, "enabled": rule.enabled,
        })
    return render(request, "console/lifecycle/rule_form.html", {"form": form, "rule": rule})


@require_POST
@console_view(read=Role.OPERATOR)
def rule_delete(request: HttpRequest, rule_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    rule = get_scoped(StageRule, ws, rule_id)
    lifecycle.delete_rule(ws, rule.pk, actor=actor(request))
    messages.success(request, _("Rule “%(name)s” deleted.") % {"name": rule.name})
    return redirect("console:rules", slug=ws.slug)
