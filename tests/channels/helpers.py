"""Helpers for the WeChat endpoint tests. ``WeChatServer`` plays WeChat's servers with wechatpy, an
independent implementation of the protocol: it signs, encrypts and reads replies the way WeChat does."""

from __future__ import annotations

import time
from itertools import count
from urllib.parse import urlencode

import xmltodict
from django.test import Client
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import WeChatSigner

from shequn.channels import services

APP_ID = "wx3c8e1f2a9b7d6e54"
APP_SECRET = "5f0e1d2c3b4a59687766554433221100"
TOKEN = "shequnToken2026"
AES_KEY = "kWxPxm6Rj1bY3vZq8LtN0cDfGhJ2aS4uE5oI7pU9yT3"
ORIGINAL_ID = "gh_6a1b2c3d4e5f"
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"

_nonces = count(1)


def sign(*parts: str) -> str:
    signer = WeChatSigner()
    signer.add_data(*parts)
    return signer.signature


class WeChatServer:
    """Pushes messages to one account's server URL as WeChat does."""

    def __init__(self, path: str, *, token: str = TOKEN, aes_key: str = AES_KEY, app_id: str = APP_ID) -> None:
        self.path = path
        self.token = token
        self.aes_key = aes_key
        self.app_id = app_id
        self.client = Client()
        self.crypto = WeChatCrypto(token, aes_key, app_id)

    def query(self, *, timestamp: str | None = None, nonce: str | None = None) -> dict[str, str]:
        timestamp = timestamp or str(int(time.time()))
        nonce = nonce or f"{next(_nonces)}{int(time.time() * 1000) % 100000}"
        return {"signature": sign(self.token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce,
                "openid": OPENID}

    def verify(self, echostr: str = "7391857302938475", **query_overrides: str):
        q = self.query()
        q.pop("openid")
        q["echostr"] = echostr
        q.update(query_overrides)
        return self.client.get(self.path, q)

    def post(self, body: str | bytes, query: dict[str, str], *, record: bool = True):
        """POST ``body``; then, unless ``record`` is False, record what the endpoint stored, as a
        worker's drain does once the request's transaction commits (inside a test's transaction
        nothing commits, so the tests run the same recording code at once)."""
        response = self.client.post(f"{self.path}?{urlencode(query)}", data=body, content_type="text/xml")
        if record:
            services.record_waiting()
        return response

    def push(self, xml: str, *, encrypt: bool = False, plain_copy: bool = False, query: dict[str, str] | None = None,
             record: bool = True):
        """POST ``xml``; with ``encrypt`` in safe-mode form (``<ToUserName/><Encrypt/>``, ``msg_signature``),
        with ``plain_copy`` also carrying the plaintext fields (compatible mode)."""
        q = query or self.query()
        if not encrypt:
            return self.post(xml, q, record=record)
        encrypt_text, msg_signature = self.encrypt(xml, q["timestamp"], q["nonce"])
        q.update({"encrypt_type": "aes", "msg_signature": msg_signature})
        inner = xmltodict.parse(xml)["xml"]
        body = {"ToUserName": inner.get("ToUserName", ORIGINAL_ID), "Encrypt": encrypt_text}
        if plain_copy:
            body = {**inner, "Encrypt": encrypt_text}
        return self.post(xmltodict.unparse({"xml": body}), q, record=record)

    def encrypt(self, xml: str, timestamp: str, nonce: str) -> tuple[str, str]:
        envelope = xmltodict.parse(self.crypto.encrypt_message(xml, nonce, timestamp))["xml"]
        return envelope["Encrypt"], envelope["MsgSignature"]

    def reply(self, response, *, encrypted: bool = False):
        """The passive reply as WeChat reads it (a wechatpy message), or None for ``success``."""
        assert response.status_code == 200, response.content
        body = response.content.decode()
        if body == "success":
            return None
        if encrypted:
            envelope = xmltodict.parse(body)["xml"]
            body = self.crypto.decrypt_message(body, envelope["MsgSignature"], envelope["TimeStamp"], envelope["Nonce"])
        return parse_message(body)


def text_xml(content: str, msg_id: str = "23456789012345678", *, openid: str = OPENID,
             create_time: int = 1780000000) -> str:
    return (f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{create_time}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{content.replace(']]>', ']]]]><![CDATA[>')}]]></Content><MsgId>{msg_id}</MsgId></xml>")


def event_xml(event: str, event_key: str | None = None, *, openid: str = OPENID, create_time: int = 1780000100,
              extra: str = "") -> str:
    key = f"<EventKey><![CDATA[{event_key}]]></EventKey>" if event_key is not None else ""
    return (f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[{event}]]></Event>{key}{extra}</xml>")


def connect(ws, mode: str = "safe", *, app_id: str = APP_ID, token: str = TOKEN, aes_key: str = AES_KEY,
            welcome: str = "", reply: str = "", tolerance: int | None = None):
    account, path = services.connect_account(ws, app_id, APP_SECRET, token, aes_key, mode, "test",
                                             timestamp_tolerance=tolerance)
    if welcome or reply:
        account = services.set_auto_replies(ws, account.pk, welcome_text=welcome, reply_text=reply, actor="test")
    return account, path
