"""The protocol module against wechatpy, an independent implementation (no database)."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from wechatpy import parse_message
from wechatpy.crypto import PrpCrypto
from wechatpy.utils import WeChatSigner

from shequn.channels import wechat

from .helpers import AES_KEY, APP_ID, TOKEN


def test_signature_is_sha1_over_the_sorted_parts_like_wechatpy():
    signer = WeChatSigner()
    signer.add_data(TOKEN, "1780000000", "nonce42")
    assert wechat.sha1_signature(TOKEN, "1780000000", "nonce42") == signer.signature
    signer = WeChatSigner()
    signer.add_data(TOKEN, "1780000000", "nonce42", "ENCRYPTED+/=")
    assert wechat.sha1_signature("nonce42", "ENCRYPTED+/=", TOKEN, "1780000000") == signer.signature


@pytest.mark.parametrize("size", [0, 1, 11, 12, 13, 43, 44, 45, 100, 2000])
def test_our_ciphertext_is_read_by_wechatpy_and_theirs_by_us(size):
    """Payload lengths around the 32-byte block boundary (16 + 4 + len(xml) + len(appid))."""
    xml = "<xml>" + "茶" * size + "</xml>"
    ours = wechat.MessageCipher(AES_KEY, APP_ID).encrypt(xml)
    key = base64.b64decode(AES_KEY + "=")
    assert PrpCrypto(key).decrypt(ours, APP_ID) == xml
    theirs = PrpCrypto(key).encrypt(xml, APP_ID).decode()
    assert wechat.MessageCipher(AES_KEY, APP_ID).decrypt(theirs) == xml


def test_padding_is_pkcs7_to_32_byte_blocks():
    key = base64.b64decode(AES_KEY + "=")
    cipher = wechat.MessageCipher(AES_KEY, APP_ID)
    for size in (0, 1, 12, 13, 44):
        raw = base64.b64decode(cipher.encrypt("x" * size))
        decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        plain = decryptor.update(raw) + decryptor.finalize()
        assert len(plain) % 32 == 0
        pad = plain[-1]
        assert 1 <= pad <= 32 and plain[-pad:] == bytes([pad]) * pad
        body = plain[:-pad]
        assert struct.unpack(">I", body[16:20])[0] == size
        assert body[20:20 + size] == b"x" * size and body[20 + size:] == APP_ID.encode()


def test_decrypt_refuses_another_appid_and_garbage():
    other = wechat.MessageCipher(AES_KEY, "wx0000000000000000").encrypt("<xml/>")
    with pytest.raises(wechat.SignatureInvalid) as exc:
        wechat.MessageCipher(AES_KEY, APP_ID).decrypt(other)
    assert exc.value.code == "wrong_appid" and exc.value.status == 403
    for garbage in ("not base64!", base64.b64encode(b"short").decode(), base64.b64encode(b"\0" * 64).decode()):
        with pytest.raises(wechat.MalformedMessage) as exc2:
            wechat.MessageCipher(AES_KEY, APP_ID).decrypt(garbage)
        assert exc2.value.status == 400


def test_aes_key_validation():
    assert wechat.aes_key_problem(AES_KEY) is None
    assert "43" in (wechat.aes_key_problem(AES_KEY[:-1]) or "")
    assert wechat.aes_key_problem(AES_KEY[:-1] + "=") is not None
    assert wechat.aes_key_problem(AES_KEY[:-1] + "-") is not None


@pytest.mark.parametrize("content", ["a]]>b", "]]>", "]]]]>>", "x]]><![CDATA[y", "<b>&amp;</b>", "多行\n文本"])
def test_cdata_survives_any_content(content):
    xml = wechat.render_text_reply(to_user="o1", from_user="gh_1", create_time=1780000000, content=content)
    assert parse_message(xml).content == content
    assert wechat.parse_xml(xml.encode())["Content"] == content


def test_parse_xml_forbids_dtds_and_entities():
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><xml><Content>&lol2;</Content></xml>')
    with pytest.raises(wechat.MalformedMessage):
        wechat.parse_xml(bomb.encode())
    external = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><a>&e;</a></xml>'
    with pytest.raises(wechat.MalformedMessage):
        wechat.parse_xml(external.encode())
    with pytest.raises(wechat.MalformedMessage):
        wechat.parse_xml(b"<html><a>1</a></html>")
    with pytest.raises(wechat.BodyTooLarge):
        wechat.parse_xml(b"<xml>" + b"a" * wechat.MAX_BODY_BYTES + b"</xml>")


def test_dedup_keys():
    text = wechat.message_from_fields({"ToUserName": "gh", "FromUserName": "o1", "CreateTime": "1780000000",
                                       "MsgType": "text", "Content": "hi", "MsgId": "1234567890"})
    assert text.dedup_key == "1234567890"
    event = wechat.message_from_fields({"ToUserName": "gh", "FromUserName": "o1", "CreateTime": "1780000000",
                                        "MsgType": "event", "Event": "subscribe"})
    assert event.dedup_key == "event:o1:1780000000:subscribe"
    with pytest.raises(wechat.MalformedMessage):
        wechat.message_from_fields({"FromUserName": "o1", "CreateTime": "soon", "MsgType": "text"})
    with pytest.raises(wechat.MalformedMessage):
        wechat.message_from_fields({"FromUserName": "o1", "CreateTime": "1", "MsgType": "event"})
