from __future__ import annotations

import pytest

from shequn.core.errors import Conflict, ValidationError
from shequn.interactions import services as interactions
from shequn.interactions.models import Interaction
from shequn.members import services
from shequn.members.models import Identity, Member, MemberStatus, MergeRecord


def test_upsert_creates_then_finds_by_any_identity(ws):
    r1 = services.upsert_member(ws, [{"kind": "phone", "value": "138 0013 8000"}], {"display_name": "王小明"})
    assert r1.created
    r2 = services.upsert_member(ws, [{"kind": "phone", "value": "+86 13800138000"}])
    assert not r2.created and r2.member.pk == r1.member.pk
    assert Identity.objects.get(member=r1.member).value == "+8613800138000"


def test_email_is_normalised(ws):
    r1 = services.upsert_member(ws, [{"kind": "email", "value": " Li.Na@Example.COM "}])
    assert services.find_member(ws, {"kind": "email", "value": "li.na@example.com"}).pk == r1.member.pk


def test_bad_identity_is_rejected(ws):
    with pytest.raises(ValidationError) as exc:
        services.upsert_member(ws, [{"kind": "phone", "value": "12"}])
    assert exc.value.code == "invalid_phone"
    assert Member.objects.count() == 0


def test_identities_are_per_workspace(ws, other_ws):
    a = services.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}]).member
    b = services.upsert_member(other_ws, [{"kind": "phone", "value": "13800138000"}]).member
    assert a.pk != b.pk


def test_openid_with_anothers_phone_merges_and_unmerge_restores(ws, t0):
    phone_member = services.upsert_member(ws, [{"kind": "phone", "value": "13900139000"}], {"city": "杭州"}).member
    services.add_tags(ws, phone_member.pk, ["VIP"], actor="test")
    wx = services.upsert_member(ws, [{"kind": "wechat_openid", "value": "oABC", "namespace": "wx1"}],
                                {"display_name": "小红"}).member
    services.add_tags(ws, wx.pk, ["奶茶控"], actor="test")
    interactions.ingest(ws, {"member_id": wx.pk, "type": "message", "channel": "wechat", "occurred_at": t0.isoformat(),
                             "source": "wx", "external_id": "m1"})
    interactions.ingest(ws, {"member_id": phone_member.pk, "type": "purchase", "channel": "store", "amount": "18.00",
                             "occurred_at": t0.isoformat(), "source": "pos", "external_id": "o1"})

    # One event proves they are one person.
    res = services.upsert_member(ws, [{"kind": "wechat_openid", "value": "oABC", "namespace": "wx1"},
                                      {"kind": "phone", "value": "13900139000"}])
    survivor = res.member
    assert survivor.pk == phone_member.pk  # the oldest survives
    assert len(res.merges) == 1
    wx.refresh_from_db()
    assert wx.status == MemberStatus.MERGED and wx.merged_into_id == survivor.pk
    assert set(Identity.objects.filter(member=survivor).values_list("value", flat=True)) == {"+8613900139000", "oABC"}
    assert Interaction.objects.filter(member=survivor).count() == 2
    assert set(survivor.member_tags.values_list("tag__name", flat=True)) == {"VIP", "奶茶控"}
    assert survivor.display_name == "小红"  # blank field filled
    survivor.refresh_from_db()
    assert survivor.interaction_count == 2

    record = MergeRecord.objects.get()
    services.unmerge(ws, record.pk, actor="test")
    survivor.refresh_from_db()
    wx.refresh_from_db()
    assert wx.status == MemberStatus.ACTIVE and wx.merged_into_id is None
    assert list(Identity.objects.filter(member=wx).values_list("value", flat=True)) == ["oABC"]
    assert Interaction.objects.filter(member=wx).count() == 1
    assert Interaction.objects.filter(member=survivor).count() == 1
    assert set(survivor.member_tags.values_list("tag__name", flat=True)) == {"VIP"}
    assert survivor.display_name == ""
    assert survivor.interaction_count == 1 and wx.interaction_count == 1
    with pytest.raises(Conflict):
        services.unmerge(ws, record.pk, actor="test")


def test_merge_chain_must_be_undone_in_order(ws):
    a = services.upsert_member(ws, [{"kind": "external", "namespace": "pos", "value": "A"}]).member
    b = services.upsert_member(ws, [{"kind": "external", "namespace": "pos", "value": "B"}]).member
    c = services.upsert_member(ws, [{"kind": "external", "namespace": "pos", "value": "C"}]).member
    r1 = services.merge_members(ws, b, c, reason="test", actor="t")
    r2 = services.merge_members(ws, a, b, reason="test", actor="t")
    c.refresh_from_db()
    assert c.merged_into_id == a.pk  # flattened
    with pytest.raises(Conflict):
        services.unmerge(ws, r1.pk, actor="t")
    services.unmerge(ws, r2.pk, actor="t")
    services.unmerge(ws, r1.pk, actor="t")
    assert Member.objects.filter(status="active").count() == 3


def test_merge_across_workspaces_is_refused(ws, other_ws):
    a = services.upsert_member(ws, [{"kind": "external", "value": "A"}]).member
    b = services.upsert_member(other_ws, [{"kind": "external", "value": "B"}]).member
    with pytest.raises(ValidationError):
        services.merge_members(ws, a, b.pk, reason="x", actor="t")


def test_attributes_are_typed(ws):
    services.define_attribute(ws, "cups_per_week", "每周杯数", "number", actor="t")
    services.define_attribute(ws, "sweetness", "甜度", "choice", ["无糖", "半糖", "全糖"], actor="t")
    m = services.upsert_member(ws, [{"kind": "external", "value": "1"}], attributes={"cups_per_week": "3",
                                                                                     "sweetness": "半糖"}).member
    assert m.attributes == {"cups_per_week": 3, "sweetness": "半糖"}
    with pytest.raises(ValidationError) as exc:
        services.update_profile(ws, m.pk, attributes={"sweetness": "超甜"}, actor="t")
    assert exc.value.code == "invalid_attribute"
    with pytest.raises(ValidationError):
        services.update_profile(ws, m.pk, attributes={"nope": 1}, actor="t")


def test_keywords_tree(ws):
    m = services.upsert_member(ws, [{"kind": "external", "value": "1"}]).member
    [leaf] = services.add_keywords(ws, m.pk, ["口味/水果茶"], actor="t")
    assert leaf.depth == 2 and leaf.parent.name == "口味"
