"""Writes of the lifecycle domain: engagement counters, stage progression by rules, relationship
strength, and the stage history. Called inside the transaction that stores interactions."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q, Sum

from shequn.core import audit
from shequn.core import cache as settings_cache
from shequn.core.clock import now
from shequn.core.errors import ValidationError
from shequn.core.models import Workspace
from shequn.core.tenancy import get_scoped, scoped
from shequn.interactions.conditions import matches
from shequn.members.models import Member, MemberStatus

from . import strength as strength_formula
from .models import LifecycleVersion, Stage, StageChange, StageRule

DEFAULT_STAGES = [
    ("aware", "认知"),
    ("considering", "考虑"),
    ("purchased", "购买"),
    ("using", "使用"),
    ("feedback", "意见"),
    ("advocate", "口碑"),
]

# (name, interaction type, direction, min_count, target stage key, priority)
DEFAULT_RULES = [
    ("首次接触 → 认知", "follow", "in", 1, "aware", 10),
    ("扫码 → 认知", "scan", "in", 1, "aware", 11),
    ("发消息 → 认知", "message", "in", 1, "aware", 12),
    ("到店 → 考虑", "visit", "in", 1, "considering", 20),
    ("参加活动 → 考虑", "event_attendance", "in", 1, "considering", 21),
    ("咨询 → 考虑", "support_contact", "in", 1, "considering", 22),
    ("首次购买 → 购买", "purchase", "in", 1, "purchased", 30),
    ("复购 → 使用", "purchase", "in", 2, "using", 40),
    ("评价 → 意见", "review", "in", 1, "feedback", 50),
    ("分享 → 口碑", "share", "in", 1, "advocate", 60),
    ("推荐好友 → 口碑", "referral", "in", 1, "advocate", 61),
]


@transaction.atomic
def install_defaults(workspace: Workspace) -> None:
    """Give a new workspace the default pipeline 认知 → 考虑 → 购买 → 使用 → 意见 → 口碑 and its rules."""
    if scoped(Stage, workspace).exists():
        return
    bump_version(workspace)
    stages = {key: Stage.objects.create(workspace=workspace, key=key, name=name, position=i + 1)
              for i, (key, name) in enumerate(DEFAULT_STAGES)}
    StageRule.objects.bulk_create([
        StageRule(workspace=workspace, name=name, interaction_type=itype, direction=direction, min_count=min_count,
                  target_stage=stages[target], priority=priority)
        for name, itype, direction, min_count, target, priority in DEFAULT_RULES
    ])


# ---------------------------------------------------------------------------------------------
# the per-process cache of stages and rules (ADR 0015)

VERSION_SOURCE = "lifecycle"
_pipeline_cache: settings_cache.VersionedCache[tuple[list[StageRule], dict[int, int]]] = \
    settings_cache.VersionedCache(VERSION_SOURCE)


def bump_version(workspace: Workspace | int) -> None:
    """Mark the workspace's stages and stage rules changed: call in the transaction of every write
    of them, so every process reloads them for the next interaction it folds."""
    settings_cache.bump(LifecycleVersion, workspace if isinstance(workspace, int) else workspace.pk)


def _load_pipeline(workspace: Workspace) -> tuple[list[StageRule], dict[int, int]]:
    rules = list(scoped(StageRule, workspace).filter(enabled=True).select_related("target_stage"))
    return rules, {s.pk: s.position for s in scoped(Stage, workspace)}


def pipeline(workspace: Workspace) -> tuple[list[StageRule], dict[int, int]]:
    """The workspace's enabled stage rules (in order, with their target stage) and each stage's
    position, from this process's cache while the lifecycle version is unchanged. Read only."""
    return _pipeline_cache.get(workspace.pk, lambda: _load_pipeline(workspace))


# ---------------------------------------------------------------------------------------------
# the interaction hook


def _rule_matches(rule: StageRule, row: Any) -> bool:
    return rule.interaction_type == row.type and matches(
        row, direction=rule.direction, channel=rule.channel, touchpoint_id=rule.touchpoint_id,
        min_amount=rule.min_amount)


def on_interactions(workspace: Workspace, rows: Sequence[Any]) -> None:
    """Fold new interactions into each member's counters, stage and strength. Members are locked in
    primary-key order, so concurrent batches touching the same members cannot deadlock or lose updates."""
    if not rows:
        return
    by_member: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        by_member[row.member_id].append(row)
    rules, stage_pos = pipeline(workspace)
    batch_types = {row.type for row in rows}
    counted_types = {r.interaction_type for r in rules if r.min_count > 1 and r.interaction_type in batch_types}
    prior_counts: dict[tuple[int, str], int] = {}
    if counted_types:
        new_ids = [r.pk for r in rows]
        for mid, itype, n in (_interactions(workspace).filter(member_id__in=list(by_member), type__in=counted_types)
                              .exclude(pk__in=new_ids).values_list("member_id", "type").annotate(n=Count("pk"))):
            prior_counts[(mid, itype)] = n
    members = scoped(Member, workspace).select_for_update().filter(pk__in=list(by_member)).order_by("pk")
    clock = now()
    changes: list[StageChange] = []
    updates: list[Member] = []
    for m in members:
        events = sorted(by_member[m.pk], key=lambda r: (r.occurred_at, r.pk))
        seen: dict[str, int] = defaultdict(int)
        for row in events:
            m.interaction_count += 1
            if row.direction == "in":
                m.inbound_count += 1
            else:
                m.outbound_count += 1
            if row.type == "purchase":
                m.purchase_count += 1
                m.purchase_total += row.amount or Decimal(0)
            elif row.type == "refund":
                m.purchase_total -= abs(row.amount or Decimal(0))
            if m.first_interaction_at is None or row.occurred_at < m.first_interaction_at:
                m.first_interaction_at = row.occurred_at
            if m.last_interaction_at is None or row.occurred_at > m.last_interaction_at:
                m.last_interaction_at = row.occurred_at
            m.activity_score, m.activity_at = strength_formula.add_event(m.activity_score, m.activity_at, row.occurred_at)
            seen[row.type] += 1
            nth = prior_counts.get((m.pk, row.type), 0) + seen[row.type]
            for rule in rules:
                if not _rule_matches(rule, row) or nth < rule.min_count:
                    continue
                current = stage_pos.get(m.stage_id) if m.stage_id else 0
                target = rule.target_stage
                if target.pk == m.stage_id or (target.position < (current or 0) and not rule.allow_backward):
                    continue
                changes.append(StageChange(workspace=workspace, member=m, from_stage_id=m.stage_id, to_stage=target,
                                           at=row.occurred_at, cause="rule", rule=rule, interaction_id=row.pk))
                m.stage_id = target.pk
                m.stage_changed_at = row.occurred_at
        m.strength = strength_formula.strength(_engagement(m), max(clock, m.last_interaction_at or clock))
        updates.append(m)
    _write_engagement(updates)
    StageChange.objects.bulk_create(changes)


_ENGAGEMENT_FIELDS = ("interaction_count", "inbound_count", "outbound_count", "purchase_count", "purchase_total",
                      "first_interaction_at", "last_interaction_at", "activity_score", "activity_at", "stage_id",
                      "stage_changed_at", "strength")


def _write_engagement(rows: Sequence[Member]) -> None:
    """One prepared UPDATE executed for every member of the batch (``executemany``): the statement is
    fixed, only the parameters vary, and the rows are already locked by this transaction."""
    if not rows:
        return
    ops = connection.ops
    table = Member._meta.db_table
    fields = [Member._meta.get_field(name) for name in _ENGAGEMENT_FIELDS]
    qn = ops.quote_name
    # Only quoted column names from the model go into the text; every value is a parameter.
    sql = (f"UPDATE {qn(table)} SET {', '.join(f'{qn(f.column)} = %s' for f in fields)}, {qn('updated_at')} = %s "  # noqa: S608
           f"WHERE {qn('id')} = %s")
    stamp = now()
    params = [[*(f.get_db_prep_save(getattr(m, f.attname), connection) for f in fields),
               Member._meta.get_field("updated_at").get_db_prep_save(stamp, connection), m.pk] for m in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _interactions(workspace: Workspace):  # type: ignore[no-untyped-def]
    from shequn.interactions.models import Interaction

    return scoped(Interaction, workspace)


def _engagement(m: Member) -> strength_formula.Engagement:
    return strength_formula.Engagement(inbound=m.inbound_count, outbound=m.outbound_count,
                                       first_at=m.first_interaction_at, last_at=m.last_interaction_at,
                                       activity=m.activity_score, activity_at=m.activity_at)


def recompute_engagement(workspace: Workspace, member_id: int) -> Member:
    """Rebuild one member's counters from its interactions (after a merge or an unmerge)."""
    m = scoped(Member, workspace).select_for_update().get(pk=member_id)
    qs = _interactions(workspace).filter(member_id=member_id)
    agg = qs.aggregate(n=Count("pk"), inbound=Count("pk", filter=Q(direction="in")),
                       outbound=Count("pk", filter=Q(direction="out")), purchases=Count("pk", filter=Q(type="purchase")),
                       spent=Sum("amount", filter=Q(type="purchase")), refunded=Sum("amount", filter=Q(type="refund")),
                       first=Min("occurred_at"), last=Max("occurred_at"))
    score, at = 0.0, None
    for when in qs.order_by("occurred_at").values_list("occurred_at", flat=True).iterator():
        score, at = strength_formula.add_event(score, at, when)
    m.interaction_count, m.inbound_count, m.outbound_count = agg["n"], agg["inbound"], agg["outbound"]
    m.purchase_count = agg["purchases"]
    m.purchase_total = (agg["spent"] or Decimal(0)) - abs(agg["refunded"] or Decimal(0))
    m.first_interaction_at, m.last_interaction_at = agg["first"], agg["last"]
    m.activity_score, m.activity_at = score, at
    clock = now()
    m.strength = strength_formula.strength(_engagement(m), max(clock, m.last_interaction_at or clock))
    m.save()
    return m


def after_merge(workspace: Workspace, *, survivor_id: int, absorbed_id: int, actor: str,
                at: dt.datetime | None = None) -> None:
    """The survivor takes the further stage of the two; the change is dated ``at`` (the time of the
    event that proved the two members one person) or now."""
    when = at or now()
    survivor = recompute_engagement(workspace, survivor_id)
    absorbed = scoped(Member, workspace).get(pk=absorbed_id)
    positions = {s.pk: s.position for s in scoped(Stage, workspace)}
    if absorbed.stage_id and positions.get(absorbed.stage_id, 0) > positions.get(survivor.stage_id or -1, 0):
        StageChange.objects.create(workspace=workspace, member=survivor, from_stage_id=survivor.stage_id,
                                   to_stage_id=absorbed.stage_id, at=when, cause="merge", actor=actor)
        survivor.stage_id = absorbed.stage_id
        survivor.stage_changed_at = when
        survivor.save(update_fields=["stage", "stage_changed_at", "updated_at"])


def after_unmerge(workspace: Workspace, *, survivor_id: int, restored_id: int, actor: str) -> None:
    survivor = recompute_engagement(workspace, survivor_id)
    recompute_engagement(workspace, restored_id)
    last = StageChange.objects.filter(member_id=survivor_id).order_by("-at", "-id").first()
    if last is not None and last.cause == "merge" and last.to_stage_id == survivor.stage_id:
        StageChange.objects.create(workspace=workspace, member=survivor, from_stage_id=survivor.stage_id,
                                   to_stage_id=last.from_stage_id, at=now(), cause="unmerge", actor=actor)
        survivor.stage_id = last.from_stage_id
        survivor.stage_changed_at = now()
        survivor.save(update_fields=["stage", "stage_changed_at", "updated_at"])


def refresh_strength(workspace: Workspace | None = None, *, chunk: int = 2000) -> int:
    """Strength decays with time even when nothing happens: re-evaluate members that have any
    engagement, in primary-key chunks, writing only the rows whose level changed. Periodic (daily)."""
    clock = now()
    qs = Member.objects.filter(status=MemberStatus.ACTIVE, last_interaction_at__isnull=False)
    if workspace is not None:
        qs = qs.filter(workspace=workspace)
    changed = 0
    last_pk = 0
    fields = ("pk", "inbound_count", "outbound_count", "first_interaction_at", "last_interaction_at",
              "activity_score", "activity_at", "strength")
    while True:
        rows = list(qs.filter(pk__gt=last_pk).order_by("pk").values_list(*fields)[:chunk])
        if not rows:
            return changed
        updates: dict[int, list[int]] = defaultdict(list)
        for pk, inb, outb, first, last, score, at, current in rows:
            level = strength_formula.strength(strength_formula.Engagement(inb, outb, first, last, score, at), clock)
            if level != current:
                updates[level].append(pk)
        for level, pks in updates.items():
            changed += Member.objects.filter(pk__in=pks).update(strength=level)
        last_pk = rows[-1][0]


# ---------------------------------------------------------------------------------------------
# operator actions


@transaction.atomic
def set_stage(workspace: Workspace, member_id: int, stage_key: str, *, actor: str) -> Member:
    member = get_scoped(Member, workspace, member_id, for_update=True)
    stage = scoped(Stage, workspace).filter(key=stage_key).first()
    if stage is None:
        raise ValidationError(f"unknown stage {stage_key!r}", code="unknown_stage", details={"field": "stage"})
    if member.stage_id != stage.pk:
        StageChange.objects.create(workspace=workspace, member=member, from_stage_id=member.stage_id, to_stage=stage,
                                   at=now(), cause="manual", actor=actor)
        member.stage = stage
        member.stage_changed_at = now()
        member.save(update_fields=["stage", "stage_changed_at", "updated_at"])
        audit.record(workspace, actor, "member.stage", member, {"stage": stage.key})
    return member


RULE_FIELDS = ("name", "interaction_type", "direction", "channel", "touchpoint", "min_amount", "min_count",
               "target_stage", "allow_backward", "priority", "enabled")


@transaction.atomic
def save_rule(workspace: Workspace, data: Mapping[str, Any], *, rule_id: int | None = None, actor: str) -> StageRule:
    """Create a stage rule, or update ``rule_id``. ``target_stage`` is a stage key, ``touchpoint`` a code."""
    from shequn.interactions.models import InteractionType, Touchpoint

    unknown = sorted(set(data) - set(RULE_FIELDS))
    if unknown:
        raise ValidationError(f"unknown rule field(s): {', '.join(unknown)}", code="invalid_field")
    rule = get_scoped(StageRule, workspace, rule_id, for_update=True) if rule_id else StageRule(workspace=workspace)
    for key, value in data.items():
        if key == "target_stage":
            stage = scoped(Stage, workspace).filter(key=value).first()
            if stage is None:
                raise ValidationError(f"unknown stage {value!r}", code="unknown_stage", details={"field": key})
            rule.target_stage = stage
        elif key == "touchpoint":
            rule.touchpoint = None
            if value:
                tp = scoped(Touchpoint, workspace).filter(code=value).first()
                if tp is None:
                    raise ValidationError(f"unknown touchpoint {value!r}", code="unknown_touchpoint", details={"field": key})
                rule.touchpoint = tp
        elif key == "interaction_type":
            if value not in InteractionType.values:
                raise ValidationError(f"unknown interaction type {value!r}", code="invalid_type", details={"field": key})
            rule.interaction_type = value
        elif key == "direction":
            if value not in ("", "in", "out", None):
                raise ValidationError("direction must be in, out or empty", code="invalid_field", details={"field": key})
            rule.direction = value or ""
        elif key == "min_amount":
            try:
                rule.min_amount = None if value in (None, "") else Decimal(str(value))
            except InvalidOperation:
                raise ValidationError("min_amount must be a number", code="invalid_field", details={"field": key}) from None
        elif key in ("min_count", "priority"):
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise ValidationError(f"{key} must be a whole number", code="invalid_field", details={"field": key}) from None
            if key == "min_count" and number < 1:
                raise ValidationError("min_count must be at least 1", code="invalid_field", details={"field": key})
            setattr(rule, key, number)
        elif key in ("allow_backward", "enabled"):
            setattr(rule, key, bool(value))
        else:
            setattr(rule, key, str(value or "").strip()[:100])
    if not rule.name or not rule.interaction_type or not rule.target_stage_id:
        raise ValidationError("a rule needs name, interaction_type and target_stage", code="invalid_field")
    bump_version(workspace)
    rule.save()
    audit.record(workspace, actor, "stage_rule.save", rule, {k: str(v) for k, v in data.items()})
    return rule


@transaction.atomic
def delete_rule(workspace: Workspace, rule_id: int, *, actor: str) -> None:
    rule = get_scoped(StageRule, workspace, rule_id, for_update=True)
    audit.record(workspace, actor, "stage_rule.delete", rule, {"name": rule.name})
    bump_version(workspace)
    rule.delete()


def stages(workspace: Workspace) -> list[Stage]:
    return list(scoped(Stage, workspace).order_by("position"))


def history(workspace: Workspace, member_id: int) -> Iterable[StageChange]:
    return scoped(StageChange, workspace).filter(member_id=member_id).select_related("from_stage", "to_stage", "rule")
