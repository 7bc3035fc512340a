"""Workspace B's key can neither see nor change workspace A's rows, through any endpoint.

The routes are read from the ninja API itself: a new route that takes an id or a code, or a new list
route, makes ``test_every_route_has_a_case`` fail until a case is written for it here."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from shequn.api.root import api as ninja_api
from shequn.core import services as core
from shequn.core.models import ApiKey, AuditEntry, Workspace
from shequn.interactions import services as interactions
from shequn.interactions.models import Interaction, Touchpoint, TouchpointDay
from shequn.lifecycle import services as lifecycle
from shequn.lifecycle.models import StageChange, StageRule
from shequn.members import services as members
from shequn.members.models import (
    AttributeDefinition,
    Identity,
    Keyword,
    Member,
    MemberKeyword,
    MemberTag,
    MergeRecord,
    Subscription,
    Tag,
)

from .helpers import ApiClient, error_code, make_client

MARK = "asecret"  # every name, code and value of workspace A contains it
MISSING = 987_654_321


@dataclass
class World:
    a: Workspace
    b: Workspace
    b_client: ApiClient
    member: Member
    merge: MergeRecord
    rule: StageRule
    touchpoint: Touchpoint
    a_key: ApiKey


@pytest.fixture
def world(ws, other_ws, t0) -> World:
    a, b = ws, other_ws
    members.define_attribute(a, f"{MARK}_attr", "A", "text", actor="t")
    member = members.upsert_member(a, [{"kind": "wechat_openid", "value": f"{MARK}-openid", "namespace": "wxA"}],
                                   {"display_name": f"{MARK}-member"}, {f"{MARK}_attr": "x"}).member
    other = members.upsert_member(a, [{"kind": "email", "value": f"{MARK}@example.com"}]).member
    members.add_tags(a, member.pk, [f"{MARK}-tag"], actor="t")
    members.add_tags(a, other.pk, [f"{MARK}-tag2"], actor="t")
    members.add_keywords(a, member.pk, [f"{MARK}-kw/leaf"], actor="t")
    members.set_subscription(a, member.pk, "category", "marketing", True, actor="t")
    touchpoint = interactions.save_touchpoint(a, f"{MARK}-tp", {"name": f"{MARK} counter", "channel": "store"}, actor="t")
    interactions.ingest(a, {"member_id": member.pk, "type": "purchase", "channel": "store", "touchpoint": touchpoint.code,
                            "amount": "10", "occurred_at": t0.isoformat(), "source": "pos", "external_id": f"{MARK}-1"})
    lifecycle.set_stage(a, member.pk, "using", actor="t")
    merge = members.merge_members(a, member.pk, other.pk, reason=f"{MARK} merge", actor="t")
    rule = lifecycle.save_rule(a, {"name": f"{MARK}-rule", "interaction_type": "visit", "target_stage": "aware"}, actor="t")
    a_key, _ = core.create_api_key(a, f"{MARK}-key")

    # B has rows of its own, so that its lists are not trivially empty.
    b_member = members.upsert_member(b, [{"kind": "phone", "value": "13700137000"}], {"display_name": "B member"}).member
    members.add_tags(b, b_member.pk, ["b-tag"], actor="t")
    interactions.ingest(b, {"member_id": b_member.pk, "type": "visit", "channel": "store",
                            "occurred_at": t0.isoformat()})
    return World(a=a, b=b, b_client=make_client(b, "owner"), member=member, merge=merge, rule=rule,
                 touchpoint=touchpoint, a_key=a_key)


SNAPSHOT_MODELS = [Member, Identity, Tag, MemberTag, Keyword, MemberKeyword, Subscription, MergeRecord,
                   AttributeDefinition, Touchpoint, TouchpointDay, Interaction, StageChange, StageRule, ApiKey,
                   AuditEntry]


def snapshot(workspace: Workspace) -> dict[str, Any]:
    return {m.__name__: json.dumps(list(m.objects.filter(workspace=workspace).order_by("pk").values()),
                                   default=str, sort_keys=True)
            for m in SNAPSHOT_MODELS}


# --------------------------------------------------------------------------------------------- routes

# (method, path) -> a function of the world giving (url with A's id, JSON body or None, query or None).
Request = tuple[str, Any, dict[str, Any] | None]
ID_CASES: dict[tuple[str, str], Callable[[World, Any], Request]] = {
    ("get", "/api/v1/members/{member_id}"): lambda w, i: (f"/api/v1/members/{i}", None, None),
    ("patch", "/api/v1/members/{member_id}"): lambda w, i: (f"/api/v1/members/{i}", {"city": "B"}, None),
    ("post", "/api/v1/members/{member_id}/identities"):
        lambda w, i: (f"/api/v1/members/{i}/identities", {"kind": "phone", "value": "13600136000"}, None),
    ("post", "/api/v1/members/{member_id}/tags"): lambda w, i: (f"/api/v1/members/{i}/tags", {"names": ["B"]}, None),
    ("delete", "/api/v1/members/{member_id}/tags"):
        lambda w, i: (f"/api/v1/members/{i}/tags", None, {"name": f"{MARK}-tag"}),
    ("post", "/api/v1/members/{member_id}/keywords"):
        lambda w, i: (f"/api/v1/members/{i}/keywords", {"paths": ["B/kw"]}, None),
    ("delete", "/api/v1/members/{member_id}/keywords"):
        lambda w, i: (f"/api/v1/members/{i}/keywords", None, {"path": f"{MARK}-kw/leaf"}),
    ("put", "/api/v1/members/{member_id}/subscriptions"):
        lambda w, i: (f"/api/v1/members/{i}/subscriptions",
                      {"subscriptions": [{"scope": "category", "key": "marketing", "subscribed": False}]}, None),
    ("get", "/api/v1/members/{member_id}/timeline"): lambda w, i: (f"/api/v1/members/{i}/timeline", None, None),
    ("get", "/api/v1/members/{member_id}/stage-history"):
        lambda w, i: (f"/api/v1/members/{i}/stage-history", None, None),
    ("post", "/api/v1/members/{member_id}/stage"):
        lambda w, i: (f"/api/v1/members/{i}/stage", {"stage": "advocate"}, None),
    ("post", "/api/v1/merges/{merge_id}/undo"): lambda w, i: (f"/api/v1/merges/{i}/undo", None, None),
    ("get", "/api/v1/touchpoints/{code}"): lambda w, i: (f"/api/v1/touchpoints/{i}", None, None),
    ("patch", "/api/v1/touchpoints/{code}"): lambda w, i: (f"/api/v1/touchpoints/{i}", {"name": "B"}, None),
    ("patch", "/api/v1/stage-rules/{rule_id}"): lambda w, i: (f"/api/v1/stage-rules/{i}", {"enabled": False}, None),
    ("delete", "/api/v1/stage-rules/{rule_id}"): lambda w, i: (f"/api/v1/stage-rules/{i}", None, None),
    ("post", "/api/v1/api-keys/{key_id}/revoke"): lambda w, i: (f"/api/v1/api-keys/{i}/revoke", None, None),
    # offers
    ("get", "/api/v1/offers/{offer_id}"): lambda w, i: (f"/api/v1/offers/{i}", None, None),
    ("patch", "/api/v1/offers/{offer_id}"): lambda w, i: (f"/api/v1/offers/{i}", {"name": "B"}, None),
    ("post", "/api/v1/offers/{offer_id}/issue"):
        lambda w, i: (f"/api/v1/offers/{i}/issue", {"member_ids": [], "batch_key": "B"}, None),
    ("post", "/api/v1/offers/{offer_id}/buy"):
        lambda w, i: (f"/api/v1/offers/{i}/buy", {"member_id": MISSING, "key": "B"}, None),
    ("post", "/api/v1/offers/{offer_id}/clip"): lambda w, i: (f"/api/v1/offers/{i}/clip", {"member_id": MISSING}, None),
    ("get", "/api/v1/coupons/{coupon_code}"): lambda w, i: (f"/api/v1/coupons/{i}", None, None),
    ("get", "/api/v1/coupons/{coupon_code}/qr.svg"): lambda w, i: (f"/api/v1/coupons/{i}/qr.svg", None, None),
    ("post", "/api/v1/redemptions/{redemption_id}/void"):
        lambda w, i: (f"/api/v1/redemptions/{i}/void", {"reason": "B"}, None),
    # inbox
    ("get", "/api/v1/inbox/conversations/{conversation_id}"):
        lambda w, i: (f"/api/v1/inbox/conversations/{i}", None, None),
    ("post", "/api/v1/inbox/conversations/{conversation_id}/claim"):
        lambda w, i: (f"/api/v1/inbox/conversations/{i}/claim", {"user_id": MISSING}, None),
    ("post", "/api/v1/inbox/conversations/{conversation_id}/assign"):
        lambda w, i: (f"/api/v1/inbox/conversations/{i}/assign", {}, None),
    ("post", "/api/v1/inbox/conversations/{conversation_id}/reply"):
        lambda w, i: (f"/api/v1/inbox/conversations/{i}/reply", {"text": "B"}, None),
    ("post", "/api/v1/inbox/conversations/{conversation_id}/notes"):
        lambda w, i: (f"/api/v1/inbox/conversations/{i}/notes", {"text": "B"}, None),
    ("post", "/api/v1/inbox/conversations/{conversation_id}/status"):
        lambda w, i: (f"/api/v1/inbox/conversations/{i}/status", {"status": "pending"}, None),
    ("post", "/api/v1/inbox/conversations/{conversation_id}/resolve"):
        lambda w, i: (f"/api/v1/inbox/conversations/{i}/resolve", None, None),
    ("get", "/api/v1/inbox/tickets/{ticket_id}"): lambda w, i: (f"/api/v1/inbox/tickets/{i}", None, None),
    ("patch", "/api/v1/inbox/tickets/{ticket_id}"):
        lambda w, i: (f"/api/v1/inbox/tickets/{i}", {"status": "resolved"}, None),
    # recommend
    ("get", "/api/v1/members/{member_id}/offers/recommended"):
        lambda w, i: (f"/api/v1/members/{i}/offers/recommended", None, None),
    # outbound
    ("get", "/api/v1/outbox/{message_id}"): lambda w, i: (f"/api/v1/outbox/{i}", None, None),
    ("post", "/api/v1/outbox/{message_id}/retry"): lambda w, i: (f"/api/v1/outbox/{i}/retry", None, None),
    ("get", "/api/v1/webhooks/subscriptions/{subscription_id}"):
        lambda w, i: (f"/api/v1/webhooks/subscriptions/{i}", None, None),
    ("patch", "/api/v1/webhooks/subscriptions/{subscription_id}"):
        lambda w, i: (f"/api/v1/webhooks/subscriptions/{i}", {"name": "B", "active": False, "rotate_secret": True},
                      None),
    ("delete", "/api/v1/webhooks/subscriptions/{subscription_id}"):
        lambda w, i: (f"/api/v1/webhooks/subscriptions/{i}", None, None),
    ("post", "/api/v1/webhooks/subscriptions/{subscription_id}/test"):
        lambda w, i: (f"/api/v1/webhooks/subscriptions/{i}/test", None, None),
    ("get", "/api/v1/webhooks/deliveries/{delivery_id}"):
        lambda w, i: (f"/api/v1/webhooks/deliveries/{i}", None, None),
    ("post", "/api/v1/webhooks/deliveries/{delivery_id}/replay"):
        lambda w, i: (f"/api/v1/webhooks/deliveries/{i}/replay", None, None),
    ("delete", "/api/v1/webhooks/endpoints/{endpoint_id}"):
        lambda w, i: (f"/api/v1/webhooks/endpoints/{i}", None, None),
    # channels
    ("get", "/api/v1/channel-codes/{code_id}"): lambda w, i: (f"/api/v1/channel-codes/{i}", None, None),
    ("patch", "/api/v1/channel-codes/{code_id}"):
        lambda w, i: (f"/api/v1/channel-codes/{i}", {"name": "B", "tags": ["B"], "active": False}, None),
    ("get", "/api/v1/channel-codes/{code_id}/qr.svg"): lambda w, i: (f"/api/v1/channel-codes/{i}/qr.svg", None, None),
    ("get", "/api/v1/channel-codes/{code_id}/qr.png"): lambda w, i: (f"/api/v1/channel-codes/{i}/qr.png", None, None),
    ("get", "/api/v1/channel-codes/{code_id}/stats"): lambda w, i: (f"/api/v1/channel-codes/{i}/stats", None, None),
    # bots ; `rule_id` is shared with the stage rules: see _bot_rows
    ("get", "/api/v1/bots/rules/{rule_id}"): lambda w, i: (f"/api/v1/bots/rules/{i}", None, None),
    ("patch", "/api/v1/bots/rules/{rule_id}"):
        lambda w, i: (f"/api/v1/bots/rules/{i}", {"name": "B", "enabled": False}, None),
    ("delete", "/api/v1/bots/rules/{rule_id}"): lambda w, i: (f"/api/v1/bots/rules/{i}", None, None),
    ("get", "/api/v1/bots/menus/{menu_id}"): lambda w, i: (f"/api/v1/bots/menus/{i}", None, None),
    ("patch", "/api/v1/bots/menus/{menu_id}"):
        lambda w, i: (f"/api/v1/bots/menus/{i}", {"name": "B", "enabled": False}, None),
    ("delete", "/api/v1/bots/menus/{menu_id}"): lambda w, i: (f"/api/v1/bots/menus/{i}", None, None),
    ("post", "/api/v1/bots/menus/{menu_id}/nodes"):
        lambda w, i: (f"/api/v1/bots/menus/{i}/nodes", {"key": "9", "label": "B", "action": "text", "text": "B"},
                      None),
    ("patch", "/api/v1/bots/menu-nodes/{node_id}"):
        lambda w, i: (f"/api/v1/bots/menu-nodes/{i}", {"label": "B", "text": "B"}, None),
    ("delete", "/api/v1/bots/menu-nodes/{node_id}"): lambda w, i: (f"/api/v1/bots/menu-nodes/{i}", None, None),
    ("get", "/api/v1/bots/incidents/{incident_id}"): lambda w, i: (f"/api/v1/bots/incidents/{i}", None, None),
    ("patch", "/api/v1/bots/incidents/{incident_id}"):
        lambda w, i: (f"/api/v1/bots/incidents/{i}", {"title": "B", "ends_at": None}, None),
    ("delete", "/api/v1/bots/incidents/{incident_id}"): lambda w, i: (f"/api/v1/bots/incidents/{i}", None, None),
    ("post", "/api/v1/bots/incidents/{incident_id}/end"): lambda w, i: (f"/api/v1/bots/incidents/{i}/end", None, None),
    ("post", "/api/v1/bots/incidents/{incident_id}/notify"):
        lambda w, i: (f"/api/v1/bots/incidents/{i}/notify", {"member_ids": [w.member.pk], "text": "B"}, None),
    ("get", "/api/v1/bots/incidents/{incident_id}/notifications"):
        lambda w, i: (f"/api/v1/bots/incidents/{i}/notifications", None, None),
    # loyalty and wallet; `rule_id` is shared with the stage rules: see _loyalty_rows.
    ("patch", "/api/v1/earn-rules/{rule_id}"):
        lambda w, i: (f"/api/v1/earn-rules/{i}", {"name": "B", "points": 1000, "enabled": False}, None),
    ("delete", "/api/v1/earn-rules/{rule_id}"): lambda w, i: (f"/api/v1/earn-rules/{i}", None, None),
    ("get", "/api/v1/members/{member_id}/points"): lambda w, i: (f"/api/v1/members/{i}/points", None, None),
    ("get", "/api/v1/members/{member_id}/points/history"):
        lambda w, i: (f"/api/v1/members/{i}/points/history", None, None),
    ("post", "/api/v1/members/{member_id}/points/earn"):
        lambda w, i: _keyed(w, (f"/api/v1/members/{i}/points/earn", {"amount": 5, "reason": "B"}, None)),
    ("post", "/api/v1/members/{member_id}/points/spend"):
        lambda w, i: _keyed(w, (f"/api/v1/members/{i}/points/spend", {"amount": 5, "reason": "B"}, None)),
    ("post", "/api/v1/members/{member_id}/points/adjust"):
        lambda w, i: _keyed(w, (f"/api/v1/members/{i}/points/adjust", {"amount": -5, "reason": "B"}, None)),
    ("post", "/api/v1/members/{member_id}/points/reverse"):
        lambda w, i: _keyed(w, (f"/api/v1/members/{i}/points/reverse", {"entry_id": _loyalty_rows(w)["entry"].pk},
                                None)),
    ("post", "/api/v1/members/{member_id}/points/transfer"):
        lambda w, i: _keyed(w, (f"/api/v1/members/{i}/points/transfer", {"to_member_id": w.member.pk, "amount": 5},
                                None)),
    ("get", "/api/v1/members/{member_id}/wallet"): lambda w, i: (f"/api/v1/members/{i}/wallet", None, None),
    ("post", "/api/v1/members/{member_id}/wallet/top-ups"):
        lambda w, i: _keyed(w, (f"/api/v1/members/{i}/wallet/top-ups", {"amount": 100}, None)),
    ("post", "/api/v1/members/{member_id}/wallet/payments"):
        lambda w, i: _keyed(w, (f"/api/v1/members/{i}/wallet/payments", {"amount": 100}, None)),
    ("post", "/api/v1/wallet/payments/{payment_id}/refunds"):
        lambda w, i: _keyed(w, (f"/api/v1/wallet/payments/{i}/refunds", {"amount": 100}, None)),
    # engagement
    ("patch", "/api/v1/engagement/tiers/{tier_id}"):
        lambda w, i: (f"/api/v1/engagement/tiers/{i}", {"name": "B", "min_contribution": 0}, None),
    ("delete", "/api/v1/engagement/tiers/{tier_id}"): lambda w, i: (f"/api/v1/engagement/tiers/{i}", None, None),
    ("patch", "/api/v1/engagement/badges/{badge_id}"):
        lambda w, i: (f"/api/v1/engagement/badges/{i}", {"name": "B", "threshold": 1}, None),
    ("delete", "/api/v1/engagement/badges/{badge_id}"): lambda w, i: (f"/api/v1/engagement/badges/{i}", None, None),
    ("patch", "/api/v1/engagement/tasks/{task_id}"):
        lambda w, i: (f"/api/v1/engagement/tasks/{i}", {"name": "B", "target": 1}, None),
    ("delete", "/api/v1/engagement/tasks/{task_id}"): lambda w, i: (f"/api/v1/engagement/tasks/{i}", None, None),
    ("delete", "/api/v1/engagement/levels/{number}"): lambda w, i: (f"/api/v1/engagement/levels/{i}", None, None),
    ("delete", "/api/v1/engagement/streak-rewards/{days}"):
        lambda w, i: (f"/api/v1/engagement/streak-rewards/{i}", None, None),
    ("get", "/api/v1/members/{member_id}/engagement"): lambda w, i: (f"/api/v1/members/{i}/engagement", None, None),
    ("post", "/api/v1/members/{member_id}/check-in"): lambda w, i: (f"/api/v1/members/{i}/check-in", {}, None),
    ("post", "/api/v1/members/{member_id}/tier"):
        lambda w, i: (f"/api/v1/members/{i}/tier", {"tier": _engagement_rows(w)["tier"].code}, None),
    ("get", "/api/v1/members/{member_id}/tier-changes"):
        lambda w, i: (f"/api/v1/members/{i}/tier-changes", None, None),
}

# Which of A's objects each path parameter names, and a value that names nothing at all.
A_OBJECT: dict[str, Callable[[World], Any]] = {
    "member_id": lambda w: w.member.pk,
    "merge_id": lambda w: w.merge.pk,
    "code": lambda w: w.touchpoint.code,
    "rule_id": lambda w: w.rule.pk,
    "key_id": lambda w: w.a_key.pk,
    "offer_id": lambda w: _offer_rows(w)["offer"].pk,
    "coupon_code": lambda w: _offer_rows(w)["coupon"].code,
    "redemption_id": lambda w: _offer_rows(w)["redemption"].pk,
    "conversation_id": lambda w: _inbox_rows(w)["conversation"].pk,
    "ticket_id": lambda w: _inbox_rows(w)["ticket"].pk,
    "message_id": lambda w: _outbound_rows(w)["message"].pk,
    "subscription_id": lambda w: _outbound_rows(w)["subscription"].pk,
    "delivery_id": lambda w: _outbound_rows(w)["delivery"].pk,
    "endpoint_id": lambda w: _outbound_rows(w)["endpoint"].pk,
    "code_id": lambda w: _channel_rows(w)["code"].pk,
    "menu_id": lambda w: _bot_rows(w)["menu"].pk,
    "node_id": lambda w: _bot_rows(w)["node"].pk,
    "incident_id": lambda w: _bot_rows(w)["incident"].pk,
    "payment_id": lambda w: _loyalty_rows(w)["payment"].pk,
    "tier_id": lambda w: _engagement_rows(w)["tier"].pk,
    "badge_id": lambda w: _engagement_rows(w)["badge"].pk,
    "task_id": lambda w: _engagement_rows(w)["task"].pk,
    "number": lambda w: _engagement_rows(w)["level"].number,
    "days": lambda w: _engagement_rows(w)["reward"].days,
}
NOTHING: dict[str, Any] = {"member_id": MISSING, "merge_id": MISSING, "code": "no-such-code", "rule_id": MISSING,
                           "key_id": MISSING, "offer_id": MISSING, "coupon_code": "ZZZZZZZZZZZZ",
                           "redemption_id": MISSING, "conversation_id": MISSING, "ticket_id": MISSING}
NOTHING.update({"message_id": MISSING, "subscription_id": MISSING, "delivery_id": MISSING, "endpoint_id": MISSING,
                "code_id": MISSING, "menu_id": MISSING, "node_id": MISSING, "incident_id": MISSING})
NOTHING.update({"payment_id": MISSING, "tier_id": MISSING, "badge_id": MISSING, "task_id": MISSING, "number": 999,
                "days": 999})

# List routes and the ids of A's rows they must never show (read from the answer's JSON).
LIST_CASES: dict[str, Callable[[World], set[Any]]] = {
    "/api/v1/workspace": lambda w: {w.a.slug},
    "/api/v1/members": lambda w: set(Member.objects.filter(workspace=w.a).values_list("pk", flat=True)),
    "/api/v1/members/lookup": lambda w: {w.member.pk},
    "/api/v1/merges": lambda w: {w.merge.pk},
    "/api/v1/tags": lambda w: set(Tag.objects.filter(workspace=w.a).values_list("pk", flat=True)),
    "/api/v1/keywords": lambda w: set(Keyword.objects.filter(workspace=w.a).values_list("pk", flat=True)),
    "/api/v1/attributes": lambda w: set(AttributeDefinition.objects.filter(workspace=w.a).values_list("pk", flat=True)),
    "/api/v1/interactions": lambda w: set(Interaction.objects.filter(workspace=w.a).values_list("pk", flat=True)),
    "/api/v1/touchpoints": lambda w: {w.touchpoint.pk, w.touchpoint.code},
    "/api/v1/touchpoints/map": lambda w: {w.touchpoint.code},
    "/api/v1/stages": lambda w: set(w.a.stages.values_list("pk", flat=True)),
    "/api/v1/stage-rules": lambda w: set(StageRule.objects.filter(workspace=w.a).values_list("pk", flat=True)),
    "/api/v1/api-keys": lambda w: set(ApiKey.objects.filter(workspace=w.a).values_list("pk", flat=True)),
    "/api/v1/offers": lambda w: {_offer_rows(w)["offer"].pk},
    "/api/v1/offers/report": lambda w: {_offer_rows(w)["offer"].pk},
    "/api/v1/coupons": lambda w: {_offer_rows(w)["coupon"].pk, _offer_rows(w)["coupon"].code},
    "/api/v1/redemptions": lambda w: {_offer_rows(w)["redemption"].pk},
    "/api/v1/stores": lambda w: {_offer_rows(w)["store"].pk, _offer_rows(w)["store"].code},
    "/api/v1/inbox/version": lambda w: {w.a.pk},
    "/api/v1/inbox/conversations": lambda w: {_inbox_rows(w)["conversation"].pk},
    "/api/v1/inbox/tickets": lambda w: {_inbox_rows(w)["ticket"].pk},
    "/api/v1/inbox/teams": lambda w: {_inbox_rows(w)["team"].pk},
    "/api/v1/inbox/canned-replies": lambda w: {_inbox_rows(w)["canned"].pk},
    "/api/v1/outbox": lambda w: {_outbound_rows(w)["message"].pk},
    "/api/v1/webhooks/subscriptions": lambda w: {_outbound_rows(w)["subscription"].pk},
    "/api/v1/webhooks/deliveries": lambda w: {_outbound_rows(w)["delivery"].pk},
    "/api/v1/webhooks/endpoints": lambda w: {_outbound_rows(w)["endpoint"].pk},
    "/api/v1/channels/wechat-accounts": lambda w: {_channel_rows(w)["account"].pk},
    "/api/v1/channel-codes": lambda w: {_channel_rows(w)["code"].pk},
    "/api/v1/bots/rules": lambda w: {_bot_rows(w)["rule"].pk},
    "/api/v1/bots/menus": lambda w: {_bot_rows(w)["menu"].pk},
    "/api/v1/bots/incidents": lambda w: {_bot_rows(w)["incident"].pk},
    # loyalty, wallet and engagement: both workspaces have the default point types and levels, so only
    # A's own codes and ids are looked for; A's names all contain MARK.
    "/api/v1/point-types": lambda w: {_loyalty_rows(w)["point_type"].code},
    "/api/v1/earn-rules": lambda w: {_loyalty_rows(w)["rule"].pk},
    "/api/v1/loyalty/liability": lambda w: {_loyalty_rows(w)["point_type"].code},
    "/api/v1/wallet/liability": lambda w: {w.a.pk, w.a.slug},  # figures only: see test_b_reports_count_only_b
    "/api/v1/engagement/programme": lambda w: {w.a.pk, w.a.slug},  # A's check-in point type is MARK-named
    "/api/v1/engagement/tiers": lambda w: {_engagement_rows(w)["tier"].pk, _engagement_rows(w)["tier"].code},
    "/api/v1/engagement/badges": lambda w: {_engagement_rows(w)["badge"].pk, _engagement_rows(w)["badge"].code},
    "/api/v1/engagement/tasks": lambda w: {_engagement_rows(w)["task"].pk, _engagement_rows(w)["task"].code},
    "/api/v1/engagement/levels": lambda w: {_engagement_rows(w)["level"].pk},  # A's level name is MARK-named
    "/api/v1/engagement/streak-rewards": lambda w: {_engagement_rows(w)["reward"].pk},  # its badge is A's
}
# Query strings that point list routes at A's rows.
LIST_QUERIES: dict[str, Callable[[World], dict[str, Any]]] = {
    "/api/v1/members": lambda w: {"q": f"{MARK}-openid", "tag": f"{MARK}-tag"},
    "/api/v1/members/lookup": lambda w: {"kind": "wechat_openid", "value": f"{MARK}-openid", "namespace": "wxA"},
    "/api/v1/merges": lambda w: {"member_id": w.member.pk},
    "/api/v1/interactions": lambda w: {"member_id": w.member.pk},
    # A's offer rows exist before B asks (created without services, so no audit entry in A's snapshot).
    "/api/v1/offers": lambda w: _offer_rows(w) and {},
    "/api/v1/offers/report": lambda w: _offer_rows(w) and {},
    "/api/v1/coupons": lambda w: _offer_rows(w) and {"member_id": w.member.pk},
    "/api/v1/redemptions": lambda w: _offer_rows(w) and {"member_id": w.member.pk},
    "/api/v1/stores": lambda w: _offer_rows(w) and {},
    # A's inbox rows exist before B asks (made without services: no audit entry in A's snapshot).
    "/api/v1/inbox/conversations": lambda w: _inbox_rows(w) and {"view": "all"},
    "/api/v1/inbox/tickets": lambda w: _inbox_rows(w) and {"status": "any"},
    "/api/v1/inbox/teams": lambda w: _inbox_rows(w) and {},
    "/api/v1/inbox/canned-replies": lambda w: _inbox_rows(w) and {},
    # A's outbound, channel and bot rows exist before B asks (made for every world: see _new_features_of_a).
    "/api/v1/outbox": lambda w: {"member_id": w.member.pk},
    "/api/v1/webhooks/deliveries": lambda w: {"subscription_id": _outbound_rows(w)["subscription"].pk},
    "/api/v1/channel-codes": lambda w: {"account_id": _channel_rows(w)["account"].pk},
}


def _schema_routes() -> set[tuple[str, str]]:
    doc = ninja_api.get_openapi_schema(path_prefix="/api/")
    return {(method, path) for path, ops in doc["paths"].items() for method in ops}


def _url_routes() -> set[str]:
    """Paths of api.urls that take a parameter (the catch-all for unknown routes aside)."""
    patterns, _app, _ns = ninja_api.urls
    out = set()
    for p in patterns:
        route = str(p.pattern)
        if "<" in route and route != "<path:rest>":
            out.add("/api/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))
    return out


def test_every_route_has_a_case():
    routes = _schema_routes()
    id_routes = {r for r in routes if "{" in r[1]}
    assert set(ID_CASES) | set(KEY_CASES) == id_routes
    assert {path for _m, path in [*ID_CASES, *KEY_CASES]} == _url_routes()
    list_routes = {path for method, path in routes if method == "get" and "{" not in path}
    assert set(LIST_CASES) == list_routes
    for _method, path in ID_CASES:
        [param] = re.findall(r"{(\w+)}", path)
        assert param in A_OBJECT and param in NOTHING


def _send(client: ApiClient, method: str, url: str, body: Any, query: dict[str, Any] | None):
    if query:
        from urllib.parse import urlencode

        url = f"{url}?{urlencode(query, doseq=True)}"
    if method in ("get", "delete"):
        return getattr(client.client, method)(url)
    return getattr(client, method)(url, body if body is not None else {})


@pytest.mark.parametrize("route", sorted(ID_CASES), ids=lambda r: f"{r[0].upper()} {r[1]}")
def test_b_cannot_reach_a_by_id(world, route):
    method, path = route
    [param] = re.findall(r"{(\w+)}", path)
    before = snapshot(world.a)

    a_value = A_OBJECT[param](world)
    url, body, query = ID_CASES[route](world, a_value)
    r = _send(world.b_client, method, url, body, query)
    assert r.status_code == 404, (route, r.content)
    assert error_code(r) == "not_found"

    # Exactly like an id that does not exist at all: same status, same answer but for the id sent.
    url, body, query = ID_CASES[route](world, NOTHING[param])
    missing = _send(world.b_client, method, url, body, query)
    assert missing.status_code == 404
    seen, expected = r.json()["error"], missing.json()["error"]
    assert seen["message"].replace(str(a_value), "?") == expected["message"].replace(str(NOTHING[param]), "?")
    assert (seen["code"], seen["details"]) == (expected["code"], expected["details"])

    assert snapshot(world.a) == before


@pytest.mark.parametrize("path", sorted(LIST_CASES))
def test_b_lists_never_show_a(world, path):
    query = LIST_QUERIES.get(path, lambda w: {})(world)
    r = world.b_client.get(path, query)
    assert r.status_code in (200, 404), r.content
    text = r.content.decode()
    assert MARK not in text
    forbidden = LIST_CASES[path](world)
    assert forbidden  # the case must look for something
    shown = _ids(r.json())
    assert not (shown & forbidden), (path, shown & forbidden)
    if path in ("/api/v1/members", "/api/v1/interactions", "/api/v1/tags"):
        assert world.b_client.get(path).json()["items"], "B sees its own rows"


def _ids(data: Any) -> set[Any]:
    """Every ``id``, ``code`` and ``slug`` anywhere in a JSON answer."""
    out: set[Any] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            if key in ("id", "code", "slug"):
                out.add(value)
            out |= _ids(value)
    elif isinstance(data, list):
        for item in data:
            out |= _ids(item)
    return out


# --------------------------------------------------------------------------------------------- ids in bodies


def test_merge_with_a_member_of_a(world):
    before = snapshot(world.a)
    b_member = Member.objects.filter(workspace=world.b).first()
    for survivor, absorbed in [(world.member.pk, b_member.pk), (b_member.pk, world.member.pk),
                               (world.member.pk, world.merge.absorbed_id)]:
        r = world.b_client.post("/api/v1/members/merge", {"survivor_id": survivor, "absorbed_id": absorbed,
                                                          "reason": "B"})
        assert r.status_code == 404 and error_code(r) == "not_found"
    assert snapshot(world.a) == before


def test_interactions_for_a_member_of_a(world, t0):
    before = snapshot(world.a)
    event = {"member_id": world.member.pk, "type": "visit", "channel": "store", "occurred_at": t0.isoformat()}
    r = world.b_client.post("/api/v1/interactions", event)
    missing = world.b_client.post("/api/v1/interactions", {**event, "member_id": MISSING})
    assert r.status_code == missing.status_code == 422
    assert error_code(r) == error_code(missing) == "unknown_member"
    r = world.b_client.post("/api/v1/interactions/batch", {"events": [event]})
    assert r.json()["results"][0]["error"]["code"] == "unknown_member"
    # The same (source, external_id) as A's stored event is a new event in B, not A's duplicate.
    r = world.b_client.post("/api/v1/interactions", {
        "identities": [{"kind": "phone", "value": "13700137000"}], "type": "purchase", "channel": "store",
        "occurred_at": t0.isoformat(), "source": "pos", "external_id": f"{MARK}-1"})
    assert r.status_code == 201 and r.json()["duplicate"] is False
    assert snapshot(world.a) == before


def test_upsert_with_an_identity_of_a_creates_in_b(world):
    before = snapshot(world.a)
    r = world.b_client.post("/api/v1/members", {"identities": [
        {"kind": "wechat_openid", "value": f"{MARK}-openid", "namespace": "wxA"}], "tags": ["B"]})
    assert r.status_code == 201 and r.json()["created"] is True
    assert Member.objects.get(pk=r.json()["member"]["id"]).workspace_id == world.b.pk
    assert r.json()["member"]["id"] != world.member.pk
    assert snapshot(world.a) == before


def test_stage_rule_cannot_use_a_touchpoint_of_a(world):
    r = world.b_client.post("/api/v1/stage-rules", {"name": "B", "interaction_type": "visit", "target_stage": "aware",
                                                    "touchpoint": world.touchpoint.code})
    assert r.status_code == 422 and error_code(r) == "unknown_touchpoint"
    r = world.b_client.post("/api/v1/interactions", {
        "identities": [{"kind": "phone", "value": "13700137000"}], "type": "visit", "channel": "store",
        "touchpoint": world.touchpoint.code, "occurred_at": "2026-06-01T10:00:00+08:00"})
    assert r.status_code == 422 and error_code(r) == "unknown_touchpoint"


def test_a_session_user_of_b_only_sees_b(world):
    from django.test import Client

    user = core.ensure_user("b-staff", "pw-long-enough-3")
    core.add_staff(world.b, user, "owner")
    client = Client()
    client.force_login(user)
    r = client.get(f"/api/v1/members/{world.member.pk}", headers={"X-Shequn-Workspace": world.b.slug})
    assert r.status_code == 404 and error_code(r) == "not_found"
    r = client.get(f"/api/v1/members/{world.member.pk}", headers={"X-Shequn-Workspace": world.a.slug})
    assert r.status_code == 404 and error_code(r) == "not_found"  # not a member of A's staff


def _offer_rows(w: World) -> dict[str, Any]:
    """Workspace A's store, offer, coupon and redemption (offers), made once per world."""
    rows = getattr(w, "_offer_rows", None)
    if rows is None:
        import datetime as dt

        from shequn.offers.models import Coupon, Offer, Redemption, Store

        at = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
        store = Store.objects.create(workspace=w.a, code=f"{MARK}-store", name=f"{MARK} store")
        offer = Offer.objects.create(workspace=w.a, name=f"{MARK}-offer", kind="gift", gift_item=f"{MARK}-gift")
        coupon = Coupon.objects.create(workspace=w.a, offer=offer, member=w.member, code="ABCDEFGHJKMN", uses=1,
                                       status="redeemed", source="manual", issue_key=f"{MARK}-k", actor="t",
                                       issued_at=at)
        redemption = Redemption.objects.create(workspace=w.a, coupon=coupon, offer=offer, member_id=w.member.pk,
                                               store=store, actor="t", key=f"{MARK}-r", at=at)
        rows = {"store": store, "offer": offer, "coupon": coupon, "redemption": redemption}
        w._offer_rows = rows  # type: ignore[attr-defined]
    return rows


def _inbox_rows(w: World) -> dict[str, Any]:
    """Workspace A's team, canned reply, conversation and ticket (inbox), made once per world."""
    rows = getattr(w, "_inbox_rows", None)
    if rows is None:
        import datetime as dt

        from shequn.inbox.models import CannedReply, Conversation, Team, Ticket

        at = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
        team = Team.objects.create(workspace=w.a, name=f"{MARK}-team")
        canned = CannedReply.objects.create(workspace=w.a, shortcut=f"{MARK}", title=f"{MARK}", text=f"{MARK} text")
        conv = Conversation.objects.create(workspace=w.a, member=w.member, channel="wechat", needs_human=True,
                                           preview=f"{MARK} message", opened_at=at, last_message_at=at, team=team)
        ticket = Ticket.objects.create(workspace=w.a, title=f"{MARK}-ticket", conversation=conv, member=w.member,
                                       created_by="t", created_at=at, first_response_minutes=60,
                                       resolution_minutes=600, first_response_due=at, resolution_due=at, team=team)
        rows = {"team": team, "canned": canned, "conversation": conv, "ticket": ticket}
        w._inbox_rows = rows  # type: ignore[attr-defined]
    return rows


def _outbound_rows(w: World) -> dict[str, Any]:
    """Workspace A's outbound message, webhook subscription, delivery and inbound endpoint (outbound)."""
    rows = getattr(w, "_outbound_rows", None)
    if rows is None:
        import datetime as dt

        from shequn.outbound.models import (
            DeliveryAttempt,
            MessageAttempt,
            OutboundMessage,
            WebhookDelivery,
            WebhookEndpoint,
            WebhookSubscription,
        )

        at = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
        message = OutboundMessage.objects.create(workspace=w.a, member=w.member, channel="email",
                                                 recipient=f"{MARK}@example.com", kind="text", purpose="operator",
                                                 payload={"text": f"{MARK} text"}, status="failed", attempts=1,
                                                 last_error=f"{MARK} error", key=f"{MARK}-msg", actor="t")
        MessageAttempt.objects.create(workspace=w.a, message=message, at=at, ok=False, error=f"{MARK} error")
        subscription = WebhookSubscription.objects.create(workspace=w.a, name=f"{MARK}-sub",
                                                          url=f"https://{MARK}.example.com/hook",
                                                          secret=f"{MARK}-secret", events=["*"])
        delivery = WebhookDelivery.objects.create(workspace=w.a, subscription=subscription, event="webhook.test",
                                                  event_id=f"{MARK}-event", payload={"data": MARK}, status="failed",
                                                  attempts=1, last_error=f"{MARK} error")
        DeliveryAttempt.objects.create(workspace=w.a, delivery=delivery, at=at, ok=False, error=f"{MARK} error")
        endpoint = WebhookEndpoint.objects.create(workspace=w.a, name=f"{MARK}-endpoint", key=f"{MARK}-endpoint-key",
                                                  secret=f"{MARK}-secret", source=f"webhook:{MARK}")
        rows = {"message": message, "subscription": subscription, "delivery": delivery, "endpoint": endpoint}
        w._outbound_rows = rows  # type: ignore[attr-defined]
    return rows


def _channel_rows(w: World) -> dict[str, Any]:
    """Workspace A's WeChat account and channel code with a scanner and a day of stats (channels)."""
    rows = getattr(w, "_channel_rows", None)
    if rows is None:
        import datetime as dt

        from shequn.channels.models import ChannelCode, ChannelCodeDay, ChannelCodeMember, WeChatAccount

        at = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
        account = WeChatAccount.objects.create(workspace=w.a, app_id=f"wx{MARK}0001", app_secret=f"{MARK}-app-secret",
                                               token=f"{MARK}token", mode="plaintext", endpoint_key=f"{MARK}-wx-key",
                                               welcome_text=f"{MARK} welcome")
        code = ChannelCode.objects.create(workspace=w.a, account=account, kind="store", name=f"{MARK}-code",
                                          scene=f"{MARK}-scene", welcome_text=f"{MARK} hello", tags=[f"{MARK}-tag"],
                                          ticket=f"{MARK}-ticket", url=f"http://weixin.qq.com/q/{MARK}", created_by="t")
        ChannelCodeMember.objects.create(workspace=w.a, code=code, member=w.member, first_scan_at=at, last_scan_at=at,
                                         scans=1, followed_at=at)
        ChannelCodeDay.objects.create(workspace=w.a, code=code, day=at.date(), scans=1, scanners=1, follows=1)
        rows = {"account": account, "code": code}
        w._channel_rows = rows  # type: ignore[attr-defined]
    return rows


def _bot_rows(w: World) -> dict[str, Any]:
    """Workspace A's auto-reply rule, menu with an option, incident and notification (bots)."""
    rows = getattr(w, "_bot_rows", None)
    if rows is None:
        import datetime as dt

        from shequn.conversations.models import AutoReplyRule, Incident, IncidentNotification, Menu, MenuNode

        at = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
        # The path parameter `rule_id` names a stage rule too, and A_OBJECT["rule_id"] is w.rule.pk: A's bot
        # rule takes the same primary key, so that B's answer for it can be compared with a missing id's.
        rule = AutoReplyRule.objects.create(pk=w.rule.pk, workspace=w.a, name=f"{MARK}-rule", match_type="contains",
                                            patterns=[MARK], reply={"type": "text", "content": f"{MARK} reply"},
                                            tag=f"{MARK}-tag")
        menu = Menu.objects.create(workspace=w.a, name=f"{MARK}-menu", triggers=[MARK], prompt=f"{MARK} prompt")
        node = MenuNode.objects.create(workspace=w.a, menu=menu, key="1", label=f"{MARK}-option", action="text",
                                       text=f"{MARK} answer")
        incident = Incident.objects.create(workspace=w.a, title=f"{MARK}-incident", keywords=[MARK],
                                           reply=f"{MARK} reply", starts_at=at)
        IncidentNotification.objects.create(workspace=w.a, incident=incident, target={"member_ids": [w.member.pk]},
                                            text=f"{MARK} notice", total=1, created_by="t")
        rows = {"rule": rule, "menu": menu, "node": node, "incident": incident}
        w._bot_rows = rows  # type: ignore[attr-defined]
    return rows


def _new_feature_models() -> list[type]:
    from django.apps import apps

    from shequn.channels.models import ChannelCode, ChannelCodeDay, ChannelCodeMember, WeChatAccount
    from shequn.conversations.models import AutoReplyRule, Incident, IncidentNotification, Menu, MenuNode
    from shequn.outbound.models import (
        DeliveryAttempt,
        MessageAttempt,
        OutboundMessage,
        WebhookDelivery,
        WebhookEndpoint,
        WebhookSubscription,
    )

    ledgers = [m for label in ("loyalty", "wallet", "engagement") for m in apps.get_app_config(label).get_models()
               if any(f.name == "workspace" for f in m._meta.get_fields())]
    return [OutboundMessage, MessageAttempt, WebhookSubscription, WebhookDelivery, DeliveryAttempt, WebhookEndpoint,
            WeChatAccount, ChannelCode, ChannelCodeMember, ChannelCodeDay, AutoReplyRule, Menu, MenuNode, Incident,
            IncidentNotification, *ledgers]


# The tables of these features are part of A's snapshot: B's requests must not change them either.
SNAPSHOT_MODELS.extend(m for m in _new_feature_models() if m not in SNAPSHOT_MODELS)


@pytest.fixture(autouse=True)
def _new_features_of_a(request):
    """A's rows of the features above exist before any snapshot of A is taken (unlike _offer_rows and
    _inbox_rows, which are made on first use and whose tables are not in the snapshot)."""
    if "world" in request.fixturenames:
        w = request.getfixturevalue("world")
        _outbound_rows(w)
        _channel_rows(w)
        _bot_rows(w)
        _loyalty_rows(w)
        _engagement_rows(w)



def _keyed(w: World, request: Request) -> Request:
    """B sends an ``Idempotency-Key`` from now on: the ledger routes refuse a write without one, and
    must be seen answering for the id in the path."""
    w.b_client.client.defaults["HTTP_IDEMPOTENCY_KEY"] = "b-key-1"
    return request


A_LEVEL = 77  # a level number and a streak length that only workspace A has
A_STREAK_DAYS = 77


def _loyalty_rows(w: World) -> dict[str, Any]:
    """Workspace A's point type, earn rule, points of w.member and stored value (loyalty + wallet)."""
    rows = getattr(w, "_loyalty_rows", None)
    if rows is None:
        from shequn.loyalty import services as loyalty
        from shequn.loyalty.models import EarnRule
        from shequn.wallet import services as wallet

        point_type = loyalty.save_point_type(w.a, f"{MARK}-pts", {"name": f"{MARK}-pts-name", "kind": "currency"},
                                             actor="t")
        # `rule_id` names a stage rule too, and A_OBJECT["rule_id"] is w.rule.pk: A's earn rule takes the
        # same primary key, so that B's answer for it can be compared with a missing id's.
        rule = EarnRule.objects.create(pk=w.rule.pk, workspace=w.a, name=f"{MARK}-earn", point_type=point_type,
                                       interaction_type="purchase", points=5)
        earned = loyalty.earn(w.a, w.member.pk, "points", 100, reason=f"{MARK} welcome", idempotency_key=f"{MARK}-e",
                              actor="t")
        loyalty.earn(w.a, w.member.pk, point_type, 50, reason=f"{MARK} bonus", idempotency_key=f"{MARK}-e2", actor="t")
        wallet.top_up(w.a, w.member.pk, 1000, idempotency_key=f"{MARK}-top-up", actor="t", reason=f"{MARK} top-up")
        payment = wallet.pay(w.a, w.member.pk, 300, idempotency_key=f"{MARK}-pay", actor="t", reason=f"{MARK} tea")
        rows = {"point_type": point_type, "rule": rule, "entry": earned, "payment": payment}
        w._loyalty_rows = rows  # type: ignore[attr-defined]
    return rows


def _engagement_rows(w: World) -> dict[str, Any]:
    """Workspace A's tier (held by w.member), badge, task, level, streak reward and a check-in (engagement)."""
    rows = getattr(w, "_engagement_rows", None)
    if rows is None:
        from shequn.engagement import services as engagement

        point_type = _loyalty_rows(w)["point_type"]
        tier = engagement.save_tier(w.a, {"code": f"{MARK}-gold", "name": f"{MARK} gold", "rank": 5,
                                          "min_contribution": 100000, "benefits": f"{MARK} benefits"}, actor="t")
        badge = engagement.save_badge(w.a, {"code": f"{MARK}-badge", "name": f"{MARK} badge", "metric": "purchase",
                                            "threshold": 1000}, actor="t")
        task = engagement.save_task(w.a, {"code": f"{MARK}-task", "name": f"{MARK} task", "metric": "purchase",
                                          "target": 3, "badge": badge.code}, actor="t")
        level = engagement.save_level(w.a, A_LEVEL, f"{MARK} level", 10_000_000, actor="t")
        reward = engagement.save_streak_reward(w.a, A_STREAK_DAYS, 7, point_type=point_type.code, badge=badge.code,
                                               actor="t")
        engagement.save_programme(w.a, {"checkin_points": 3, "checkin_point_type": point_type.code}, actor="t")
        engagement.set_tier(w.a, w.member.pk, tier.code, actor="t")
        engagement.check_in(w.a, w.member.pk, channel=f"{MARK}-channel", actor="t")
        rows = {"tier": tier, "badge": badge, "task": task, "level": level, "reward": reward}
        w._engagement_rows = rows  # type: ignore[attr-defined]
    return rows



# --------------------------------------------------------------------------------------------- keys, not ids

# Routes whose path names a key inside the caller's own workspace (a point-type code, a level number, a
# streak length) or a board name, never one of A's rows: sent A's key, B reaches or makes a row of its own.
# They answer 200, not 404, so they are not in ID_CASES (test_every_route_has_a_case does not know them yet).
KEY_CASES: dict[tuple[str, str], Callable[[World], Request]] = {
    ("put", "/api/v1/point-types/{code}"):
        lambda w: (f"/api/v1/point-types/{_loyalty_rows(w)['point_type'].code}", {"name": "B", "kind": "currency"},
                   None),
    ("put", "/api/v1/engagement/levels/{number}"):
        lambda w: (f"/api/v1/engagement/levels/{A_LEVEL}", {"name": "B", "min_xp": 20_000_000}, None),
    ("put", "/api/v1/engagement/streak-rewards/{days}"):
        lambda w: (f"/api/v1/engagement/streak-rewards/{A_STREAK_DAYS}", {"points": 1}, None),
    ("get", "/api/v1/leaderboards/{board}"):
        lambda w: ("/api/v1/leaderboards/points", None, {"member_id": w.member.pk}),
}


@pytest.mark.parametrize("route", sorted(KEY_CASES), ids=lambda r: f"{r[0].upper()} {r[1]}")
def test_b_keys_name_rows_of_b(world, route):
    from shequn.engagement.models import Level, StreakReward
    from shequn.loyalty.models import PointType

    method, path = route
    before = snapshot(world.a)
    url, body, query = KEY_CASES[route](world)
    r = _send(world.b_client, method, url, body, query)
    assert r.status_code == 200, (route, r.content)
    assert MARK not in r.content.decode().replace(f"{MARK}-pts", "")  # the code B chose itself may be A's too
    assert snapshot(world.a) == before
    if path.startswith("/api/v1/point-types/"):
        assert PointType.objects.get(workspace=world.b, code=f"{MARK}-pts").name == "B"
    elif "/levels/" in path:
        assert Level.objects.get(workspace=world.b, number=A_LEVEL).name == "B"
    elif "/streak-rewards/" in path:
        assert StreakReward.objects.get(workspace=world.b, days=A_STREAK_DAYS).badge_id is None
    else:
        assert r.json()["member"] is None and world.member.pk not in {i["member_id"] for i in r.json()["items"]}
        mine = make_client(world.a, "owner").get(url, query).json()
        assert mine["member"]["member_id"] == world.member.pk, "A's member is on A's board"


def test_key_routes_are_all_known():
    """Every id route is in ID_CASES or KEY_CASES."""
    id_routes = {r for r in _schema_routes() if "{" in r[1]}
    assert not set(ID_CASES) & set(KEY_CASES)
    assert set(ID_CASES) | set(KEY_CASES) == id_routes


# --------------------------------------------------------------------------------------------- ids in bodies


def _b_rows(w: World) -> dict[str, Any]:
    """Workspace B's own member, menu and incident, to send A's ids in the bodies of B's requests."""
    rows = getattr(w, "_b_rows", None)
    if rows is None:
        from shequn.conversations import services as bots

        rows = {"member": Member.objects.filter(workspace=w.b).order_by("pk").first(),
                "menu": bots.create_menu(w.b, {"name": "B menu", "triggers": ["menu"]}, actor="t"),
                "incident": bots.declare_incident(w.b, {"title": "B outage", "reply": "sorry"}, actor="t")}
        w._b_rows = rows  # type: ignore[attr-defined]
    return rows


# name -> (method, url, body with the value, A's value, a value that names nothing)
BODY_CASES: dict[str, tuple[str, Callable[[World], str], Callable[[World, Any], Any], Callable[[World], Any], Any]] = {
    "outbox text to A's member": (
        "post", lambda w: "/api/v1/outbox/text", lambda w, v: {"member_id": v, "text": "B"},
        lambda w: w.member.pk, MISSING),
    "channel code on A's account": (
        "post", lambda w: "/api/v1/channel-codes",
        lambda w, v: {"account_id": v, "kind": "store", "name": "B", "scene": "b-scene"},
        lambda w: _channel_rows(w)["account"].pk, MISSING),
    "simulate as A's member": (
        "post", lambda w: "/api/v1/bots/simulate", lambda w, v: {"text": MARK, "member_id": v},
        lambda w: w.member.pk, MISSING),
    "menu option under A's option": (
        "post", lambda w: f"/api/v1/bots/menus/{_b_rows(w)['menu'].pk}/nodes",
        lambda w, v: {"key": "2", "label": "B", "action": "text", "text": "B", "parent": v},
        lambda w: _bot_rows(w)["node"].pk, MISSING),
    "points to A's member": (
        "post", lambda w: f"/api/v1/members/{_b_rows(w)['member'].pk}/points/transfer",
        lambda w, v: {"to_member_id": v, "amount": 1}, lambda w: w.member.pk, MISSING),
    "reverse A's award": (
        "post", lambda w: f"/api/v1/members/{_b_rows(w)['member'].pk}/points/reverse",
        lambda w, v: {"entry_id": v}, lambda w: _loyalty_rows(w)["entry"].pk, MISSING),
    "earn rule of A's point type": (
        "post", lambda w: "/api/v1/earn-rules",
        lambda w, v: {"name": "B", "point_type": v, "interaction_type": "purchase", "points": 1},
        lambda w: _loyalty_rows(w)["point_type"].code, "no-such-type"),
    "earn rule at A's touchpoint": (
        "post", lambda w: "/api/v1/earn-rules",
        lambda w, v: {"name": "B", "point_type": "points", "interaction_type": "purchase", "points": 1,
                      "touchpoint": v},
        lambda w: w.touchpoint.code, "no-such-code"),
    "B's member on A's tier": (
        "post", lambda w: f"/api/v1/members/{_b_rows(w)['member'].pk}/tier", lambda w, v: {"tier": v},
        lambda w: _engagement_rows(w)["tier"].code, "no-such-tier"),
    "task giving A's badge": (
        "post", lambda w: "/api/v1/engagement/tasks",
        lambda w, v: {"code": "b-task", "name": "B", "metric": "purchase", "badge": v},
        lambda w: _engagement_rows(w)["badge"].code, "no-such-badge"),
    "streak reward giving A's badge": (
        "put", lambda w: "/api/v1/engagement/streak-rewards/5", lambda w, v: {"points": 1, "badge": v},
        lambda w: _engagement_rows(w)["badge"].code, "no-such-badge"),
    "streak reward in A's point type": (
        "put", lambda w: "/api/v1/engagement/streak-rewards/5", lambda w, v: {"points": 1, "point_type": v},
        lambda w: _loyalty_rows(w)["point_type"].code, "no-such-type"),
    "check-in points in A's point type": (
        "patch", lambda w: "/api/v1/engagement/programme", lambda w, v: {"checkin_point_type": v},
        lambda w: _loyalty_rows(w)["point_type"].code, "no-such-type"),
    "badge for A's tier": (
        "post", lambda w: "/api/v1/engagement/badges",
        lambda w, v: {"code": "b-badge", "name": "B", "metric": "tier", "ref": v},
        lambda w: _engagement_rows(w)["tier"].code, "no-such-tier"),
}


@pytest.mark.parametrize("case", sorted(BODY_CASES))
def test_ids_of_a_in_bodies_answer_like_missing(world, case):
    method, url, body, a_of, nothing = BODY_CASES[case]
    before = snapshot(world.a)
    a_value = a_of(world)
    answers = []
    for n, value in enumerate((a_value, nothing)):
        world.b_client.client.defaults["HTTP_IDEMPOTENCY_KEY"] = f"b-body-{n}"
        answers.append(_send(world.b_client, method, url(world), body(world, value), None))
    seen, missing = answers
    assert seen.status_code == missing.status_code, (case, seen.content, missing.content)
    assert 400 <= seen.status_code < 500, (case, seen.content)
    seen, expected = seen.json()["error"], missing.json()["error"]
    assert seen["message"].replace(str(a_value), "?") == expected["message"].replace(str(nothing), "?")
    assert (seen["code"], seen["details"]) == (expected["code"], expected["details"])
    assert snapshot(world.a) == before


def test_incident_notice_never_reaches_a_member_of_a(world):
    from shequn.conversations import services as bots
    from shequn.outbound.models import OutboundMessage

    before = snapshot(world.a)
    incident = _b_rows(world)["incident"]
    r = world.b_client.post(f"/api/v1/bots/incidents/{incident.pk}/notify", {"member_ids": [world.member.pk]})
    if r.status_code == 202:  # accepted as a list, but it holds nobody of B
        assert r.json()["total"] == 0
        bots.run_notification(world.b, r.json()["id"])
    assert not OutboundMessage.objects.filter(member=world.member, purpose="incident").exists()
    assert snapshot(world.a) == before


def test_b_reports_count_only_b(world):
    r = world.b_client.get("/api/v1/wallet/liability")
    assert r.status_code == 200 and (r.json()["outstanding"], r.json()["wallets"], r.json()["topped_up"]) == (0, 0, 0)
    r = world.b_client.get("/api/v1/loyalty/liability")
    assert r.status_code == 200
    assert all(t["available"] == 0 and t["members"] == 0 for t in r.json()["types"]), r.json()["types"]
    mine = make_client(world.a, "owner").get("/api/v1/wallet/liability").json()
    assert mine["outstanding"] == 700, "A's stored value shows in A's report"


def test_b_connecting_the_app_id_of_a_gets_its_own_account(world):
    before = snapshot(world.a)
    account = _channel_rows(world)["account"]
    r = world.b_client.post("/api/v1/channels/wechat-accounts", {
        "app_id": account.app_id, "app_secret": "b" * 32, "token": "btoken", "mode": "plaintext"})
    assert r.status_code == 200, r.content
    assert r.json()["id"] != account.pk and MARK not in r.json()["welcome_text"]
    assert snapshot(world.a) == before
