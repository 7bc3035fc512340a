"""The landing page: straight to the user's first workspace."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from shequn.console.access import my_workspaces


@login_required
def home(request: HttpRequest) -> HttpResponse:
    workspaces = my_workspaces(request.user)
    if workspaces:
        return redirect("console:dashboard", slug=workspaces[0].slug)
    return render(request, "console/no_workspace.html")
