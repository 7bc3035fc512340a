"""channels.wechat.parse_xml reads a message as the element tree of defusedxml (every DTD forbidden)
reads it — the same fields from any document, the same documents refused — without building the tree."""

from __future__ import annotations

from xml.etree.ElementTree import ParseError

import defusedxml.ElementTree as safe_xml
import pytest
from defusedxml import DefusedXmlException
from hypothesis import given, settings
from hypothesis import strategies as st

from shequn.channels import wechat


def reference(body: bytes) -> dict[str, str] | None:
    """What the element tree makes of ``body`` (None: refused)."""
    try:
        root = safe_xml.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (DefusedXmlException, ParseError, ValueError):
        return None
    if root.tag != "xml":
        return None
    out: dict[str, str] = {}
    for child in root:
        if isinstance(child.tag, str) and child.tag not in out:
            out[child.tag] = (child.text or "").strip() if len(child) == 0 else ""
    return out


def ours(body: bytes) -> dict[str, str] | None:
    try:
        return wechat.parse_xml(body)
    except wechat.MalformedMessage:
        return None


NAMES = st.sampled_from(["ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId", "Event",
                         "EventKey", "ScanCodeInfo", "ScanType", "xml", "a", "ns:x"])
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@st.composite
def element(draw: st.DrawFn, depth: int = 0) -> str:
    name = draw(NAMES)
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["text", "cdata", "entity", "comment", "child"] if depth < 2 else
                                    ["text", "cdata", "entity", "comment"]))
        if kind == "text":
            parts.append(escape(draw(TEXT)))
        elif kind == "cdata":
            parts.append(wechat.cdata(draw(TEXT)))
        elif kind == "entity":
            parts.append(draw(st.sampled_from(["&amp;", "&lt;", "&#x4F60;", "&#22909;", "&quot;"] * 4 + ["&nope;"])))
        elif kind == "comment":
            parts.append("<!-- c -->")
        else:
            parts.append(draw(element(depth + 1)))
    return f"<{name}>{''.join(parts)}</{name}>"


@st.composite
def document(draw: st.DrawFn) -> bytes:
    root = draw(st.sampled_from(["xml"] * 6 + ["html", 'xml xmlns="urn:x"']))
    children = "".join(draw(st.lists(element(), max_size=6)))
    prolog = draw(st.sampled_from(["", "", "", '<?xml version="1.0" encoding="utf-8"?>', "<?pi x?>", "<!DOCTYPE xml>"]))
    tail = draw(st.sampled_from(["", "", "", " \n", "<!-- end -->", "junk", "<xml/>"]))
    return f"{prolog}<{root}>{children}</{root.split()[0]}>{tail}".encode()


@settings(max_examples=600, deadline=None)
@given(document())
def test_reads_every_document_as_the_element_tree_does(body):
    assert ours(body) == reference(body)


@pytest.mark.parametrize("body", [
    b"<xml><a>1</a>",  # truncated
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "v">]><xml><a>&e;</a></xml>',
    b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://example.com/x.dtd"><xml><a>1</a></xml>',
    b'<!DOCTYPE x [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><xml/>',
    b"<xml><a>&undeclared;</a></xml>",
    b"<xml xmlns:w='urn:w'><w:a>1</w:a></xml>",
])
def test_documents_refused_or_read_alike(body):
    assert ours(body) == reference(body)


def test_a_message_read_whole():
    body = ("<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[o1]]></FromUserName>"
            "<CreateTime>1780000000</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            "<Event><![CDATA[scancode_push]]></Event><ScanCodeInfo><ScanType>qrcode</ScanType></ScanCodeInfo>"
            "<Content> a &amp; 你好 ]]&gt; </Content><Content>second</Content></xml>").encode()
    assert wechat.parse_xml(body) == {"ToUserName": "gh_1", "FromUserName": "o1", "CreateTime": "1780000000",
                                      "MsgType": "event", "Event": "scancode_push", "ScanCodeInfo": "",
                                      "Content": "a & 你好 ]]>"}
    assert wechat.parse_xml(body.decode()) == wechat.parse_xml(body)
