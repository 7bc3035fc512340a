"""The WeChat Official Account (公众号) server protocol: signatures, the AES message encryption of
compatible and safe mode, hardened XML parsing, and reply rendering.

Pure protocol code: no database, no Django models. The endpoint view feeds it the query parameters
and the raw body; it answers with a parsed :class:`WeChatMessage` or raises an error whose HTTP status
the view returns (403 for anything that fails authentication, 400 for malformed input).

Protocol summary (see docs/wechat.md):

* ``signature`` = SHA-1 over the sorted, concatenated ``[token, timestamp, nonce]``; it is sent with
  every request, the URL verification (GET) included.
* In compatible and safe mode the message travels in ``<Encrypt>``: AES-256-CBC with
  ``key = base64decode(EncodingAESKey + "=")``, ``IV = key[:16]``, PKCS#7 padding to 32-byte blocks,
  over ``16 random bytes + 4-byte big-endian length + xml + appid``. ``msg_signature`` = SHA-1 over
  the sorted ``[token, timestamp, nonce, encrypt]``.
* Passive replies are XML in the response body; encrypted replies use the
  ``<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`` envelope.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from django.utils.translation import gettext as _

from shequn.core.errors import ShequnError

MAX_BODY_BYTES = 64 * 1024
"""WeChat's messages are a few KiB at most; anything larger is refused before parsing."""

BLOCK_SIZE = 32
AES_KEY_LENGTH = 43
_AES_KEY_RE = re.compile(r"^[A-Za-z0-9+/]{43}$")
# Characters XML 1.0 cannot carry at all, even inside CDATA.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

MAX_OPENID = 64
QR_SCENE_PREFIX = "qrscene_"
MAX_SCENE = 64  # WeChat's limit for a string scene (QR_LIMIT_STR_SCENE)
MAX_EVENT = 32
MAX_FIELD = 4096


class SignatureInvalid(ShequnError):
    """The request is not authenticated by the account's token (or AES key): 403, nothing recorded."""

    code = "invalid_signature"
    status = 403


class MalformedMessage(ShequnError):
    """The request is authenticated but cannot be read: 400, nothing recorded."""

    code = "malformed_message"
    status = 400


class BodyTooLarge(ShequnError):
    code = "body_too_large"
    status = 413


# ---------------------------------------------------------------------------------------------
# signatures


def sha1_signature(*parts: str) -> str:
    """SHA-1 (hex) over the sorted, concatenated parts — WeChat's ``signature`` / ``msg_signature``."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()  # noqa: S324 - WeChat's protocol


def same(expected: str, given: str) -> bool:
    """Constant-time comparison of two strings."""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def _check_stamp(timestamp: str, nonce: str) -> None:
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise MalformedMessage(_("timestamp must be a Unix time in seconds"), code="malformed_request")
    if len(nonce) > 128:
        raise MalformedMessage(_("nonce is too long"), code="malformed_request")


def check_signature(token: str, params: Mapping[str, str]) -> None:
    """Check ``signature`` over ``[token, timestamp, nonce]``; raise :class:`SignatureInvalid`."""
    signature, timestamp, nonce = (params.get(k, "") for k in ("signature", "timestamp", "nonce"))
    if not signature or not timestamp or not nonce:
        raise SignatureInvalid(_("signature, timestamp and nonce are required"), code="missing_signature")
    _check_stamp(timestamp, nonce)
    if not same(sha1_signature(token, timestamp, nonce), signature.lower()):
        raise SignatureInvalid(_("the signature does not match the account's token"))


def check_msg_signature(token: str, params: Mapping[str, str], encrypt: str) -> None:
    """Check ``msg_signature`` over ``[token, timestamp, nonce, encrypt]``."""
    msg_signature, timestamp, nonce = (params.get(k, "") for k in ("msg_signature", "timestamp", "nonce"))
    if not msg_signature or not timestamp or not nonce:
        raise SignatureInvalid(_("msg_signature, timestamp and nonce are required for an encrypted message"),
                               code="missing_signature")
    _check_stamp(timestamp, nonce)
    if not same(sha1_signature(token, timestamp, nonce, encrypt), msg_signature.lower()):
        raise SignatureInvalid(_("the message signature does not match the account's token"))


def check_timestamp(params: Mapping[str, str], *, now: int, tolerance: int) -> None:
    """With ``tolerance`` > 0, refuse requests whose ``timestamp`` is further than that from ``now``."""
    if tolerance <= 0:
        return
    raw = params.get("timestamp", "")
    if not raw.isascii() or not raw.isdigit() or abs(now - int(raw)) > tolerance:
        raise SignatureInvalid(_("the request timestamp is outside the allowed window of %(seconds)s seconds")
                               % {"seconds": tolerance}, code="stale_request")


# ---------------------------------------------------------------------------------------------
# AES (compatible and safe mode)


def aes_key_problem(encoding_aes_key: str) -> str | None:
    """A reason why ``encoding_aes_key`` is not a valid EncodingAESKey, or None."""
    if len(encoding_aes_key) != AES_KEY_LENGTH:
        return _("the EncodingAESKey must be exactly 43 characters (it has %(n)s)") % {"n": len(encoding_aes_key)}
    if not _AES_KEY_RE.match(encoding_aes_key):
        return _("the EncodingAESKey may contain only letters, digits, + and /")
    return None


def decode_aes_key(encoding_aes_key: str) -> bytes:
    problem = aes_key_problem(encoding_aes_key)
    if problem:
        raise ValueError(problem)
    key = base64.b64decode(encoding_aes_key + "=", validate=True)
    assert len(key) == 32
    return key


def _pkcs7_pad(data: bytes) -> bytes:
    n = BLOCK_SIZE - len(data) % BLOCK_SIZE
    return data + bytes([n]) * n


def _pkcs7_unpad(data: bytes) -> bytes:
    if not data:
        raise ValueError("empty plaintext")
    n = data[-1]
    if not 1 <= n <= BLOCK_SIZE or n > len(data) or data[-n:] != bytes([n]) * n:
        raise ValueError("bad padding")
    return data[:-n]


class MessageCipher:
    """WeChat's message encryption for one account. The key is decoded and the AES-CBC cipher built
    once; each message gets its own encryption context (:func:`cipher_for` keeps one per account)."""

    def __init__(self, encoding_aes_key: str, app_id: str) -> None:
        self.key = decode_aes_key(encoding_aes_key)
        self.app_id = app_id
        self._app_id_bytes = app_id.encode("utf-8")
        self._aes = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))

    def encrypt(self, text: str) -> str:
        body = text.encode("utf-8")
        # 16 random characters before the length, as WeChat's SDKs write them (letters and digits:
        # base32 of 80 random bits).
        prefix = base64.b32encode(secrets.token_bytes(10))
        plain = _pkcs7_pad(prefix + struct.pack(">I", len(body)) + body + self._app_id_bytes)
        encryptor = self._aes.encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")

    def decrypt(self, encrypt: str) -> str:
        """The XML inside ``encrypt``. Raises MalformedMessage when it cannot be decrypted and
        SignatureInvalid when it was encrypted for another AppID."""
        try:
            raw = base64.b64decode(encrypt, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedMessage(_("Encrypt is not valid base64"), code="undecryptable") from None
        if not raw or len(raw) % 16:
            raise MalformedMessage(_("Encrypt has a wrong length for AES"), code="undecryptable")
        decryptor = self._aes.decryptor()
        try:
            content = _pkcs7_unpad(decryptor.update(raw) + decryptor.finalize())[16:]
            if len(content) < 4:
                raise ValueError("too short")
            (length,) = struct.unpack(">I", content[:4])
            if length > len(content) - 4:
                raise ValueError("length beyond the payload")
            xml = content[4:4 + length].decode("utf-8")
            app_id = content[4 + length:].decode("utf-8")
        except (ValueError, struct.error, UnicodeDecodeError):
            raise MalformedMessage(_("the message cannot be decrypted with this EncodingAESKey"),
                                   code="undecryptable") from None
        if not same(self.app_id, app_id):
            raise SignatureInvalid(_("the message was encrypted for another AppID"), code="wrong_appid")
        return xml


@functools.lru_cache(maxsize=256)
def cipher_for(encoding_aes_key: str, app_id: str) -> MessageCipher:
    """The :class:`MessageCipher` of an account (kept per key and AppID: building one decodes the key
    and sets up AES)."""
    return MessageCipher(encoding_aes_key, app_id)


# ---------------------------------------------------------------------------------------------
# XML in


class _DTDForbidden(ValueError):
    """A document type declaration: refused (no entity can then be declared or expanded)."""


class _FlatReader:
    """Expat handlers that keep the text of each child of the root element, the first of each name:
    the whole of a WeChat message, built without the element tree a generic parser would make."""

    __slots__ = ("depth", "root", "tag", "text", "leaf", "out")

    def __init__(self) -> None:
        self.depth, self.root, self.tag, self.leaf = 0, "", "", True
        self.text: list[str] = []
        self.out: dict[str, str] = {}

    def start(self, name: str, _attrs: Any) -> None:
        self.depth += 1
        if self.depth == 1:
            self.root = name
        elif self.depth == 2:
            self.tag, self.leaf = name, True
            self.text.clear()
        else:
            self.leaf = False  # a child with children of its own: kept as ""

    def end(self, _name: str) -> None:
        if self.depth == 2 and self.tag not in self.out:
            self.out[self.tag] = "".join(self.text).strip() if self.leaf else ""
        self.depth -= 1

    def data(self, text: str) -> None:
        if self.depth == 2:
            self.text.append(text)


def _forbid_dtd(*_args: Any) -> None:
    raise _DTDForbidden("document type declarations are not accepted")


def parse_xml(body: bytes | str) -> dict[str, str]:
    """The child elements of a flat ``<xml>…</xml>`` document as {tag: text} (the first of each tag;
    one with children of its own as ``""``).

    Read by expat with every document type declaration refused, as defusedxml does: without one no
    entity can be declared, so none is expanded (billion laughs) or fetched (external entities), and
    no DTD is retrieved; an undeclared entity is an error. Namespaced names are kept as the element
    tree writes them (``{uri}name``), so a namespaced root is not ``xml``."""
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLarge(_("the message is larger than %(n)s bytes") % {"n": MAX_BODY_BYTES})
    if not body or not body.strip():
        raise MalformedMessage(_("the request body is empty; an XML message is expected"), code="malformed_xml")
    reader = _FlatReader()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _forbid_dtd
    parser.EntityDeclHandler = _forbid_dtd
    parser.UnparsedEntityDeclHandler = _forbid_dtd
    parser.ExternalEntityRefHandler = _forbid_dtd
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.data
    try:
        parser.Parse(body, True)
    except (expat.ExpatError, _DTDForbidden, ValueError) as exc:
        raise MalformedMessage(_("the body is not acceptable XML: %(reason)s") % {"reason": exc},
                               code="malformed_xml") from None
    root = reader.root
    if root != "xml":
        raise MalformedMessage(_("the root element must be <xml>"), code="malformed_xml")
    if "}" in "".join(reader.out):  # namespaced children, as the element tree names them
        return {("{" + tag if "}" in tag else tag): text for tag, text in reader.out.items()}
    return reader.out


_PROPERTY_NAMES = {
    "Content": "content", "PicUrl": "pic_url", "MediaId": "media_id", "Format": "format",
    "Recognition": "recognition", "ThumbMediaId": "thumb_media_id", "Location_X": "latitude",
    "Location_Y": "longitude", "Scale": "scale", "Label": "label", "Title": "title",
    "Description": "description", "Url": "url", "EventKey": "event_key", "Ticket": "ticket",
    "Latitude": "latitude", "Longitude": "longitude", "Precision": "precision", "MenuId": "menu_id",
    "MsgDataId": "msg_data_id", "Idx": "idx",
}
_ENVELOPE = frozenset({"ToUserName", "FromUserName", "CreateTime", "MsgType", "MsgId", "MsgID", "Event", "Encrypt"})
_NUMERIC = frozenset({"latitude", "longitude", "precision", "scale"})


@dataclass(frozen=True)
class WeChatMessage:
    """One message or event pushed by WeChat, as read from its XML."""

    to_user: str
    from_user: str
    create_time: int
    msg_type: str
    msg_id: str = ""
    event: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def is_event(self) -> bool:
        return self.msg_type == "event"

    @property
    def event_lower(self) -> str:
        return self.event.lower()

    @property
    def event_key(self) -> str:
        return self.fields.get("EventKey", "")

    @property
    def qr_scene(self) -> str:
        """The scene of the parametric QR code that was scanned, or "": a ``subscribe`` whose EventKey
        is ``qrscene_<scene>`` (a new follower) or a ``SCAN`` whose EventKey is ``<scene>`` (a
        follower). Cut to WeChat's 64 characters."""
        if not self.is_event:
            return ""
        key = self.event_key
        if self.event_lower == "subscribe":
            return key[len(QR_SCENE_PREFIX):][:MAX_SCENE] if key.startswith(QR_SCENE_PREFIX) else ""
        if self.event_lower == "scan":
            return key[:MAX_SCENE]
        return ""

    @property
    def dedup_key(self) -> str:
        """WeChat's own de-duplication key: MsgId for messages, FromUserName + CreateTime for events."""
        if not self.is_event and self.msg_id:
            return self.msg_id
        if self.is_event:
            return f"event:{self.from_user}:{self.create_time}:{self.event}"
        return f"msg:{self.from_user}:{self.create_time}:{self.msg_type}"

    def to_payload(self) -> dict[str, Any]:
        """The message as a JSON object (stored with the message until it is recorded)."""
        return {"to_user": self.to_user, "from_user": self.from_user, "create_time": self.create_time,
                "msg_type": self.msg_type, "msg_id": self.msg_id, "event": self.event, "fields": dict(self.fields)}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> WeChatMessage:
        """The message :meth:`to_payload` wrote."""
        return cls(to_user=str(payload["to_user"]), from_user=str(payload["from_user"]),
                   create_time=int(payload["create_time"]), msg_type=str(payload["msg_type"]),
                   msg_id=str(payload.get("msg_id", "")), event=str(payload.get("event", "")),
                   fields={str(k): str(v) for k, v in dict(payload.get("fields", {})).items()})

    def properties(self) -> dict[str, Any]:
        """The message fields as interaction properties (snake_case names)."""
        props: dict[str, Any] = {"msg_type": self.msg_type}
        if self.event:
            props["event"] = self.event
        if self.msg_id:
            props["msg_id"] = self.msg_id
        for tag, text in self.fields.items():
            if tag in _ENVELOPE or text == "":
                continue
            name = _PROPERTY_NAMES.get(tag, tag.lower())
            value: Any = text[:MAX_FIELD]
            if name in _NUMERIC:
                try:
                    value = float(text)
                except ValueError:
                    value = text[:64]
            props[name] = value
        return props


def message_from_fields(fields: Mapping[str, str]) -> WeChatMessage:
    """Validate the envelope fields of a decoded message."""
    to_user = fields.get("ToUserName", "")
    from_user = fields.get("FromUserName", "")
    create_time = fields.get("CreateTime", "")
    msg_type = fields.get("MsgType", "").strip().lower()
    if not from_user or len(from_user) > MAX_OPENID:
        raise MalformedMessage(_("FromUserName is missing or too long"), code="malformed_message")
    if len(to_user) > MAX_OPENID:
        raise MalformedMessage(_("ToUserName is too long"), code="malformed_message")
    if not create_time.isascii() or not create_time.isdigit() or len(create_time) > 12:
        raise MalformedMessage(_("CreateTime must be a Unix time in seconds"), code="malformed_message")
    if not msg_type or len(msg_type) > 32:
        raise MalformedMessage(_("MsgType is missing"), code="malformed_message")
    event = fields.get("Event", "") if msg_type == "event" else ""
    if msg_type == "event" and (not event or len(event) > MAX_EVENT):
        raise MalformedMessage(_("an event needs an Event field"), code="malformed_message")
    msg_id = fields.get("MsgId", "") or fields.get("MsgID", "")
    if len(msg_id) > 64:
        raise MalformedMessage(_("MsgId is too long"), code="malformed_message")
    return WeChatMessage(to_user=to_user, from_user=from_user, create_time=int(create_time), msg_type=msg_type,
                         msg_id=msg_id, event=event, fields=dict(fields))


# ---------------------------------------------------------------------------------------------
# requests


@dataclass(frozen=True)
class Credentials:
    """What the protocol needs to know about one account."""

    app_id: str
    token: str
    encoding_aes_key: str
    mode: str  # plaintext | compatible | safe
    timestamp_tolerance: int = 0


@dataclass(frozen=True)
class Inbound:
    message: WeChatMessage
    encrypted: bool


def verify_url(creds: Credentials, params: Mapping[str, str], *, now: int) -> str:
    """The URL verification (GET): the ``echostr`` to send back once the request is authenticated.

    Official Accounts sign the check with ``signature`` and send ``echostr`` in clear, whatever the
    mode. A check that carries ``msg_signature`` (the encrypted form, used by platforms that encrypt
    ``echostr``) is verified over ``[token, timestamp, nonce, echostr]`` and answered with the decrypted
    ``echostr``, after its AppID is checked."""
    check_timestamp(params, now=now, tolerance=creds.timestamp_tolerance)
    echostr = params.get("echostr", "")
    if params.get("msg_signature") and creds.encoding_aes_key:
        check_msg_signature(creds.token, params, echostr)
        return cipher_for(creds.encoding_aes_key, creds.app_id).decrypt(echostr)
    check_signature(creds.token, params)
    if not echostr:
        raise MalformedMessage(_("echostr is missing"), code="missing_echostr")
    return echostr


def open_message(creds: Credentials, params: Mapping[str, str], body: bytes, *, now: int) -> Inbound:
    """Authenticate, decrypt and parse one pushed message (POST)."""
    check_timestamp(params, now=now, tolerance=creds.timestamp_tolerance)
    check_signature(creds.token, params)
    encrypted = params.get("encrypt_type", "raw").lower() == "aes"
    if encrypted:
        if creds.mode == "plaintext" or not creds.encoding_aes_key:
            raise MalformedMessage(_("this message is encrypted but the account is set to plaintext mode; "
                                     "choose compatible or safe mode and enter the EncodingAESKey"),
                                   code="mode_mismatch")
        outer = parse_xml(body)
        encrypt = outer.get("Encrypt", "")
        if not encrypt:
            raise MalformedMessage(_("an encrypted message needs an <Encrypt> element"), code="malformed_message")
        check_msg_signature(creds.token, params, encrypt)
        xml = cipher_for(creds.encoding_aes_key, creds.app_id).decrypt(encrypt)
        fields = parse_xml(xml.encode("utf-8"))
    else:
        if creds.mode == "safe":
            raise SignatureInvalid(_("the account is in safe mode: plaintext messages are refused"),
                                   code="mode_mismatch")
        fields = parse_xml(body)
    return Inbound(message=message_from_fields(fields), encrypted=encrypted)


# ---------------------------------------------------------------------------------------------
# XML out


def cdata(text: str) -> str:
    """``text`` as CDATA; a ``]]>`` inside is split across two sections so it survives intact."""
    clean = _XML_INVALID.sub("", text)
    return "<![CDATA[" + clean.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def render_text_reply(*, to_user: str, from_user: str, create_time: int, content: str) -> str:
    return ("<xml>"
            f"<ToUserName>{cdata(to_user)}</ToUserName>"
            f"<FromUserName>{cdata(from_user)}</FromUserName>"
            f"<CreateTime>{int(create_time)}</CreateTime>"
            "<MsgType><![CDATA[text]]></MsgType>"
            f"<Content>{cdata(content)}</Content>"
            "</xml>")


def render_encrypted(creds: Credentials, xml: str, *, timestamp: str, nonce: str) -> str:
    """The encrypted reply envelope of compatible and safe mode."""
    if not timestamp.isascii() or not timestamp.isdigit():
        raise MalformedMessage(_("timestamp must be digits"), code="malformed_message")
    encrypt = cipher_for(creds.encoding_aes_key, creds.app_id).encrypt(xml)
    signature = sha1_signature(creds.token, timestamp, nonce, encrypt)
    return ("<xml>"
            f"<Encrypt>{cdata(encrypt)}</Encrypt>"
            f"<MsgSignature>{cdata(signature)}</MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp>"
            f"<Nonce>{cdata(nonce)}</Nonce>"
            "</xml>")
