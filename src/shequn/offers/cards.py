"""The member card: a QR payload that names a member of one workspace and cannot be forged.

``card_code`` is ``M<member id>-<12 hex signature>``; the signature is an HMAC (Django's
``salted_hmac`` with the deployment's secret key) of the workspace and member ids, so a code seen
by a clerk cannot be edited into another member's, and a code of one workspace names nobody in
another. The counter and the member portal use it."""

from __future__ import annotations

import re

from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.translation import gettext as _

from shequn.core.errors import NotFound
from shequn.core.models import Workspace
from shequn.members import queries as member_queries

_SALT = "shequn.offers.cards"
_PATTERN = re.compile(r"^M(\d{1,18})-([0-9a-f]{12})$")


def _signature(workspace_id: int, member_id: int) -> str:
    return salted_hmac(_SALT, f"{workspace_id}:{member_id}", algorithm="sha256").hexdigest()[:12]


def card_code(workspace: Workspace, member_id: int) -> str:
    return f"M{int(member_id)}-{_signature(workspace.pk, int(member_id))}"


def looks_like_card(text: str) -> bool:
    return _PATTERN.match(_clean(text)) is not None


def _clean(code: str) -> str:
    text = "".join(str(code or "").split()).lower()
    return "M" + text[1:] if text.startswith("m") else text


def member_from_card(workspace: Workspace, code: str) -> int:
    """The member id of a card code of this workspace; ``NotFound`` (``unknown_card``) otherwise."""
    match = _PATTERN.match(_clean(code))
    if match is not None:
        member_id = int(match.group(1))
        if constant_time_compare(match.group(2), _signature(workspace.pk, member_id)) \
                and member_queries.existing_ids(workspace, [member_id]):
            return member_id
    raise NotFound(_("This member card is not valid here."), code="unknown_card", details={"field": "code"})
