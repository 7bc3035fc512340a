"""Who may see which console page: the workspace comes from the URL slug and the user's staff
membership; the role decides what the user may read and change.

Role ranks, lowest first: shop clerk < service agent < operator < owner. A page names the lowest role
that may read it (``read``) and, separately, the lowest role that may submit its forms (``write``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from shequn.core import services as core
from shequn.core.errors import NotFound, PermissionDenied
from shequn.core.models import Role, Workspace

ROLE_RANK: dict[str, int] = {Role.CLERK: 1, Role.AGENT: 2, Role.OPERATOR: 3, Role.OWNER: 4}

View = Callable[..., HttpResponse]


def has_role(role: str | None, wanted: str) -> bool:
    return ROLE_RANK.get(role or "", 0) >= ROLE_RANK[wanted]


def actor(request: HttpRequest) -> str:
    return f"user:{request.user.pk}"


def my_workspaces(user: Any) -> list[Workspace]:
    return list(Workspace.objects.filter(staff__user=user).order_by("name", "slug"))


def forbidden(request: HttpRequest) -> HttpResponse:
    return render(request, "console/forbidden.html", status=403)


def console_view(read: str = Role.CLERK, write: str | None = None) -> Callable[[View], View]:
    """Decorate a view taking ``request, slug, ...``: resolve the workspace from ``slug`` and the
    user's membership (404 without one), set ``request.workspace``/``role``/``my_workspaces``, activate
    the workspace's time zone, and answer 403 to a role below ``read`` (or below ``write`` for POST)."""
    write_role = write or read

    def decorator(view: View) -> View:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, slug: str, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                membership = core.membership(request.user, slug)  # type: ignore[arg-type]
            except NotFound:
                raise Http404 from None
            request.workspace = membership.workspace  # type: ignore[attr-defined]
            request.role = membership.role  # type: ignore[attr-defined]
            request.my_workspaces = my_workspaces(request.user)  # type: ignore[attr-defined]
            needed = write_role if request.method == "POST" else read
            if not has_role(membership.role, needed):
                return forbidden(request)
            timezone.activate(membership.workspace.default_timezone)
            try:
                return view(request, *args, **kwargs)
            except NotFound:
                raise Http404 from None
            except PermissionDenied:
                return forbidden(request)
            finally:
                timezone.deactivate()

        return wrapper

    return decorator
