from __future__ import annotations

import re

from django.test import Client, override_settings

EXPECTED = {
    ("get", "/api/v1/workspace"): "workspace_get",
    ("get", "/api/v1/members"): "members_list",
    ("post", "/api/v1/members"): "members_upsert",
    ("get", "/api/v1/members/lookup"): "members_lookup",
    ("get", "/api/v1/members/{member_id}"): "members_get",
    ("patch", "/api/v1/members/{member_id}"): "members_update",
    ("post", "/api/v1/members/{member_id}/identities"): "members_add_identity",
    ("post", "/api/v1/members/{member_id}/tags"): "members_add_tags",
    ("delete", "/api/v1/members/{member_id}/tags"): "members_remove_tags",
    ("post", "/api/v1/members/{member_id}/keywords"): "members_add_keywords",
    ("delete", "/api/v1/members/{member_id}/keywords"): "members_remove_keywords",
    ("put", "/api/v1/members/{member_id}/subscriptions"): "members_set_subscriptions",
    ("get", "/api/v1/members/{member_id}/timeline"): "members_timeline",
    ("get", "/api/v1/members/{member_id}/stage-history"): "members_stage_history",
    ("post", "/api/v1/members/{member_id}/stage"): "members_set_stage",
    ("post", "/api/v1/members/merge"): "members_merge",
    ("get", "/api/v1/merges"): "merges_list",
    ("post", "/api/v1/merges/{merge_id}/undo"): "merges_undo",
    ("get", "/api/v1/tags"): "tags_list",
    ("get", "/api/v1/keywords"): "keywords_tree",
    ("get", "/api/v1/attributes"): "attributes_list",
    ("post", "/api/v1/attributes"): "attributes_define",
    ("post", "/api/v1/interactions"): "interactions_create",
    ("post", "/api/v1/interactions/batch"): "interactions_batch",
    ("get", "/api/v1/interactions"): "interactions_list",
    ("get", "/api/v1/touchpoints"): "touchpoints_list",
    ("post", "/api/v1/touchpoints"): "touchpoints_create",
    ("get", "/api/v1/touchpoints/map"): "touchpoints_map",
    ("get", "/api/v1/touchpoints/{code}"): "touchpoints_get",
    ("patch", "/api/v1/touchpoints/{code}"): "touchpoints_update",
    ("get", "/api/v1/stages"): "stages_list",
    ("get", "/api/v1/stage-rules"): "stage_rules_list",
    ("post", "/api/v1/stage-rules"): "stage_rules_create",
    ("patch", "/api/v1/stage-rules/{rule_id}"): "stage_rules_update",
    ("delete", "/api/v1/stage-rules/{rule_id}"): "stage_rules_delete",
    ("get", "/api/v1/api-keys"): "api_keys_list",
    ("post", "/api/v1/api-keys"): "api_keys_create",
    ("post", "/api/v1/api-keys/{key_id}/revoke"): "api_keys_revoke",
}


def test_openapi_document_lists_every_endpoint(db):
    r = Client().get("/api/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["info"]["title"] == "Shequn API"
    found = {(method, path): op["operationId"] for path, ops in doc["paths"].items() for method, op in ops.items()}
    missing = set(EXPECTED) - set(found)
    assert not missing
    assert {k: found[k] for k in EXPECTED} == EXPECTED
    for (method, path), _op_id in found.items():
        op = doc["paths"][path][method]
        assert op["tags"], (method, path)
        assert "Roles:" in op["description"], (method, path)
        assert {"ApiKeyAuth", "StaffSessionAuth"} <= {name for s in op["security"] for name in s}
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKeyAuth"] == {"type": "http", "scheme": "bearer"}
    upsert = doc["paths"]["/api/v1/members"]["post"]
    assert set(upsert["responses"]) >= {"200", "201"}
    assert "MemberUpsertIn" in upsert["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    # The catch-all that answers unknown routes stays out of the document.
    assert not any("{rest}" in p for p in doc["paths"])


@override_settings(DEBUG=False, WHITENOISE_USE_FINDERS=True)
def test_docs_page_uses_only_local_static_files(db):
    client = Client()
    r = client.get("/api/docs")
    assert r.status_code == 200
    html = r.content.decode()
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls, html
    assert all(u.startswith("/static/") for u in urls), urls
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls)
    assert any(u.endswith("swagger-ui.css") for u in urls)
    assert '"url": "/api/openapi.json"' in html
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        body = b"".join(asset.streaming_content) if asset.streaming else asset.content
        assert len(body) > 100, url
