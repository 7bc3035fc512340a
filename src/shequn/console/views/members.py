"""The member list (filters, keyset pages) and the member page with its actions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from shequn.console import queries
from shequn.console.access import actor, console_view, has_role
from shequn.console.errors import error_text
from shequn.console.forms import MemberFilterForm, MergeForm, StageForm, TagAddForm, TagRemoveForm
from shequn.core.clock import now
from shequn.core.errors import NotFound, ShequnError
from shequn.core.models import Role
from shequn.core.tenancy import get_scoped
from shequn.lifecycle import services as lifecycle
from shequn.members import services as members
from shequn.members.models import Member, Strength
from shequn.members.queries import MemberFilter, filter_members, page

PAGE_SIZE = 50
FILTER_FIELDS = ("q", "tag", "keyword", "stage", "strength", "attribute", "source")


def _link(filters: dict[str, Any], **cursor: int) -> str:
    params = {k: v for k, v in filters.items() if v not in (None, "")}
    params.update(cursor)
    return "?" + urlencode(params)


@console_view(read=Role.AGENT)
def member_list(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    form = MemberFilterForm(request.GET)
    rows: list[Any] = []
    next_link = prev_link = None
    error = None
    filters: dict[str, Any] = {}
    if form.is_valid():
        data = form.cleaned_data
        filters = {k: data.get(k) for k in FILTER_FIELDS}
        member_filter = MemberFilter(
            q=data["q"].strip(), tag=data["tag"].strip(), keyword=data["keyword"].strip(), stage=data["stage"].strip(),
            strength=data["strength"], source=data["source"].strip(), attribute=data["attribute"])
        try:
            qs = queries.with_list_relations(filter_members(ws, member_filter))
            if data["before"] is not None:
                rows, newer = queries.page_before(qs, before=data["before"], limit=PAGE_SIZE)
                if rows:
                    next_link = _link(filters, after=rows[-1].pk)
                    if newer:
                        prev_link = _link(filters, before=rows[0].pk)
            else:
                after = data["after"]
                rows, next_cursor = page(qs, after=after, limit=PAGE_SIZE)
                if next_cursor is not None:
                    next_link = _link(filters, after=next_cursor)
                if after is not None:
                    prev_link = _link(filters, before=rows[0].pk if rows else after - 1)
        except ShequnError as exc:
            error = error_text(exc)
    return render(request, "console/members/list.html", {
        "form": form, "rows": rows, "next_link": next_link, "prev_link": prev_link, "error": error,
        "filters": filters, "filtered": any(v not in (None, "") for v in filters.values()),
        "tag_names": queries.tag_names(ws), "keyword_options": [(path, "\u3000" * (depth - 1) + name) for path, name, depth in queries.keyword_tree(ws)],
        "stages": queries.stages(ws), "strength_choices": Strength.choices,
    })


@console_view(read=Role.AGENT, write=Role.OPERATOR)
def member_detail(request: HttpRequest, member_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    member = queries.member_detail(ws, member_id)
    timeline = queries.timeline(ws, member.pk, cursor=request.GET.get("before", ""))
    labels = queries.attribute_labels(ws, list(member.attributes))
    return render(request, "console/members/detail.html", {
        "member": member,
        "identities": list(member.identities.all()),
        "tags": [mt.tag for mt in member.member_tags.all()],
        "keywords": [mk.keyword for mk in member.member_keywords.all()],
        "subscriptions": list(member.subscriptions.all()),
        "attributes": [(key, labels.get(key, key), value) for key, value in sorted(member.attributes.items())],
        "stage_history": list(lifecycle.history(ws, member.pk)[:50]),
        "merges": queries.merge_history(ws, member.pk),
        "timeline": timeline,
        "timeline_first_page": not request.GET.get("before"),
        "stages": queries.stages(ws),
        "strength": queries.explain_strength(member, now()),
        "can_edit": has_role(request.role, Role.OPERATOR),  # type: ignore[attr-defined]
        "tag_form": TagAddForm(), "merge_form": MergeForm(),
    })


def _back(request: HttpRequest, member_id: int) -> HttpResponse:
    return redirect("console:member", slug=request.workspace.slug, member_id=member_id)  # type: ignore[attr-defined]


@contextmanager
def reported(request: HttpRequest) -> Iterator[None]:
    """Turn a refused action into a message on the page; a missing object stays a 404."""
    try:
        yield
    except NotFound:
        raise
    except ShequnError as exc:
        messages.error(request, error_text(exc))


def _form_errors(request: HttpRequest, form: Any) -> None:
    for errors in form.errors.values():
        for error in errors:
            messages.error(request, error)


@require_POST
@console_view(read=Role.OPERATOR)
def tag_add(request: HttpRequest, member_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    form = TagAddForm(request.POST)
    if not form.is_valid():
        _form_errors(request, form)
        return _back(request, member_id)
    with reported(request):
        tags = members.add_tags(ws, member_id, form.cleaned_data["names"], actor=actor(request))
        messages.success(request, _("Tags added: %(tags)s") % {"tags": "、".join(t.name for t in tags)})
    return _back(request, member_id)


@require_POST
@console_view(read=Role.OPERATOR)
def tag_remove(request: HttpRequest, member_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    form = TagRemoveForm(request.POST)
    if form.is_valid():
        if members.remove_tags(ws, member_id, [form.cleaned_data["name"]], actor=actor(request)):
            messages.success(request, _("Tag removed: %(tag)s") % {"tag": form.cleaned_data["name"]})
        else:
            messages.error(request, _("This member has no tag “%(tag)s”.") % {"tag": form.cleaned_data["name"]})
    else:
        _form_errors(request, form)
    return _back(request, member_id)


@require_POST
@console_view(read=Role.OPERATOR)
def stage_change(request: HttpRequest, member_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    form = StageForm(request.POST)
    if not form.is_valid():
        _form_errors(request, form)
        return _back(request, member_id)
    with reported(request):
        member = lifecycle.set_stage(ws, member_id, form.cleaned_data["stage"], actor=actor(request))
        messages.success(request, _("Stage set to %(stage)s.") % {"stage": member.stage})
    return _back(request, member_id)


@require_POST
@console_view(read=Role.OPERATOR)
def merge(request: HttpRequest, member_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    get_scoped(Member, ws, member_id)  # 404 for another workspace's member
    form = MergeForm(request.POST)
    if not form.is_valid():
        _form_errors(request, form)
        return _back(request, member_id)
    other = form.cleaned_data["other_id"]
    with reported(request):
        members.merge_members(ws, member_id, other, reason=f"merged in the console by {request.user}",
                              actor=actor(request))
        messages.success(request, _("Member #%(other)s was merged into this member.") % {"other": other})
    return _back(request, member_id)


@require_POST
@console_view(read=Role.OPERATOR)
def unmerge(request: HttpRequest, member_id: int, record_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    with reported(request):
        record = members.unmerge(ws, record_id, actor=actor(request))
        messages.success(request, _("Merge undone: member #%(member)s is separate again.") % {"member": record.absorbed_id})
    return _back(request, member_id)
