"""Workspace, catalog (tags, keywords, attributes), lifecycle stages and rules, API keys."""

from __future__ import annotations

from shequn.core.models import ApiKey
from shequn.lifecycle.models import StageRule
from shequn.members import services as members
from shequn.members.models import AttributeDefinition

from .helpers import ApiClient, error_code


def test_workspace(api, ws):
    r = api.get("/api/v1/workspace")
    assert r.status_code == 200
    body = r.json()
    assert (body["slug"], body["name"], body["timezone"], body["country"]) == ("tea", "茶语 Tea House", "Asia/Shanghai", "CN")
    assert [s["key"] for s in body["stages"]] == ["aware", "considering", "purchased", "using", "feedback", "advocate"]
    assert [s["key"] for s in api.get("/api/v1/stages").json()["items"]] == [s["key"] for s in body["stages"]]


def test_tags_and_keyword_tree(api, ws):
    a = members.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}]).member
    b = members.upsert_member(ws, [{"kind": "phone", "value": "13900139000"}]).member
    members.add_tags(ws, a.pk, ["VIP", "新客"], actor="t")
    members.add_tags(ws, b.pk, ["VIP"], actor="t")
    members.add_keywords(ws, a.pk, ["茶/绿茶/龙井", "茶/红茶"], actor="t")
    members.add_keywords(ws, b.pk, ["器具"], actor="t")

    tags = api.get("/api/v1/tags").json()["items"]
    assert [(t["name"], t["member_count"]) for t in tags] == [("VIP", 2), ("新客", 1)]

    tree = api.get("/api/v1/keywords").json()["items"]

    def shape(nodes):
        return [(n["name"], n["member_count"], shape(n["children"])) for n in nodes]

    assert shape(tree) == [("器具", 1, []), ("茶", 0, [("红茶", 1, []), ("绿茶", 0, [("龙井", 1, [])])])]
    assert tree[1]["children"][1]["children"][0]["path"] == "茶/绿茶/龙井"


def test_attributes(api, ws):
    r = api.post("/api/v1/attributes", {"key": "tea_pref", "label": "偏好", "type": "choice", "choices": ["绿茶", "红茶"]})
    assert r.status_code == 201, r.content
    assert r.json()["choices"] == ["绿茶", "红茶"]
    r = api.post("/api/v1/attributes", {"key": "tea_pref", "label": "茶类偏好", "type": "choice", "choices": ["绿茶"]})
    assert r.status_code == 200 and r.json()["label"] == "茶类偏好"
    for body, code in [({"key": "Bad Key", "type": "text"}, "invalid_attribute_key"),
                       ({"key": "x", "type": "colour"}, "invalid_attribute_type"),
                       ({"key": "y", "type": "choice"}, "invalid_attribute_type"),
                       ({"key": "z"}, "validation_error")]:
        r = api.post("/api/v1/attributes", body)
        assert r.status_code == 422 and error_code(r) == code, body
    assert [d["key"] for d in api.get("/api/v1/attributes").json()["items"]] == ["tea_pref"]
    assert AttributeDefinition.objects.count() == 1


def test_stage_rules(api, ws):
    before = StageRule.objects.filter(workspace=ws).count()
    listed = api.get("/api/v1/stage-rules").json()["items"]
    assert len(listed) == before and listed[0]["priority"] <= listed[-1]["priority"]

    api.post("/api/v1/touchpoints", {"code": "store", "name": "门店", "channel": "store"})
    r = api.post("/api/v1/stage-rules", {"name": "大额购买 → 口碑", "interaction_type": "purchase", "min_amount": "1000",
                                         "target_stage": "advocate", "touchpoint": "store", "priority": 5})
    assert r.status_code == 201, r.content
    rule = r.json()
    assert (rule["target_stage"], rule["touchpoint"], rule["min_amount"], rule["enabled"]) == ("advocate", "store", "1000.00", True)

    r = api.patch(f"/api/v1/stage-rules/{rule['id']}", {"enabled": False, "touchpoint": None})
    assert r.status_code == 200 and (r.json()["enabled"], r.json()["touchpoint"]) == (False, None)
    r = api.patch(f"/api/v1/stage-rules/{rule['id']}", {"target_stage": "nowhere"})
    assert r.status_code == 422 and error_code(r) == "unknown_stage"
    r = api.post("/api/v1/stage-rules", {"name": "x", "interaction_type": "teleport", "target_stage": "aware"})
    assert r.status_code == 422 and error_code(r) == "invalid_type"
    r = api.post("/api/v1/stage-rules", {"name": "x", "interaction_type": "message"})
    assert r.status_code == 422 and error_code(r) == "validation_error"
    assert StageRule.objects.filter(workspace=ws).count() == before + 1
    assert StageRule.objects.get(pk=rule["id"]).target_stage.key == "advocate"

    r = api.delete(f"/api/v1/stage-rules/{rule['id']}")
    assert r.status_code == 204 and r.content == b""
    assert r["X-RateLimit-Limit"]
    r = api.delete(f"/api/v1/stage-rules/{rule['id']}")
    assert r.status_code == 404 and error_code(r) == "not_found"
    assert StageRule.objects.filter(workspace=ws).count() == before


def test_api_keys(api, ws):
    r = api.post("/api/v1/api-keys", {"name": "POS", "role": "agent"})
    assert r.status_code == 201, r.content
    created = r.json()
    assert created["secret"].startswith(f"sq_{created['prefix']}_") and created["role"] == "agent"

    new_client = ApiClient(None, created["secret"])
    assert new_client.get("/api/v1/members").status_code == 200

    listed = api.get("/api/v1/api-keys").json()["items"]
    assert [k["name"] for k in listed] == ["POS", "owner key"]
    assert all("secret" not in k for k in listed)

    r = api.post(f"/api/v1/api-keys/{created['id']}/revoke")
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert error_code(new_client.get("/api/v1/members")) == "revoked_api_key"

    r = api.post("/api/v1/api-keys", {"name": "x", "role": "emperor"})
    assert r.status_code == 422 and error_code(r) == "invalid_role"
    r = api.post("/api/v1/api-keys", {"name": ""})
    assert r.status_code == 422 and error_code(r) == "validation_error"
    assert ApiKey.objects.count() == 2
