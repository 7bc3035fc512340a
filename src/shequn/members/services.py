"""Every write to members goes through here: identity upsert, profile, tags, keywords, attributes,
consent, merge and unmerge. Each function is atomic and scoped to one workspace."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import IntegrityError, transaction

from shequn.core import audit
from shequn.core.clock import now
from shequn.core.errors import Conflict, ValidationError
from shequn.core.models import Workspace
from shequn.core.tenancy import get_scoped, scoped

from .models import (
    AttributeDefinition,
    AttributeType,
    Gender,
    Identity,
    Keyword,
    Member,
    MemberKeyword,
    MemberStatus,
    MemberTag,
    MergeRecord,
    Subscription,
    SubscriptionScope,
    Tag,
)
from .normalize import normalize_identity

PROFILE_FIELDS = ("display_name", "gender", "birthday", "city", "timezone", "language")
SOURCE_FIELDS = ("source_channel", "source_code")


@dataclass(frozen=True)
class IdentityRef:
    kind: str
    value: str
    namespace: str = ""


@dataclass
class UpsertResult:
    member: Member
    created: bool
    changed: bool = False
    merges: list[MergeRecord] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# validation of profile input


def clean_profile(workspace: Workspace, data: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the profile fields present in ``data``; unknown keys are an error."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in PROFILE_FIELDS and key not in SOURCE_FIELDS:
            raise ValidationError(f"unknown profile field {key!r}", code="invalid_field", details={"field": key})
        if value is None:
            continue
        if key == "gender":
            value = str(value).strip().lower()
            aliases = {"f": "female", "m": "male", "女": "female", "男": "male", "其他": "other", "unknown": ""}
            value = aliases.get(value, value)
            if value not in Gender.values:
                raise ValidationError(f"gender must be one of {', '.join(v for v in Gender.values if v)}",
                                      code="invalid_field", details={"field": "gender"})
        elif key == "birthday":
            if isinstance(value, str):
                try:
                    value = dt.date.fromisoformat(value.strip()) if value.strip() else None
                except ValueError:
                    raise ValidationError(f"birthday must be YYYY-MM-DD, got {value!r}", code="invalid_field",
                                          details={"field": "birthday"}) from None
            elif isinstance(value, dt.datetime):
                value = value.date()
            if value is not None and not (dt.date(1900, 1, 1) <= value <= now().date()):
                raise ValidationError("birthday is out of range", code="invalid_field", details={"field": "birthday"})
        elif key == "timezone":
            value = str(value).strip()
            if value:
                try:
                    ZoneInfo(value)
                except (ZoneInfoNotFoundError, ValueError):
                    raise ValidationError(f"unknown time zone {value!r}", code="invalid_field",
                                          details={"field": "timezone"}) from None
        else:
            value = str(value).strip()
            limit = Member._meta.get_field(key).max_length or 200
            if len(value) > limit:
                raise ValidationError(f"{key} is longer than {limit} characters", code="invalid_field",
                                      details={"field": key})
        out[key] = value
    return out


def clean_attributes(workspace: Workspace, values: Mapping[str, Any]) -> dict[str, Any]:
    """Check custom attribute values against the workspace's definitions and convert them."""
    if not values:
        return {}
    defs = {d.key: d for d in scoped(AttributeDefinition, workspace).filter(key__in=list(values))}
    out: dict[str, Any] = {}
    for key, raw in values.items():
        d = defs.get(key)
        if d is None:
            raise ValidationError(f"unknown attribute {key!r}", code="unknown_attribute", details={"field": key})
        if raw is None or raw == "":
            out[key] = None
            continue
        try:
            out[key] = convert_attribute(d, raw)
        except (ValueError, InvalidOperation, TypeError):
            raise ValidationError(f"attribute {key!r} expects {d.type}, got {raw!r}", code="invalid_attribute",
                                  details={"field": key}) from None
    return out


def convert_attribute(d: AttributeDefinition, raw: Any) -> Any:
    if d.type == AttributeType.NUMBER:
        number = Decimal(str(raw).strip())
        if not number.is_finite():
            raise ValueError
        return int(number) if number == number.to_integral_value() else float(number)
    if d.type == AttributeType.BOOLEAN:
        text = str(raw).strip().lower()
        if text in {"1", "true", "yes", "y", "是", "t"}:
            return True
        if text in {"0", "false", "no", "n", "否", "f"}:
            return False
        raise ValueError
    if d.type == AttributeType.DATE:
        return dt.date.fromisoformat(str(raw).strip()).isoformat()
    if d.type == AttributeType.CHOICE:
        text = str(raw).strip()
        if text not in d.choices:
            raise ValueError
        return text
    return str(raw).strip()


def clean_identities(workspace: Workspace, identities: Iterable[IdentityRef | Mapping[str, str]]) -> list[IdentityRef]:
    out: list[IdentityRef] = []
    for ident in identities:
        if isinstance(ident, Mapping):
            ident = IdentityRef(kind=ident.get("kind", ""), value=ident.get("value", ""),
                                namespace=ident.get("namespace", "") or "")
        value = normalize_identity(ident.kind, ident.value, workspace.default_country)
        ref = IdentityRef(kind=ident.kind, value=value, namespace=(ident.namespace or "").strip())
        if ref not in out:
            out.append(ref)
    return out


# ---------------------------------------------------------------------------------------------
# upsert by identity


def find_member(workspace: Workspace, ident: IdentityRef | Mapping[str, str]) -> Member | None:
    [ref] = clean_identities(workspace, [ident])
    row = (scoped(Identity, workspace).filter(kind=ref.kind, namespace=ref.namespace, value=ref.value)
           .select_related("member").first())
    return row.member if row else None


def find_member_id(workspace: Workspace, ident: IdentityRef | Mapping[str, str]) -> int | None:
    """The id of the member ``ident`` belongs to, or None: :func:`find_member` without loading the
    member (the fast reply path only needs the id)."""
    [ref] = clean_identities(workspace, [ident])
    return (scoped(Identity, workspace).filter(kind=ref.kind, namespace=ref.namespace, value=ref.value)
            .values_list("member_id", flat=True).first())


def upsert_member(
    workspace: Workspace,
    identities: Sequence[IdentityRef | Mapping[str, str]],
    profile: Mapping[str, Any] | None = None,
    attributes: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = True,
    actor: str = "system",
    reason: str = "identities seen together",
    referrer: Member | None = None,
    at: dt.datetime | None = None,
) -> UpsertResult:
    """Find the member any of ``identities`` belongs to, or create one; attach the identities that
    are new; update the profile. When the identities belong to several members, those members are
    one person: they are merged into the oldest, with an audit record (undoable). ``at`` is when the
    evidence happened (the event's time), used for the stage history of a merge."""
    refs = clean_identities(workspace, identities)
    if not refs:
        raise ValidationError("at least one identity is needed", code="no_identity")
    prof = clean_profile(workspace, profile or {})
    attrs = clean_attributes(workspace, attributes or {})
    for attempt in range(3):
        try:
            with transaction.atomic():
                return _upsert_locked(workspace, refs, prof, attrs, overwrite=overwrite, actor=actor,
                                      reason=reason, referrer=referrer, at=at)
        except IntegrityError:
            # Another transaction created one of these identities between our read and our write;
            # the next attempt finds it.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _upsert_locked(workspace: Workspace, refs: list[IdentityRef], prof: dict[str, Any], attrs: dict[str, Any],
                   *, overwrite: bool, actor: str, reason: str, referrer: Member | None,
                   at: dt.datetime | None) -> UpsertResult:
    from django.db.models import Q

    query = Q()
    for r in refs:
        query |= Q(kind=r.kind, namespace=r.namespace, value=r.value)
    existing = list(scoped(Identity, workspace).filter(query).values_list("kind", "namespace", "value", "member_id"))
    member_ids = sorted({row[3] for row in existing})
    if not member_ids:
        member = Member.objects.create(workspace=workspace, **prof, attributes={k: v for k, v in attrs.items() if v is not None},
                                       referrer=referrer)
        Identity.objects.bulk_create([Identity(workspace=workspace, member=member, kind=r.kind, namespace=r.namespace,
                                               value=r.value) for r in refs])
        audit.record(workspace, actor, "member.create", member, {"identities": [r.kind for r in refs]})
        return UpsertResult(member=member, created=True, changed=True)

    members = list(scoped(Member, workspace).select_for_update().filter(pk__in=member_ids).order_by("pk"))
    survivor = members[0]
    merges = [merge_members(workspace, survivor, other, reason=reason, actor=actor, at=at) for other in members[1:]]
    if merges:  # the merges changed the survivor's row; otherwise it was just read under its lock
        survivor.refresh_from_db()
    known = {(k, ns, v) for k, ns, v, _ in existing}
    new = [r for r in refs if (r.kind, r.namespace, r.value) not in known]
    changed = bool(merges) or bool(new)
    if new:
        Identity.objects.bulk_create([Identity(workspace=workspace, member=survivor, kind=r.kind, namespace=r.namespace,
                                               value=r.value) for r in new])
    changed |= apply_profile(survivor, prof, attrs, overwrite=overwrite)
    if referrer is not None and survivor.referrer_id is None and referrer.pk != survivor.pk:
        survivor.referrer = referrer
        changed = True
    if changed:
        survivor.save()
    return UpsertResult(member=survivor, created=False, changed=changed, merges=merges)


def apply_profile(member: Member, prof: Mapping[str, Any], attrs: Mapping[str, Any], *, overwrite: bool) -> bool:
    changed = False
    for key, value in prof.items():
        current = getattr(member, key)
        if key in SOURCE_FIELDS:
            if current:  # the first acquisition source wins
                continue
        elif current not in (None, "") and not overwrite:
            continue
        if current != value:
            setattr(member, key, value)
            changed = True
    for key, value in attrs.items():
        if key in member.attributes and member.attributes[key] not in (None, "") and not overwrite:
            continue
        if value is None:
            if key in member.attributes:
                del member.attributes[key]
                changed = True
        elif member.attributes.get(key) != value:
            member.attributes[key] = value
            changed = True
    return changed


@transaction.atomic
def update_profile(workspace: Workspace, member_id: int, profile: Mapping[str, Any] | None = None,
                   attributes: Mapping[str, Any] | None = None, *, actor: str) -> Member:
    member = get_scoped(Member, workspace, member_id, for_update=True)
    prof = clean_profile(workspace, profile or {})
    attrs = clean_attributes(workspace, attributes or {})
    if apply_profile(member, prof, attrs, overwrite=True):
        member.save()
        audit.record(workspace, actor, "member.update", member, {"fields": sorted([*prof, *attrs])})
    return member


@transaction.atomic
def add_identity(workspace: Workspace, member_id: int, ident: IdentityRef | Mapping[str, str], *, actor: str) -> Identity:
    member = get_scoped(Member, workspace, member_id, for_update=True)
    [ref] = clean_identities(workspace, [ident])
    holder = scoped(Identity, workspace).filter(kind=ref.kind, namespace=ref.namespace, value=ref.value).first()
    if holder is not None:
        if holder.member_id == member.pk:
            return holder
        raise Conflict(f"{ref.kind} {ref.value} belongs to member {holder.member_id}", code="identity_taken",
                       details={"member_id": holder.member_id})
    row = Identity.objects.create(workspace=workspace, member=member, kind=ref.kind, namespace=ref.namespace, value=ref.value)
    audit.record(workspace, actor, "identity.add", member, {"kind": ref.kind})
    return row


# ---------------------------------------------------------------------------------------------
# merge / unmerge

# Other domains that keep per-member state of their own (loyalty's points) register a function here
# from their AppConfig.ready(). Each is called inside the merge's (or unmerge's) transaction, after
# the MergeRecord is written, as ``handler(workspace, record, actor=actor)``; a failure rolls the
# whole merge back.
MERGE_HANDLERS: list[Any] = []
UNMERGE_HANDLERS: list[Any] = []


def merge_members(workspace: Workspace, survivor: Member | int, absorbed: Member | int, *, reason: str, actor: str,
                  at: dt.datetime | None = None) -> MergeRecord:
    """Fold ``absorbed`` into ``survivor``: identities and interactions move, tags and keywords are
    united, blank profile fields are filled. Everything moved is written to the MergeRecord."""
    from shequn.interactions import services as interactions
    from shequn.lifecycle import services as lifecycle

    with transaction.atomic():
        sid = survivor if isinstance(survivor, int) else survivor.pk
        aid = absorbed if isinstance(absorbed, int) else absorbed.pk
        if sid == aid:
            raise ValidationError("a member cannot be merged into itself", code="merge_self")
        locked = {m.pk: m for m in scoped(Member, workspace).select_for_update().filter(pk__in=[sid, aid]).order_by("pk")}
        if len(locked) != 2:
            raise ValidationError("both members must exist in this workspace", code="not_found")
        s, a = locked[sid], locked[aid]
        if s.status != MemberStatus.ACTIVE or a.status != MemberStatus.ACTIVE:
            raise Conflict("only active members can be merged", code="merge_inactive")

        moved_members = [a.pk, *scoped(Member, workspace).filter(merged_into=a).values_list("pk", flat=True)]
        identity_ids = list(scoped(Identity, workspace).filter(member=a).values_list("pk", flat=True))
        Identity.objects.filter(pk__in=identity_ids).update(member=s)

        have_tags = set(MemberTag.objects.filter(member=s).values_list("tag_id", flat=True))
        add_tags = [t for t in MemberTag.objects.filter(member=a).values_list("tag_id", flat=True) if t not in have_tags]
        MemberTag.objects.bulk_create([MemberTag(workspace=workspace, member=s, tag_id=t) for t in add_tags])
        have_kw = set(MemberKeyword.objects.filter(member=s).values_list("keyword_id", flat=True))
        add_kw = [k for k in MemberKeyword.objects.filter(member=a).values_list("keyword_id", flat=True) if k not in have_kw]
        MemberKeyword.objects.bulk_create([MemberKeyword(workspace=workspace, member=s, keyword_id=k) for k in add_kw])

        filled: dict[str, Any] = {}
        for key in (*PROFILE_FIELDS, *SOURCE_FIELDS):
            if getattr(s, key) in (None, "") and getattr(a, key) not in (None, ""):
                value = getattr(a, key)
                setattr(s, key, value)
                filled[key] = value.isoformat() if isinstance(value, dt.date) else value
        filled_attrs = {k: v for k, v in a.attributes.items() if s.attributes.get(k) in (None, "")}
        if filled_attrs:
            s.attributes.update(filled_attrs)
            filled["attributes"] = filled_attrs
        if s.referrer_id is None and a.referrer_id is not None and a.referrer_id != s.pk:
            s.referrer_id = a.referrer_id
            filled["referrer_id"] = a.referrer_id
        s.save()

        scoped(Member, workspace).filter(pk__in=moved_members).exclude(pk=a.pk).update(merged_into=s)
        a.status = MemberStatus.MERGED
        a.merged_into = s
        a.save(update_fields=["status", "merged_into", "updated_at"])

        interactions.repoint_member(workspace, from_member_ids=moved_members, to_member_id=s.pk)
        lifecycle.after_merge(workspace, survivor_id=s.pk, absorbed_id=a.pk, actor=actor, at=at)

        record = MergeRecord.objects.create(
            workspace=workspace, survivor=s, absorbed=a, reason=reason[:255], actor=actor,
            moved_member_ids=moved_members, moved_identity_ids=identity_ids, added_tag_ids=add_tags,
            added_keyword_ids=add_kw, filled_fields=filled,
        )
        for handler in list(MERGE_HANDLERS):
            handler(workspace, record, actor=actor)
        audit.record(workspace, actor, "member.merge", s, {"absorbed": a.pk, "merge_record": record.pk, "reason": reason})
        return record


@transaction.atomic
def unmerge(workspace: Workspace, record_id: int, *, actor: str) -> MergeRecord:
    """Undo a merge exactly: the absorbed member gets back its identities, its interactions (by
    ``origin_member_id``), and the survivor loses the tags, keywords and fields the merge gave it."""
    from shequn.interactions import services as interactions
    from shequn.lifecycle import services as lifecycle

    record = get_scoped(MergeRecord, workspace, record_id, for_update=True)
    if record.undone_at is not None:
        raise Conflict("this merge was already undone", code="already_undone")
    locked = {m.pk: m for m in scoped(Member, workspace).select_for_update()
              .filter(pk__in=[record.survivor_id, record.absorbed_id]).order_by("pk")}
    s, a = locked[record.survivor_id], locked[record.absorbed_id]
    if s.status != MemberStatus.ACTIVE:
        raise Conflict("the surviving member was merged again later: undo that merge first", code="merge_chain")

    Identity.objects.filter(pk__in=record.moved_identity_ids, member=s).update(member=a)
    MemberTag.objects.filter(member=s, tag_id__in=record.added_tag_ids).delete()
    MemberKeyword.objects.filter(member=s, keyword_id__in=record.added_keyword_ids).delete()
    for key, value in record.filled_fields.items():
        if key == "attributes":
            for ak, av in value.items():
                if s.attributes.get(ak) == av:
                    del s.attributes[ak]
        elif key == "referrer_id":
            if s.referrer_id == value:
                s.referrer_id = None
        else:
            current = getattr(s, key)
            current = current.isoformat() if isinstance(current, dt.date) else current
            if current == value:
                setattr(s, key, None if key == "birthday" else "")
    s.save()
    a.status = MemberStatus.ACTIVE
    a.merged_into = None
    a.save(update_fields=["status", "merged_into", "updated_at"])
    others = [m for m in record.moved_member_ids if m != a.pk]
    scoped(Member, workspace).filter(pk__in=others, merged_into=s).update(merged_into=a)

    interactions.repoint_origin(workspace, origin_member_ids=record.moved_member_ids, from_member_id=s.pk,
                                to_member_id=a.pk)
    lifecycle.after_unmerge(workspace, survivor_id=s.pk, restored_id=a.pk, actor=actor)
    for handler in list(UNMERGE_HANDLERS):
        handler(workspace, record, actor=actor)

    record.undone_at = now()
    record.undone_by = actor
    record.save(update_fields=["undone_at", "undone_by"])
    audit.record(workspace, actor, "member.unmerge", s, {"restored": a.pk, "merge_record": record.pk})
    return record


# ---------------------------------------------------------------------------------------------
# tags, keywords, attribute definitions, consent


def clean_name(name: str, what: str, limit: int = 64) -> str:
    text = str(name).strip()
    if not text or len(text) > limit or "/" in text and what == "tag":
        raise ValidationError(f"invalid {what} name {name!r}", code=f"invalid_{what}")
    return text


def ensure_tags(workspace: Workspace, names: Iterable[str]) -> list[Tag]:
    cleaned = sorted({clean_name(n, "tag") for n in names})
    if not cleaned:
        return []
    Tag.objects.bulk_create([Tag(workspace=workspace, name=n) for n in cleaned], ignore_conflicts=True)
    return list(scoped(Tag, workspace).filter(name__in=cleaned))


@transaction.atomic
def add_tags(workspace: Workspace, member_id: int, names: Iterable[str], *, actor: str) -> list[Tag]:
    member = get_scoped(Member, workspace, member_id)
    tags = ensure_tags(workspace, names)
    MemberTag.objects.bulk_create([MemberTag(workspace=workspace, member=member, tag=t) for t in tags],
                                  ignore_conflicts=True)
    if tags:
        audit.record(workspace, actor, "member.tag", member, {"tags": [t.name for t in tags]})
    return tags


@transaction.atomic
def remove_tags(workspace: Workspace, member_id: int, names: Iterable[str], *, actor: str) -> int:
    member = get_scoped(Member, workspace, member_id)
    deleted, _ = MemberTag.objects.filter(member=member, tag__workspace=workspace, tag__name__in=list(names)).delete()
    if deleted:
        audit.record(workspace, actor, "member.untag", member, {"tags": list(names)})
    return deleted


def _keyword_parts(path: str) -> list[str]:
    parts = [clean_name(p, "keyword") for p in str(path).split("/") if p.strip()]
    if not parts:
        raise ValidationError(f"invalid keyword path {path!r}", code="invalid_keyword")
    return parts


def ensure_keywords(workspace: Workspace, paths: Iterable[str]) -> list[Keyword]:
    """Create (if needed) every node of each ``一级/二级/…`` path and return the leaves, in order.
    One query finds the nodes that exist; only missing nodes are written."""
    split = [_keyword_parts(p) for p in paths]
    wanted = {"/".join(parts[:d]) for parts in split for d in range(1, len(parts) + 1)}
    nodes = {k.path: k for k in scoped(Keyword, workspace).filter(path__in=wanted)}
    for parts in split:
        parent: Keyword | None = None
        for depth in range(1, len(parts) + 1):
            node_path = "/".join(parts[:depth])
            node = nodes.get(node_path)
            if node is None:
                node, _ = Keyword.objects.get_or_create(  # backed by uniq_keyword_path
                    workspace=workspace, path=node_path,
                    defaults={"name": parts[depth - 1], "parent": parent, "depth": depth})
                nodes[node_path] = node
            parent = node
    return [nodes["/".join(parts)] for parts in split]


def ensure_keyword(workspace: Workspace, path: str) -> Keyword:
    """Create (if needed) every node of ``一级/二级/…`` and return the leaf."""
    return ensure_keywords(workspace, [path])[0]


@transaction.atomic
def add_keywords(workspace: Workspace, member_id: int, paths: Iterable[str], *, actor: str) -> list[Keyword]:
    member = get_scoped(Member, workspace, member_id)
    kws = ensure_keywords(workspace, paths)
    MemberKeyword.objects.bulk_create([MemberKeyword(workspace=workspace, member=member, keyword=k) for k in kws],
                                      ignore_conflicts=True)
    if kws:
        audit.record(workspace, actor, "member.keyword", member, {"keywords": [k.path for k in kws]})
    return kws


@transaction.atomic
def remove_keywords(workspace: Workspace, member_id: int, paths: Iterable[str], *, actor: str) -> int:
    member = get_scoped(Member, workspace, member_id)
    paths = list(paths)
    deleted, _ = MemberKeyword.objects.filter(member=member, keyword__workspace=workspace,
                                              keyword__path__in=paths).delete()
    if deleted:
        audit.record(workspace, actor, "member.unkeyword", member, {"keywords": paths})
    return deleted


@transaction.atomic
def define_attribute(workspace: Workspace, key: str, label: str, type: str, choices: Sequence[str] = (),
                     *, actor: str) -> AttributeDefinition:
    from django.utils.text import slugify

    if type not in AttributeType.values:
        raise ValidationError(f"type must be one of {', '.join(AttributeType.values)}", code="invalid_attribute_type")
    if slugify(key) != key or not key:
        raise ValidationError("key must be a slug (a-z, 0-9, - and _)", code="invalid_attribute_key")
    if type == AttributeType.CHOICE and not choices:
        raise ValidationError("a choice attribute needs choices", code="invalid_attribute_type")
    d, _ = AttributeDefinition.objects.update_or_create(  # backed by uniq_attribute_key
        workspace=workspace, key=key, defaults={"label": label or key, "type": type, "choices": list(choices)})
    audit.record(workspace, actor, "attribute.define", d, {"type": type})
    return d


@transaction.atomic
def set_subscription(workspace: Workspace, member_id: int, scope: str, key: str, subscribed: bool, *,
                     source: str = "", actor: str) -> Subscription:
    if scope not in SubscriptionScope.values:
        raise ValidationError("scope must be 'category' or 'tag'", code="invalid_scope")
    key = clean_name(key, "subscription")
    member = get_scoped(Member, workspace, member_id)
    sub, _ = Subscription.objects.update_or_create(  # backed by uniq_subscription
        member=member, scope=scope, key=key,
        defaults={"workspace": workspace, "subscribed": bool(subscribed), "source": source[:64], "changed_at": now()})
    audit.record(workspace, actor, "member.subscription", member, {"scope": scope, "key": key, "subscribed": subscribed})
    return sub
