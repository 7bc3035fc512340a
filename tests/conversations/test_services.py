"""Rule writes (validated, audited, tenant-scoped), the rule-set version and the compiled cache."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from shequn.conversations import queries, services
from shequn.conversations.models import AutoReplyRule, RuleSetVersion
from shequn.core.errors import Conflict, NotFound, ValidationError
from shequn.core.models import AuditEntry
from shequn.members import services as members
from shequn.members.models import MemberTag

from .conftest import rule_data

IMMEDIATE = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}


def version(ws) -> int:
    return RuleSetVersion.objects.get(workspace=ws).version


def answer(ws, text, channel="wechat"):
    rule = queries.match_rule(ws, text, channel=channel)
    return rule.id if rule else None


# ---------------------------------------------------------------------------------------------
# create, validation


def test_create_cleans_and_stores_every_field(ws):
    rule = services.create_rule(ws, {
        "name": "  营业时间 ", "match_type": "contains", "patterns": [" 营业时间 ", "几点开门", "营业时间", "ＶＩＰ", "vip"],
        "reply": {"type": "text", "content": " 每天 9:00–21:00 营业。 "}, "priority": "10",
        "channels": ["WeChat", "sms", "wechat"], "windows": [{"days": [5, 1, 1], "start": "9:00", "end": "21:30"}],
        "outside_windows": False, "enabled": True, "tag": " 问营业时间 ",
    }, actor="user:1")
    rule.refresh_from_db()
    assert (rule.name, rule.match_type, rule.priority, rule.enabled, rule.tag) == (
        "营业时间", "contains", 10, True, "问营业时间")
    assert rule.patterns == ["营业时间", "几点开门", "ＶＩＰ"]  # duplicates by normalised form dropped
    assert (rule.reply_type, rule.reply) == ("text", {"content": "每天 9:00–21:00 营业。"})
    assert rule.channels == ["sms", "wechat"]
    assert rule.windows == [{"days": [1, 5], "start": "09:00", "end": "21:30"}]
    entry = AuditEntry.objects.get(workspace=ws, action="autoreply.create")
    assert (entry.actor, entry.object_type, entry.object_id) == ("user:1", "autoreplyrule", str(rule.pk))
    assert entry.data["patterns"] == ["营业时间", "几点开门", "ＶＩＰ"]
    assert version(ws) == 1


def test_defaults_and_patterns_as_lines(ws):
    rule = services.create_rule(ws, {"name": "n", "match_type": "exact", "patterns": "1\n\n 2 \n", "reply": "ok"},
                                actor="t")
    assert (rule.patterns, rule.priority, rule.channels, rule.windows, rule.enabled, rule.tag) == (
        ["1", "2"], 100, [], [], True, "")


@pytest.mark.parametrize(("overrides", "field", "code"), [
    ({"name": ""}, "name", "invalid_field"),
    ({"name": "x" * 101}, "name", "invalid_field"),
    ({"match_type": "fuzzy"}, "match_type", "invalid_field"),
    ({"patterns": []}, "patterns", "invalid_field"),
    ({"patterns": ["   ", "\u3000"]}, "patterns", "invalid_field"),
    ({"patterns": [1, 2]}, "patterns", "invalid_field"),
    ({"patterns": ["x" * 101]}, "patterns", "invalid_field"),
    ({"patterns": [f"k{i}" for i in range(101)]}, "patterns", "invalid_field"),
    ({"match_type": "regex", "patterns": ["(unclosed"]}, "patterns", "invalid_regex"),
    ({"match_type": "regex", "patterns": [r"(a)\1"]}, "patterns", "invalid_regex"),
    ({"match_type": "regex", "patterns": [r"foo(?=bar)"]}, "patterns", "invalid_regex"),
    ({"match_type": "regex", "patterns": ["a" * 301]}, "patterns", "invalid_field"),
    ({"match_type": "regex", "patterns": [r"((a{100}){100}){100}"]}, "patterns", "invalid_regex"),
    ({"reply": ""}, "reply", "invalid_field"),
    ({"reply": {"type": "video", "content": "x"}}, "reply", "invalid_field"),
    ({"reply": "a\x00b"}, "reply", "invalid_field"),
    ({"reply": "字" * 700}, "reply", "invalid_field"),
    ({"priority": -1}, "priority", "invalid_field"),
    ({"priority": True}, "priority", "invalid_field"),
    ({"priority": 1.5}, "priority", "invalid_field"),
    ({"priority": "high"}, "priority", "invalid_field"),
    ({"channels": ["we chat"]}, "channels", "invalid_field"),
    ({"channels": "wechat;drop"}, "channels", "invalid_field"),
    ({"windows": [{"days": [0], "start": "09:00", "end": "10:00"}]}, "windows", "invalid_field"),
    ({"windows": [{"days": [], "start": "09:00", "end": "10:00"}]}, "windows", "invalid_field"),
    ({"windows": [{"days": [1], "start": "9", "end": "10:00"}]}, "windows", "invalid_field"),
    ({"windows": [{"days": [1], "start": "09:60", "end": "10:00"}]}, "windows", "invalid_field"),
    ({"windows": [{"days": [1], "start": "25:00", "end": "10:00"}]}, "windows", "invalid_field"),
    ({"windows": [{"days": [1], "start": "10:00", "end": "10:00"}]}, "windows", "invalid_field"),
    ({"windows": [{"days": [1], "start": "24:00", "end": "10:00"}]}, "windows", "invalid_field"),
    ({"windows": "always"}, "windows", "invalid_field"),
    ({"outside_windows": True}, "outside_windows", "invalid_field"),
    ({"enabled": "yes"}, "enabled", "invalid_field"),
    ({"tag": "a/b"}, "tag", "invalid_field"),
    ({"tag": "x" * 65}, "tag", "invalid_field"),
])
def test_invalid_rules_are_refused_naming_the_field(ws, overrides, field, code):
    with pytest.raises(ValidationError) as info:
        services.create_rule(ws, rule_data(**overrides), actor="t")
    assert info.value.code == code
    assert info.value.details["field"] == field
    assert not AutoReplyRule.objects.exists() and not RuleSetVersion.objects.exists()


def test_required_and_unknown_fields(ws):
    data = rule_data()
    del data["reply"]
    with pytest.raises(ValidationError) as info:
        services.create_rule(ws, data, actor="t")
    assert info.value.details == {"field": "reply"}
    with pytest.raises(ValidationError) as info:
        services.create_rule(ws, rule_data(workspace=3), actor="t")
    assert (info.value.code, info.value.details) == ("unknown_field", {"fields": ["workspace"]})


def test_names_are_unique_per_workspace(ws, other_ws, make_rule):
    make_rule(ws, name="积分")
    with pytest.raises(Conflict) as info:
        make_rule(ws, name=" 积分 ")
    assert info.value.code == "rule_name_taken"
    make_rule(other_ws, name="积分")
    second = make_rule(ws, name="订单")
    with pytest.raises(Conflict):
        services.update_rule(ws, second.pk, {"name": "积分"}, actor="t")
    assert AutoReplyRule.objects.filter(workspace=ws).count() == 2


# ---------------------------------------------------------------------------------------------
# update, delete, versions


def test_update_changes_only_the_given_fields_and_is_audited(ws, make_rule):
    rule = make_rule(ws, name="积分", patterns=["积分"], priority=50)
    before = version(ws)
    updated = services.update_rule(ws, rule.pk, {"priority": 5, "patterns": ["积分", "points"]}, actor="user:2")
    assert (updated.priority, updated.patterns, updated.name) == (5, ["积分", "points"], "积分")
    assert version(ws) == before + 1
    entry = AuditEntry.objects.filter(workspace=ws, action="autoreply.update").get()
    assert entry.data["fields"] == ["patterns", "priority"] and entry.actor == "user:2"
    # A change of match type re-validates the kept patterns.
    with pytest.raises(ValidationError) as info:
        services.update_rule(ws, rule.pk, {"match_type": "regex", "patterns": ["(?<=a)b"]}, actor="t")
    assert info.value.code == "invalid_regex"
    with pytest.raises(ValidationError):
        services.update_rule(ws, rule.pk, {"outside_windows": True}, actor="t")


def test_delete_is_audited_and_bumps_the_version(ws, make_rule):
    rule = make_rule(ws)
    v = version(ws)
    services.delete_rule(ws, rule.pk, actor="t")
    assert not AutoReplyRule.objects.filter(pk=rule.pk).exists()
    assert version(ws) == v + 1
    assert AuditEntry.objects.filter(workspace=ws, action="autoreply.delete", object_id=str(rule.pk)).exists()
    with pytest.raises(NotFound):
        services.delete_rule(ws, rule.pk, actor="t")


def test_every_change_is_seen_by_the_next_match(ws, make_rule):
    assert answer(ws, "我的积分") is None  # no rule set yet
    rule = make_rule(ws, patterns=["积分"])
    assert answer(ws, "我的积分") == rule.pk
    services.update_rule(ws, rule.pk, {"enabled": False}, actor="t")
    assert answer(ws, "我的积分") is None
    services.update_rule(ws, rule.pk, {"enabled": True, "patterns": ["余额"]}, actor="t")
    assert answer(ws, "我的积分") is None and answer(ws, "余额多少") == rule.pk
    other = make_rule(ws, patterns=["余额"], priority=1)
    assert answer(ws, "余额多少") == other.pk
    services.delete_rule(ws, other.pk, actor="t")
    assert answer(ws, "余额多少") == rule.pk


def test_a_current_rule_set_costs_one_query_and_is_compiled_once(ws, make_rule):
    make_rule(ws, patterns=["积分"])
    first = queries.rulebook(ws)
    with CaptureQueriesContext(connection) as ctx:
        again = queries.rulebook(ws)
        assert again.match("积分", channel="wechat") is not None
    assert again is first
    assert len(ctx.captured_queries) == 1 and "conversations_rulesetversion" in ctx.captured_queries[0]["sql"]
    services.create_rule(ws, rule_data(patterns=["订单"]), actor="t")
    assert queries.rulebook(ws) is not first


def test_a_recreated_version_row_never_meets_the_old_cache_entry(ws, make_rule):
    """The cache is per process and outlives rolled-back transactions and deleted workspaces: the
    random generation tells a new rule set from an old one with the same version number."""
    make_rule(ws, patterns=["积分"])
    assert answer(ws, "积分") is not None
    AutoReplyRule.objects.filter(workspace=ws).delete()
    RuleSetVersion.objects.filter(workspace=ws).delete()
    replacement = make_rule(ws, patterns=["订单"])
    assert version(ws) == 1
    assert answer(ws, "积分") is None and answer(ws, "订单") == replacement.pk


def test_workspace_time_zone_change_recompiles(ws, make_rule):
    import datetime as dt

    make_rule(ws, windows=[{"days": [1], "start": "09:00", "end": "10:00"}])
    at = dt.datetime(2026, 6, 1, 1, 30, tzinfo=dt.UTC)  # Monday 09:30 in Shanghai, 01:30 in UTC
    assert queries.match_rule(ws, "积分", channel="wechat", at=at) is not None
    ws.default_timezone = "UTC"
    assert queries.match_rule(ws, "积分", channel="wechat", at=at) is None


# ---------------------------------------------------------------------------------------------
# import


def test_import_is_all_or_nothing(ws, make_rule):
    items = [rule_data(name=f"k{i}", patterns=[f"词{i}"]) for i in range(5)]
    items[3]["priority"] = -5
    with pytest.raises(ValidationError) as info:
        services.import_rules(ws, items, actor="t")
    assert info.value.details == {"field": "priority", "index": 3}
    assert not AutoReplyRule.objects.exists()

    items[3]["priority"] = 5
    items[4]["name"] = "k0"
    with pytest.raises(Conflict) as info:
        services.import_rules(ws, items, actor="t")
    assert info.value.details == {"field": "name", "index": 4}

    make_rule(ws, name="k2")
    items[4]["name"] = "k4"
    with pytest.raises(Conflict) as info:
        services.import_rules(ws, items, actor="t")
    assert info.value.details == {"field": "name", "index": 2}

    items[2]["name"] = "k2b"
    rows = services.import_rules(ws, items, actor="t")
    assert [r.name for r in rows] == ["k0", "k1", "k2b", "k3", "k4"] and all(r.pk for r in rows)
    assert AuditEntry.objects.filter(workspace=ws, action="autoreply.create").count() == 6
    assert answer(ws, "词3") == rows[3].pk


# ---------------------------------------------------------------------------------------------
# tenant isolation


def test_one_workspace_cannot_see_or_change_another_s_rules(ws, other_ws, make_rule):
    mine = make_rule(ws, patterns=["积分"], reply="茶语积分")
    theirs = make_rule(other_ws, patterns=["积分"], reply="别家积分")
    assert answer(ws, "积分") == mine.pk and answer(other_ws, "积分") == theirs.pk
    with pytest.raises(NotFound):
        services.update_rule(other_ws, mine.pk, {"reply": "hijacked"}, actor="t")
    with pytest.raises(NotFound):
        services.delete_rule(other_ws, mine.pk, actor="t")
    with pytest.raises(NotFound):
        queries.rule(other_ws, mine.pk)
    assert [r.pk for r in queries.rules(other_ws)] == [theirs.pk]
    mine.refresh_from_db()
    assert mine.reply == {"content": "茶语积分"}
    services.delete_rule(other_ws, theirs.pk, actor="t")
    assert answer(ws, "积分") == mine.pk and answer(other_ws, "积分") is None


# ---------------------------------------------------------------------------------------------
# answering and tagging


def test_auto_reply_answers_and_tags_the_member_after_commit(ws, make_rule, django_capture_on_commit_callbacks):
    rule = make_rule(ws, patterns=["会员"], reply="回复 1 查积分", tag="问会员")
    member = members.upsert_member(ws, [{"kind": "wechat_openid", "namespace": "wxapp", "value": "o1"}],
                                   actor="t").member
    identity = {"kind": "wechat_openid", "namespace": "wxapp", "value": "o1"}
    with override_settings(TASKS=IMMEDIATE), django_capture_on_commit_callbacks(execute=True) as callbacks:
        got = services.auto_reply(ws, "怎么成为会员", channel="wechat", identity=identity)
        assert not MemberTag.objects.filter(member=member).exists()  # nothing written before commit
    assert (got.rule_id, got.rule_name, got.reply_type, got.content, got.tag) == (
        rule.pk, rule.name, "text", "回复 1 查积分", "问会员")
    assert len(callbacks) == 1
    assert list(MemberTag.objects.filter(member=member).values_list("tag__name", flat=True)) == ["问会员"]
    assert AuditEntry.objects.filter(workspace=ws, action="member.tag", actor=f"autoreply:{rule.pk}").exists()


def test_auto_reply_without_tag_or_match_enqueues_nothing(ws, make_rule, django_capture_on_commit_callbacks):
    make_rule(ws, patterns=["会员"])
    with django_capture_on_commit_callbacks() as callbacks:
        assert services.auto_reply(ws, "会员", channel="wechat", identity={"kind": "x", "value": "y"}) is not None
        assert services.auto_reply(ws, "别的", channel="wechat", identity={"kind": "x", "value": "y"}) is None
    assert callbacks == []


def test_apply_rule_tag_before_the_message_is_recorded_creates_the_member(ws):
    """The tag task can run before the task that records the message: the member is created then,
    and recording finds them by the same identity."""
    from shequn.members.services import find_member

    ident = {"kind": "wechat_openid", "namespace": "wx3c8e1f2a9b7d6e54", "value": "oNewcomer"}
    assert services.apply_rule_tag(ws, ident, "新客", 1) is True
    assert services.apply_rule_tag(ws, ident, "新客", 1) is True
    member = find_member(ws, ident)
    assert member is not None and list(member.member_tags.values_list("tag__name", flat=True)) == ["新客"]
