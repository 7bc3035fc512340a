"""Every console page: who may open it, and that no page leaks another workspace."""

from __future__ import annotations

import pytest
from django.test import Client

from .conftest import PASSWORD, login

# url (under /w/tea/), the lowest role that may open it
PAGES = [
    ("", "agent"),  # a shop clerk sees the counter only
    ("funnel/", "agent"),
    ("members/", "agent"),
    ("members/{wang}/", "agent"),
    ("touchpoints/", "operator"),
    ("lifecycle/rules/", "operator"),
    ("lifecycle/rules/new/", "operator"),
    ("lifecycle/rules/{rule}/", "operator"),
    ("imports/", "operator"),
    ("settings/api-keys/", "owner"),
]
RANK = {"clerk": 1, "agent": 2, "operator": 3, "owner": 4}


def _url(path: str, data, rule_id: int) -> str:
    return "/w/tea/" + path.format(wang=data.wang.pk, rule=rule_id)


@pytest.fixture
def rule_id(ws) -> int:
    from shequn.lifecycle.models import StageRule

    return StageRule.objects.filter(workspace=ws).order_by("pk").first().pk


@pytest.mark.parametrize("role", ["owner", "operator", "agent", "clerk"])
def test_role_matrix(staff, data, rule_id, role):
    client = login(staff[role])
    for path, lowest in PAGES:
        response = client.get(_url(path, data, rule_id))
        expected = 200 if RANK[role] >= RANK[lowest] else 403
        assert response.status_code == expected, (role, path, response.status_code)
        if expected == 403:
            assert "不允许".encode() in response.content or b"Not allowed" in response.content


def test_other_workspace_is_404_everywhere(staff, data, rule_id):
    client = login(staff["outsider"])
    for path, _lowest in PAGES:
        assert client.get(_url(path, data, rule_id)).status_code == 404, path
    assert client.get("/w/phone/").status_code == 200


def test_unknown_workspace_is_404(owner):
    assert owner.get("/w/no-such-place/").status_code == 404


def test_foreign_ids_under_own_workspace_are_404(owner, outsider, data, ws, other_ws):
    from shequn.core import services as core
    from shequn.lifecycle.models import StageRule

    foreign_rule = StageRule.objects.filter(workspace=other_ws).first()
    foreign_key, _secret = core.create_api_key(other_ws, "their key")
    assert owner.get(f"/w/tea/members/{data.foreign.pk}/").status_code == 404
    assert owner.get(f"/w/tea/lifecycle/rules/{foreign_rule.pk}/").status_code == 404
    assert owner.post(f"/w/tea/lifecycle/rules/{foreign_rule.pk}/delete/").status_code == 404
    assert owner.post(f"/w/tea/settings/api-keys/{foreign_key.pk}/revoke/").status_code == 404
    assert owner.post(f"/w/tea/members/{data.foreign.pk}/tags/add/", {"names": "x"}).status_code == 404
    assert owner.post(f"/w/tea/members/{data.foreign.pk}/tags/remove/", {"name": "VIP"}).status_code == 404
    assert owner.post(f"/w/tea/members/{data.foreign.pk}/stage/", {"stage": "aware"}).status_code == 404
    assert owner.post(f"/w/tea/members/{data.foreign.pk}/merge/", {"other_id": data.wang.pk}).status_code == 404
    # and the other way round: a member of B under B's URL, by a user of A only
    assert owner.get(f"/w/phone/members/{data.foreign.pk}/").status_code == 404
    foreign_rule.refresh_from_db()
    foreign_key.refresh_from_db()
    assert foreign_key.revoked_at is None
    assert set(data.foreign.member_tags.values_list("tag__name", flat=True)) == {"VIP"}
    data.foreign.refresh_from_db()
    assert data.foreign.stage_id is None and data.foreign.status == "active"


def test_anonymous_is_sent_to_login(db):
    response = Client().get("/w/tea/members/")
    assert response.status_code == 302
    assert response.url.startswith("/login/?next=/w/tea/members/")


def test_login_and_landing(staff, ws):
    client = Client()
    page = client.get("/login/")
    assert page.status_code == 200 and b'name="password"' in page.content
    bad = client.post("/login/", {"username": "owner-tea", "password": "wrong"})
    assert bad.status_code == 200 and b"error-box" in bad.content
    good = client.post("/login/", {"username": "owner-tea", "password": PASSWORD})
    assert good.status_code == 302 and good.url == "/"
    landing = client.get("/")
    assert landing.status_code == 302 and landing.url == "/w/tea/"
    assert client.get("/w/tea/").status_code == 200
    out = client.post("/logout/")
    assert out.status_code == 302
    assert client.get("/w/tea/").status_code == 302


def test_user_without_workspace(staff):
    page = login(staff["nobody"]).get("/")
    assert page.status_code == 200
    assert "还没有工作区".encode() in page.content


def test_workspace_switcher_lists_only_my_workspaces(staff, ws, other_ws):
    from shequn.core import services as core

    core.add_staff(other_ws, staff["owner"], "clerk")
    client = login(staff["owner"])
    page = client.get("/w/tea/").content.decode()
    assert 'href="/w/phone/"' in page and 'href="/w/tea/"' in page
    only_tea = login(staff["agent"]).get("/w/tea/").content.decode()
    assert 'href="/w/phone/"' not in only_tea


def test_admin_and_api_docs_links(staff, ws):
    staff["owner"].is_staff = True
    staff["owner"].save()
    assert b'href="/admin/"' in login(staff["owner"]).get("/w/tea/").content
    page = login(staff["operator"]).get("/w/tea/").content
    assert b'href="/admin/"' not in page and b'href="/api/docs"' in page
