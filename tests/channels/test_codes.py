"""Channel QR codes (渠道活码): scans pushed by wechatpy playing WeChat's servers, the code's welcome
and tags, the first acquisition source, and each code's stats with exact numbers."""

from __future__ import annotations

import datetime as dt

import pytest

from shequn.channels import code_services, queries
from shequn.channels.code_services import QrTicket, WeChatApiFailed
from shequn.channels.models import ChannelCode, ChannelCodeDay, ChannelCodeMember, WeChatAccount
from shequn.core import hooks
from shequn.core.errors import Conflict, NotFound, ValidationError
from shequn.core.models import AuditEntry
from shequn.interactions import services as interactions
from shequn.interactions.models import Interaction
from shequn.members.models import Member

from .helpers import APP_ID, WeChatServer, connect, event_xml

T0 = 1780279200  # 2026-06-01 02:00 UTC = 10:00 in Asia/Shanghai, the workspace's time zone
DAY = 86400


def fake_qr(account: WeChatAccount, scene: str) -> QrTicket:
    return QrTicket(ticket=f"gQH47joAAAAAAAAAASxodHRwOi8v{scene}", url=f"http://weixin.qq.com/q/02{scene}")


def make_code(ws, account, scene: str, *, name: str = "门店海报", kind: str = "poster", welcome: str = "",
              tags=()) -> ChannelCode:
    return code_services.create_code(ws, account.pk, kind=kind, name=name, scene=scene, welcome_text=welcome,
                                     tags=list(tags), actor="user:1", issue_qr=fake_qr)


def openid(n: int) -> str:
    return f"oUpF8uMuAJO_M2pxb1Q9zNjWe{n:03d}"


def push(server: WeChatServer, event: str, key: str | None, who: int, at: int):
    return server.reply(server.push(event_xml(event, key, openid=openid(who), create_time=at), encrypt=True),
                        encrypted=True)


def member(ws, who: int) -> Member:
    return Member.objects.get(workspace=ws, identities__value=openid(who))


def buy(ws, who: int, at: int, n: int = 1) -> None:
    [result] = interactions.ingest_batch(ws, [{
        "member_id": member(ws, who).pk, "type": "purchase", "channel": "store", "amount": "32.00", "currency": "CNY",
        "occurred_at": dt.datetime.fromtimestamp(at, tz=dt.UTC).isoformat(), "source": "pos",
        "external_id": f"order-{who}-{at}-{n}"}])
    assert result.status == "created"


def tags_of(m: Member) -> set[str]:
    return set(m.member_tags.values_list("tag__name", flat=True))


@pytest.fixture
def scanned():
    """Every CHANNEL_CODE_SCANNED emitted during the test."""
    seen: list[dict] = []

    def handler(**kwargs):
        seen.append(kwargs)

    hooks.on(hooks.CHANNEL_CODE_SCANNED, handler)
    yield seen
    hooks._handlers[hooks.CHANNEL_CODE_SCANNED].remove(handler)


# ---------------------------------------------------------------------------------------------
# scans on the WeChat endpoint


def test_new_follower_via_a_code_gets_its_welcome_tags_and_source(ws, safe, scanned):
    account, server = safe
    code = make_code(ws, account, "store-xihu", welcome="欢迎来到西湖店!回复 1 查积分。", tags=["西湖店", "海报"])
    reply = push(server, "subscribe", "qrscene_store-xihu", 1, T0)
    assert (reply.type, reply.content, reply.target) == ("text", "欢迎来到西湖店!回复 1 查积分。", openid(1))

    m = member(ws, 1)
    assert (m.source_channel, m.source_code) == ("wechat_qr", "store-xihu")
    assert tags_of(m) == {"西湖店", "海报"}
    [row] = Interaction.objects.filter(workspace=ws)
    assert row.type == "follow"
    assert row.properties == {"msg_type": "event", "event": "subscribe", "event_key": "qrscene_store-xihu",
                              "scene": "store-xihu", "channel_code": code.pk, "account": APP_ID}
    assert queries.code_stats(ws)[code.pk] == queries.CodeStats(scans=1, scanners=1, follows=1)
    assert [(s["member_id"], s["code_id"], s["scene"], s["new_follower"]) for s in scanned] == [
        (m.pk, code.pk, "store-xihu", True)]
    assert scanned[0]["workspace"] == ws and scanned[0]["at"] == dt.datetime.fromtimestamp(T0, tz=dt.UTC)


def test_a_followers_scan_is_a_touch_and_the_first_source_is_kept(ws, safe, scanned):
    account, server = safe
    poster = make_code(ws, account, "poster-1", welcome="海报欢迎", tags=["海报"])
    clerk = make_code(ws, account, "clerk-wang", kind="clerk", name="店员 小王", welcome="小王欢迎", tags=["小王"])
    push(server, "subscribe", "qrscene_poster-1", 1, T0)

    assert push(server, "SCAN", "clerk-wang", 1, T0 + 60) is None  # "success": nothing to say
    m = member(ws, 1)
    assert (m.source_channel, m.source_code) == ("wechat_qr", "poster-1")
    assert tags_of(m) == {"海报"}  # a touch gives no tags
    scan = Interaction.objects.get(workspace=ws, type="scan")
    assert scan.properties["channel_code"] == clerk.pk and scan.properties["scene"] == "clerk-wang"
    stats = queries.code_stats(ws)
    assert stats[clerk.pk] == queries.CodeStats(scans=1, scanners=1, follows=0)
    assert stats[poster.pk] == queries.CodeStats(scans=1, scanners=1, follows=1)
    assert [s["new_follower"] for s in scanned] == [True, False]

    # Unfollowing and following again through another code: a new follower, but the source stays.
    push(server, "unsubscribe", "", 1, T0 + 120)
    reply = push(server, "subscribe", "qrscene_clerk-wang", 1, T0 + 180)
    assert reply.content == "小王欢迎"
    m.refresh_from_db()
    assert (m.source_channel, m.source_code) == ("wechat_qr", "poster-1")
    assert tags_of(m) == {"海报", "小王"}
    assert queries.code_stats(ws)[clerk.pk] == queries.CodeStats(scans=2, scanners=1, follows=1)
    assert queries.code_stats(ws)[poster.pk] == queries.CodeStats(scans=1, scanners=1, follows=1, unfollows=1)


def test_an_unknown_scene_behaves_as_before(ws, safe, scanned):
    account, server = safe
    make_code(ws, account, "poster-1", welcome="海报欢迎", tags=["海报"])
    reply = push(server, "subscribe", "qrscene_nobody-knows", 1, T0)
    assert reply.content == "欢迎关注茶语!"  # the account's welcome
    m = member(ws, 1)
    assert (m.source_channel, m.source_code) == ("wechat_qr", "nobody-knows")
    assert tags_of(m) == set()
    assert "channel_code" not in Interaction.objects.get(workspace=ws).properties
    assert push(server, "SCAN", "nobody-knows", 1, T0 + 10) is None
    assert not ChannelCodeDay.objects.exists() and not ChannelCodeMember.objects.exists() and scanned == []


def test_a_code_without_welcome_falls_back_to_the_accounts(ws, safe):
    account, server = safe
    make_code(ws, account, "event-tasting", kind="event", tags=["品鉴会"])
    assert push(server, "subscribe", "qrscene_event-tasting", 1, T0).content == "欢迎关注茶语!"
    assert tags_of(member(ws, 1)) == {"品鉴会"}


def test_a_deactivated_code_still_counts_but_no_longer_welcomes_or_tags(ws, safe):
    account, server = safe
    code = make_code(ws, account, "campaign-1111", kind="campaign", welcome="双十一欢迎", tags=["双十一"])
    code_services.update_code(ws, code.pk, active=False, actor="user:1")
    assert push(server, "subscribe", "qrscene_campaign-1111", 1, T0).content == "欢迎关注茶语!"
    assert tags_of(member(ws, 1)) == set()
    assert queries.code_stats(ws)[code.pk] == queries.CodeStats(scans=1, scanners=1, follows=1)

    code_services.update_code(ws, code.pk, active=True, actor="user:1")
    assert push(server, "subscribe", "qrscene_campaign-1111", 2, T0 + 5).content == "双十一欢迎"
    assert tags_of(member(ws, 2)) == {"双十一"}


def test_an_edit_reaches_the_next_scan_at_once(ws, safe):
    """The per-account cache is keyed by ``codes_version``, which every change replaces."""
    account, server = safe
    code = make_code(ws, account, "poster-2", welcome="旧的欢迎语")
    version = WeChatAccount.objects.get(pk=account.pk).codes_version
    assert push(server, "subscribe", "qrscene_poster-2", 1, T0).content == "旧的欢迎语"
    code_services.update_code(ws, code.pk, welcome_text="新的欢迎语", actor="user:1")
    assert WeChatAccount.objects.get(pk=account.pk).codes_version != version
    assert push(server, "subscribe", "qrscene_poster-2", 2, T0 + 5).content == "新的欢迎语"
    # A new code for a scene that was unknown (and cached as unknown) is found at once too.
    assert push(server, "subscribe", "qrscene_poster-3", 3, T0 + 10).content == "欢迎关注茶语!"
    make_code(ws, account, "poster-3", welcome="三号海报")
    assert push(server, "subscribe", "qrscene_poster-3", 4, T0 + 15).content == "三号海报"


def test_the_lookup_is_cached(ws, safe, django_assert_num_queries):
    account, _server = safe
    code = make_code(ws, account, "poster-4", welcome="hi")
    fresh = WeChatAccount.objects.get(pk=account.pk)
    queries.clear_code_cache()
    with django_assert_num_queries(1):
        assert queries.code_for_scene(fresh, "poster-4").id == code.pk
        assert queries.code_for_scene(fresh, "poster-4").id == code.pk
    with django_assert_num_queries(0):
        assert queries.code_for_scene(fresh, "poster-4").welcome_text == "hi"


def test_retries_of_a_scan_count_once(ws, safe, scanned):
    account, server = safe
    code = make_code(ws, account, "poster-1", welcome="海报欢迎", tags=["海报"])
    replies = [push(server, "subscribe", "qrscene_poster-1", 1, T0).content for _ in range(3)]
    assert replies == ["海报欢迎"] * 3
    assert queries.code_stats(ws)[code.pk] == queries.CodeStats(scans=1, scanners=1, follows=1)
    assert len(scanned) == 1


# ---------------------------------------------------------------------------------------------
# stats


def test_stats_have_exact_numbers(ws, safe):
    account, server = safe
    a = make_code(ws, account, "poster-a", welcome="A")
    b = make_code(ws, account, "store-b", kind="store", name="收银台立牌", welcome="B")

    push(server, "subscribe", "qrscene_poster-a", 1, T0)            # m1 follows via A on day 0 …
    push(server, "unsubscribe", "", 1, T0 + 2 * DAY)                # … and leaves on day 2: early unfollow
    push(server, "subscribe", "qrscene_poster-a", 2, T0)            # m2 follows via A on day 0 …
    push(server, "unsubscribe", "", 2, T0 + 10 * DAY)               # … and leaves on day 10: not early
    push(server, "subscribe", "qrscene_poster-a", 3, T0 + DAY)      # m3 follows via A on day 1 …
    buy(ws, 3, T0 + 3 * DAY)                                        # … first purchase day 3: conversion
    buy(ws, 3, T0 + 4 * DAY)                                        # a second purchase: not counted again
    push(server, "subscribe", None, 4, T0)                          # m4 follows without a code …
    buy(ws, 4, T0 + 3600)                                           # … buys …
    push(server, "SCAN", "poster-a", 4, T0 + DAY)                   # … then scans A: a customer already
    buy(ws, 4, T0 + 2 * DAY)                                        # not a conversion
    push(server, "subscribe", None, 5, T0)                          # m5 follows without a code …
    push(server, "SCAN", "poster-a", 5, T0 + DAY)                   # … scans A twice …
    push(server, "SCAN", "poster-a", 5, T0 + 2 * DAY)
    push(server, "SCAN", "store-b", 5, T0 + 2 * DAY + 60)           # … and B …
    buy(ws, 5, T0 + 4 * DAY)                                        # … first purchase: converts for A and B
    push(server, "subscribe", "qrscene_store-b", 6, T0 + DAY)       # m6 follows via B …
    push(server, "unsubscribe", "", 6, T0 + 8 * DAY - 1)            # … leaves just inside 7 days

    stats = queries.code_stats(ws)
    assert stats[a.pk] == queries.CodeStats(scans=6, scanners=5, follows=3, unfollows=1, conversions=2)
    assert stats[b.pk] == queries.CodeStats(scans=2, scanners=2, follows=1, unfollows=1, conversions=1)
    assert stats[a.pk].unfollow_rate == pytest.approx(1 / 3) and stats[a.pk].conversion_rate == pytest.approx(2 / 5)

    day0 = dt.date(2026, 6, 1)
    series = queries.code_series(ws, a.pk, day0, day0 + dt.timedelta(days=5))
    assert [(d.stats.scans, d.stats.scanners, d.stats.follows, d.stats.unfollows, d.stats.conversions)
            for d in series] == [(2, 2, 2, 0, 0), (3, 3, 1, 0, 0), (1, 0, 0, 1, 0), (0, 0, 0, 0, 1),
                                 (0, 0, 0, 0, 1), (0, 0, 0, 0, 0)]
    # A period: days 1–2 only.
    assert queries.code_stats(ws, [a.pk], since=day0 + dt.timedelta(days=1), until=day0 + dt.timedelta(days=2))[
        a.pk] == queries.CodeStats(scans=4, scanners=3, follows=1, unfollows=1)

    # The daily counters agree with the facts per member.
    links = ChannelCodeMember.objects.filter(code=a)
    assert sum(link.scans for link in links) == 6
    assert links.filter(followed_at__isnull=False).count() == 3
    assert links.filter(unfollowed_at__isnull=False).count() == 1
    assert set(links.filter(converted_at__isnull=False).values_list("member__identities__value", flat=True)) == {
        openid(3), openid(5)}
    assert links.get(member=member(ws, 4)).customer_before is True


def test_a_late_purchase_from_before_the_scan_is_no_conversion(ws, safe):
    account, server = safe
    a = make_code(ws, account, "poster-a")
    push(server, "subscribe", "qrscene_poster-a", 1, T0)
    buy(ws, 1, T0 - DAY)  # imported later, happened the day before the scan
    buy(ws, 1, T0 + DAY)
    assert queries.code_stats(ws)[a.pk].conversions == 0
    assert ChannelCodeMember.objects.get(code=a).customer_before is True


def test_an_unfollow_of_another_account_is_not_counted(ws, safe):
    account, server = safe
    a = make_code(ws, account, "poster-a")
    push(server, "subscribe", "qrscene_poster-a", 1, T0)
    [r] = interactions.ingest_batch(ws, [{"member_id": member(ws, 1).pk, "type": "unfollow", "channel": "wechat",
                                          "occurred_at": dt.datetime.fromtimestamp(T0 + 60, tz=dt.UTC).isoformat(),
                                          "source": "wechat:wx0000000000other", "external_id": "x1"}])
    assert r.status == "created"
    assert queries.code_stats(ws)[a.pk].unfollows == 0


def test_stats_are_per_workspace(ws, other_ws, safe):
    account, server = safe
    a = make_code(ws, account, "poster-a")
    push(server, "subscribe", "qrscene_poster-a", 1, T0)
    assert queries.code_stats(other_ws) == {}
    assert queries.code_stats(other_ws, [a.pk]) == {}
    assert queries.code_series(other_ws, a.pk, dt.date(2026, 6, 1), dt.date(2026, 6, 1))[0].stats == queries.CodeStats()


# ---------------------------------------------------------------------------------------------
# creating and editing codes


def test_create_stores_what_wechat_returned_and_audits(ws, safe):
    account, _ = safe
    code = make_code(ws, account, "store-xihu", name="西湖店门店海报", welcome="欢迎", tags=["西湖店", "西湖店", " 海报 "])
    assert (code.ticket, code.url, code.tags, code.active, code.created_by) == (
        "gQH47joAAAAAAAAAASxodHRwOi8vstore-xihu", "http://weixin.qq.com/q/02store-xihu", ["西湖店", "海报"], True, "user:1")
    assert not code.is_demo
    entry = AuditEntry.objects.get(workspace=ws, action="channel_code.create")
    assert entry.data == {"scene": "store-xihu", "kind": "poster", "account": APP_ID}


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"scene": ""}, "scene"),
    ({"scene": "x" * 65}, "scene"),
    ({"scene": "有中文"}, "scene"),
    ({"scene": "a b"}, "scene"),
    ({"kind": "billboard"}, "kind"),
    ({"name": ""}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"welcome_text": "字" * 700}, "welcome_text"),
    ({"welcome_text": "bell\x07"}, "welcome_text"),
    ({"tags": ["a/b"]}, "tags"),
    ({"tags": [f"t{i}" for i in range(11)]}, "tags"),
])
def test_create_validates(ws, safe, kwargs, field):
    account, _ = safe
    calls = []

    def issuer(acc, scene):
        calls.append(scene)
        return fake_qr(acc, scene)

    args = {"kind": "poster", "name": "海报", "scene": "poster-1", "welcome_text": "", "tags": [], **kwargs}
    with pytest.raises(ValidationError) as exc:
        code_services.create_code(ws, account.pk, actor="t", issue_qr=issuer, **args)
    assert exc.value.details == {"field": field}
    assert calls == [] and not ChannelCode.objects.exists()


def test_a_scene_is_unique_per_account(ws, safe):
    account, _ = safe
    make_code(ws, account, "poster-1")
    with pytest.raises(Conflict) as exc:
        make_code(ws, account, "poster-1")
    assert exc.value.code == "scene_taken"
    other, _path = connect(ws, "safe", app_id="wx9f8e7d6c5b4a3921")
    assert make_code(ws, other, "poster-1").scene == "poster-1"  # another account may use it


def test_a_failed_wechat_call_stores_nothing(ws, safe):
    account, _ = safe

    def refuse(acc, scene):
        raise WeChatApiFailed("WeChat refused the QR code: invalid credential")

    with pytest.raises(WeChatApiFailed):
        code_services.create_code(ws, account.pk, kind="poster", name="x", scene="p1", actor="t", issue_qr=refuse)
    assert not ChannelCode.objects.exists()


def test_update_keeps_the_scene_and_audits(ws, safe):
    account, _ = safe
    code = make_code(ws, account, "poster-1", welcome="a", tags=["x"])
    updated = code_services.update_code(ws, code.pk, name="新名字", kind="event", welcome_text="b", tags=["y", "z"],
                                        actor="user:2")
    assert (updated.name, updated.kind, updated.welcome_text, updated.tags, updated.scene) == (
        "新名字", "event", "b", ["y", "z"], "poster-1")
    assert AuditEntry.objects.get(workspace=ws, action="channel_code.update").data == {
        "fields": ["kind", "name", "welcome_text", "tags"]}
    code_services.update_code(ws, code.pk, active=False, actor="user:2")
    assert AuditEntry.objects.filter(workspace=ws, action="channel_code.deactivate").count() == 1
    code_services.update_code(ws, code.pk, active=False, actor="user:2")  # no change, no entry
    assert AuditEntry.objects.filter(workspace=ws, action="channel_code.deactivate").count() == 1


def test_codes_are_scoped_to_their_workspace(ws, other_ws, safe):
    account, _ = safe
    code = make_code(ws, account, "poster-1")
    with pytest.raises(NotFound):
        code_services.update_code(other_ws, code.pk, name="hijack", actor="t")
    with pytest.raises(NotFound):
        code_services.create_code(other_ws, account.pk, kind="poster", name="x", scene="p2", actor="t", issue_qr=fake_qr)
    with pytest.raises(NotFound):
        queries.code(other_ws, code.pk)
    assert list(queries.codes(other_ws)) == []
    code.refresh_from_db()
    assert code.name == "门店海报"


# ---------------------------------------------------------------------------------------------
# against a fake of WeChat's API (a real HTTP server; the real client code path runs)


def test_create_asks_wechat_for_a_permanent_string_scene_qr(ws, safe, settings):
    from shequn.outbound.fake_wechat import FakeWeChatServer

    from .helpers import APP_SECRET

    account, server = safe
    with FakeWeChatServer(accounts={APP_ID: APP_SECRET}) as fake:
        settings.SHEQUN_WECHAT_API_BASE = fake.base_url
        code = code_services.create_code(ws, account.pk, kind="store", name="收银台立牌", scene="store-counter-1",
                                         welcome_text="欢迎光临", tags=["收银台"], actor="user:1")
        [qr] = fake.qrcodes
        assert qr["action_name"] == "QR_LIMIT_STR_SCENE"
        assert qr["action_info"] == {"scene": {"scene_str": "store-counter-1"}}
        assert (code.ticket, code.url) == (qr["ticket"], qr["url"])

        fake.answer_next(40001, n=2)  # the token is refused twice: no usable answer
        with pytest.raises(WeChatApiFailed) as exc:
            code_services.create_code(ws, account.pk, kind="poster", name="海报", scene="poster-9", actor="user:1")
        assert exc.value.status == 502
        assert list(ChannelCode.objects.values_list("scene", flat=True)) == ["store-counter-1"]
    # The code works on the endpoint at once.
    assert push(server, "subscribe", "qrscene_store-counter-1", 1, T0).content == "欢迎光临"
