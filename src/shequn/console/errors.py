"""Turn a domain error into a sentence for the console, in the user's language.

Services raise :class:`shequn.core.errors.ShequnError` with a stable ``code``; the console knows the
codes of the services it calls and says them in Chinese or English. An unknown code falls back to the
service's own message.
"""

from __future__ import annotations

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from shequn.core.errors import ShequnError

MESSAGES = {
    "invalid_tag": _("A tag name must be 1–64 characters and may not contain “/”."),
    "invalid_keyword": _("A keyword must be 1–64 characters per level."),
    "merge_self": _("A member cannot be merged into itself."),
    "merge_inactive": _("Only active members can be merged."),
    "already_undone": _("This merge was already undone."),
    "merge_chain": _("The surviving member was merged again later: undo that merge first."),
    "unknown_stage": _("Unknown stage."),
    "unknown_touchpoint": _("Unknown touchpoint."),
    "invalid_type": _("Unknown interaction type."),
    "invalid_filter": _("The attribute filter must look like key=value."),
    "invalid_role": _("Unknown role."),
    "identity_taken": _("This identity belongs to another member."),
    "not_found": _("Not found in this workspace."),
    "invalid_attribute": _("The attribute value does not match its type."),
    "unknown_attribute": _("Unknown attribute."),
}

FIELD_MESSAGE = _("Invalid value for “%(field)s”: %(message)s")


def error_text(exc: ShequnError) -> str:
    known = MESSAGES.get(exc.code)
    if known is not None:
        return str(known)
    field = exc.details.get("field") if isinstance(exc.details, dict) else None
    if field:
        return gettext(FIELD_MESSAGE) % {"field": field, "message": exc.message}
    return exc.message


def error_field(exc: ShequnError) -> str | None:
    """The form field a domain error is about, when the service said so."""
    field = exc.details.get("field") if isinstance(exc.details, dict) else None
    return str(field) if field else None
