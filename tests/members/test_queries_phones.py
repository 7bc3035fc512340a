"""Resolving a pasted list of phone numbers to members in one query per 500 numbers."""

from __future__ import annotations

from shequn.members import queries
from shequn.members import services as members


def test_member_ids_by_phone(ws, other_ws, django_assert_num_queries):
    a = members.upsert_member(ws, [{"kind": "phone", "value": "13800138000"}], {}, actor="t").member
    b = members.upsert_member(ws, [{"kind": "phone", "value": "13900139000"}], {}, actor="t").member
    members.upsert_member(other_ws, [{"kind": "phone", "value": "13700137000"}], {}, actor="t")
    pasted = ["139 0013 9000", "+8613800138000", "13800138000", "", "13700137000", "not a phone"]
    with django_assert_num_queries(1):
        ids, unknown = queries.member_ids_by_phone(ws, pasted)
    assert ids == [b.pk, a.pk]
    assert unknown == ["not a phone", "13700137000"]  # another workspace's member is nobody here
