"""The matching engine on its own: normalisation, literal keywords, priorities, channels, windows, regex."""

from __future__ import annotations

import datetime as dt
import re
import time
import unicodedata

import pytest
import re2
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from shequn.conversations.matching import MAX_INPUT_CHARS, RuleBook, RuleSpec, compile_regex, nfkc, normalize

TZ = "Asia/Shanghai"
REGEX_META = ".^$*+?{}[]()|\\-"


def spec(id: int, match_type: str, patterns: list[str], *, priority: int = 100, **kw) -> RuleSpec:
    return RuleSpec(id=id, name=f"r{id}", match_type=match_type, patterns=patterns, priority=priority,
                    reply_type="text", reply={"content": f"reply {id}"}, **kw)


def book(*specs: RuleSpec) -> RuleBook:
    return RuleBook(specs, timezone=TZ)


def winner(b: RuleBook, text: str, *, channel: str = "wechat", at: dt.datetime | None = None) -> int | None:
    rule = b.match(text, channel=channel, at=at)
    return rule.id if rule else None


def local(y, m, d, hh, mm) -> dt.datetime:
    """An instant given in Shanghai local time (UTC+8)."""
    return dt.datetime(y, m, d, hh, mm, tzinfo=dt.timezone(dt.timedelta(hours=8)))


# ---------------------------------------------------------------------------------------------
# normalisation


@pytest.mark.parametrize(("raw", "expected"), [
    ("ＶＩＰ会员", "vip会员"),                      # full-width letters → half-width, case-folded
    ("１２３", "123"),                              # full-width digits
    ("  积分\t\n 查询　　", "积分 查询"),            # whitespace (incl. ideographic space) collapsed, stripped
    ("Hello   WORLD", "hello world"),
    ("Straße", "strasse"),                          # case folding, not just lower()
    ("㎏", "kg"),                                   # compatibility forms unfolded
    ("ｶﾀｶﾅ", "カタカナ"),                           # half-width katakana → full-width (NFKC)
    ("？！", "?!"),
    ("", ""),
])
def test_normalize_examples(raw, expected):
    assert normalize(raw) == expected


@settings(max_examples=3000)
@given(st.text())
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


@settings(max_examples=500)
@given(st.text())
def test_normalized_text_has_no_edge_or_repeated_whitespace(text):
    out = normalize(text)
    assert out == out.strip()
    assert "  " not in out
    assert not any(ch.isspace() and ch != " " for ch in out)


def test_fastnfkc_is_unicodenfkc_for_every_code_point_and_after_a_combining_mark():
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        for text in (chr(cp), f"a{chr(cp)}\u0301", f"\u1100{chr(cp)}"):
            assert nfkc(text) == unicodedata.normalize("NFKC", text), hex(cp)


@settings(max_examples=2000)
@given(st.text())
def test_fastnfkc_is_unicodenfkc(text):
    assert nfkc(text) == unicodedata.normalize("NFKC", text)


def test_normalize_is_idempotent_for_every_single_code_point():
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        once = normalize(chr(cp))
        assert normalize(once) == once, hex(cp)


# ---------------------------------------------------------------------------------------------
# keywords are literal: the engine against a brute-force oracle

keyword_text = st.text(alphabet=st.sampled_from(list(REGEX_META) + list("abcAB 积分会员ＶＩＰ１")), min_size=1, max_size=8)
any_text = st.text(max_size=40)


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(keyword=st.one_of(keyword_text, st.text(min_size=1, max_size=8)), text=any_text)
def test_contains_matches_exactly_when_the_normalised_keyword_is_in_the_normalised_text(keyword, text):
    assume(normalize(keyword))
    b = book(spec(1, "contains", [keyword]))
    assert (winner(b, text) == 1) == (normalize(keyword) in normalize(text))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(keyword=keyword_text, before=any_text, after=any_text)
def test_any_keyword_text_matches_literally_where_it_appears(keyword, before, after):
    assume(normalize(keyword))
    b = book(spec(1, "contains", [keyword]))
    assert winner(b, f"{before} {keyword} {after}") == 1


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(keyword=keyword_text, text=any_text)
def test_starts_with_and_exact_against_the_oracle(keyword, text):
    assume(normalize(keyword))
    starts = book(spec(1, "starts_with", [keyword]))
    exact = book(spec(1, "exact", [keyword]))
    assert (winner(starts, text) == 1) == normalize(text).startswith(normalize(keyword))
    assert (winner(exact, text) == 1) == (normalize(text) == normalize(keyword))


rule_strategy = st.lists(
    st.tuples(st.sampled_from(["contains", "starts_with", "exact"]),
              st.lists(keyword_text, min_size=1, max_size=3),
              st.integers(min_value=0, max_value=5)),
    min_size=1, max_size=12)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_strategy, text=st.text(alphabet=st.sampled_from(list(REGEX_META) + list("abcAB 积分会员ＶＩＰ１")),
                                           max_size=20))
def test_the_winner_is_the_best_ranked_matching_rule(rules, text):
    specs = [spec(i + 1, mt, pats, priority=prio) for i, (mt, pats, prio) in enumerate(rules)]
    norm = normalize(text)

    def hits(s: RuleSpec) -> bool:
        keys = [normalize(p) for p in s.patterns if normalize(p)]
        if s.match_type == "contains":
            return any(k in norm for k in keys)
        if s.match_type == "starts_with":
            return any(norm.startswith(k) for k in keys)
        return norm in keys

    expected = min(((s.priority, s.id) for s in specs if norm and hits(s)), default=None)
    assert winner(book(*specs), text) == (expected[1] if expected else None)


def test_regex_metacharacters_in_keywords_are_literal():
    b = book(spec(1, "contains", [".*"]), spec(2, "contains", ["a+b"]), spec(3, "starts_with", ["(?i)"]))
    assert winner(b, "anything") is None
    assert winner(b, "aab") is None
    assert winner(b, "say a+b please") == 2
    assert winner(b, "price: .*") == 1
    assert winner(b, "(?i) hello") == 3 and winner(b, "x (?i)") is None


# ---------------------------------------------------------------------------------------------
# priorities and match types


def test_lower_priority_number_wins_then_the_older_rule():
    b = book(spec(5, "contains", ["积分"], priority=20), spec(3, "contains", ["积分查询"], priority=10),
             spec(4, "contains", ["查询"], priority=10))
    assert winner(b, "我想积分查询") == 3      # priority 10 beats 20; id 3 beats id 4 at equal priority
    assert winner(b, "积分是多少") == 5
    assert winner(b, "查询订单") == 4


def test_overlapping_keywords_all_count():
    """A shorter keyword inside a longer one still matches (overlapping scan)."""
    b = book(spec(1, "contains", ["会员卡"], priority=50), spec(2, "contains", ["会员"], priority=10))
    assert winner(b, "我的会员卡") == 2
    b = book(spec(1, "contains", ["会员卡"], priority=10), spec(2, "contains", ["会员"], priority=50))
    assert winner(b, "我的会员卡") == 1


def test_exact_starts_with_and_contains_compete_by_priority():
    b = book(spec(1, "exact", ["1"], priority=5), spec(2, "starts_with", ["1"], priority=1),
             spec(3, "contains", ["1"], priority=9))
    assert winner(b, "1") == 2
    assert winner(b, "12") == 2
    assert winner(b, "21") == 3
    b = book(spec(1, "exact", ["1"], priority=0), spec(2, "starts_with", ["1"], priority=1))
    assert winner(b, " 1 ") == 1 and winner(b, "１") == 1  # normalised before the lookup


def test_starts_with_only_at_the_start_even_if_the_keyword_repeats():
    b = book(spec(1, "starts_with", ["ab"], priority=1), spec(2, "contains", ["b"], priority=9))
    assert winner(b, "abab") == 1
    assert winner(b, "cabab") == 2


def test_one_rule_many_keywords_and_one_keyword_many_rules():
    b = book(spec(1, "contains", ["营业时间", "几点开门", "几点关门"], priority=10),
             spec(2, "contains", ["几点开门"], priority=5, channels=["sms"]))
    assert winner(b, "你们几点关门?") == 1
    assert winner(b, "明天几点开门", channel="wechat") == 1
    assert winner(b, "明天几点开门", channel="sms") == 2


def test_empty_text_and_empty_book():
    assert winner(book(), "hello") is None
    assert winner(book(spec(1, "contains", ["a"])), "   ") is None


# ---------------------------------------------------------------------------------------------
# channels and time windows (fixed clock: the ``at`` of each call)

WEEKDAYS = [1, 2, 3, 4, 5]
OPEN = [{"days": WEEKDAYS, "start": "09:00", "end": "18:00"}]


def opening_hours_book() -> RuleBook:
    return book(
        spec(1, "contains", ["客服"], priority=10, windows=OPEN),
        spec(2, "contains", ["客服"], priority=10, windows=OPEN, outside_windows=True),
        spec(3, "contains", ["客服"], priority=50),
    )


@pytest.mark.parametrize(("at", "expected"), [
    (local(2026, 6, 1, 9, 0), 1),     # Monday 09:00: inside (start is inclusive)
    (local(2026, 6, 1, 17, 59), 1),
    (local(2026, 6, 1, 18, 0), 2),    # end is exclusive
    (local(2026, 6, 1, 8, 59), 2),
    (local(2026, 6, 6, 12, 0), 2),    # Saturday
    (local(2026, 6, 5, 12, 0), 1),    # Friday
])
def test_opening_hours_and_outside_opening_hours(at, expected):
    assert winner(opening_hours_book(), "转人工客服", at=at) == expected


def test_windows_are_judged_in_the_workspace_time_zone():
    b = opening_hours_book()
    # 02:00 UTC on a Monday is 10:00 in Shanghai: inside.
    assert winner(b, "客服", at=dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC)) == 1
    utc_book = RuleBook([spec(1, "contains", ["客服"], windows=OPEN)], timezone="UTC")
    assert utc_book.match("客服", channel="wechat", at=dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC)) is None


def test_window_past_midnight():
    b = book(spec(1, "contains", ["夜宵"], windows=[{"days": [5], "start": "22:00", "end": "02:00"}]))
    assert winner(b, "夜宵", at=local(2026, 6, 5, 23, 30)) == 1   # Friday night
    assert winner(b, "夜宵", at=local(2026, 6, 6, 1, 59)) == 1    # early Saturday belongs to Friday's window
    assert winner(b, "夜宵", at=local(2026, 6, 6, 2, 0)) is None
    assert winner(b, "夜宵", at=local(2026, 6, 6, 23, 0)) is None  # Saturday night: not listed
    sunday = book(spec(1, "contains", ["x"], windows=[{"days": [7], "start": "23:00", "end": "01:00"}]))
    assert winner(sunday, "x", at=local(2026, 6, 8, 0, 30)) == 1  # Monday 00:30 belongs to Sunday's window


def test_whole_day_window_and_several_windows():
    b = book(spec(1, "contains", ["x"], windows=[{"days": [6, 7], "start": "00:00", "end": "24:00"},
                                                 {"days": [3], "start": "12:00", "end": "13:00"}]))
    assert winner(b, "x", at=local(2026, 6, 7, 23, 59)) == 1
    assert winner(b, "x", at=local(2026, 6, 3, 12, 30)) == 1
    assert winner(b, "x", at=local(2026, 6, 3, 13, 0)) is None


def test_channels_restrict_a_rule():
    b = book(spec(1, "contains", ["积分"], priority=1, channels=["wechat"]),
             spec(2, "contains", ["积分"], priority=2, channels=["sms", "email"]))
    assert winner(b, "积分", channel="wechat") == 1
    assert winner(b, "积分", channel="email") == 2
    assert winner(b, "积分", channel="web") is None


def test_conditional_best_keyword_falls_back_to_the_next_eligible_rule():
    b = book(spec(1, "contains", ["a"], priority=1, channels=["sms"]), spec(2, "contains", ["b"], priority=2),
             spec(3, "contains", ["a"], priority=3))
    assert winner(b, "ab") == 2
    assert winner(b, "a") == 3
    assert winner(b, "ab", channel="sms") == 1


# ---------------------------------------------------------------------------------------------
# regular expressions


def test_regex_rules_use_the_normalised_text_and_priorities():
    b = book(spec(1, "regex", [r"^订单\s?\d{6,}$"], priority=5), spec(2, "contains", ["订单"], priority=9),
             spec(3, "regex", [r"VIP\d"], priority=1))
    assert winner(b, "订单 123456") == 1
    assert winner(b, "订单１２３４５６") == 1      # full-width digits normalised first
    assert winner(b, "订单呢") == 2
    assert winner(b, "我是vip3") == 3            # case-insensitive
    assert winner(b, "我是ＶＩＰ3") == 3


@pytest.mark.parametrize("pattern", [r"(a)\1", r"a(?=b)", r"(?<!x)y", r"a{2000}"])
def test_regexes_re2_cannot_run_in_linear_time_are_refused(pattern):
    with pytest.raises(re2.error):
        compile_regex(pattern)


def test_pathological_regex_answers_in_linear_time():
    """``(a+)+$`` on "aaa…ab" takes exponential time with a backtracking engine (Python's ``re`` needs
    longer than the age of the universe for 2,000 characters); RE2 answers in microseconds."""
    b = book(spec(1, "regex", [r"(a+)+$"], priority=1), spec(2, "regex", [r"^(a|aa)+$", r"(x+x+)+y"], priority=2),
             spec(3, "contains", ["b"], priority=3))
    evil = "a" * (MAX_INPUT_CHARS - 1) + "b"
    start = time.perf_counter()
    for _ in range(20):
        assert winner(b, evil) == 3
    assert time.perf_counter() - start < 1.0
    assert winner(b, "a" * 100_000 + "b") == 1  # cut to MAX_INPUT_CHARS first: all a's
    assert winner(b, "a" * 5000) == 1
    program = compile_regex(r"(a+)+$")
    start = time.perf_counter()
    assert program.search("a" * 1_000_000 + "b") is None
    assert time.perf_counter() - start < 1.0


def test_the_pathological_input_is_really_pathological_for_a_backtracking_engine():
    """Python's ``re`` explores 2^n ways to split n a's: 20 characters already cost it about a million
    steps, which RE2 does not take."""
    text = "a" * 20 + "b"
    start = time.perf_counter()
    assert re.search(r"(a+)+$", text) is None
    backtracking = time.perf_counter() - start
    program = compile_regex(r"(a+)+$")
    start = time.perf_counter()
    for _ in range(10):
        assert program.search(text) is None
    linear = (time.perf_counter() - start) / 10
    assert backtracking > 50 * linear


def test_a_broken_time_zone_or_regex_does_not_take_the_bot_down(caplog):
    b = RuleBook([spec(1, "regex", [r"(a)\1"], priority=1), spec(2, "contains", ["a"], priority=2,
                                                                 windows=[{"days": [1], "start": "00:00", "end": "24:00"}])],
                 timezone="Mars/Olympus")
    assert winner(b, "aa", at=dt.datetime(2026, 6, 1, 1, 0, tzinfo=dt.UTC)) == 2  # Monday in UTC
    assert "rule skipped" in caplog.text and "Mars/Olympus" in caplog.text


def test_input_is_cut_to_the_maximum_length():
    b = book(spec(1, "contains", ["tail"]))
    assert winner(b, "x" * (MAX_INPUT_CHARS - 4) + "tail") == 1
    assert winner(b, "x" * MAX_INPUT_CHARS + "tail") is None
