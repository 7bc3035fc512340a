"""Matching the message as it arrived: a rule set of contains/starts_with keywords scans the raw
message, whose flag patterns (``matching.flag_patterns``) send every message normalisation could
matter for to the normalised path. The winner must always be the one of the normalised message."""

from __future__ import annotations

import datetime as dt
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shequn.conversations import matching
from shequn.conversations.matching import RuleBook, RuleSpec, flag_patterns, normalize, normalize_reference

from .test_matching import TZ, book, spec


def oracle(specs: list[RuleSpec], text: str, channel: str = "wechat") -> int | None:
    """The winner by definition: the reference normalisation, then brute force."""
    norm = normalize_reference(text[:matching.MAX_INPUT_CHARS])
    if not norm:
        return None

    def hits(s: RuleSpec) -> bool:
        if s.channels and channel not in s.channels:
            return False
        keys = [k for k in (normalize_reference(p) for p in s.patterns) if k]
        if s.match_type == "contains":
            return any(k in norm for k in keys)
        if s.match_type == "starts_with":
            return any(norm.startswith(k) for k in keys)
        return norm in keys

    best = min(((s.priority, s.id) for s in specs if hits(s)), default=None)
    return best[1] if best else None


def winner(b: RuleBook, text: str, channel: str = "wechat") -> int | None:
    rule = b.match(text, channel)
    return rule.id if rule else None


# ---------------------------------------------------------------------------------------------
# the flag patterns


def _is_fast(cp: int) -> bool:
    return cp < 0x10000 and matching._NOT_FAST.search(chr(cp)) is None


def _flagged_by(flags: tuple[bytes, ...], char: str) -> bool:
    encoded = char.encode("utf-8")
    return any(encoded.startswith(p) for p in flags if len(p) <= len(encoded))


def test_the_fast_set_table_is_the_fast_path_regex():
    table = matching._NOT_FAST_TABLE
    for cp in range(0x10000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        assert (table[cp] == 0) == (matching._NOT_FAST.search(chr(cp)) is None), hex(cp)


def test_what_normalisation_makes_of_a_changed_fast_character_is_one_character():
    for char, image in matching._FOLDED.items():
        assert len(image) == 1, hex(ord(char))
        assert normalize_reference(f"积{char}分") == normalize_reference(f"积{image}分"), hex(ord(char))
    assert matching._FOLDED["\u3000"] == " " and matching._FOLDED["Ａ"] == "a" and matching._FOLDED["A"] == "a"


@pytest.mark.parametrize("keyword_ascii", [frozenset(), frozenset("vip1"), frozenset("vip1 "),
                                           frozenset(chr(c) for c in range(0x20, 0x7F))])
def test_flag_patterns_find_exactly_the_characters_that_forbid_the_raw_scan(keyword_ascii):
    flags = flag_patterns(keyword_ascii)
    by_length = [set(p for p in flags if len(p) == n) for n in (1, 2, 3)]

    def flagged(char: str) -> bool:
        encoded = char.encode("utf-8")
        return any(encoded[:n] in by_length[n - 1] for n in (1, 2, 3) if n <= len(encoded))

    for cp in range(0x10000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        char = chr(cp)
        expected = not _is_fast(cp) or (char in matching._FOLDED and matching._FOLDED[char] in keyword_ascii)
        assert flagged(char) == expected, hex(cp)
    for cp in (0x10000, 0x1F600, 0x20000, 0x2F800, 0xE0001, 0x10FFFF):  # beyond the BMP: always flagged
        assert _flagged_by(flags, chr(cp))
    assert (b"  " in flags) == (" " in keyword_ascii)


def test_flag_patterns_start_at_a_character_boundary():
    # A pattern is an ASCII character or starts with a UTF-8 lead byte: it cannot match inside a
    # character.
    for p in flag_patterns(frozenset("ab ")):
        assert p[0] < 0x80 or p[0] >= 0xC2, p


# ---------------------------------------------------------------------------------------------
# examples


def test_full_width_and_capitals_reach_ascii_keywords():
    b = book(spec(1, "contains", ["vip"], priority=1), spec(2, "contains", ["会员"], priority=2))
    assert winner(b, "ＶＩＰ会员") == 1 and winner(b, "Vip会员") == 1 and winner(b, "vｉp") == 1
    assert winner(b, "普通会员") == 2


def test_spaces_inside_keywords():
    b = book(spec(1, "contains", ["a b"], priority=1), spec(2, "contains", ["积分"], priority=2))
    for text in ("a b", "a  b", "a\u3000b", "xa \u3000 by", " a b ", "A B", "ａ　ｂ"):
        assert winner(b, text) == 1, text
    assert winner(b, "ab 积分") == 2 and winner(b, "a积分b") == 2


def test_starts_with_after_leading_spaces():
    b = book(spec(1, "starts_with", ["退款"], priority=1), spec(2, "contains", ["订单"], priority=2))
    for text in ("退款订单", " 退款订单", "\u3000 退款 订单", "　　退款", "\t退款订单", " \u00a0退款"):
        assert winner(b, text) == 1, repr(text)
    assert winner(b, "我要退款订单") == 2 and winner(b, "！退款订单") == 2


def test_characters_outside_the_fast_set_take_the_normalised_path():
    b = book(spec(1, "contains", ["kg"], priority=1), spec(2, "contains", ["积分"], priority=2),
             spec(3, "contains", ["café"], priority=3), spec(4, "contains", ["😀"], priority=4))
    assert winner(b, "5㎏") == 1                       # compatibility form: ㎏ → kg
    assert winner(b, "积\u0301分") is None              # a combining mark between the characters
    assert winner(b, "积分😀") == 2 and winner(b, "😀!") == 4
    assert winner(b, "CAFÉ") == 3 and winner(b, "cafe\u0301") == 3
    assert winner(b, "ｶﾌｪ积分") == 2


def test_chinese_keywords_match_raw_messages_with_full_width_punctuation():
    b = book(spec(1, "contains", ["积分"], priority=5), spec(2, "contains", ["会员卡"], priority=1, channels=["sms"]))
    assert winner(b, "　我的积分，还有多少？ＶＩＰ１２３号  ") == 1
    assert winner(b, "我的会员卡积分？", "sms") == 2 and winner(b, "我的会员卡积分？", "wechat") == 1


def test_a_rule_for_some_channels_settles_at_once_on_them_only():
    windows = [{"days": [1, 2, 3, 4, 5, 6, 7], "start": "09:00", "end": "18:00"}]
    b = book(spec(1, "contains", ["会员卡"], priority=1, channels=["sms"]), spec(2, "contains", ["积分"], priority=2),
             spec(3, "starts_with", ["你好"], priority=3), spec(4, "contains", ["营业"], priority=4, windows=windows))
    first = b._flags
    sms, wechat = b.settled("sms"), b.settled("wechat")
    assert [r.id if r else None for r in sms[first:]] == [1, 2, None, None]
    assert [r.id if r else None for r in wechat[first:]] == [None, 2, None, None]
    assert b.settled("sms") is sms  # kept per channel
    assert winner(b, "会员卡积分", "sms") == 1 and winner(b, "会员卡积分", "wechat") == 2
    assert winner(b, "会员卡", "wechat") is None
    for i in range(matching.MAX_CHANNEL_TABLES):
        b.settled(f"channel-{i}")
    assert b.settled("one-too-many") is b._quick_rule  # past the bound: the unconditional table serves
    assert winner(b, "会员卡积分", "one-too-many") == 2 and winner(b, "会员卡积分", "sms") == 1


def test_long_messages_are_cut_before_matching():
    b = book(spec(1, "contains", ["积分"]))
    prefix = "好" * (matching.MAX_INPUT_CHARS - 1)
    assert winner(b, prefix + "积分") is None
    assert winner(b, prefix[:-1] + "积分") == 1


# ---------------------------------------------------------------------------------------------
# against the definition, on arbitrary rule sets and messages

KEY_ALPHABET = list("积分会员卡退款号abvipAB1 ?!.") + ["ＶＩＰ", "１", "　", "é", "ｶ", "㎏", "😀"]
TEXT_ALPHABET = st.one_of(
    st.sampled_from(list("积分会员卡退款号我的abvipVIPAB1 ?!.,") + ["ＶＩＰ", "１２３", "　", "  ", "？", "，", "é",
                                                                   "e\u0301", "ｶ", "㎏", "😀", "\t", "\n", "\x00",
                                                                   "\u00a0", "ß", "İ", "\u3099"]),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
    st.characters(min_codepoint=0x3000, max_codepoint=0x30FF),
    st.characters(min_codepoint=0xFF01, max_codepoint=0xFF65),
)
keyword = st.lists(st.sampled_from(KEY_ALPHABET), min_size=1, max_size=4).map("".join)
rules = st.lists(st.tuples(st.sampled_from(["contains", "starts_with"]), st.lists(keyword, min_size=1, max_size=3),
                           st.integers(min_value=0, max_value=4), st.booleans()), min_size=1, max_size=10)
texts = st.lists(TEXT_ALPHABET, max_size=16).map("".join)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rules, text=texts)
def test_the_raw_scan_gives_the_winner_of_the_normalised_message(rules, text):
    specs = [spec(i + 1, mt, pats, priority=prio, **({"channels": ["sms"]} if sms else {}))
             for i, (mt, pats, prio, sms) in enumerate(rules)]
    b = RuleBook(specs, timezone=TZ)
    for channel in ("wechat", "sms"):
        expected = oracle(specs, text, channel)
        assert winner(b, text, channel) == expected
        s = normalize(text)
        rule = b.match_normalized(s, channel)
        assert (rule.id if rule else None) == expected


def _variants(key: str) -> st.SearchStrategy[str]:
    """Forms of a keyword a member may type: as it is, upper-case, full-width, spaces doubled or
    ideographic."""
    wide = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in key)
    return st.sampled_from([key, key.upper(), wide, key.replace(" ", "  "), key.replace(" ", "\u3000"),
                            key.upper().replace(" ", " \u3000")])


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rules, data=st.data())
def test_the_raw_scan_on_messages_made_of_the_keywords(rules, data):
    specs = [spec(i + 1, mt, pats, priority=prio, **({"channels": ["sms"]} if sms else {}))
             for i, (mt, pats, prio, sms) in enumerate(rules)]
    keys = [k for s in specs for k in (normalize(p) for p in s.patterns) if k] or ["积分"]
    pieces = data.draw(st.lists(st.one_of(st.sampled_from(keys).flatmap(_variants), TEXT_ALPHABET), max_size=6))
    text = "".join(pieces)
    b = RuleBook(specs, timezone=TZ)
    for channel in ("wechat", "sms"):
        assert winner(b, text, channel) == oracle(specs, text, channel), (text, channel)


word = st.lists(st.sampled_from(list("积分会员ab1?")), min_size=1, max_size=3).map("".join)
spaces = st.lists(st.sampled_from([" ", "\u3000", "\t"]), max_size=3).map("".join)


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(words=st.lists(word, min_size=2, max_size=3), other=word, kind=st.sampled_from(["contains", "starts_with"]),
       lead=spaces, seps=st.lists(spaces.filter(bool), min_size=2, max_size=2), tail=spaces, upper=st.booleans())
def test_keywords_with_spaces_and_messages_with_space_runs(words, other, kind, lead, seps, tail, upper):
    specs = [spec(1, kind, [" ".join(words)], priority=1), spec(2, "starts_with", [other], priority=2),
             spec(3, "contains", [words[-1]], priority=3)]
    body = words[0] + seps[0] + words[1] + (seps[1] + words[2] if len(words) > 2 else "")
    text = lead + (body.upper() if upper else body) + tail
    assert winner(RuleBook(specs, timezone=TZ), text) == oracle(specs, text), repr(text)


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(first=word, second=word, lead=spaces, middle=spaces)
def test_starts_with_after_any_leading_whitespace(first, second, lead, middle):
    specs = [spec(1, "starts_with", [first], priority=1), spec(2, "contains", [second], priority=2)]
    text = lead + first + middle + second
    assert winner(RuleBook(specs, timezone=TZ), text) == oracle(specs, text), repr(text)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rules, text=st.text(max_size=24))
def test_the_raw_scan_on_any_text(rules, text):
    specs = [spec(i + 1, mt, pats, priority=prio) for i, (mt, pats, prio, _sms) in enumerate(rules)]
    assert winner(RuleBook(specs, timezone=TZ), text) == oracle(specs, text)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rules, text=texts)
def test_windows_and_exact_rules_still_agree(rules, text):
    # Rule sets that are not keywords only (an exact rule) or need judging (a time window) take the
    # other paths: same answers.
    specs = [spec(i + 1, mt, pats, priority=prio) for i, (mt, pats, prio, _sms) in enumerate(rules)]
    specs.append(spec(99, "exact", ["积分"], priority=2))
    b = RuleBook(specs, timezone=TZ)
    assert winner(b, text) == oracle(specs, text)
    always = [{"days": [1, 2, 3, 4, 5, 6, 7], "start": "00:00", "end": "24:00"}]
    windowed = [RuleSpec(**{**s.__dict__, "windows": always}) if s.id % 2 else s for s in specs[:-1]]
    b = RuleBook(windowed, timezone=TZ)
    at = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
    rule = b.match(text, "wechat", at)
    assert (rule.id if rule else None) == oracle(windowed, text)


def test_normalisation_of_the_keywords_makes_them_fast_path_free():
    # The argument for the raw scan needs keywords without the characters normalisation changes.
    for char in matching._FOLDED:
        assert char not in normalize(f"x{char}y")
    assert unicodedata.normalize("NFKD", "ＶＩＰ").lower() == "vip"


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(texts, st.text(max_size=30)))
def test_normalize_utf8_is_the_encoded_normal_form(text):
    assert matching.normalize_utf8(text) == normalize_reference(text).encode("utf-8")
