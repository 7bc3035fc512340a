"""The per-process settings caches on the WeChat record path (ADR 0015): how many queries one message
costs, and that an edit made by another process — its version row changed in the edit's transaction —
is seen by the next message."""

from __future__ import annotations

import datetime as dt
import traceback

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from shequn.channels import services
from shequn.conversations import services as conversations
from shequn.core import cache
from shequn.interactions import services as interactions
from shequn.interactions.models import Interaction, TouchpointsVersion
from shequn.lifecycle import services as lifecycle
from shequn.lifecycle.models import LifecycleVersion, StageRule
from shequn.members.models import Member
from shequn.outbound import services as outbound
from shequn.outbound.models import SubscriptionsVersion, WebhookDelivery, WebhookSubscription

from .helpers import WeChatServer, connect, text_xml

RULE = {"name": "奶茶", "match_type": "contains", "patterns": ["奶茶"],
        "reply": "今日奶茶第二杯半价"}


@pytest.fixture
def wechat(ws):
    account, path = connect(ws, "safe", welcome="欢迎", reply="收到")
    conversations.create_rule(ws, RULE, actor="t")
    return account, WeChatServer(path)


def _origin() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/shequn/" in frame.filename and "/core/" not in frame.filename:
            return f"{frame.filename.split('shequn/')[-1]}:{frame.lineno} {frame.name}"
    return "?"


def _send(server: WeChatServer, text: str, msg_id: str, openid: str = "oFollowerA", *, record: bool = True):
    return server.reply(server.push(text_xml(text, msg_id=msg_id, openid=openid), encrypt=True, record=record),
                        encrypted=True)


class _Measured:
    def __init__(self) -> None:
        self.origins: list[str] = []
        self.ctx = CaptureQueriesContext(connection)

    def __enter__(self) -> _Measured:
        def wrapper(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
            self.origins.append(_origin())
            return execute(sql, params, many, context)

        self._wrapper = connection.execute_wrapper(wrapper)
        self.ctx.__enter__()
        self._wrapper.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._wrapper.__exit__(*exc)
        self.ctx.__exit__(*exc)

    @property
    def queries(self) -> list[tuple[str, str]]:
        return [(o, q["sql"]) for o, q in zip(self.origins, self.ctx.captured_queries, strict=True)]


def _no_settings_read(queries: list[tuple[str, str]]) -> None:
    tables = " ".join(sql for _o, sql in queries)
    for settings_table in ("lifecycle_stagerule", "lifecycle_stage\"", "outbound_webhooksubscription",
                           "interactions_touchpoint\"", "conversations_autoreplyrule"):
        assert f"FROM \"{settings_table.strip(chr(34))}\"" not in tables, settings_table
    assert sum("FROM \"core_workspace\"" in sql for _o, sql in queries) <= 1  # every version, once


def test_a_message_of_a_known_follower_reads_no_settings(wechat):
    """One text message of a follower who wrote before, answered by a keyword rule. The answer (the
    fast path) reads nothing (the insert confirms the account and settings versions this process
    remembered), computes the reply from the cached rule set
    and inserts one row; recording it afterwards reads every settings version once more
    and no rules, stages, touchpoints or subscriptions."""
    _account, server = wechat
    _send(server, "你好", "1")  # the follower exists now, and this process's caches are warm
    with _Measured() as fast:
        reply = _send(server, "我要奶茶", "2", record=False)
    assert reply.content == "今日奶茶第二杯半价"
    print("\n".join(f"{o} | {sql[:120]}" for o, sql in fast.queries))
    _no_settings_read(fast.queries)
    inserts = [sql for _o, sql in fast.queries if sql.startswith("INSERT")]
    assert len(inserts) == 1 and 'INTO "channels_inboundmessage"' in inserts[0], inserts
    # savepoint, the message's insert, release (the test's transaction makes the savepoints): the
    # account is the one this process remembered, confirmed by the insert itself (ADR 0005) — on
    # PostgreSQL by the rows' xmin, on SQLite by their values
    assert len(fast.queries) == 3, fast.queries
    assert "interactions_touchpointsversion" in inserts[0], inserts[0]
    if connection.vendor == "postgresql":
        assert "xmin" in inserts[0], inserts[0]
    else:
        assert '"channels_wechataccount"."token" IS' in inserts[0], inserts[0]

    with _Measured() as slow:
        assert services.record_pending(older_than=dt.timedelta(0)) == {"recorded": 1}
    print("\n".join(f"{o} | {sql[:120]}" for o, sql in slow.queries))
    _no_settings_read(slow.queries)
    # Loyalty's and engagement's hooks are counted apart (their owners tune them); the rest measured
    # 24 before ADR 0015 (savepoints included, as a test's transaction makes them), with the reply.
    ours = [o for o, _sql in slow.queries if not o.startswith(("loyalty/", "engagement/"))]
    assert len(ours) == 16, ours


def test_stage_rule_edited_elsewhere_is_seen_by_the_next_message(ws, wechat):
    _account, server = wechat
    _send(server, "你好", "1", openid="oFirst")
    assert Member.objects.get(workspace=ws, identities__value="oFirst").stage.key == "aware"
    rule = StageRule.objects.get(workspace=ws, interaction_type="message")
    # Another process changes the rule: the row and its version row, in one transaction.
    StageRule.objects.filter(pk=rule.pk).update(enabled=False)
    LifecycleVersion.objects.filter(workspace=ws).update(version=cache.new_version())
    _send(server, "你好", "2", openid="oSecond")
    assert Member.objects.get(workspace=ws, identities__value="oSecond").stage_id is None
    # And back through the service, which bumps the version itself.
    lifecycle.save_rule(ws, {"enabled": True}, rule_id=rule.pk, actor="t")
    _send(server, "你好", "3", openid="oThird")
    assert Member.objects.get(workspace=ws, identities__value="oThird").stage.key == "aware"


def test_the_cache_is_real_an_unversioned_change_is_not_seen(ws, wechat):
    """The control: without a version change this process keeps its copy (so the tests above prove
    the version, not a fresh read, carries the change) — until the local cache is dropped."""
    _account, server = wechat
    _send(server, "你好", "1", openid="oFirst")
    StageRule.objects.filter(workspace=ws, interaction_type="message").update(enabled=False)  # no version bump
    _send(server, "你好", "2", openid="oSecond")
    assert Member.objects.get(workspace=ws, identities__value="oSecond").stage.key == "aware"
    lifecycle._pipeline_cache.clear()  # as a freshly started process
    _send(server, "你好", "3", openid="oThird")
    assert Member.objects.get(workspace=ws, identities__value="oThird").stage_id is None


def test_subscriptions_edited_elsewhere_are_seen_by_the_next_message(ws, wechat):
    _account, server = wechat
    _send(server, "你好", "1")
    assert WebhookDelivery.objects.count() == 0
    sub = outbound.create_subscription(ws, "crm", "https://crm.example.com/hook", ["interaction.created"], actor="t")
    _send(server, "你好", "2")
    assert WebhookDelivery.objects.filter(subscription=sub).count() == 1
    # Another process deactivates it (row and version row together): no more deliveries.
    WebhookSubscription.objects.filter(pk=sub.pk).update(active=False)
    SubscriptionsVersion.objects.filter(workspace=ws).update(version=cache.new_version())
    _send(server, "你好", "3")
    assert WebhookDelivery.objects.filter(subscription=sub).count() == 1
    outbound.update_subscription(ws, sub.pk, active=True, actor="t")
    _send(server, "你好", "4")
    assert WebhookDelivery.objects.filter(subscription=sub).count() == 2
    outbound.delete_subscription(ws, sub.pk, actor="t")
    _send(server, "你好", "5")
    assert WebhookDelivery.objects.count() == 0  # deleted with its deliveries, and none new


def test_a_new_touchpoint_is_known_to_the_next_batch(ws):
    event = {"identities": [{"kind": "phone", "value": "13800138000"}], "type": "visit", "channel": "store",
             "occurred_at": "2026-06-01T10:00:00+08:00"}
    interactions.ingest_batch(ws, [{**event, "external_id": "v1"}])  # caches the (empty) touchpoint map
    interactions.save_touchpoint(ws, "xihu", {"name": "西湖店", "channel": "store"}, actor="t")
    [result] = interactions.ingest_batch(ws, [{**event, "external_id": "v2", "touchpoint": "xihu"}])
    assert result.status == "created"
    assert Interaction.objects.get(pk=result.id).touchpoint.code == "xihu"
    assert TouchpointsVersion.objects.filter(workspace=ws).exists()


def test_keyword_rule_added_elsewhere_answers_the_next_message(ws, wechat):
    _account, server = wechat
    assert _send(server, "我要红茶", "1").content == "收到"
    conversations.create_rule(ws, {**RULE, "name": "红茶", "patterns": ["红茶"], "reply": "红茶上新"},
                              actor="t")
    assert _send(server, "我要红茶", "2").content == "红茶上新"


def test_a_write_inside_a_scope_is_seen_by_a_later_read_in_it(ws):
    with cache.scope():
        before = cache.version("lifecycle", ws.pk)
        lifecycle.bump_version(ws)
        after = cache.version("lifecycle", ws.pk)
    assert before != after and after == LifecycleVersion.objects.get(workspace=ws).version


def test_a_workspace_id_used_again_never_meets_old_entries(ws):
    """SQLite reuses the id of a rolled-back workspace; the creation time goes with the version."""
    lifecycle._pipeline_cache._data[ws.pk] = ((None, None), ([], {}))
    rules, _positions = lifecycle.pipeline(ws)
    assert rules  # the defaults, not the planted entry


def test_admin_edits_change_the_versions(ws):
    from django.contrib import admin as django_admin

    from shequn.interactions.admin import TouchpointAdmin
    from shequn.interactions.models import Touchpoint
    from shequn.lifecycle.admin import StageRuleAdmin

    rule = StageRule.objects.filter(workspace=ws).first()
    before = LifecycleVersion.objects.get(workspace=ws).version
    rule.enabled = False
    StageRuleAdmin(StageRule, django_admin.site).save_model(None, rule, None, True)
    assert LifecycleVersion.objects.get(workspace=ws).version != before
    tp = Touchpoint(workspace=ws, code="counter", name="收银台", channel="store")
    TouchpointAdmin(Touchpoint, django_admin.site).save_model(None, tp, None, False)
    assert interactions.touchpoint_ids(ws) == {"counter": tp.pk}
    TouchpointAdmin(Touchpoint, django_admin.site).delete_queryset(None, Touchpoint.objects.filter(pk=tp.pk))
    assert interactions.touchpoint_ids(ws) == {}


def test_the_account_of_a_message_is_the_account_with_its_versions(ws, wechat):
    """account_for_message reads what account_by_endpoint_key and cache.versions read, in one query:
    every field the same (converted as the ORM converts it), the workspace attached, the scope primed."""
    from shequn.channels import queries

    account, _server = wechat
    expected = queries.account_by_endpoint_key(account.endpoint_key)
    with cache.scope():
        with CaptureQueriesContext(connection) as one:
            got = queries.account_for_message(account.endpoint_key)
            primed = cache.versions(ws.pk)
        assert len(one.captured_queries) == 1
    fresh = cache.versions(ws.pk)
    assert primed == fresh
    for field in type(expected)._meta.concrete_fields:
        assert getattr(got, field.attname) == getattr(expected, field.attname), field.attname
    for field in type(ws)._meta.concrete_fields:
        assert getattr(got.workspace, field.attname) == getattr(expected.workspace, field.attname), field.attname
    assert got.credentials() == expected.credentials()
    assert queries.account_for_message("no-such-key") is None and queries.account_for_message("") is None


def test_the_account_alone_reads_no_versions(ws, wechat):
    from shequn.channels import queries

    account, _server = wechat
    with cache.scope(), CaptureQueriesContext(connection) as seen:
        got = queries.account_for_message(account.endpoint_key, with_versions=False)
        assert got.pk == account.pk and got.workspace.pk == ws.pk
        cache.versions(ws.pk)  # not primed: read now
    assert len(seen.captured_queries) == 2 and "touchpointsversion" not in seen.captured_queries[0]["sql"]
