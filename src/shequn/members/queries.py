"""Reads of members (no writes): lookups, the filtered member list with keyset pagination."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from shequn.core.errors import ValidationError
from shequn.core.models import Workspace
from shequn.core.tenancy import scoped

from .models import Identity, Keyword, Member, MemberKeyword, MemberStatus, MemberTag, Tag
from .normalize import normalize_email, normalize_phone


def existing_ids(workspace: Workspace, ids: Iterable[int]) -> set[int]:
    wanted = list(ids)
    if not wanted:
        return set()
    return set(scoped(Member, workspace).filter(pk__in=wanted).values_list("pk", flat=True))


@dataclass
class MemberFilter:
    q: str = ""
    tag: str = ""
    keyword: str = ""
    stage: str = ""
    strength: int | None = None
    source: str = ""
    attribute: str = ""  # "key=value"
    include_merged: bool = False


def member_ids_by_phone(workspace: Workspace, phones: Iterable[str]) -> tuple[list[int], list[str]]:
    """The members with these phone numbers (normalised as identities are), first-seen order without
    repeats, and the numbers that are not valid or belong to nobody — one query per 500 numbers."""
    wanted: dict[str, str] = {}  # E.164 -> the text given
    unknown: list[str] = []
    for raw in phones:
        text = str(raw).strip()
        if not text:
            continue
        try:
            wanted.setdefault(normalize_phone(text, workspace.default_country), text)
        except ValidationError:
            unknown.append(text)
    owner: dict[str, int] = {}
    values = list(wanted)
    for start in range(0, len(values), 500):
        owner.update(scoped(Identity, workspace).filter(kind="phone", namespace="", value__in=values[start:start + 500])
                     .values_list("value", "member_id"))
    ids: list[int] = []
    for value, text in wanted.items():
        member_id = owner.get(value)
        if member_id is None:
            unknown.append(text)
        elif member_id not in ids:
            ids.append(member_id)
    return ids, unknown


def filter_members(workspace: Workspace, f: MemberFilter) -> QuerySet[Member]:
    """Every filter is an indexed equality on the member row or an EXISTS on an indexed link table,
    so the list stays fast at millions of members (bench/members_list.py)."""
    qs = scoped(Member, workspace)
    if not f.include_merged:
        qs = qs.filter(status=MemberStatus.ACTIVE)
    if f.q:
        qs = qs.filter(_search(workspace, f.q.strip()))
    if f.tag:
        tag_id = scoped(Tag, workspace).filter(name=f.tag).values_list("pk", flat=True).first()
        qs = qs.filter(Exists(MemberTag.objects.filter(tag_id=tag_id or -1, member_id=OuterRef("pk"))))
    if f.keyword:
        kw_ids = list(scoped(Keyword, workspace).filter(Q(path=f.keyword) | Q(path__startswith=f.keyword + "/"))
                      .values_list("pk", flat=True))
        qs = qs.filter(Exists(MemberKeyword.objects.filter(keyword_id__in=kw_ids or [-1], member_id=OuterRef("pk"))))
    if f.stage:
        qs = qs.filter(stage__key=f.stage) if not f.stage.isdigit() else qs.filter(stage_id=int(f.stage))
    if f.strength is not None:
        qs = qs.filter(strength=f.strength)
    if f.source:
        qs = qs.filter(source_channel=f.source)
    if f.attribute:
        key, sep, value = f.attribute.partition("=")
        if not sep or not key.strip():
            raise ValidationError("attribute filter must look like key=value", code="invalid_filter")
        qs = qs.filter(_attribute_q(key.strip(), value.strip()))
    return qs


def _attribute_q(key: str, value: str) -> Q:
    options: list[Any] = [value]
    if value.lower() in {"true", "false"}:
        options.append(value.lower() == "true")
    try:
        options.append(int(value))
    except ValueError:
        try:
            options.append(float(value))
        except ValueError:
            pass
    q = Q()
    for option in options:
        q |= Q(**{f"attributes__{key}": option})
    return q


def _search(workspace: Workspace, text: str) -> Q:
    """A search box that understands ids, phones, emails and other identity values (exact, indexed
    on (workspace, value)) and name prefixes (a range on the (workspace, display_name) index)."""
    values = {text}
    try:
        values.add(normalize_phone(text, workspace.default_country))
    except ValidationError:
        pass
    if "@" in text:
        try:
            values.add(normalize_email(text))
        except ValidationError:
            pass
    ids = list(scoped(Identity, workspace).filter(value__in=values).values_list("member_id", flat=True)[:100])
    if ids:
        return Q(pk__in=ids)
    q = Q(display_name__gte=text, display_name__lt=text + "\U0010ffff")
    if text.isdigit() and len(text) < 12:
        q |= Q(pk=int(text))
    return q


def page(qs: QuerySet[Member], *, after: int | None = None, limit: int = 50) -> tuple[list[Member], int | None]:
    """Keyset pagination, newest first: returns the page and the cursor for the next one."""
    limit = max(1, min(limit, 500))
    if after is not None:
        qs = qs.filter(pk__lt=after)
    rows = list(qs.order_by("-pk")[: limit + 1])
    next_cursor = rows[limit - 1].pk if len(rows) > limit else None
    return rows[:limit], next_cursor
