"""Workspace settings: API keys (owners only). A new key's secret is shown once, then only its prefix."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from shequn.console import queries
from shequn.console.access import actor, console_view
from shequn.console.errors import error_field, error_text
from shequn.console.forms import ApiKeyForm
from shequn.core import services as core
from shequn.core.errors import ShequnError
from shequn.core.models import Role

NEW_KEY_SESSION_FIELD = "console.new_api_key"


@console_view(read=Role.OWNER)
def api_keys(request: HttpRequest) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            key, secret = core.create_api_key(ws, form.cleaned_data["name"], role=form.cleaned_data["role"],
                                              created_by=request.user, actor=actor(request))  # type: ignore[arg-type]
        except ShequnError as exc:
            field = error_field(exc)
            form.add_error(field if field in form.fields else None, error_text(exc))
        else:
            # Kept in the session only until the next page view shows it.
            request.session[NEW_KEY_SESSION_FIELD] = {"workspace": ws.pk, "id": key.pk, "secret": secret}
            return redirect("console:api_keys", slug=ws.slug)
    shown = request.session.pop(NEW_KEY_SESSION_FIELD, None)
    new_secret = shown if shown and shown.get("workspace") == ws.pk else None
    return render(request, "console/settings/api_keys.html", {
        "form": form, "keys": queries.api_keys(ws), "new_secret": new_secret,
    })


@require_POST
@console_view(read=Role.OWNER)
def api_key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    ws = request.workspace  # type: ignore[attr-defined]
    key = core.revoke_api_key(ws, key_id, actor=actor(request))  # NotFound (404) for another workspace's key
    messages.success(request, _("Key “%(name)s” revoked: it no longer works.") % {"name": key.name})
    return redirect("console:api_keys", slug=ws.slug)
