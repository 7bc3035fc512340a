from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client

from shequn.api.root import api as ninja_api
from shequn.core import services as core
from shequn.core.models import ApiKey, AuditEntry
from shequn.members import services as members
from shequn.members.models import Member, MemberTag

from .helpers import ApiClient, error_code, make_client


def test_missing_key_is_401(anon):
    r = anon.get("/api/v1/members")
    assert r.status_code == 401 and error_code(r) == "unauthorized"
    r = anon.post("/api/v1/members", {"identities": [{"kind": "phone", "value": "13800138000"}]})
    assert r.status_code == 401 and error_code(r) == "unauthorized"
    assert Member.objects.count() == 0


@pytest.mark.parametrize("header", [
    "Bearer sq_nothing",
    "Bearer sq_abcdef123456_wrong",
    "Bearer ",
    "Bearer not-a-key",
])
def test_invalid_key_is_401(ws, header):
    key, secret = core.create_api_key(ws, "real")
    r = Client(headers={"Authorization": header}).get("/api/v1/members")
    assert r.status_code == 401 and error_code(r) == "invalid_api_key"


def test_tampered_secret_of_a_real_key_is_401(ws):
    key, secret = core.create_api_key(ws, "real")
    r = ApiClient(None, secret[:-2] + "xx").get("/api/v1/members")
    assert r.status_code == 401 and error_code(r) == "invalid_api_key"


def test_revoked_key_is_401(ws):
    client = make_client(ws, "owner")
    assert client.get("/api/v1/workspace").status_code == 200
    core.revoke_api_key(ws, client.key.pk, actor="t")
    r = client.get("/api/v1/workspace")
    assert r.status_code == 401 and error_code(r) == "revoked_api_key"


def test_last_used_at_is_stamped(ws):
    client = make_client(ws, "operator")
    assert ApiKey.objects.get(pk=client.key.pk).last_used_at is None
    before = dt.datetime.now(dt.UTC)
    assert client.get("/api/v1/workspace").status_code == 200
    used = ApiKey.objects.get(pk=client.key.pk).last_used_at
    assert used is not None and used >= before - dt.timedelta(seconds=1)


def test_writes_are_audited_with_the_key(ws):
    client = make_client(ws, "operator")
    r = client.post("/api/v1/members", {"identities": [{"kind": "phone", "value": "13800138000"}]})
    assert r.status_code == 201
    assert AuditEntry.objects.filter(action="member.create").get().actor == f"apikey:{client.key.prefix}"


# --------------------------------------------------------------------------------------------- roles


def test_clerk_may_only_look_up(ws):
    m = members.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}]).member
    clerk = make_client(ws, "clerk")
    r = clerk.get("/api/v1/members/lookup", {"kind": "phone", "value": "13800138000"})
    assert r.status_code == 200 and r.json()["id"] == m.pk
    for method, path, body in [
        ("get", "/api/v1/members", None),
        ("get", f"/api/v1/members/{m.pk}", None),
        ("get", "/api/v1/workspace", None),
        ("get", "/api/v1/interactions", None),
        ("post", f"/api/v1/members/{m.pk}/tags", {"names": ["x"]}),
        ("post", "/api/v1/interactions", {"member_id": m.pk, "type": "visit", "channel": "store",
                                          "occurred_at": "2026-06-01T10:00:00+08:00"}),
    ]:
        r = getattr(clerk, method)(path, body) if body is not None else getattr(clerk, method)(path)
        assert r.status_code == 403, (method, path, r.content)
        assert error_code(r) == "forbidden"
        assert r.json()["error"]["details"]["role"] == "clerk"
    assert MemberTag.objects.count() == 0


def test_agent_reads_members_writes_interactions_and_tags_only(ws):
    m = members.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}]).member
    agent = make_client(ws, "agent")
    assert agent.get("/api/v1/members").status_code == 200
    assert agent.get(f"/api/v1/members/{m.pk}/timeline").status_code == 200
    assert agent.get("/api/v1/interactions").status_code == 200
    assert agent.post(f"/api/v1/members/{m.pk}/tags", {"names": ["咨询过"]}).status_code == 200
    r = agent.post("/api/v1/interactions", {"member_id": m.pk, "type": "support_contact", "channel": "phone",
                                            "occurred_at": "2026-06-01T10:00:00+08:00"})
    assert r.status_code == 201
    for method, path, body in [
        ("get", "/api/v1/api-keys", None),
        ("post", "/api/v1/api-keys", {"name": "mine", "role": "owner"}),
        ("patch", f"/api/v1/members/{m.pk}", {"city": "x"}),
        ("post", "/api/v1/members", {"identities": [{"kind": "phone", "value": "13900139000"}]}),
        ("post", "/api/v1/stage-rules", {"name": "x", "interaction_type": "visit", "target_stage": "aware"}),
        ("get", "/api/v1/merges", None),
    ]:
        r = getattr(agent, method)(path, body) if body is not None else getattr(agent, method)(path)
        assert r.status_code == 403 and error_code(r) == "forbidden", (method, path)
    assert ApiKey.objects.count() == 1 and Member.objects.count() == 1


def test_operator_may_not_manage_keys(ws):
    operator = make_client(ws, "operator")
    r = operator.get("/api/v1/api-keys")
    assert r.status_code == 403 and error_code(r) == "forbidden"
    assert operator.get("/api/v1/stage-rules").status_code == 200


def test_every_operation_declares_its_roles():
    for router in ninja_api._get_bound_routers():
        for path_view in router.path_operations.values():
            for op in path_view.operations:
                if not op.include_in_schema:
                    continue
                assert getattr(op.view_func, "_shequn_roles", None), f"{op.methods} {op.path} has no @allow"


# --------------------------------------------------------------------------------------------- session


@pytest.fixture
def staff(ws, other_ws):
    user = core.ensure_user("lin", "pw-long-enough-1")
    core.add_staff(ws, user, "operator")
    return user


def test_staff_session_with_workspace_header(ws, other_ws, staff):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    r = client.get("/api/v1/workspace", headers={"X-Shequn-Workspace": "tea"})
    assert r.status_code == 200 and r.json()["slug"] == "tea"

    r = client.get("/api/v1/workspace")
    assert r.status_code == 400 and error_code(r) == "workspace_required"
    # A workspace the user is not a member of is not found, like a missing one.
    r = client.get("/api/v1/workspace", headers={"X-Shequn-Workspace": "phone"})
    assert r.status_code == 404 and error_code(r) == "not_found"
    r = client.get("/api/v1/workspace", headers={"X-Shequn-Workspace": "nope"})
    assert r.status_code == 404 and error_code(r) == "not_found"


def test_staff_session_writes_need_csrf(ws, staff):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    body = '{"identities": [{"kind": "phone", "value": "13800138000"}]}'
    r = client.post("/api/v1/members", body, content_type="application/json", headers={"X-Shequn-Workspace": "tea"})
    assert r.status_code == 403 and error_code(r) == "csrf_failed"
    assert Member.objects.count() == 0

    client.get("/api/docs")  # any page that renders the CSRF token sets the cookie
    token = client.cookies["csrftoken"].value
    r = client.post("/api/v1/members", body, content_type="application/json",
                    headers={"X-Shequn-Workspace": "tea", "X-CSRFToken": token})
    assert r.status_code == 201, r.content
    assert AuditEntry.objects.get(action="member.create").actor == f"user:{staff.pk}"


def test_staff_role_applies(ws, staff):
    clerk = core.ensure_user("clerk", "pw-long-enough-2")
    core.add_staff(ws, clerk, "clerk")
    client = Client()
    client.force_login(clerk)
    r = client.get("/api/v1/members", headers={"X-Shequn-Workspace": "tea"})
    assert r.status_code == 403 and error_code(r) == "forbidden"


def test_bearer_key_is_not_subject_to_csrf(ws):
    client = make_client(ws, "owner")
    client.client = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {client.secret}"})
    r = client.post("/api/v1/members", {"identities": [{"kind": "phone", "value": "13800138000"}]})
    assert r.status_code == 201
