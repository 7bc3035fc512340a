"""The member list (filters, keyset pages, query count) and the member page with its forms."""

from __future__ import annotations

import re

import pytest

from shequn.interactions import services as interactions
from shequn.lifecycle.models import StageChange
from shequn.members import services as members
from shequn.members.models import Member, MemberStatus, MergeRecord

LIST = "/w/tea/members/"


def member_ids(response) -> list[int]:
    """Member ids in the order the list shows them."""
    table = response.content.decode().split('id="member-table"', 1)[1].split("</table>", 1)[0]
    return [int(x) for x in re.findall(r'<td class="num"><a href="/w/tea/members/(\d+)/">', table)]


# ---------------------------------------------------------------------------------------------
# list


def test_list_shows_members_newest_first(agent, data):
    response = agent.get(LIST)
    assert response.status_code == 200
    assert member_ids(response) == [data.zhao.pk, data.li.pk, data.wang.pk]
    assert data.foreign.pk not in member_ids(response)
    page = response.content.decode()
    assert "王小明" in page and "+8613800138000" in page and "VIP" in page


@pytest.mark.parametrize(("params", "expected"), [
    ({"tag": "VIP"}, ["wang"]),
    ({"tag": "奶茶控"}, ["li", "wang"]),
    ({"tag": "nobody-has-this"}, []),
    ({"keyword": "饮品"}, ["zhao", "wang"]),
    ({"keyword": "饮品/咖啡"}, ["zhao"]),
    ({"stage": "considering"}, ["li"]),
    ({"source": "store"}, ["li"]),
    ({"attribute": "vip_level=3"}, ["wang"]),
    ({"q": "13800138000"}, ["wang"]),
    ({"q": "li.na@example.com"}, ["li"]),
    ({"q": "赵"}, ["zhao"]),
    ({"tag": "奶茶控", "source": "wechat"}, ["wang"]),
])
def test_filters(agent, data, params, expected):
    response = agent.get(LIST, params)
    assert response.status_code == 200
    assert member_ids(response) == [getattr(data, name).pk for name in expected]


def test_strength_filter(agent, data):
    level = data.wang.strength
    response = agent.get(LIST, {"strength": level})
    shown = member_ids(response)
    assert data.wang.pk in shown
    assert all(Member.objects.get(pk=pk).strength == level for pk in shown)


def test_bad_filters_show_an_error(agent, data):
    response = agent.get(LIST, {"attribute": "no-equals-sign"})
    assert response.status_code == 200
    assert "属性筛选的格式应为 key=value" in response.content.decode()
    assert member_ids(response) == []
    response = agent.get(LIST, {"strength": "9"})
    assert response.status_code == 200 and 'class="error-box"' in response.content.decode()


def test_keyset_pages_forward_and_back(agent, data, monkeypatch, ws):
    from shequn.console.views import members as views

    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    first = agent.get(LIST)
    assert member_ids(first) == [data.zhao.pk, data.li.pk]
    assert 'rel="prev"' not in first.content.decode()
    next_href = re.search(r'rel="next" href="([^"]+)"', first.content.decode()).group(1).replace("&amp;", "&")
    assert next_href == f"?after={data.li.pk}"
    second = agent.get(LIST + next_href)
    assert member_ids(second) == [data.wang.pk]
    assert 'rel="next"' not in second.content.decode()
    prev_href = re.search(r'rel="prev" href="([^"]+)"', second.content.decode()).group(1).replace("&amp;", "&")
    back = agent.get(LIST + prev_href)
    assert member_ids(back) == [data.zhao.pk, data.li.pk]
    # filters survive paging
    filtered = agent.get(LIST, {"tag": "奶茶控"})
    href = re.search(r'rel="next" href="([^"]+)"', filtered.content.decode())
    assert href is None  # two members, one page of two
    monkeypatch.setattr(views, "PAGE_SIZE", 1)
    filtered = agent.get(LIST, {"tag": "奶茶控"})
    href = re.search(r'rel="next" href="([^"]+)"', filtered.content.decode()).group(1).replace("&amp;", "&")
    assert "tag=" in href
    assert member_ids(agent.get(LIST + href)) == [data.wang.pk]


def _add_members(ws, n: int) -> None:
    for i in range(n):
        m = members.upsert_member(ws, [{"kind": "phone", "value": f"1370000{i:04d}"}, {"kind": "email",
                                  "value": f"m{i}@example.com"}], {"display_name": f"会员{i}"}).member
        members.add_tags(ws, m.pk, [f"t{i % 3}", "批量"], actor="test")


def test_member_list_query_count_does_not_grow(agent, data, ws, django_assert_max_num_queries):
    with django_assert_max_num_queries(11) as few:
        agent.get(LIST)
    with django_assert_max_num_queries(14):
        agent.get(LIST, {"tag": "奶茶控", "keyword": "饮品", "stage": "aware", "q": "王"})
    _add_members(ws, 30)
    with django_assert_max_num_queries(11) as many:
        response = agent.get(LIST)
    assert len(member_ids(response)) == 33
    assert len(many.captured_queries) == len(few.captured_queries)


# ---------------------------------------------------------------------------------------------
# member page


def test_member_page_shows_everything(agent, data):
    response = agent.get(f"/w/tea/members/{data.wang.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    for text in ("王小明", "+8613800138000", "VIP", "奶茶控", "饮品/奶茶", "会员等级", "杭州", "wechat",
                 "互动时间线", "有新品吗？", "门店收银台", "28.00 CNY", "阶段历史", "关系强度"):
        assert text in page, text
    # the agent reads but gets no forms
    assert f'action="/w/tea/members/{data.wang.pk}/tags/add/"' not in page
    zhao = agent.get(f"/w/tea/members/{data.zhao.pk}/").content.decode()
    assert f'href="/w/tea/members/{data.wang.pk}/"' in zhao  # referrer link


def test_timeline_is_newest_first_and_paginated(operator, data, ws, monkeypatch):
    from shequn.console import queries

    page = operator.get(f"/w/tea/members/{data.wang.pk}/").content.decode()
    items = re.findall(r'<span class="itype">([^<]+)</span>', page)
    assert items == ["评价", "购买", "消息", "消息", "关注"]

    real = queries.timeline
    monkeypatch.setattr(queries, "timeline", lambda *a, **k: real(*a, **{**k, "limit": 2}))
    first = operator.get(f"/w/tea/members/{data.wang.pk}/").content.decode()
    cursor = re.search(r'href="\?before=([0-9_]+)#timeline"', first).group(1)
    second = operator.get(f"/w/tea/members/{data.wang.pk}/", {"before": cursor}).content.decode()
    first_items = re.findall(r'<span class="itype">([^<]+)</span>', first)
    second_items = re.findall(r'<span class="itype">([^<]+)</span>', second)
    assert first_items == ["评价", "购买"]
    assert second_items == ["消息", "消息"]
    # a cursor that is not one is ignored, not an error
    assert operator.get(f"/w/tea/members/{data.wang.pk}/", {"before": "garbage"}).status_code == 200


def test_member_page_query_count(operator, data, ws, django_assert_max_num_queries):
    url = f"/w/tea/members/{data.wang.pk}/"
    with django_assert_max_num_queries(15) as before:
        operator.get(url)
    for i in range(15):
        interactions.ingest(ws, {"member_id": data.wang.pk, "type": "message", "channel": "wechat",
                                 "occurred_at": f"2026-10-{i + 1:02d}T10:00:00+08:00", "touchpoint": "wx-menu"})
    members.add_tags(ws, data.wang.pk, [f"extra{i}" for i in range(10)], actor="test")
    members.add_keywords(ws, data.wang.pk, [f"饮品/k{i}" for i in range(5)], actor="test")
    with django_assert_max_num_queries(15) as after:
        operator.get(url)
    assert len(after.captured_queries) == len(before.captured_queries)


# ---------------------------------------------------------------------------------------------
# forms on the member page


def tags_of(member) -> set[str]:
    return set(member.member_tags.values_list("tag__name", flat=True))


def test_tag_add_and_remove(operator, data):
    base = f"/w/tea/members/{data.li.pk}/"
    response = operator.post(base + "tags/add/", {"names": "新客, 周末党"}, follow=True)
    assert response.status_code == 200
    assert tags_of(data.li) == {"奶茶控", "新客", "周末党"}
    assert "已添加标签" in response.content.decode()
    response = operator.post(base + "tags/remove/", {"name": "奶茶控"}, follow=True)
    assert tags_of(data.li) == {"新客", "周末党"}
    assert "已移除标签：奶茶控" in response.content.decode()


def test_bad_tag_shows_error_and_changes_nothing(operator, data):
    base = f"/w/tea/members/{data.li.pk}/"
    response = operator.post(base + "tags/add/", {"names": "a/b"}, follow=True)
    assert "标签名须为 1–64 个字符" in response.content.decode()
    response = operator.post(base + "tags/add/", {"names": " , "}, follow=True)
    assert "请至少输入一个标签" in response.content.decode()
    response = operator.post(base + "tags/remove/", {"name": "VIP"}, follow=True)
    assert "此会员没有标签“VIP”" in response.content.decode()
    assert tags_of(data.li) == {"奶茶控"}


def test_agent_and_clerk_cannot_change_members(agent, clerk, data):
    for client in (agent, clerk):
        assert client.post(f"/w/tea/members/{data.li.pk}/tags/add/", {"names": "x"}).status_code == 403
        assert client.post(f"/w/tea/members/{data.li.pk}/stage/", {"stage": "advocate"}).status_code == 403
        assert client.post(f"/w/tea/members/{data.li.pk}/merge/", {"other_id": data.zhao.pk}).status_code == 403
    assert tags_of(data.li) == {"奶茶控"}
    data.li.refresh_from_db()
    assert data.li.stage.key == "considering"


def test_actions_need_post(operator, data):
    assert operator.get(f"/w/tea/members/{data.li.pk}/tags/add/").status_code == 405


def test_stage_change(operator, data):
    response = operator.post(f"/w/tea/members/{data.li.pk}/stage/", {"stage": "advocate"}, follow=True)
    data.li.refresh_from_db()
    assert data.li.stage.key == "advocate"
    change = StageChange.objects.filter(member=data.li).order_by("-id").first()
    assert change.cause == "manual" and change.actor.startswith("user:")
    assert "阶段已改为 口碑" in response.content.decode()
    assert "员工手动修改" in response.content.decode()


def test_bad_stage_changes_nothing(operator, data):
    count = StageChange.objects.count()
    response = operator.post(f"/w/tea/members/{data.li.pk}/stage/", {"stage": "moon"}, follow=True)
    assert "未知的阶段" in response.content.decode()
    data.li.refresh_from_db()
    assert data.li.stage.key == "considering" and StageChange.objects.count() == count


def test_merge_and_undo(operator, data):
    base = f"/w/tea/members/{data.wang.pk}/"
    response = operator.post(base + "merge/", {"other_id": data.zhao.pk}, follow=True)
    assert f"会员 #{data.zhao.pk} 已合并到此会员" in response.content.decode()
    data.zhao.refresh_from_db()
    assert data.zhao.status == MemberStatus.MERGED and data.zhao.merged_into_id == data.wang.pk
    record = MergeRecord.objects.get(survivor=data.wang, absorbed=data.zhao)
    assert f'action="{base}merges/{record.pk}/undo/"' in response.content.decode()
    absorbed_page = operator.get(f"/w/tea/members/{data.zhao.pk}/").content.decode()
    assert "此会员已合并到" in absorbed_page

    response = operator.post(f"{base}merges/{record.pk}/undo/", follow=True)
    assert "已撤销合并" in response.content.decode()
    data.zhao.refresh_from_db()
    record.refresh_from_db()
    assert data.zhao.status == MemberStatus.ACTIVE and record.undone_at is not None
    again = operator.post(f"{base}merges/{record.pk}/undo/", follow=True)
    assert "这次合并已经撤销过了" in again.content.decode()


@pytest.mark.parametrize("other", ["self", "foreign", "missing", "garbage"])
def test_bad_merge_changes_nothing(operator, data, other):
    other_id = {"self": data.wang.pk, "foreign": data.foreign.pk, "missing": 999_999, "garbage": "abc"}[other]
    response = operator.post(f"/w/tea/members/{data.wang.pk}/merge/", {"other_id": other_id}, follow=True)
    assert response.status_code == 200
    assert 'class="msg error"' in response.content.decode()
    assert MergeRecord.objects.count() == 0
    data.foreign.refresh_from_db()
    assert data.foreign.status == MemberStatus.ACTIVE


def test_undo_of_another_workspaces_merge_is_404(operator, data, other_ws):
    b = members.upsert_member(other_ws, [{"kind": "phone", "value": "13900139111"}]).member
    record = members.merge_members(other_ws, data.foreign.pk, b.pk, reason="t", actor="t")
    assert operator.post(f"/w/tea/members/{data.wang.pk}/merges/{record.pk}/undo/").status_code == 404
    record.refresh_from_db()
    assert record.undone_at is None
