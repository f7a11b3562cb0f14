"""Unicode hygiene and the target-independent neutralising of links and mentions.

A value typed into the panel (or written by a reporter) is untrusted. Before it is escaped for a
platform it goes through two steps that are the same for Discord and Telegram, so both previews
show the same words:

* :func:`forbidden_character` refuses characters a reader cannot see or that reorder the text
  (bidi controls, zero-width characters, tag characters...). Those are how "Trojan Source" and
  lookalike tricks hide a different message from the approver than the one users read.
* :func:`defang` makes every link-like piece of text inert (``hxxps[://]evil[.]com``), because
  Telegram turns bare domains into links and Discord turns ``https://`` into links. Real links only
  come from url-type variables through the template's ``link()`` helper.
* :func:`break_mentions` puts a zero-width space after ``@`` (and its full-width forms) so no
  value can ping ``@everyone`` or a user, the same trick as discord.py's ``escape_mentions``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from comms.rendering.limits import MAX_COMBINING_RUN

ZWSP = "\u200b"
ZWJ = "\u200d"
_VS15 = "\ufe0e"
_VS16 = "\ufe0f"

# Direction controls: they reorder what the reader sees (CVE-2021-42574, "Trojan Source").
BIDI_CONTROLS = frozenset([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C])

# Characters that render as nothing (or as blank space) but are letters or marks, so the
# general-category test below does not catch them.
_INVISIBLE_EXTRA = frozenset(
    [
        0x034F,  # COMBINING GRAPHEME JOINER
        0x115F,  # HANGUL CHOSEONG FILLER
        0x1160,  # HANGUL JUNGSEONG FILLER
        0x17B4,  # KHMER VOWEL INHERENT AQ
        0x17B5,  # KHMER VOWEL INHERENT AA
        0x180B,  # MONGOLIAN FREE VARIATION SELECTOR ONE .. FOUR
        0x180C,
        0x180D,
        0x180F,
        0x2800,  # BRAILLE PATTERN BLANK
        0x3164,  # HANGUL FILLER
        0xFFA0,  # HALFWIDTH HANGUL FILLER
        0xFFFC,  # OBJECT REPLACEMENT CHARACTER
        *range(0xFE00, 0xFE0E),  # VARIATION SELECTOR-1 .. 14 (VS15/VS16 handled apart)
        *range(0xE0100, 0xE01F0),  # VARIATION SELECTOR SUPPLEMENT (used to smuggle data)
    ]
)

_SKIN_TONES = range(0x1F3FB, 0x1F400)


def _is_emoji(char: str) -> bool:
    """A rough but simple test for "this code point is a pictograph", for ZWJ sequences."""
    cp = ord(char)
    return (
        0x1F000 <= cp <= 0x1FAFF
        or 0x2600 <= cp <= 0x27BF
        or 0x2300 <= cp <= 0x23FF
        or 0x2B00 <= cp <= 0x2BFF
        or 0x2190 <= cp <= 0x21FF
        or cp in (0x00A9, 0x00AE, 0x203C, 0x2049, 0x2122, 0x2139, 0x3030, 0x303D)
    )


def _emoji_before(text: str, index: int) -> bool:
    """Is the character before ``index`` (skipping VS16 and skin tones) a pictograph?"""
    i = index - 1
    while i >= 0 and (text[i] in (_VS16, _VS15) or ord(text[i]) in _SKIN_TONES):
        i -= 1
    return i >= 0 and _is_emoji(text[i])


def _emoji_after(text: str, index: int) -> bool:
    return index + 1 < len(text) and _is_emoji(text[index + 1])


@dataclass(frozen=True)
class BadCharacter:
    """The first refused character of a value, described for a person."""

    position: int
    codepoint: int
    reason: str
    count: int

    def describe(self) -> str:
        name = unicodedata.name(chr(self.codepoint), "unnamed character")
        more = f" ({self.count} such characters in total)" if self.count > 1 else ""
        return (
            f"contains {self.reason} U+{self.codepoint:04X} {name} at position "
            f"{self.position + 1}{more}; remove it"
        )


def _classify(text: str, index: int, *, allow_newlines: bool) -> str | None:
    """Why the character at ``index`` is refused, or None when it is fine."""
    char = text[index]
    cp = ord(char)
    if char == "\n":
        return None if allow_newlines else "a line break"
    if cp in BIDI_CONTROLS:
        return "a text-direction control"
    if char == ZWJ:
        if _emoji_before(text, index) and _emoji_after(text, index):
            return None
        return "an invisible zero-width joiner (allowed only inside emoji)"
    if char in (_VS15, _VS16):
        if index > 0 and not text[index - 1].isspace() and text[index - 1] not in (_VS15, _VS16):
            return None
        return "a stray variation selector"
    if cp in _INVISIBLE_EXTRA:
        return "an invisible character"
    category = unicodedata.category(char)
    if category == "Cc":
        return "a control character"
    if category == "Cf":
        return "an invisible formatting character"
    if category in ("Zl", "Zp"):
        return "a line or paragraph separator"
    if category == "Cs":
        return "a lone surrogate"
    if category == "Co":
        return "a private-use character"
    if category == "Cn":
        return "an unassigned character"
    return None


def forbidden_character(text: str, *, allow_newlines: bool = True) -> BadCharacter | None:
    """The first character we refuse in a value, or None. Counts every refused character."""
    first: BadCharacter | None = None
    count = 0
    combining_run = 0
    for index, char in enumerate(text):
        reason = _classify(text, index, allow_newlines=allow_newlines)
        if reason is None and unicodedata.combining(char):
            combining_run += 1
            if combining_run > MAX_COMBINING_RUN:
                reason = f"more than {MAX_COMBINING_RUN} stacked combining marks, such as"
        elif reason is None:
            combining_run = 0
        if reason is not None:
            count += 1
            if first is None:
                first = BadCharacter(index, ord(char), reason, 0)
    if first is None:
        return None
    return BadCharacter(first.position, first.codepoint, first.reason, count)


def strip_forbidden(text: str) -> str:
    """Drop refused characters instead of refusing the text (for context strings we must show)."""
    kept = [
        char
        for index, char in enumerate(text)
        if _classify(text, index, allow_newlines=False) is None
    ]
    return "".join(kept)


_MANY_NEWLINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t\u00a0\u3000]+$", re.MULTILINE)


def normalise_text(raw: str) -> str:
    """Canonical form of a text value: NFC, LF line ends, no trailing spaces, <= 1 blank line.

    Idempotent, so validating an already validated value gives the same bytes (the content hash
    of a draft must not change because it was validated twice).
    """
    text = raw.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = unicodedata.normalize("NFC", text)
    text = _TRAILING_SPACE.sub("", text)
    text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip()


# --- links --------------------------------------------------------------------------------------

# Every character that IDNA (UTS #46) maps to a full stop: "evil。com" opens evil.com.
DOTS = ".\u2024\ufe52\uff0e\u3002\uff61"
_DOT_CLASS = "[" + re.escape(DOTS) + "]"

# "scheme://": made "scheme[://]" and http(s) becomes hxxp(s), the usual defanged form.
_SCHEME_SEP = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
# A dot between a name character and two letters: the shape of every domain name's last dot
# (top-level domains have at least two letters), so "e.g." is left alone.
_DOMAIN_DOT = re.compile(rf"(?<![\s{re.escape(DOTS)}\[]){_DOT_CLASS}(?=[^\W\d_]{{2}})")
# IPv4 literals are links too (Telegram links them): every dot of a run of 4+ dotted numbers.
_IPV4 = re.compile(rf"\d+(?:{_DOT_CLASS}\d+){{3,}}")

# For warnings: what the approver should be told was neutralised.
_URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s<>\"'`]*")
_LABEL = r"[^\W_](?:[\w\-]*[^\W_])?"
_DOMAIN_LIKE = re.compile(rf"(?:{_LABEL}{_DOT_CLASS})+[^\W\d_][\w\-]*")


def _defang_scheme(match: re.Match[str]) -> str:
    scheme = match.group(1)
    if scheme.lower().startswith("http"):
        scheme = scheme[0] + ("XX" if scheme[1].isupper() else "xx") + scheme[3:]
    return f"{scheme}[://]"


def defang(text: str) -> str:
    """Make link-like text inert for both platforms; text without links comes back unchanged."""
    text = _SCHEME_SEP.sub(_defang_scheme, text)
    text = _IPV4.sub(lambda m: re.sub(_DOT_CLASS, "[.]", m.group(0)), text)
    return _DOMAIN_DOT.sub("[.]", text)


def link_like_pieces(text: str) -> list[str]:
    """The URLs and domain names a value contained, in order, for the approver's warning."""
    found: list[str] = []
    for match in _URL_LIKE.finditer(text):
        found.append(match.group(0))
    rest = _URL_LIKE.sub(" ", text)
    for match in _DOMAIN_LIKE.finditer(rest):
        found.append(match.group(0))
    for match in _IPV4.finditer(rest):
        found.append(match.group(0))
    unique: list[str] = []
    for piece in found:
        if piece not in unique:
            unique.append(piece)
    return unique


# --- mentions -----------------------------------------------------------------------------------

AT_SIGNS = "@\uff20\ufe6b"
_AT = re.compile("[" + AT_SIGNS + "]")
_MENTION_LIKE = re.compile(r"[@＠﹫](?:everyone|here)\b|<@[!&]?\d+>|<#\d+>", re.IGNORECASE)
# Telegram turns "/word" at the start of a word into a clickable bot command.
_COMMAND = re.compile(r"(?<![A-Za-z0-9_])/(?=[A-Za-z]|$)")


def break_mentions(text: str) -> str:
    """A zero-width space after every at sign: no value can ping anyone on either platform."""
    return _AT.sub(lambda m: m.group(0) + ZWSP, text)


def break_commands(text: str) -> str:
    """A zero-width space after a "/" that would start a Telegram bot command."""
    return _COMMAND.sub("/" + ZWSP, text)


def mention_like_pieces(text: str) -> list[str]:
    """Mass or user mentions a value tried to make (they are neutralised; approvers are told)."""
    return list(dict.fromkeys(m.group(0) for m in _MENTION_LIKE.finditer(text)))


def neutralise(text: str) -> str:
    """Both target-independent steps: links made inert, then mentions broken."""
    return break_mentions(defang(text))
