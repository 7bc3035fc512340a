from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from shequn.interactions import services as interactions
from shequn.lifecycle import queries
from shequn.lifecycle.models import StageChange
from shequn.members import services as members
from shequn.members.models import Member, MemberStatus

DAY = dt.timedelta(days=1)


def ev(who, when, type_, direction="in", **kw):
    return {"identities": [{"kind": "external", "value": who}], "type": type_, "channel": "wechat",
            "direction": direction, "occurred_at": when, **kw}


@pytest.fixture
def pipeline(ws, t0):
    interactions.ingest_batch(ws, [
        ev("m1", t0, "follow"), ev("m1", t0 + 2 * DAY, "visit"), ev("m1", t0 + 5 * DAY, "purchase", amount="20"),
        ev("m1", t0 + 9 * DAY, "purchase", amount="20"), ev("m1", t0 + 19 * DAY, "review", properties={"rating": 5}),
        ev("m2", t0, "follow"), ev("m2", t0 + 4 * DAY, "purchase", amount="18"),
        ev("m3", t0, "follow"), ev("m3", t0 + 6 * DAY, "visit"),
        ev("m4", t0, "scan"),
        ev("m5", t0, "share"),
        ev("m7", t0, "follow"), ev("m7", t0 + DAY, "visit"), ev("m7", t0 + 2 * DAY, "purchase", amount="30"),
    ])
    members.upsert_member(ws, [{"kind": "external", "value": "m6"}], {"display_name": "no events"})
    return ws


def test_funnel_counts_conversion_and_time_in_stage(pipeline, django_assert_num_queries):
    with django_assert_num_queries(3):
        rows = queries.funnel(pipeline)
    got = [(r["stage_key"], r["name"], r["position"], r["members"], r["reached"], r["conversion"], r["time_in_stage"])
           for r in rows]
    assert got == [
        ("aware", "认知", 1, 1, 6, None, 3.0),  # stays of 2, 4, 6 and 1 days
        ("considering", "考虑", 2, 1, 5, pytest.approx(5 / 6), 2.0),  # 3 and 1 days
        ("purchased", "购买", 3, 2, 4, pytest.approx(0.8), 4.0),
        ("using", "使用", 4, 0, 2, pytest.approx(0.5), 10.0),
        ("feedback", "意见", 5, 1, 2, pytest.approx(1.0), None),  # nobody has moved on yet
        ("advocate", "口碑", 6, 1, 1, pytest.approx(0.5), None),
    ]


def test_funnel_ignores_merged_members_and_other_workspaces(ws, other_ws, t0):
    interactions.ingest_batch(ws, [
        ev("x", t0, "follow"), ev("x", t0 + 3 * DAY, "visit"),
        ev("y", t0, "follow"), ev("y", t0 + DAY, "purchase", amount="9"),
    ])
    interactions.ingest_batch(other_ws, [ev("z", t0, "follow"), ev("z", t0 + DAY, "share")])
    interactions.ingest(ws, {"identities": [{"kind": "external", "value": "x"}, {"kind": "external", "value": "y"}],
                             "type": "message", "channel": "wechat", "occurred_at": t0 + 5 * DAY})
    assert Member.objects.filter(workspace=ws, status=MemberStatus.MERGED).count() == 1
    rows = {r["stage_key"]: r for r in queries.funnel(ws)}
    assert [rows[k]["members"] for k in ("aware", "considering", "purchased", "using")] == [0, 0, 1, 0]
    assert rows["aware"]["reached"] == 1 and rows["advocate"]["reached"] == 0
    # only the survivor's own history counts: aware → considering after 3 days (the absorbed member's
    # aware → purchased after 1 day is not a stay of an active member)
    assert rows["aware"]["time_in_stage"] == 3.0


def test_out_of_order_history_ends_no_stay(ws, t0):
    interactions.ingest_batch(ws, [ev("m", t0, "follow"), ev("m", t0 + 2 * DAY, "visit")])
    member = Member.objects.get(workspace=ws)
    # a change recorded later that does not start from the member's stage at that time
    StageChange.objects.create(workspace=ws, member=member, from_stage=None, to_stage=member.stage,
                               at=t0 + 9 * DAY, cause="import")
    rows = {r["stage_key"]: r for r in queries.funnel(ws)}
    assert rows["aware"]["time_in_stage"] == 2.0
    assert rows["considering"]["time_in_stage"] is None


def test_strength_distribution(ws, other_ws, django_assert_num_queries):
    now = timezone.now()
    members.upsert_member(ws, [{"kind": "external", "value": "none"}])
    interactions.ingest_batch(ws, [
        ev("potential", now - DAY, "message", direction="out"),
        ev("weak", now - DAY, "message"),
        ev("strong", now - 3 * DAY, "message"), ev("strong", now - 3 * DAY, "message", direction="out"),
        ev("strong", now - DAY, "message"), ev("strong", now - DAY, "message", direction="out"),
    ])
    interactions.ingest_batch(other_ws, [ev("elsewhere", now - DAY, "message")])
    with django_assert_num_queries(1):
        dist = queries.strength_distribution(ws)
    assert [(d["level"], d["members"]) for d in dist] == [(0, 1), (1, 1), (2, 1), (3, 1), (4, 0), (5, 0)]
    assert all(d["label"] for d in dist)


def test_recent_changes(pipeline, django_assert_num_queries):
    with django_assert_num_queries(1):
        changes = queries.recent_changes(pipeline, limit=3)
        described = [(c.member.display_name, c.from_stage and c.from_stage.key, c.to_stage.key, c.rule.name)
                     for c in changes]
    assert [c.at for c in changes] == sorted((c.at for c in changes), reverse=True)
    assert described[0][2] == "feedback" and described[0][3] == "评价 → 意见"
    assert len(queries.recent_changes(pipeline)) == StageChange.objects.filter(workspace=pipeline).count() == 14
