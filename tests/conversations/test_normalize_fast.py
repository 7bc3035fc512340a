"""The normalisation fast path gives exactly the reference result (NFKC, case folding, whitespace)."""

from __future__ import annotations

import unicodedata

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shequn.conversations import matching
from shequn.conversations.matching import normalize, normalize_reference

# Text shaped like chat messages: Chinese, kana, Hangul, full-width forms, ASCII, spaces, and the
# characters that break the fast path (combining marks, compatibility forms, other scripts).
CHAT = st.text(alphabet=st.one_of(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    st.characters(min_codepoint=0x3000, max_codepoint=0x30FF),
    st.characters(min_codepoint=0xFF01, max_codepoint=0xFFEF),
    st.characters(min_codepoint=0xAC00, max_codepoint=0xAC40),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.sampled_from(["\u0301", "\u3099", "\u309a", "\u1161", "\u11a8", "ß", "İ", "ﬁ", "㎏", "\t", "\n", "\u00a0",
                     "\u2028", "Å", "Ω", "\u0b3e", "\u0b47", "\x00", "\x7f"]),
), max_size=40)


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@given(CHAT)
def test_fast_path_equals_reference_on_chat_like_text(text):
    assert normalize(text) == normalize_reference(text)


@settings(max_examples=2000)
@given(st.text(max_size=40))
def test_fast_path_equals_reference_on_any_text(text):
    assert normalize(text) == normalize_reference(text)


def test_reference_is_nfkc_casefold_whitespace():
    text = "ＶＩＰ　会员  Straße\u3000１２３？"
    folded = unicodedata.normalize("NFKC", text).casefold()
    assert normalize_reference(text) == " ".join(folded.split()) == normalize(text) == "vip 会员 strasse 123?"


def test_every_stable_character_is_left_alone_next_to_any_foldable_one():
    # Each character the fast path trusts stays itself, alone and between full-width forms.
    for lo, hi in matching._stable_ranges():
        for cp in range(lo, hi + 1):
            c = chr(cp)
            for text in (c, f"Ａ{c}", f"{c}Ａ", f"{c}\u3000x"):
                assert normalize(text) == normalize_reference(text), hex(cp)


def test_the_fast_path_is_taken_for_chinese_chat():
    assert matching._NOT_FAST.search("我的积分还有多少？ＶＩＰ　１２３号") is None
    assert matching._NOT_FAST.search("café\u0301") is not None  # combining mark: the reference path


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(CHAT)
def test_match_normalises_like_the_reference(text):
    from shequn.conversations.matching import RuleBook, RuleSpec

    key = normalize_reference(text)
    if not key:
        return
    book = RuleBook([RuleSpec(id=1, name="r", match_type="exact", patterns=[key], priority=1, reply_type="text",
                              reply={"content": "x"})])
    hit = book.match(text, "wechat")
    assert hit is not None and hit.id == 1
    assert book.match(text + "之外", "wechat") is None or normalize_reference(text + "之外") == key
