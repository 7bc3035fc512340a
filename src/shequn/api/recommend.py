"""API: recommend."""

from __future__ import annotations

from ninja import Router

routers: list[Router] = []
