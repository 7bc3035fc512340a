"""Who is signed in to the portal: the workspace comes from the URL slug, the member from the session.

A member signs in per workspace (a person can be a member of several brands); the session stores
``portal:<workspace id>`` → member id and is rotated at sign-in."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone

from shequn.core.errors import NotFound
from shequn.core.models import Workspace
from shequn.core.tenancy import scoped
from shequn.members.models import Member, MemberStatus

View = Callable[..., HttpResponse]


def session_key(workspace: Workspace) -> str:
    return f"portal:{workspace.pk}"


def workspace_or_404(slug: str) -> Workspace:
    ws = Workspace.objects.filter(slug=slug).first()
    if ws is None:
        raise Http404
    return ws


def sign_in(request: HttpRequest, workspace: Workspace, member_id: int) -> None:
    request.session.cycle_key()
    request.session[session_key(workspace)] = member_id


def sign_out(request: HttpRequest, workspace: Workspace) -> None:
    request.session.pop(session_key(workspace), None)
    request.session.cycle_key()


def _activate_member_settings(workspace: Workspace, member: Member) -> str:
    tz = member.timezone or workspace.default_timezone
    try:
        timezone.activate(tz)
    except Exception:  # noqa: BLE001 - an unknown zone name falls back to the workspace's
        timezone.activate(workspace.default_timezone)
    return tz


def portal_view(view: View) -> View:
    """Decorate a view taking ``request, slug, ...``: 404 for an unknown workspace, redirect to sign-in
    without a member session, then call the view with ``request.workspace`` and ``request.member`` set
    and the member's time zone active."""

    @wraps(view)
    def wrapper(request: HttpRequest, slug: str, *args: Any, **kwargs: Any) -> HttpResponse:
        ws = workspace_or_404(slug)
        member_id = request.session.get(session_key(ws))
        member = (scoped(Member, ws).filter(pk=member_id, status=MemberStatus.ACTIVE).first()
                  if member_id else None)
        if member is None:
            login = reverse("portal:login", args=[ws.slug])
            return redirect(f"{login}?next={request.get_full_path()}" if request.method == "GET" else login)
        request.workspace = ws  # type: ignore[attr-defined]
        request.member = member  # type: ignore[attr-defined]
        _activate_member_settings(ws, member)
        try:
            return view(request, *args, **kwargs)
        except NotFound:
            raise Http404 from None
        finally:
            timezone.deactivate()

    return wrapper
