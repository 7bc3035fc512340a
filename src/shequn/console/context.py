"""Template context for every console page: the current workspace and the ones the user may switch to."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def console(request: HttpRequest) -> dict[str, Any]:
    return {
        "current_workspace": getattr(request, "workspace", None),
        "current_role": getattr(request, "role", None),
        "my_workspaces": getattr(request, "my_workspaces", []),
    }
