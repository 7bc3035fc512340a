"""Template helpers for the console pages."""

from __future__ import annotations

import json
from typing import Any

from django import template

from shequn.console.access import has_role as _has_role
from shequn.core.models import Role
from shequn.interactions.models import InteractionType
from shequn.members.models import IdentityKind, Strength

register = template.Library()


@register.filter
def role_label(role: str | None) -> str:
    return str(Role(role).label) if role in Role.values else ""


@register.filter
def has_role(role: str | None, wanted: str) -> bool:
    return _has_role(role, wanted)


@register.filter
def strength_label(level: int | None) -> str:
    return str(Strength(level).label) if level in Strength.values else ""


@register.filter
def identity_kind(kind: str) -> str:
    return str(IdentityKind(kind).label) if kind in IdentityKind.values else kind


@register.filter
def interaction_type_label(value: str) -> str:
    return str(InteractionType(value).label) if value in InteractionType.values else value


@register.filter
def percent(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.{int(digits)}f}%"


@register.filter
def compact_json(value: Any) -> str:
    """A short one-line view of an interaction's properties."""
    if not value:
        return ""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    return text if len(text) <= 160 else text[:157] + "…"


@register.simple_tag(takes_context=True)
def nav_class(context: template.Context, *names: str) -> str:
    match = getattr(context.get("request"), "resolver_match", None)
    return "active" if match is not None and match.url_name in names else ""


@register.filter
def get_item(mapping: dict[str, Any] | None, key: str) -> Any:
    return (mapping or {}).get(key)
