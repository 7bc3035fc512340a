"""The landing page: straight to the user's first workspace."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from shequn.console.access import my_workspaces
from shequn.core.models import Role, StaffMembership


@login_required
def home(request: HttpRequest) -> HttpResponse:
    workspaces = my_workspaces(request.user)
    if workspaces:
        if StaffMembership.objects.filter(workspace=workspaces[0], user=request.user, role=Role.CLERK).exists():
            return redirect("console:offers_counter", slug=workspaces[0].slug)  # a clerk works at the counter
        return redirect("console:dashboard", slug=workspaces[0].slug)
    return render(request, "console/no_workspace.html")
