"""The keyword matching engine: normalisation and the compiled rule set of one workspace.

Pure code: no database. ``queries.rulebook`` builds a :class:`RuleBook` from the workspace's rules and
caches it per process; the bot asks it for the rule that answers a message.

How a message is matched (docs/bots.md):

* The text is cut to :data:`MAX_INPUT_CHARS` and normalised by :func:`normalize` — NFKC (full-width
  letters, digits and punctuation become half-width, compatibility forms are unfolded), case folding,
  whitespace runs collapsed to one space and stripped. Keywords are normalised the same way when the
  rule set is compiled, so ``ＶＩＰ`` typed by a member matches the keyword ``vip``.
* **exact** keywords are keys of a dict: one lookup.
* **contains** and **starts_with** keywords of the whole workspace are compiled into one Aho-Corasick
  automaton (``ahocorasick_rs``, bytes API over UTF-8). Keywords are literal strings: no regular
  expression is ever built from them. One overlapping scan of the text finds every keyword it
  contains, with its position; a starts_with keyword counts only at position 0.
* **regex** rules are compiled with RE2 (``google-re2``), which matches in time linear in the text:
  no pattern can backtrack catastrophically, so no rule can stall a request.
* The winner is the eligible rule (enabled, for this channel, inside its time windows) with the
  lowest ``priority``, ties broken by the lowest rule id. Automaton patterns are ordered by the rank
  of their best rule, so the lowest pattern index found is the best keyword candidate.

The message as it arrived (the usual case, :meth:`RuleBook.match`): when a rule set has only
contains/starts_with rules, the message is scanned *before* it is normalised. The automaton also
holds **flag patterns** (:func:`flag_patterns`, the first pattern indices): the UTF-8 forms of every
character outside the fast-path set of :func:`normalize` (other scripts, combining marks,
compatibility forms, controls, emoji), and of the fast-path characters that normalisation would turn
into a character some keyword contains (``Ｖ`` and ``V`` when a keyword contains ``v``; the ideographic
space and two spaces in a row when one contains a space). A scan that finds no flag has found exactly
the keywords of the normalised message, at the same places once leading spaces are stripped:
normalisation only changes characters no keyword contains, and those characters separate keywords
in both forms. Chinese messages with full-width punctuation (，？！) against Chinese keywords need no
normalisation at all. A flagged message is normalised and scanned again; ``tests/conversations/
test_matching_raw_scan.py`` checks both against the reference normalisation on arbitrary rule sets.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import ahocorasick_rs
import re2

from shequn.core.clock import now

logger = logging.getLogger("shequn.conversations")

MAX_INPUT_CHARS = 2000
"""Only the first 2,000 characters of a message are matched (WeChat text messages are shorter)."""

MINUTES_PER_DAY = 24 * 60

MAX_CHANNEL_TABLES = 16
"""Channels a rule set keeps a table of settled hits for (:meth:`RuleBook.settled`)."""

EXACT = "exact"
CONTAINS = "contains"
STARTS_WITH = "starts_with"
REGEX = "regex"

SLOW, QUICK, QUICK_AT_START = 0, 1, 2
"""How a keyword hit is judged: by scanning its rules (SLOW), or at once by its best rule, which has
no channel or window condition — anywhere (QUICK) or only at position 0 (QUICK_AT_START)."""

REGEX_MAX_MEM = 1 << 20
"""RE2's memory budget per compiled regular expression (bytes): a pattern whose program needs more is
refused when the rule is saved."""


def nfkc(text: str) -> str:
    """``unicodedata.normalize("NFKC", text)``, computed faster for the usual chat message.

    NFKC is NFC of NFKD. CPython decomposes quickly but composes slowly, and Chinese text with
    full-width punctuation or letters (，？！ＶＩＰ) decomposes to text that needs no composition at all
    (``is_normalized("NFC")`` is then true and the NFC step is the identity)."""
    if unicodedata.is_normalized("NFKC", text):
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    if unicodedata.is_normalized("NFC", decomposed):
        return decomposed
    return unicodedata.normalize("NFC", decomposed)


def normalize_reference(text: str) -> str:
    """The definition of :func:`normalize`, step by step: NFKC, case folding to the fixed point,
    whitespace collapsed. :func:`normalize` gives the same result faster (tested on arbitrary text)."""
    if text.isascii():
        lowered = text.lower()
        if " " not in lowered and lowered.isprintable():
            return lowered
        return " ".join(lowered.split())
    s = nfkc(text)
    folded = s.casefold()
    rounds = 0
    while folded != s and rounds < 4:
        # Case folding can produce characters that NFKC changes again (and the reverse): repeat to
        # the fixed point, which Unicode text reaches in one or two rounds.
        s = nfkc(folded)
        folded = s.casefold()
        rounds += 1
    if " " not in folded and folded.isprintable():
        return folded
    return " ".join(folded.split())


def _stable_ranges() -> list[tuple[int, int]]:
    """Code point ranges of the characters that normalisation leaves alone in any context, among the
    scripts chat messages here are written in (ASCII without upper case and controls, CJK ideographs
    and punctuation, kana): NFKD-, NFKC- and case-fold-stable, printable, not whitespace (but the
    space), not a combining mark, and never the second character of a canonical composition (so no
    neighbour can compose with them). Computed once at import (a few tens of milliseconds)."""
    seconds: set[int] = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))  # Hangul V and T jamo
    for cp in range(0x10000):
        decomposition = unicodedata.decomposition(chr(cp))
        if decomposition and not decomposition.startswith("<"):
            parts = decomposition.split()
            if len(parts) == 2:
                seconds.add(int(parts[1], 16))
    candidates = [(0x20, 0x40), (0x5B, 0x7E), (0x3001, 0x303F), (0x3041, 0x30FF), (0x3400, 0x4DBF),
                  (0x4E00, 0x9FFF), (0xAC00, 0xD7A3)]
    out: list[tuple[int, int]] = []
    for lo, hi in candidates:
        for cp in range(lo, hi + 1):
            c = chr(cp)
            if (unicodedata.normalize("NFKD", c) == c and unicodedata.normalize("NFKC", c) == c
                    and c.casefold() == c and c.lower() == c and unicodedata.combining(c) == 0 and cp not in seconds and c.isprintable() and (c == " " or not c.isspace())):
                if out and out[-1][1] == cp - 1:
                    out[-1] = (out[-1][0], cp)
                else:
                    out.append((cp, cp))
    return out


def _char_class(ranges: Iterable[tuple[int, int]]) -> str:
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


_STABLE_RANGES = _stable_ranges()
_STABLE = _char_class(_STABLE_RANGES)
_FOLDABLE_RANGES = ((0x41, 0x5A), (0x3000, 0x3000), (0xFF01, 0xFF5E))
_FOLDABLE = _char_class(_FOLDABLE_RANGES)
# Characters the fast path cannot handle: neither stable nor a full-width ASCII form, the ideographic
# space or an ASCII capital.
_NOT_FAST = re.compile(f"[^{_STABLE}{_FOLDABLE}]")
# The first character that is not stable (a text without one is already normalised, but for spaces).
_UNSTABLE = re.compile(f"[^{_STABLE}]")
_nfkd = unicodedata.normalize


def normalize(text: str) -> str:
    """``text`` in the form rules are matched on: NFKC, case-folded, whitespace collapsed and stripped
    (:func:`normalize_reference` is the definition).

    Idempotent: ``normalize(normalize(x)) == normalize(x)``.

    Fast path: a message made only of characters that normalisation leaves alone in any context
    (Chinese, kana, lower-case ASCII — see :func:`_stable_ranges`) plus full-width ASCII, the
    ideographic space and ASCII capitals — nearly every Chinese chat message — is normalised by NFKD
    (which maps the full-width forms and needs no recomposition here) and ``lower`` (the case folding
    of ASCII), skipping NFC composition and the case-folding rounds."""
    if text.isascii():
        lowered = text.lower()
        if " " not in lowered and lowered.isprintable():
            return lowered
        return " ".join(lowered.split())
    first = _UNSTABLE.search(text)
    if first is None:
        folded = text
    elif _NOT_FAST.search(text, first.start()) is None:
        folded = _nfkd("NFKD", text).lower()
    else:
        return normalize_reference(text)
    if " " not in folded:
        return folded
    return " ".join(folded.split())


def normalize_utf8(text: str) -> bytes:
    """``normalize(text).encode("utf-8")``, computed in UTF-8 on the fast path: after NFKD, ``bytes.lower``
    lower-cases exactly the ASCII capitals, as case folding does on the characters of that path, and
    the only whitespace left is the space."""
    if text.isascii():
        lowered = text.lower()
        if " " in lowered or not lowered.isprintable():
            lowered = " ".join(lowered.split())
        return lowered.encode()
    if _NOT_FAST.search(text) is None:
        decomposed = _nfkd("NFKD", text)
        encoded = decomposed.encode().lower()
        if " " in decomposed and (decomposed[0] == " " or decomposed[-1] == " " or "  " in decomposed):
            encoded = b" ".join(encoded.split())
        return encoded
    return normalize_reference(text).encode()


# ---------------------------------------------------------------------------------------------
# matching the message as it arrived


_WHITESPACE_FAST = " \u3000"
"""The whitespace characters of the fast-path set: the space and the ideographic space."""

_FOLDED: dict[str, str] = {chr(cp): unicodedata.normalize("NFKD", chr(cp)).lower()
                           for lo, hi in _FOLDABLE_RANGES for cp in range(lo, hi + 1)}
"""What normalisation makes of each fast-path character it changes (ASCII capitals, full-width ASCII,
the ideographic space): one ASCII character."""


def _not_fast_table() -> bytes:
    """One byte per BMP code point: 0 for the characters of the fast-path set, 1 for the others."""
    table = bytearray(b"\x01" * 0x10000)
    for lo, hi in (*_STABLE_RANGES, *_FOLDABLE_RANGES):
        table[lo:hi + 1] = bytes(hi + 1 - lo)
    return bytes(table)


_NOT_FAST_TABLE = _not_fast_table()


@functools.lru_cache(maxsize=256)
def flag_patterns(keyword_ascii: frozenset[str]) -> tuple[bytes, ...]:
    """UTF-8 patterns that find, in a message, every character that forbids matching the message as it
    arrived (without normalising it) against keywords whose ASCII characters are ``keyword_ascii``.

    These are the characters outside the fast-path set (the scan finds them by the UTF-8 prefix of
    their block where a whole block is outside it), and the fast-path characters that normalisation
    changes into a keyword character (``Ｖ`` or ``V`` when a keyword contains ``v``; the ideographic
    space when a keyword contains a space), plus two spaces in a row when a keyword contains a space.
    A message with none of them matches exactly the keywords its normalised form matches, at the same
    place once leading spaces are stripped (:meth:`RuleBook.match`)."""
    flagged = bytearray(_NOT_FAST_TABLE)
    for char, image in _FOLDED.items():
        if image in keyword_ascii:
            flagged[ord(char)] = 1
    patterns = [bytes([cp]) for cp in range(0x80) if flagged[cp]]
    # Two-byte sequences (U+0080–U+07FF), then three-byte ones (U+0800–U+FFFF) by lead byte and second
    # byte: a prefix when its whole block is flagged, else every flagged character. The code points a
    # lead byte cannot start (overlong forms, surrogates) never occur in encoded text: they count as
    # flagged, so that they do not split a block.
    for lead in range(0xC2, 0xE0):
        lo = (lead & 0x1F) << 6
        block = flagged[lo:lo + 64]
        if block.count(1) == 64:
            patterns.append(bytes([lead]))
        else:
            patterns.extend(chr(lo + i).encode() for i in range(64) if block[i])
    for lead in range(0xE0, 0xF0):
        lo = (lead & 0x0F) << 12
        block = bytearray(flagged[lo:lo + 0x1000])
        if lead == 0xE0:
            block[:0x800] = b"\x01" * 0x800
        elif lead == 0xED:
            block[0x800:] = b"\x01" * 0x800
        if block.count(1) == len(block):
            patterns.append(bytes([lead]))
            continue
        for second in range(64):
            sub = block[second * 64:(second + 1) * 64]
            ones = sub.count(1)
            if ones == 64:
                patterns.append(bytes([lead, 0x80 | second]))
            elif ones:
                patterns.extend(chr(lo + second * 64 + i).encode() for i in range(64) if sub[i])
    patterns.extend(bytes([lead]) for lead in range(0xF0, 0xF5))  # beyond the BMP: none is fast
    if " " in keyword_ascii:
        patterns.append(b"  ")
    return tuple(patterns)


def regex_options() -> re2.Options:
    """RE2 options of every regex rule: case-insensitive (the text is case-folded anyway), bounded
    memory, UTF-8."""
    options = re2.Options()
    options.case_sensitive = False
    options.max_mem = REGEX_MAX_MEM
    options.log_errors = False
    return options


def compile_regex(pattern: str) -> Any:
    """The RE2 program of ``pattern``; raises ``re2.error`` when RE2 refuses it (syntax it does not
    have — backreferences, look-around — or a program over the memory budget)."""
    return re2.compile(pattern, regex_options())


# ---------------------------------------------------------------------------------------------
# time windows


@dataclass(frozen=True, slots=True)
class Window:
    """Weekly opening window in local time: on ISO weekdays ``days`` from ``start`` to ``end`` minutes
    after midnight. ``end <= start`` runs past midnight into the next day."""

    days: frozenset[int]
    start: int
    end: int

    def contains(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        if weekday in self.days and minute >= self.start:
            return True
        previous = 7 if weekday == 1 else weekday - 1
        return previous in self.days and minute < self.end


def parse_clock(value: str) -> int:
    """Minutes after midnight of ``"HH:MM"`` (``"24:00"`` is the end of the day); ValueError otherwise."""
    text = str(value).strip()
    hours, sep, minutes = text.partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2 or len(hours) > 2:
        raise ValueError(text)
    total = int(hours) * 60 + int(minutes)
    if int(minutes) >= 60 or total > MINUTES_PER_DAY:
        raise ValueError(text)
    return total


def window_from(data: Mapping[str, Any]) -> Window:
    return Window(days=frozenset(int(d) for d in data["days"]), start=parse_clock(data["start"]),
                  end=parse_clock(data["end"]))


# ---------------------------------------------------------------------------------------------
# rules


@dataclass(frozen=True)
class RuleSpec:
    """What the engine needs of one rule (read from ``AutoReplyRule``)."""

    id: int
    name: str
    match_type: str
    patterns: Sequence[str]
    priority: int
    reply_type: str
    reply: Mapping[str, Any]
    channels: Sequence[str] = ()
    windows: Sequence[Mapping[str, Any]] = ()
    outside_windows: bool = False
    tag: str = ""


@dataclass(eq=False, slots=True)
class CompiledRule:
    """A rule ready to answer. ``order`` is its rank in the rule set (priority, then id): lower wins."""

    id: int
    name: str
    priority: int
    reply_type: str
    reply: Mapping[str, Any]
    tag: str
    channels: frozenset[str] | None
    windows: tuple[Window, ...]
    outside_windows: bool
    order: int = 0
    unconditional: bool = field(init=False)

    def __post_init__(self) -> None:
        self.unconditional = self.channels is None and not self.windows

    def applies(self, channel: str, at: dt.datetime | None, tz: ZoneInfo) -> bool:
        """Whether the rule may answer on ``channel`` at ``at`` (now when None)."""
        if self.channels is not None and channel not in self.channels:
            return False
        if not self.windows:
            return True
        local = (at or now()).astimezone(tz)
        weekday, minute = local.isoweekday(), local.hour * 60 + local.minute
        inside = any(w.contains(weekday, minute) for w in self.windows)
        return inside != self.outside_windows


def compile_rule(spec: RuleSpec) -> CompiledRule:
    return CompiledRule(id=spec.id, name=spec.name, priority=spec.priority, reply_type=spec.reply_type,
                        reply=dict(spec.reply), tag=spec.tag,
                        channels=frozenset(spec.channels) if spec.channels else None,
                        windows=tuple(window_from(w) for w in spec.windows),
                        outside_windows=bool(spec.outside_windows and spec.windows))


class RuleBook:
    """The compiled, immutable rule set of one workspace at one version. Safe to share between threads."""

    def __init__(self, specs: Iterable[RuleSpec], *, timezone: str = "UTC", version: Any = None) -> None:
        self.version = version
        try:
            self.tz = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            logger.error("unknown time zone %r: time windows are judged in UTC", timezone)
            self.tz = ZoneInfo("UTC")
        ranked = sorted(specs, key=lambda s: (s.priority, s.id))
        self.rules: list[CompiledRule] = []
        self._exact: dict[str, list[CompiledRule]] = {}
        keyword_entries: dict[str, list[tuple[CompiledRule, bool]]] = {}
        self._regex: list[tuple[CompiledRule, tuple[Any, ...]]] = []
        for order, spec in enumerate(ranked):
            rule = compile_rule(spec)
            rule.order = order
            self.rules.append(rule)
            keys = list(dict.fromkeys(k for k in (normalize(p) for p in spec.patterns) if k))
            if spec.match_type == EXACT:
                for key in keys:
                    self._exact.setdefault(key, []).append(rule)
            elif spec.match_type in (CONTAINS, STARTS_WITH):
                anchored = spec.match_type == STARTS_WITH
                for key in keys:
                    keyword_entries.setdefault(key, []).append((rule, anchored))
            elif spec.match_type == REGEX:
                try:
                    programs = tuple(compile_regex(p) for p in spec.patterns)
                except re2.error:
                    # Validated when saved; a pattern a newer RE2 refuses must not take the bot down.
                    logger.error("auto-reply rule %s: a regular expression no longer compiles; rule skipped", spec.id)
                    continue
                self._regex.append((rule, programs))
            else:
                raise ValueError(f"unknown match type {spec.match_type!r}")
        # Entries were appended in rank order: the first entry of a keyword is its best rule. Order
        # the automaton's patterns by that rank, so that a lower pattern index is a better candidate.
        self.keywords: list[str] = sorted(keyword_entries, key=lambda k: keyword_entries[k][0][0].order)
        self._anchored = any(anchored for entries in keyword_entries.values() for _, anchored in entries)
        self._find: Any = None
        flags: tuple[bytes, ...] = ()
        self._foldable_search: Any = None
        if self.keywords:
            # The flag patterns (flag_patterns) come first, at indices below self._flags: a message in
            # which the scan finds none is matched as it arrived, without being normalised.
            keyword_ascii = frozenset(c for k in self.keywords for c in k if c.isascii())
            flags = flag_patterns(keyword_ascii)
            # When keywords contain ASCII, a message with a character normalisation would turn into a
            # keyword character (ＶＩＰ, VIP for vip) is normalised before its one scan: one regex search
            # instead of a scan that would be flagged and done again.
            foldable = "".join(c for c, image in _FOLDED.items() if image in keyword_ascii)
            if foldable:
                self._foldable_search = re.compile(f"[{re.escape(foldable)}]").search
            # Bytes automaton over UTF-8: the bytes API takes the encoded message as it is, without the
            # conversion of byte offsets to character offsets the str API makes (only "position 0"
            # matters here).
            automaton = ahocorasick_rs.BytesAhoCorasick([*flags, *(k.encode("utf-8") for k in self.keywords)],
                                                        matchkind=ahocorasick_rs.MATCHKIND_STANDARD,
                                                        implementation=ahocorasick_rs.Implementation.ContiguousNFA)
            self._find = automaton.find_matches_as_indexes
        self._flags = len(flags)
        # Per automaton pattern (None for the flags): the keyword's entries, its best rule, how a hit is
        # judged (QUICK, QUICK_AT_START or SLOW — one byte per pattern, compact memory rather than
        # thousands of scattered rule objects), and the best rule when a hit anywhere settles it (QUICK).
        pad: list[Any] = [None] * self._flags
        self._entries: list[tuple[tuple[CompiledRule, bool], ...]] = [*pad, *(tuple(keyword_entries[k])
                                                                              for k in self.keywords)]
        self._best: list[CompiledRule] = [*pad, *(keyword_entries[k][0][0] for k in self.keywords)]
        self._quick = bytearray(self._flags) + bytearray(
            (QUICK_AT_START if entries[0][1] else QUICK) if entries[0][0].unconditional else SLOW
            for entries in (keyword_entries[k] for k in self.keywords))
        self._quick_rule: list[CompiledRule | None] = [rule if quick == QUICK else None
                                                       for rule, quick in zip(self._best, self._quick, strict=True)]
        self._settled_tables: dict[str, list[CompiledRule | None]] = {}
        # Only contains/starts_with rules (the usual rule set): match() scans the message as it arrived.
        self._keywords_only = self._find is not None and not self._exact and not self._regex
        if self._keywords_only:
            self.match = self._raw_matcher()  # type: ignore[method-assign]

    def __len__(self) -> int:
        return len(self.rules)

    def settled(self, channel: str) -> list[CompiledRule | None]:
        """Per automaton pattern, the rule that a hit of it answers with at once on ``channel``, or None
        (a flag, or a hit to judge): its keyword's best rule when that rule may answer on ``channel``
        without a time window and anywhere in the message. The best hit of a scan (lowest pattern
        index) settled this way is the winner, as no other hit has a better rule.

        A rule limited to some channels is thus as quick as an unconditional one. Built on the first
        message of each channel and kept (a workspace speaks on a few channels; past
        :data:`MAX_CHANNEL_TABLES` the table of unconditional rules serves)."""
        table = self._settled_tables.get(channel)
        if table is not None:
            return table
        if len(self._settled_tables) >= MAX_CHANNEL_TABLES:
            return self._quick_rule
        table = [None if entries is None or entries[0][1] or entries[0][0].windows
                 or (entries[0][0].channels is not None and channel not in entries[0][0].channels)
                 else entries[0][0] for entries in self._entries]
        self._settled_tables[channel] = table
        return table

    def match(self, text: str, channel: str, at: dt.datetime | None = None) -> CompiledRule | None:
        """The rule that answers ``text`` received on ``channel`` at ``at`` (now when None), or None.

        A keywords-only rule set replaces this method, per instance, by the function
        :meth:`_raw_matcher` builds for it: the same answer, with fewer steps per message."""
        if len(text) > MAX_INPUT_CHARS:
            text = text[:MAX_INPUT_CHARS]
        s = normalize(text)
        return self._match_normalized(s, channel, at, None) if s else None

    def _raw_matcher(self) -> Callable[..., CompiledRule | None]:
        """:meth:`match` for a rule set of contains/starts_with rules only (the usual one): the message
        is scanned as it arrived (leading spaces stripped when position 0 matters). When the scan finds
        no flag pattern, normalising could not change which keywords the message contains nor whether
        one is at position 0 (:func:`flag_patterns`): its hits are the answer.

        A closure over what it needs, specialised to the rule set (ASCII keywords or not, starts_with
        keywords or not): a message costs one call, one encode, one scan and a list lookup, which keeps
        the engine near the raw automaton (docs/benchmarks.md)."""
        find, settle, tables, settled = self._find, self._match_hits, self._settled_tables, self.settled
        match_utf8, foldable = self._match_utf8, self._foldable_search
        limit, spaces = MAX_INPUT_CHARS, _WHITESPACE_FAST

        def after_scan(text: str, raw: bytes, hits: list[tuple[int, int, int]], channel: str,
                       at: dt.datetime | None) -> CompiledRule | None:
            if len(hits) > 1:
                hits.sort()  # by pattern index, then position: the best candidate first
            try:
                table = tables[channel]
            except KeyError:
                table = settled(channel)
            rule = table[hits[0][0]]  # None: a flag, or a hit to judge
            if rule is not None:
                return rule
            return settle(text, raw, hits, channel, at)

        if foldable is None and not self._anchored:
            def match(text: str, channel: str, at: dt.datetime | None = None) -> CompiledRule | None:
                if len(text) > limit:
                    text = text[:limit]
                raw = text.encode()
                hits = find(raw, True)
                if not hits:
                    return None
                if len(hits) > 1:
                    hits.sort()
                try:
                    table = tables[channel]
                except KeyError:
                    table = settled(channel)
                rule = table[hits[0][0]]
                if rule is not None:
                    return rule
                return settle(text, raw, hits, channel, at)
            return match

        anchored = self._anchored

        def match_general(text: str, channel: str, at: dt.datetime | None = None) -> CompiledRule | None:
            if len(text) > limit:
                text = text[:limit]
            # A message with a character normalisation would turn into a keyword character (ＶＩＰ, VIP
            # for vip) is normalised before its one scan.
            if foldable is not None and foldable(text) is not None:
                return match_utf8(normalize_utf8(text), channel, at)
            raw = (text.lstrip(spaces) if anchored else text).encode()
            hits = find(raw, True)
            return after_scan(text, raw, hits, channel, at) if hits else None
        return match_general

    def _match_hits(self, text: str, raw: bytes, hits: list[tuple[int, int, int]], channel: str,
                    at: dt.datetime | None) -> CompiledRule | None:
        """:meth:`match` once the scan of the message as it arrived (``raw``) gave ``hits`` (sorted) and the
        first one is not settled at once: a keyword hit to judge, or a flag — then the message is
        normalised and scanned again (unless normalisation leaves it alone: an emoji, say)."""
        idx, start, _end = hits[0]
        if idx >= self._flags:
            return self._judge(hits, idx, start, None, channel, at)
        normalized = normalize_utf8(text)
        if normalized == raw:
            return self._keyword_winner(hits, None, channel, at)
        return self._match_utf8(normalized, channel, at)

    def _match_utf8(self, normalized: bytes, channel: str, at: dt.datetime | None) -> CompiledRule | None:
        """The winner of a keywords-only rule set for a message normalised beforehand (UTF-8)."""
        hits = self._find(normalized, True)
        if not hits:
            return None
        if len(hits) > 1:
            hits.sort()
        rule = self.settled(channel)[hits[0][0]]
        if rule is not None:
            return rule
        return self._keyword_winner(hits, None, channel, at)

    def match_normalized(self, s: str, channel: str, at: dt.datetime | None = None) -> CompiledRule | None:
        """:meth:`match` for a text already normalised (``normalize(text) == text``)."""
        if self._keywords_only:
            hits = self._find(s.encode(), True)
            if hits:
                if len(hits) > 1:
                    hits.sort()
                rule = self.settled(channel)[hits[0][0]]
                if rule is not None:
                    return rule
                idx, start, _end = hits[0]
                if idx >= self._flags:
                    return self._judge(hits, idx, start, None, channel, at)
                return self._match_normalized(s, channel, at, hits)
            return None
        return self._match_normalized(s, channel, at, None) if s else None

    def _match_normalized(self, s: str, channel: str, at: dt.datetime | None,
                          hits: list[tuple[int, int, int]] | None) -> CompiledRule | None:
        """The general path of :meth:`match_normalized` (``s`` not empty): exact keywords, the
        automaton (``hits`` when ``s`` was scanned already), regex rules."""
        best: CompiledRule | None = None
        if self._exact:
            exact = self._exact.get(s)
            if exact is not None:
                for rule in exact:
                    if rule.unconditional or rule.applies(channel, at, self.tz):
                        best = rule
                        break
        if self._find is not None:
            best = self._keyword_winner(self._find(s.encode(), True) if hits is None else hits, best, channel, at)
        if self._regex:
            best = self._match_regex(s, best, channel, at)
        return best

    def _keyword_winner(self, hits: list[tuple[int, int, int]], best: CompiledRule | None, channel: str,
                        at: dt.datetime | None) -> CompiledRule | None:
        """The winner among the keyword hits of a scan (flags left out) and ``best``."""
        flags = self._flags
        hits = sorted(h for h in hits if h[0] >= flags)
        if hits:
            idx, start, _end = hits[0]
            if best is None or self._best[idx].order < best.order:
                return self._judge(hits, idx, start, best, channel, at)
        return best

    def _judge(self, hits: list[tuple[int, int, int]], idx: int, start: int, best: CompiledRule | None,
               channel: str, at: dt.datetime | None) -> CompiledRule | None:
        """The winner among keyword ``hits`` (sorted, no flag among them) and ``best``, knowing that
        ``(idx, start)`` is the first hit and that its keyword's best rule beats ``best``."""
        quick = self._quick[idx]
        if quick == QUICK or (quick == QUICK_AT_START and start == 0):
            return self._best[idx]
        return self._scan(hits, best, channel, at)

    def _match_regex(self, s: str, best: CompiledRule | None, channel: str,
                     at: dt.datetime | None) -> CompiledRule | None:
        for rule, programs in self._regex:
            if best is not None and rule.order >= best.order:
                break
            if (rule.unconditional or rule.applies(channel, at, self.tz)) and any(p.search(s) for p in programs):
                return rule
        return best

    def _scan(self, hits: list[tuple[int, int, int]], best: CompiledRule | None, channel: str,
              at: dt.datetime | None) -> CompiledRule | None:
        """The best rule among keyword ``hits`` (sorted by pattern index, then position) that beats ``best``."""
        tz = self.tz
        seen = -1
        for idx, start, _end in hits:
            entries = self._entries[idx]
            if best is not None and entries[0][0].order >= best.order:
                break  # patterns are ordered by their best rule: nothing further can win
            if idx == seen:
                # A keyword's first hit has its lowest position: later hits of it add nothing
                # (unanchored entries were judged already, anchored ones need position 0).
                continue
            seen = idx
            for rule, anchored in entries:
                if best is not None and rule.order >= best.order:
                    break
                if anchored and start != 0:
                    continue
                if rule.unconditional or rule.applies(channel, at, tz):
                    best = rule
                    break
        return best
