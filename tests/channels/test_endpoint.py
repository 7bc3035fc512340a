"""The server endpoint, driven by wechatpy playing WeChat's servers."""

from __future__ import annotations

import base64
import datetime as dt
import time

import pytest
import xmltodict
from wechatpy.crypto import PrpCrypto, WeChatCrypto

from shequn.channels import services
from shequn.channels.models import InboundMessage
from shequn.interactions.models import Interaction
from shequn.members.models import Identity, Member

from .helpers import (
    AES_KEY,
    APP_ID,
    OPENID,
    ORIGINAL_ID,
    TOKEN,
    WeChatServer,
    connect,
    event_xml,
    sign,
    text_xml,
)


def recorded(ws) -> tuple[int, int, int]:
    return (Member.objects.filter(workspace=ws).count(), Interaction.objects.filter(workspace=ws).count(),
            InboundMessage.objects.filter(workspace=ws).count())


def only_interaction(ws) -> Interaction:
    [row] = Interaction.objects.filter(workspace=ws)
    return row


# ---------------------------------------------------------------------------------------------
# URL verification (GET)


@pytest.mark.parametrize("fixture", ["plain", "compatible", "safe"])
def test_url_verification_echoes_echostr(request, fixture):
    _, server = request.getfixturevalue(fixture)
    response = server.verify("5837397520138756871")
    assert response.status_code == 200 and response.content == b"5837397520138756871"


def test_url_verification_refuses_a_wrong_signature(safe):
    _, server = safe
    response = server.verify("123", signature=sign("wrong-token", "1780000000", "1"))
    assert response.status_code == 403 and response["X-Shequn-Error"] == "invalid_signature"
    assert b"123" not in response.content
    response = server.client.get(server.path, {"echostr": "123"})
    assert response.status_code == 403 and response["X-Shequn-Error"] == "missing_signature"


def test_encrypted_echostr_is_checked_and_decrypted_in_safe_mode(safe):
    _, server = safe
    encrypted = PrpCrypto(base64.b64decode(AES_KEY + "=")).encrypt("8765432109", APP_ID).decode()
    ts, nonce = str(int(time.time())), "n0nce"
    ok = server.client.get(server.path, {"msg_signature": sign(TOKEN, ts, nonce, encrypted), "timestamp": ts,
                                         "nonce": nonce, "echostr": encrypted})
    assert ok.status_code == 200 and ok.content == b"8765432109"
    bad = server.client.get(server.path, {"msg_signature": sign(TOKEN, ts, nonce, "other"), "timestamp": ts,
                                          "nonce": nonce, "echostr": encrypted})
    assert bad.status_code == 403


def test_unknown_url_and_other_methods(safe):
    _, server = safe
    assert server.client.get("/wechat/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/", server.query()).status_code == 404
    assert server.client.put(server.path).status_code == 405
    assert server.client.delete(server.path).status_code == 405


# ---------------------------------------------------------------------------------------------
# plaintext, compatible and safe mode


def test_plaintext_text_message_is_recorded_and_answered(ws, plain):
    account, server = plain
    response = server.push(text_xml("有新品吗?", "24000000000000001"))
    assert response["Content-Type"].startswith("application/xml")
    reply = server.reply(response)
    assert (reply.type, reply.content, reply.target, reply.source) == ("text", "收到,稍后回复您。", OPENID, ORIGINAL_ID)

    row = only_interaction(ws)
    assert (row.type, row.channel, row.direction, row.source, row.external_id) == (
        "message", "wechat", "in", f"wechat:{APP_ID}", "24000000000000001")
    assert row.occurred_at == dt.datetime.fromtimestamp(1780000000, tz=dt.UTC)
    assert row.properties == {"msg_type": "text", "msg_id": "24000000000000001", "content": "有新品吗?",
                              "account": APP_ID, "bot_outcome": "handoff", "bot_source": "none"}
    ident = Identity.objects.get(workspace=ws, member=row.member)
    assert (ident.kind, ident.namespace, ident.value) == ("wechat_openid", APP_ID, OPENID)
    stored = InboundMessage.objects.get(account=account)
    assert (stored.dedup_key, stored.interaction_id, stored.reply_type, stored.reply_content) == (
        "24000000000000001", row.pk, "text", "收到,稍后回复您。")


def test_nothing_to_say_answers_success(ws):
    _, path = connect(ws, "plaintext", aes_key="")
    server = WeChatServer(path)
    response = server.push(text_xml("hello"))
    assert response.status_code == 200 and response.content == b"success"
    assert recorded(ws) == (1, 1, 1)


def test_safe_mode_message_is_decrypted_and_the_reply_encrypted(ws, safe):
    _, server = safe
    response = server.push(text_xml("积分多少?", "24000000000000002"), encrypt=True)
    body = response.content.decode()
    envelope = xmltodict.parse(body)["xml"]
    assert set(envelope) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
    assert "收到" not in body
    reply = server.reply(response, encrypted=True)  # wechatpy checks MsgSignature and the AppID
    assert (reply.content, reply.target, reply.source) == ("收到,稍后回复您。", OPENID, ORIGINAL_ID)
    assert only_interaction(ws).properties["content"] == "积分多少?"


def test_safe_mode_refuses_plaintext(ws, safe):
    _, server = safe
    response = server.push(text_xml("plain"))
    assert response.status_code == 403 and response["X-Shequn-Error"] == "mode_mismatch"
    assert recorded(ws) == (0, 0, 0)


def test_compatible_mode_takes_both_and_trusts_only_the_encrypted_copy(ws, compatible):
    _, server = compatible
    plain = server.push(text_xml("明文", "24000000000000003"))
    assert server.reply(plain).content == "收到,稍后回复您。"

    q = server.query()
    encrypt, msg_signature = server.encrypt(text_xml("密文", "24000000000000004"), q["timestamp"], q["nonce"])
    q.update({"encrypt_type": "aes", "msg_signature": msg_signature})
    forged_plain_copy = text_xml("forged", "24000000000000004").replace("</xml>", f"<Encrypt>{encrypt}</Encrypt></xml>")
    response = server.post(forged_plain_copy, q)
    assert server.reply(response, encrypted=True).content == "收到,稍后回复您。"
    contents = sorted(Interaction.objects.filter(workspace=ws).values_list("properties__content", flat=True))
    assert contents == ["密文", "明文"]


def test_compatible_mode_with_plain_copy_as_wechat_sends_it(ws, compatible):
    _, server = compatible
    response = server.push(text_xml("兼容", "24000000000000005"), encrypt=True, plain_copy=True)
    assert server.reply(response, encrypted=True).content == "收到,稍后回复您。"
    assert only_interaction(ws).properties["content"] == "兼容"


def test_encrypted_message_to_a_plaintext_account_is_refused(ws, plain):
    _, server = plain
    response = server.push(text_xml("x"), encrypt=True)
    assert response.status_code == 400 and response["X-Shequn-Error"] == "mode_mismatch"
    assert recorded(ws) == (0, 0, 0)


# ---------------------------------------------------------------------------------------------
# de-duplication of WeChat's retries


@pytest.mark.parametrize("encrypt", [False, True])
def test_three_retries_make_one_interaction_and_identical_replies(ws, compatible, encrypt):
    account, server = compatible
    xml = text_xml("在吗", "24000000000000010")
    responses = [server.push(xml, encrypt=encrypt) for _ in range(3)]  # each retry: new timestamp and nonce
    replies = [server.reply(r, encrypted=encrypt) for r in responses]
    assert len({(r.content, r.target, r.source, r.create_time) for r in replies}) == 1
    if not encrypt:
        assert responses[0].content == responses[1].content == responses[2].content
    assert recorded(ws) == (1, 1, 1)

    # The stored reply is what a retry gets, even after the settings change.
    services.set_auto_replies(ws, account.pk, reply_text="新的自动回复", actor="t")
    assert server.reply(server.push(xml, encrypt=encrypt), encrypted=encrypt).content == "收到,稍后回复您。"
    assert server.reply(server.push(text_xml("在吗", "24000000000000011"))).content == "新的自动回复"
    member = Member.objects.get(workspace=ws)
    assert member.interaction_count == 2


def test_event_retries_are_deduplicated_by_openid_and_create_time(ws, safe):
    _, server = safe
    for _ in range(3):
        reply = server.reply(server.push(event_xml("subscribe", create_time=1780000200), encrypt=True), encrypted=True)
        assert reply.content == "欢迎关注茶语!"
    row = only_interaction(ws)
    assert (row.type, row.external_id) == ("follow", f"event:{OPENID}:1780000200:subscribe")
    server.push(event_xml("subscribe", create_time=1780000201), encrypt=True)  # a new event, one second later
    assert Interaction.objects.filter(workspace=ws).count() == 2


def test_a_lost_reply_record_still_cannot_duplicate_the_interaction(ws, plain):
    """The interaction's own unique constraint is the durable guard."""
    _, server = plain
    xml = text_xml("hi", "24000000000000020")
    server.push(xml)
    InboundMessage.objects.all().delete()
    server.reply(server.push(xml))
    assert Interaction.objects.filter(workspace=ws).count() == 1
    assert InboundMessage.objects.get().interaction_id == only_interaction(ws).pk


# ---------------------------------------------------------------------------------------------
# events and message types


def test_subscribe_with_a_qr_scene_sets_the_acquisition_source_once(ws, safe):
    _, server = safe
    reply = server.reply(server.push(event_xml("subscribe", "qrscene_store-42", create_time=1780000300,
                                               extra="<Ticket><![CDATA[gQH47joAAAAAAAAAASxodHRw]]></Ticket>"),
                                     encrypt=True), encrypted=True)
    assert reply.content == "欢迎关注茶语!"
    member = Member.objects.get(workspace=ws)
    assert (member.source_channel, member.source_code) == ("wechat_qr", "store-42")
    row = only_interaction(ws)
    assert row.type == "follow"
    assert row.properties == {"msg_type": "event", "event": "subscribe", "event_key": "qrscene_store-42",
                              "scene": "store-42", "ticket": "gQH47joAAAAAAAAAASxodHRw", "account": APP_ID}

    server.push(event_xml("unsubscribe", "", create_time=1780000400), encrypt=True)
    server.push(event_xml("subscribe", "qrscene_poster-7", create_time=1780000500), encrypt=True)
    member.refresh_from_db()
    assert (member.source_channel, member.source_code) == ("wechat_qr", "store-42")  # the first one wins
    assert list(Interaction.objects.filter(workspace=ws).order_by("occurred_at").values_list("type", flat=True)) == [
        "follow", "unfollow", "follow"]


def test_unsubscribe_is_recorded_and_answered_success(ws, safe):
    _, server = safe
    response = server.push(event_xml("unsubscribe"), encrypt=True)
    assert response.content == b"success"
    row = only_interaction(ws)
    assert (row.type, row.properties["event"]) == ("unfollow", "unsubscribe")


def test_plain_subscribe_sets_no_source(ws, safe):
    _, server = safe
    server.push(event_xml("subscribe"), encrypt=True)
    member = Member.objects.get(workspace=ws)
    assert (member.source_channel, member.source_code) == ("", "")


@pytest.mark.parametrize(("xml", "itype", "props"), [
    (event_xml("SCAN", "store-42", extra="<Ticket><![CDATA[TICKET]]></Ticket>"), "scan",
     {"event": "SCAN", "event_key": "store-42", "scene": "store-42", "ticket": "TICKET"}),
    (event_xml("CLICK", "MENU_POINTS"), "custom", {"event": "CLICK", "event_key": "MENU_POINTS"}),
    (event_xml("VIEW", "https://shop.example.com/m", extra="<MenuId>2</MenuId>"), "custom",
     {"event": "VIEW", "event_key": "https://shop.example.com/m", "menu_id": "2"}),
    (event_xml("LOCATION", extra="<Latitude>23.137466</Latitude><Longitude>113.352425</Longitude>"
                                 "<Precision>119.385040</Precision>"), "custom",
     {"event": "LOCATION", "latitude": 23.137466, "longitude": 113.352425, "precision": 119.38504}),
])
def test_events(ws, safe, xml, itype, props):
    _, server = safe
    assert server.push(xml, encrypt=True).content == b"success"
    row = only_interaction(ws)
    assert row.type == itype
    assert row.properties == {"msg_type": "event", **props, "account": APP_ID}


def _message(msg_type: str, body: str, msg_id: str) -> str:
    return (f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName>"
            f"<CreateTime>1780000600</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType>{body}"
            f"<MsgId>{msg_id}</MsgId></xml>")


@pytest.mark.parametrize(("msg_type", "body", "props"), [
    ("image", "<PicUrl><![CDATA[http://mmbiz.qpic.cn/x.jpg]]></PicUrl><MediaId><![CDATA[media_1]]></MediaId>",
     {"pic_url": "http://mmbiz.qpic.cn/x.jpg", "media_id": "media_1"}),
    ("voice", "<MediaId><![CDATA[media_2]]></MediaId><Format><![CDATA[amr]]></Format>"
              "<Recognition><![CDATA[积分查询]]></Recognition>",
     {"media_id": "media_2", "format": "amr", "recognition": "积分查询", "bot_outcome": "handoff", "bot_source": "none"}),
    ("video", "<MediaId><![CDATA[media_3]]></MediaId><ThumbMediaId><![CDATA[thumb_3]]></ThumbMediaId>",
     {"media_id": "media_3", "thumb_media_id": "thumb_3"}),
    ("location", "<Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>20</Scale>"
                 "<Label><![CDATA[广州市天河区]]></Label>",
     {"latitude": 23.134521, "longitude": 113.358803, "scale": 20.0, "label": "广州市天河区"}),
    ("link", "<Title><![CDATA[新品]]></Title><Description><![CDATA[春茶]]></Description>"
             "<Url><![CDATA[https://example.com/a]]></Url>",
     {"title": "新品", "description": "春茶", "url": "https://example.com/a"}),
])
def test_message_types(ws, safe, msg_type, body, props):
    _, server = safe
    reply = server.reply(server.push(_message(msg_type, body, "24000000000000030"), encrypt=True), encrypted=True)
    assert reply.content == "收到,稍后回复您。"
    row = only_interaction(ws)
    assert row.type == "message" and row.external_id == "24000000000000030"
    assert row.properties == {"msg_type": msg_type, "msg_id": "24000000000000030", **props, "account": APP_ID}


# ---------------------------------------------------------------------------------------------
# reply text safety


@pytest.mark.parametrize("encrypt", [False, True])
def test_cdata_terminator_in_reply_text_round_trips(ws, compatible, encrypt):
    account, server = compatible
    tricky = "回复 ]]> 之后 <Content>x</Content> ]]]]> & 完"
    services.set_auto_replies(ws, account.pk, reply_text=tricky, actor="t")
    reply = server.reply(server.push(text_xml("hi ]]> there"), encrypt=encrypt), encrypted=encrypt)
    assert reply.content == tricky and reply.target == OPENID
    assert only_interaction(ws).properties["content"] == "hi ]]> there"


# ---------------------------------------------------------------------------------------------
# refused requests record nothing


def test_tampered_signature_is_refused_and_nothing_recorded(ws, plain, safe):
    _, plain_server = plain
    q = plain_server.query()
    q["signature"] = q["signature"][:-1] + ("0" if q["signature"][-1] != "0" else "1")
    assert plain_server.post(text_xml("x"), q).status_code == 403

    q = plain_server.query()
    q["nonce"] = q["nonce"] + "1"  # signed with another nonce
    assert plain_server.post(text_xml("x"), q).status_code == 403
    assert recorded(ws) == (0, 0, 0)


def test_tampered_ciphertext_or_msg_signature_is_refused(ws, safe):
    _, server = safe
    q = server.query()
    encrypt, msg_signature = server.encrypt(text_xml("x"), q["timestamp"], q["nonce"])
    q.update({"encrypt_type": "aes", "msg_signature": msg_signature})
    flipped = ("A" if encrypt[0] != "A" else "B") + encrypt[1:]
    body = f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><Encrypt><![CDATA[{flipped}]]></Encrypt></xml>"
    response = server.post(body, q)
    assert response.status_code == 403 and response["X-Shequn-Error"] == "invalid_signature"

    q2 = dict(q, msg_signature="0" * 40)
    body = f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    assert server.post(body, q2).status_code == 403
    q3 = dict(q)
    del q3["msg_signature"]
    assert server.post(body, q3).status_code == 403
    assert recorded(ws) == (0, 0, 0)


def test_wrong_appid_in_the_decrypted_payload_is_refused(ws, safe):
    _, server = safe
    q = server.query()
    impostor = WeChatCrypto(TOKEN, AES_KEY, "wx0123456789abcdef")
    envelope = xmltodict.parse(impostor.encrypt_message(text_xml("x"), q["nonce"], q["timestamp"]))["xml"]
    q.update({"encrypt_type": "aes", "msg_signature": envelope["MsgSignature"]})
    body = xmltodict.unparse({"xml": {"ToUserName": ORIGINAL_ID, "Encrypt": envelope["Encrypt"]}})
    response = server.post(body, q)
    assert response.status_code == 403 and response["X-Shequn-Error"] == "wrong_appid"
    assert recorded(ws) == (0, 0, 0)


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE xml [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<xml><ToUserName>gh_6a1b2c3d4e5f</ToUserName><FromUserName>oUpF8uMuAJO_M2pxb1Q9zNjWeS6o</FromUserName>
<CreateTime>1780000000</CreateTime><MsgType>text</MsgType><Content>&lol9;</Content><MsgId>1</MsgId></xml>"""


@pytest.mark.parametrize("body", [
    "<xml><ToUserName>gh</ToUserName><FromUserName>o1",  # truncated
    "not xml at all",
    "",
    "<html><MsgType>text</MsgType></html>",
    f"<xml><ToUserName>{ORIGINAL_ID}</ToUserName><MsgType>text</MsgType><CreateTime>1</CreateTime></xml>",  # no sender
    BILLION_LAUGHS,
])
def test_malformed_xml_is_a_clear_400_and_nothing_recorded(ws, plain, body):
    _, server = plain
    response = server.push(body)
    assert response.status_code == 400
    assert response["X-Shequn-Error"] in {"malformed_xml", "malformed_message"}
    assert response.content  # a message saying what is wrong
    assert recorded(ws) == (0, 0, 0)


def test_xml_bomb_inside_an_encrypted_message_is_refused(ws, safe):
    _, server = safe
    q = server.query()
    encrypt, msg_signature = server.encrypt(BILLION_LAUGHS, q["timestamp"], q["nonce"])
    q.update({"encrypt_type": "aes", "msg_signature": msg_signature})
    body = xmltodict.unparse({"xml": {"ToUserName": ORIGINAL_ID, "Encrypt": encrypt}})
    response = server.post(body, q)
    assert response.status_code == 400 and response["X-Shequn-Error"] == "malformed_xml"
    assert recorded(ws) == (0, 0, 0)


def test_oversized_body_is_refused(ws, plain):
    _, server = plain
    response = server.push(text_xml("x" * 70_000))
    assert response.status_code == 413
    assert recorded(ws) == (0, 0, 0)


def test_timestamp_tolerance_when_configured(ws):
    _, path = connect(ws, "plaintext", aes_key="", tolerance=300)
    server = WeChatServer(path)
    old = server.query(timestamp=str(int(time.time()) - 3600))
    response = server.post(text_xml("x"), old)
    assert response.status_code == 403 and response["X-Shequn-Error"] == "stale_request"
    assert recorded(ws) == (0, 0, 0)
    assert server.push(text_xml("x")).status_code == 200


# ---------------------------------------------------------------------------------------------
# tenancy


def test_another_workspaces_url_cannot_write_into_this_workspace(ws, other_ws, safe):
    _, ours = safe
    # The other workspace connected the same AppID (and even the same AES key) with its own token.
    _, their_path = connect(other_ws, "safe", token="theirToken77")
    theirs = WeChatServer(their_path, token="theirToken77")

    # Our token does not open their URL, and their URL never writes into our workspace.
    spoof = WeChatServer(their_path)  # signs with our token
    assert spoof.push(text_xml("x", "24000000000000040"), encrypt=True).status_code == 403
    assert spoof.verify("1").status_code == 403
    assert recorded(ws) == (0, 0, 0) and recorded(other_ws) == (0, 0, 0)

    # A properly signed push to their URL lands in their workspace only.
    theirs.push(text_xml("x", "24000000000000040"), encrypt=True)
    assert recorded(other_ws) == (1, 1, 1) and recorded(ws) == (0, 0, 0)
    # The same MsgId pushed to our URL is our own, separate record.
    ours.push(text_xml("x", "24000000000000040"), encrypt=True)
    assert recorded(ws) == (1, 1, 1) and recorded(other_ws) == (1, 1, 1)
    assert Member.objects.filter(workspace=ws).get().pk != Member.objects.filter(workspace=other_ws).get().pk
