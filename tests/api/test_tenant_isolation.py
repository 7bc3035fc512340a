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
}

# Which of A's objects each path parameter names, and a value that names nothing at all.
A_OBJECT: dict[str, Callable[[World], Any]] = {
    "member_id": lambda w: w.member.pk,
    "merge_id": lambda w: w.merge.pk,
    "code": lambda w: w.touchpoint.code,
    "rule_id": lambda w: w.rule.pk,
    "key_id": lambda w: w.a_key.pk,
}
NOTHING: dict[str, Any] = {"member_id": MISSING, "merge_id": MISSING, "code": "no-such-code", "rule_id": MISSING,
                           "key_id": MISSING}

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
}
# Query strings that point list routes at A's rows.
LIST_QUERIES: dict[str, Callable[[World], dict[str, Any]]] = {
    "/api/v1/members": lambda w: {"q": f"{MARK}-openid", "tag": f"{MARK}-tag"},
    "/api/v1/members/lookup": lambda w: {"kind": "wechat_openid", "value": f"{MARK}-openid", "namespace": "wxA"},
    "/api/v1/merges": lambda w: {"member_id": w.member.pk},
    "/api/v1/interactions": lambda w: {"member_id": w.member.pk},
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
    assert set(ID_CASES) == id_routes
    assert {path for _m, path in ID_CASES} == _url_routes()
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
