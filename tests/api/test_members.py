from __future__ import annotations

import pytest

from shequn.core.models import AuditEntry
from shequn.interactions import services as interactions
from shequn.lifecycle import services as lifecycle
from shequn.members import services as members
from shequn.members.models import Identity, Member, MemberStatus, MemberTag, MergeRecord, Subscription, Tag

from .helpers import error_code

PHONE = {"kind": "phone", "value": "138 0013 8000"}


def upsert(api, **body):
    body.setdefault("identities", [PHONE])
    return api.post("/api/v1/members", body)


def test_upsert_creates_then_finds(api, ws):
    r = upsert(api, profile={"display_name": "王小明", "city": "杭州", "source_channel": "poster"},
               tags=["VIP"], keywords=["茶/绿茶"])
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["created"] is True and body["merges"] == []
    m = body["member"]
    assert m["display_name"] == "王小明" and m["city"] == "杭州" and m["source_channel"] == "poster"
    assert [(i["kind"], i["value"]) for i in m["identities"]] == [("phone", "+8613800138000")]
    assert m["tags"] == ["VIP"] and m["keywords"] == ["茶/绿茶"]
    assert m["stage"] is None and m["strength"] == 0

    again = upsert(api, identities=[{"kind": "phone", "value": "+86 13800138000"},
                                    {"kind": "email", "value": "Xm@Example.com"}])
    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["member"]["id"] == m["id"]
    assert sorted(i["kind"] for i in again.json()["member"]["identities"]) == ["email", "phone"]
    assert Member.objects.filter(workspace=ws).count() == 1
    assert AuditEntry.objects.filter(action="member.create", actor=f"apikey:{api.key.prefix}").count() == 1


def test_upsert_reports_merges(api, ws):
    a = members.upsert_member(ws, [PHONE]).member
    b = members.upsert_member(ws, [{"kind": "email", "value": "b@example.com"}]).member
    r = upsert(api, identities=[PHONE, {"kind": "email", "value": "b@example.com"}])
    assert r.status_code == 200
    [merge] = r.json()["merges"]
    assert (merge["survivor_id"], merge["absorbed_id"]) == (a.pk, b.pk)
    assert Member.objects.get(pk=b.pk).status == MemberStatus.MERGED


@pytest.mark.parametrize(("body", "code"), [
    ({"identities": [{"kind": "phone", "value": "12"}]}, "invalid_phone"),
    ({"identities": []}, "no_identity"),
    ({"identities": [PHONE], "profile": {"gender": "robot"}}, "invalid_field"),
    ({"identities": [PHONE], "attributes": {"nope": 1}}, "unknown_attribute"),
    ({"identities": [PHONE], "tags": ["a/b"]}, "invalid_tag"),
    ({"identities": [PHONE], "colour": "red"}, "validation_error"),
    ({"identities": "13800138000"}, "validation_error"),
])
def test_upsert_bad_input_changes_nothing(api, ws, body, code):
    r = api.post("/api/v1/members", body)
    assert r.status_code == 422, r.content
    assert error_code(r) == code
    assert Member.objects.count() == 0 and Tag.objects.count() == 0


def test_validation_error_details_are_ninjas_errors(api):
    r = api.post("/api/v1/members", {"identities": [{"kind": "phone"}]})
    assert r.status_code == 422
    details = r.json()["error"]["details"]
    assert details[0]["loc"] == ["body", "body", "identities", 0, "value"]
    assert details[0]["type"] == "missing"


def test_get_patch_member(api, ws):
    m = members.upsert_member(ws, [PHONE], {"display_name": "A"}).member
    members.define_attribute(ws, "vip_level", "VIP level", "number", actor="t")
    members.set_subscription(ws, m.pk, "category", "marketing", True, actor="t")
    r = api.get(f"/api/v1/members/{m.pk}")
    assert r.status_code == 200
    assert r.json()["subscriptions"][0] | {"changed_at": None} == {
        "scope": "category", "key": "marketing", "subscribed": True, "source": "", "changed_at": None}

    r = api.patch(f"/api/v1/members/{m.pk}", {"city": "上海", "birthday": "1990-05-01", "attributes": {"vip_level": "3"}})
    assert r.status_code == 200, r.content
    assert (r.json()["city"], r.json()["birthday"], r.json()["attributes"]) == ("上海", "1990-05-01", {"vip_level": 3})
    assert r.json()["display_name"] == "A"

    r = api.patch(f"/api/v1/members/{m.pk}", {"birthday": "1990-13-01"})
    assert r.status_code == 422 and error_code(r) == "invalid_field"
    r = api.patch(f"/api/v1/members/{m.pk}", {"stage": "advocate"})
    assert r.status_code == 422 and error_code(r) == "validation_error"
    m.refresh_from_db()
    assert str(m.birthday) == "1990-05-01"

    assert api.get("/api/v1/members/999999").status_code == 404
    assert error_code(api.get("/api/v1/members/999999")) == "not_found"


def test_lookup(api, ws):
    m = members.upsert_member(ws, [{"kind": "wechat_openid", "value": "o-1", "namespace": "wxapp"}]).member
    r = api.get("/api/v1/members/lookup", {"kind": "wechat_openid", "value": "o-1", "namespace": "wxapp"})
    assert r.status_code == 200 and r.json()["id"] == m.pk
    r = api.get("/api/v1/members/lookup", {"kind": "wechat_openid", "value": "o-1"})
    assert r.status_code == 404 and error_code(r) == "not_found"
    r = api.get("/api/v1/members/lookup", {"kind": "phone", "value": "1"})
    assert r.status_code == 422 and error_code(r) == "invalid_phone"
    r = api.get("/api/v1/members/lookup", {"value": "1"})
    assert r.status_code == 422 and error_code(r) == "validation_error"


def test_identities(api, ws):
    m = members.upsert_member(ws, [PHONE]).member
    other = members.upsert_member(ws, [{"kind": "email", "value": "o@example.com"}]).member
    r = api.post(f"/api/v1/members/{m.pk}/identities", {"kind": "email", "value": "M@Example.com"})
    assert r.status_code == 200, r.content
    assert (r.json()["kind"], r.json()["value"]) == ("email", "m@example.com")
    r = api.post(f"/api/v1/members/{m.pk}/identities", {"kind": "email", "value": "o@example.com"})
    assert r.status_code == 409 and error_code(r) == "identity_taken"
    assert r.json()["error"]["details"] == {"member_id": other.pk}
    assert Identity.objects.filter(member=m).count() == 2


def test_tags_and_keywords(api, ws):
    m = members.upsert_member(ws, [PHONE]).member
    r = api.post(f"/api/v1/members/{m.pk}/tags", {"names": ["VIP", "新客"]})
    assert r.status_code == 200 and r.json() == {"tags": ["VIP", "新客"]}
    r = api.delete(f"/api/v1/members/{m.pk}/tags", "name=VIP")
    assert r.status_code == 200 and r.json() == {"tags": ["新客"]}
    r = api.post(f"/api/v1/members/{m.pk}/tags", {"names": []})
    assert r.status_code == 422 and error_code(r) == "validation_error"
    r = api.delete(f"/api/v1/members/{m.pk}/tags")
    assert r.status_code == 422 and error_code(r) == "validation_error"

    r = api.post(f"/api/v1/members/{m.pk}/keywords", {"paths": ["茶/绿茶/龙井", "器具"]})
    assert r.status_code == 200 and r.json() == {"keywords": ["器具", "茶/绿茶/龙井"]}
    r = api.delete(f"/api/v1/members/{m.pk}/keywords", "path=器具&path=茶/绿茶/龙井")
    assert r.status_code == 200 and r.json() == {"keywords": []}
    r = api.post(f"/api/v1/members/{m.pk}/keywords", {"paths": ["/"]})
    assert r.status_code == 422 and error_code(r) == "invalid_keyword"


def test_subscriptions_all_or_nothing(api, ws):
    m = members.upsert_member(ws, [PHONE]).member
    r = api.put(f"/api/v1/members/{m.pk}/subscriptions", {"subscriptions": [
        {"scope": "category", "key": "marketing", "subscribed": False, "source": "h5"},
        {"scope": "tag", "key": "新品", "subscribed": True}]})
    assert r.status_code == 200, r.content
    assert [(s["scope"], s["key"], s["subscribed"], s["source"]) for s in r.json()["subscriptions"]] == [
        ("category", "marketing", False, "h5"), ("tag", "新品", True, "api")]
    r = api.put(f"/api/v1/members/{m.pk}/subscriptions", {"subscriptions": [
        {"scope": "category", "key": "marketing", "subscribed": True},
        {"scope": "planet", "key": "x", "subscribed": True}]})
    assert r.status_code == 422 and error_code(r) == "invalid_scope"
    assert Subscription.objects.get(member=m, key="marketing").subscribed is False


def test_timeline_newest_first_with_cursor(api, ws, t0):
    import datetime as dt

    m = members.upsert_member(ws, [PHONE]).member
    # Stored out of order: the timeline follows occurred_at, not arrival.
    for hours in (2, 0, 3, 1, 4):
        interactions.ingest(ws, {"member_id": m.pk, "type": "message", "channel": "wechat",
                                 "occurred_at": (t0 + dt.timedelta(hours=hours)).isoformat()})
    seen, after = [], None
    while True:
        r = api.get(f"/api/v1/members/{m.pk}/timeline", {"limit": 2, **({"after": after} if after else {})})
        assert r.status_code == 200
        seen += [i["occurred_at"] for i in r.json()["items"]]
        after = r.json()["next"]
        if after is None:
            break
    assert len(seen) == 5 and seen == sorted(seen, reverse=True)


def test_stage_set_and_history(api, ws):
    m = members.upsert_member(ws, [PHONE]).member
    r = api.post(f"/api/v1/members/{m.pk}/stage", {"stage": "purchased"})
    assert r.status_code == 200 and r.json()["stage"] == "purchased"
    r = api.post(f"/api/v1/members/{m.pk}/stage", {"stage": "nowhere"})
    assert r.status_code == 422 and error_code(r) == "unknown_stage"
    r = api.get(f"/api/v1/members/{m.pk}/stage-history")
    assert r.status_code == 200
    [change] = r.json()["items"]
    assert (change["from_stage"], change["to_stage"], change["cause"]) == (None, "purchased", "manual")
    assert change["actor"] == f"apikey:{api.key.prefix}"


def test_merge_list_and_undo(api, ws):
    a = members.upsert_member(ws, [PHONE]).member
    b = members.upsert_member(ws, [{"kind": "email", "value": "b@example.com"}]).member
    members.add_tags(ws, b.pk, ["B"], actor="t")
    r = api.post("/api/v1/members/merge", {"survivor_id": a.pk, "absorbed_id": b.pk, "reason": "same person"})
    assert r.status_code == 201, r.content
    merge_id = r.json()["id"]
    assert MemberTag.objects.filter(member=a, tag__name="B").exists()

    r = api.post("/api/v1/members/merge", {"survivor_id": a.pk, "absorbed_id": a.pk, "reason": "x"})
    assert r.status_code == 422 and error_code(r) == "merge_self"
    r = api.post("/api/v1/members/merge", {"survivor_id": a.pk, "absorbed_id": b.pk, "reason": "again"})
    assert r.status_code == 409 and error_code(r) == "merge_inactive"

    r = api.get("/api/v1/merges")
    assert r.status_code == 200 and [i["id"] for i in r.json()["items"]] == [merge_id] and r.json()["next"] is None
    assert api.get("/api/v1/merges", {"member_id": b.pk}).json()["items"][0]["id"] == merge_id
    assert api.get("/api/v1/merges", {"member_id": 999999}).json()["items"] == []

    r = api.post(f"/api/v1/merges/{merge_id}/undo")
    assert r.status_code == 200 and r.json()["undone_at"] is not None
    assert Member.objects.get(pk=b.pk).status == MemberStatus.ACTIVE
    r = api.post(f"/api/v1/merges/{merge_id}/undo")
    assert r.status_code == 409 and error_code(r) == "already_undone"
    assert MergeRecord.objects.count() == 1


def test_member_list_filters_and_pages(api, ws):
    members.define_attribute(ws, "level", "Level", "number", actor="t")
    made = []
    for i in range(7):
        made.append(members.upsert_member(ws, [{"kind": "external", "value": f"crm-{i}", "namespace": "crm"}],
                                          {"display_name": f"会员{i}", "source_channel": "store" if i % 2 else "web"},
                                          {"level": i}).member)
    members.add_tags(ws, made[3].pk, ["VIP"], actor="t")
    members.add_keywords(ws, made[4].pk, ["茶/绿茶"], actor="t")

    ids, after = [], None
    while True:
        r = api.get("/api/v1/members", {"limit": 3, **({"after": after} if after else {})})
        assert r.status_code == 200
        ids += [m["id"] for m in r.json()["items"]]
        after = r.json()["next"]
        if after is None:
            break
    assert ids == [m.pk for m in reversed(made)]

    def only(**params):
        r = api.get("/api/v1/members", params)
        assert r.status_code == 200, r.content
        return [m["id"] for m in r.json()["items"]]

    assert only(tag="VIP") == [made[3].pk]
    assert only(keyword="茶") == [made[4].pk]
    assert only(source="store") == [made[5].pk, made[3].pk, made[1].pk]
    assert only(attribute="level=2") == [made[2].pk]
    assert only(q="crm-6") == [made[6].pk]
    assert only(strength=0) == [m.pk for m in reversed(made)]
    assert only(stage="advocate") == []
    r = api.get("/api/v1/members", {"attribute": "level"})
    assert r.status_code == 422 and error_code(r) == "invalid_filter"
    r = api.get("/api/v1/members", {"limit": 0})
    assert r.status_code == 422 and error_code(r) == "validation_error"
    r = api.get("/api/v1/members", {"strength": 9})
    assert r.status_code == 422 and error_code(r) == "validation_error"


def test_member_list_has_no_n_plus_one(api, ws, django_assert_max_num_queries):
    for i in range(30):
        m = members.upsert_member(ws, [{"kind": "external", "value": f"x{i}"}, {"kind": "email", "value": f"m{i}@e.com"}]).member
        members.add_tags(ws, m.pk, ["VIP", f"t{i}"], actor="t")
        members.add_keywords(ws, m.pk, [f"k/{i}"], actor="t")
    lifecycle.set_stage(ws, m.pk, "aware", actor="t")
    api.get("/api/v1/workspace")  # the key's last-use stamp is written once a minute, not per request
    # key lookup, members, identities, tags, keywords (+ the tag filter's own lookup)
    with django_assert_max_num_queries(6):
        r = api.get("/api/v1/members", {"limit": 30, "tag": "VIP"})
    assert r.status_code == 200
    items = r.json()["items"]
    assert len(items) == 30
    assert all(len(i["identities"]) == 2 and "VIP" in i["tags"] and len(i["keywords"]) == 1 for i in items)
    assert items[0]["stage"] == "aware"
