"""Telegram's text formatting: HTML, MarkdownV2 and legacy Markdown, and automatic entities.

Written to behave like the Bot API server (tdlib's ``parse_html``/``parse_markdown_v2``): the
same accepted tags, the same error texts with UTF-8 byte offsets, and entity offsets and lengths
in UTF-16 code units. Other code and tests use it to check that rendered text is valid::

    text, entities = parse_html("<b>bridge</b> paused")
    parse_html("<foo>")  # raises EntityParseError:
    # "Bad Request: can't parse entities: Unsupported start tag "foo" at byte offset 0"

Deliberate simplifications are listed in docs/SANDBOX.md (URL detection uses a fixed list of
top-level domains; phone numbers and bank cards are not detected).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_TEXT_LENGTH = 4096
"""Maximum message text length, counted in UTF-16 code units after entity parsing."""

Entity = dict[str, Any]
UserResolver = Callable[[int], dict[str, Any] | None]


class EntityParseError(ValueError):
    """The text is not valid for its parse mode; ``description`` is the Bot API's error text."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        self.description = f"Bad Request: can't parse entities: {detail}"
        super().__init__(self.description)


class MessageTextError(ValueError):
    """The text is empty or too long once parsed; ``description`` is the Bot API's error text."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of every Telegram entity offset and length."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _u16(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))


# Priorities used to order entities that start at the same offset with the same length
# (lower first), as the server does.
_PRIORITY = {
    "blockquote": 0,
    "expandable_blockquote": 0,
    "pre": 11,
    "code": 20,
    "text_link": 49,
    "text_mention": 49,
    "mention": 50,
    "hashtag": 50,
    "cashtag": 50,
    "bot_command": 50,
    "url": 50,
    "email": 50,
    "phone_number": 50,
    "date_time": 50,
    "bold": 90,
    "italic": 91,
    "underline": 92,
    "strikethrough": 93,
    "spoiler": 94,
    "custom_emoji": 99,
}


def sort_entities(entities: list[Entity]) -> list[Entity]:
    return sorted(entities, key=lambda e: (e["offset"], -e["length"], _PRIORITY.get(e["type"], 50)))


# --------------------------------------------------------------------------------------------
# Links


_ALLOWED_SCHEMES = {"http", "https", "tg", "ton", "ftp"}
_HOST_RE = re.compile(r"^[a-z0-9\-._~%\u0080-\uffff]+(:\d{1,5})?$", re.IGNORECASE)
_TG_USER_RE = re.compile(r"^tg://user\?id=(\d{1,20})$", re.IGNORECASE)


def check_link(url: str) -> str | None:
    """Normalise a link the way the server does, or None if it would drop it."""
    url = url.strip()
    if not url or any(ch.isspace() for ch in url):
        return None
    with_slashes = re.match(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://", url)
    if with_slashes:
        scheme, rest = with_slashes.group(1).lower(), url[with_slashes.end() :]
    elif re.match(r"^(?:tg|ton):", url, re.IGNORECASE):
        scheme, rest = url.split(":", 1)[0].lower(), url.split(":", 1)[1]
    elif re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*:(?!\d)", url):
        return None  # javascript:, mailto: and other schemes are dropped
    else:
        scheme, rest = "http", url
    if scheme in ("tg", "ton"):
        return f"{scheme}://{rest.lstrip('/')}" if rest else None
    if scheme not in _ALLOWED_SCHEMES:
        return None
    split = re.match(r"^([^/?#]*)(.*)$", rest, re.DOTALL)
    authority, tail = (split.group(1), split.group(2)) if split else (rest, "")
    host = authority.rsplit("@", 1)[-1]
    hostname = host.split(":", 1)[0]
    if not hostname or "." not in hostname.strip(".") or not _HOST_RE.match(host):
        return None
    if not tail:
        tail = "/"
    elif tail[0] in "?#":
        tail = "/" + tail
    return f"{scheme}://{authority}{tail}"


def _link_entity(
    offset: int, length: int, url: str, resolve_user: UserResolver | None
) -> Entity | None:
    user_match = _TG_USER_RE.match(url.strip())
    if user_match:
        user = resolve_user(int(user_match.group(1))) if resolve_user else None
        if user is None:
            return None
        return {"type": "text_mention", "offset": offset, "length": length, "user": user}
    checked = check_link(url)
    if checked is None:
        return None
    return {"type": "text_link", "offset": offset, "length": length, "url": checked}


# --------------------------------------------------------------------------------------------
# HTML

_HTML_TAGS = frozenset(
    {
        "a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins",
        "tg-spoiler", "tg-emoji", "tg-time", "span", "pre", "code", "blockquote",
    }
)  # fmt: skip
_SIMPLE_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
}
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _is_space(ch: str) -> bool:
    return ch in " \t\r\n\0\v"


def _decode_html_entity(text: str, pos: int) -> tuple[str, int] | None:
    """Decode ``&...;`` at ``pos``; the ``;`` is optional, as on the server."""
    n = len(text)
    end = pos + 1
    if end < n and text[end] == "#":
        end += 1
        code = 0
        if end < n and text[end] == "x":
            end += 1
            while end < n and text[end] in "0123456789abcdefABCDEF":
                code = code * 16 + int(text[end], 16)
                end += 1
                if code > 0x10FFFF:
                    code = 0x110000
        else:
            while end < n and "0" <= text[end] <= "9":
                code = code * 10 + int(text[end])
                end += 1
                if code > 0x10FFFF:
                    code = 0x110000
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return None
        decoded = chr(code)
    else:
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        name = text[pos + 1 : end]
        if name not in _NAMED_ENTITIES:
            return None
        decoded = _NAMED_ENTITIES[name]
    if end < n and text[end] == ";":
        end += 1
    return decoded, end


@dataclass
class _Open:
    tag: str
    argument: str
    offset: int
    out_len: int
    extra: dict[str, str] = field(default_factory=dict)


def parse_html(text: str, *, resolve_user: UserResolver | None = None) -> tuple[str, list[Entity]]:
    """Parse Telegram HTML into plain text and entities, or raise ``EntityParseError``."""
    n = len(text)

    def at(j: int) -> str:
        return text[j] if j < n else "\0"

    out: list[str] = []
    out_len = 0  # characters in ``out`` (Python str units)
    utf16 = 0
    entities: list[Entity] = []
    stack: list[_Open] = []
    i = 0
    while i < n:
        c = text[i]
        if c == "&":
            decoded = _decode_html_entity(text, i)
            if decoded is not None:
                ch, i = decoded
                out.append(ch)
                out_len += 1
                utf16 += _u16(ch)
                continue
        if c != "<":
            out.append(c)
            out_len += 1
            utf16 += _u16(c)
            i += 1
            continue
        begin = i
        i += 1
        if at(i) != "/":
            while not _is_space(at(i)) and at(i) != ">":
                i += 1
            if i >= n:
                raise EntityParseError(
                    f"Unclosed start tag at byte offset {_byte_offset(text, begin)}"
                )
            tag = text[begin + 1 : i].lower()
            if tag not in _HTML_TAGS:
                raise EntityParseError(
                    f'Unsupported start tag "{tag}" at byte offset {_byte_offset(text, begin)}'
                )
            argument = ""
            extra: dict[str, str] = {}
            while at(i) != ">":
                while i < n and _is_space(at(i)):
                    i += 1
                if at(i) == ">":
                    break
                name_begin = i
                while not _is_space(at(i)) and at(i) != "=" and at(i) != ">":
                    i += 1
                attribute = text[name_begin:i]
                if not attribute:
                    raise EntityParseError(
                        f'Empty attribute name in the tag "{tag}" at byte offset '
                        f"{_byte_offset(text, begin)}"
                    )
                while i < n and _is_space(at(i)):
                    i += 1
                if at(i) != "=":
                    if tag == "blockquote" and attribute == "expandable":
                        argument = "1"
                        if i >= n:
                            raise EntityParseError(
                                f"Unclosed start tag at byte offset {_byte_offset(text, begin)}"
                            )
                        continue
                    raise EntityParseError(
                        "Expected equal sign in declaration of an attribute of the tag "
                        f'"{tag}" at byte offset {_byte_offset(text, begin)}'
                    )
                i += 1
                while i < n and _is_space(at(i)):
                    i += 1
                if i >= n:
                    raise EntityParseError(
                        f'Unclosed start tag "{tag}" at byte offset {_byte_offset(text, begin)}'
                    )
                if at(i) not in "'\"":
                    token_begin = i
                    while at(i).isascii() and (at(i).isalnum() or at(i) in ".-"):
                        i += 1
                    value = text[token_begin:i].lower()
                    if not _is_space(at(i)) and at(i) != ">":
                        raise EntityParseError(
                            "Unexpected end of name token at byte offset "
                            f"{_byte_offset(text, token_begin)}"
                        )
                else:
                    quote = text[i]
                    i += 1
                    parts: list[str] = []
                    while i < n and text[i] != quote:
                        if text[i] == "&":
                            decoded = _decode_html_entity(text, i)
                            if decoded is not None:
                                parts.append(decoded[0])
                                i = decoded[1]
                                continue
                        parts.append(text[i])
                        i += 1
                    if at(i) == quote:
                        i += 1
                    value = "".join(parts)
                if i >= n:
                    raise EntityParseError(
                        f"Unclosed start tag at byte offset {_byte_offset(text, begin)}"
                    )
                if tag == "a" and attribute == "href":
                    argument = value
                elif tag == "code" and attribute == "class" and value.startswith("language-"):
                    argument = value[9:]
                elif tag == "span" and attribute == "class" and value.startswith("tg-"):
                    argument = value[3:]
                elif tag == "tg-emoji" and attribute == "emoji-id":
                    argument = value
                elif tag == "tg-time" and attribute in ("unix", "format"):
                    extra[attribute] = value
            if tag == "span" and argument != "spoiler":
                raise EntityParseError(
                    'Tag "span" must have class "tg-spoiler" at byte offset '
                    f"{_byte_offset(text, begin)}"
                )
            stack.append(_Open(tag, argument, utf16, out_len, extra))
            i += 1  # skip '>'
            continue

        # An end tag.
        if not stack:
            raise EntityParseError(f"Unexpected end tag at byte offset {_byte_offset(text, begin)}")
        while not _is_space(at(i)) and at(i) != ">":
            i += 1
        end_tag = text[begin + 2 : i].lower()
        while i < n and _is_space(at(i)):
            i += 1
        if at(i) != ">":
            raise EntityParseError(f"Unclosed end tag at byte offset {_byte_offset(text, begin)}")
        i += 1
        top = stack.pop()
        if end_tag and end_tag != top.tag:
            raise EntityParseError(
                f"Unmatched end tag at byte offset {_byte_offset(text, begin)}, "
                f'expected "</{top.tag}>", found "</{end_tag}>"'
            )
        if utf16 > top.offset:
            length = utf16 - top.offset
            entity = _html_entity(top, length, "".join(out[top.out_len :]), resolve_user)
            last = entities[-1] if entities else None
            same_span = (
                last is not None and last["offset"] == top.offset and last["length"] == length
            )
            if (
                entity is not None
                and entity["type"] == "pre"
                and last is not None
                and same_span
                and last["type"] == "code"
                and last.get("_language")
            ):
                last["type"] = "pre"
                last["language"] = last.pop("_language")
            elif (
                entity is not None
                and entity["type"] == "code"
                and entity.get("_language")
                and last is not None
                and same_span
                and last["type"] == "pre"
                and "language" not in last
            ):
                last["language"] = entity["_language"]
            elif entity is not None:
                entities.append(entity)
    if stack:
        raise EntityParseError(f"Can't find end tag corresponding to start tag {stack[-1].tag}")
    for entity in entities:
        entity.pop("_language", None)
    return "".join(out), sort_entities(entities)


def _html_entity(
    top: _Open, length: int, inner: str, resolve_user: UserResolver | None
) -> Entity | None:
    offset = top.offset
    tag = top.tag
    if tag in _SIMPLE_TAGS:
        return {"type": _SIMPLE_TAGS[tag], "offset": offset, "length": length}
    if tag == "span":
        return {"type": "spoiler", "offset": offset, "length": length}
    if tag == "tg-emoji":
        if not top.argument.isdigit() or int(top.argument) == 0:
            raise EntityParseError("Invalid custom emoji identifier specified")
        return {
            "type": "custom_emoji",
            "offset": offset,
            "length": length,
            "custom_emoji_id": top.argument,
        }
    if tag == "tg-time":
        unix = top.extra.get("unix", "")
        if not unix.isdigit():
            raise EntityParseError("Invalid Unix time specified")
        entity: Entity = {
            "type": "date_time",
            "offset": offset,
            "length": length,
            "unix_time": int(unix),
        }
        if top.extra.get("format"):
            entity["date_time_format"] = top.extra["format"]
        return entity
    if tag == "a":
        return _link_entity(offset, length, top.argument or inner, resolve_user)
    if tag == "pre":
        return {"type": "pre", "offset": offset, "length": length}
    if tag == "code":
        entity = {"type": "code", "offset": offset, "length": length}
        if top.argument:
            entity["_language"] = top.argument
        return entity
    if tag == "blockquote":
        kind = "expandable_blockquote" if top.argument else "blockquote"
        return {"type": kind, "offset": offset, "length": length}
    return None  # pragma: no cover - every supported tag is handled above


# --------------------------------------------------------------------------------------------
# MarkdownV2

_MD2_RESERVED = "_*[]()~`>#+-=|{}.!\n"
_MD2_TYPE_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "pre_code": "PreCode",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
    "blockquote": "BlockQuote",
}


@dataclass
class _MdOpen:
    kind: str
    argument: str
    offset: int
    byte_index: int
    out_len: int


def _reserved_error(ch: str) -> EntityParseError:
    return EntityParseError(
        f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
    )


def parse_markdown_v2(
    text: str, *, resolve_user: UserResolver | None = None
) -> tuple[str, list[Entity]]:
    """Parse MarkdownV2 into plain text and entities, or raise ``EntityParseError``."""
    n = len(text)

    def at(j: int) -> str:
        return text[j] if j < n else "\0"

    out: list[str] = []
    utf16 = 0
    entities: list[Entity] = []
    stack: list[_MdOpen] = []
    have_blockquote = False
    i = 0
    while i < n:
        c = text[i]
        nxt = at(i + 1)
        if c == "\\" and 0 < ord(nxt) <= 126:
            out.append(nxt)
            utf16 += 1
            i += 2
            continue
        reserved = _MD2_RESERVED
        if stack and stack[-1].kind in ("code", "pre", "pre_code"):
            reserved = "`"
        if c not in reserved:
            out.append(c)
            utf16 += _u16(c)
            i += 1
            continue

        is_end = False
        if stack:
            kind = stack[-1].kind
            if have_blockquote and c == "\n" and (i + 1 == n or nxt != ">"):
                is_end = True
            elif kind == "bold":
                is_end = c == "*"
            elif kind == "italic":
                is_end = c == "_" and nxt != "_"
            elif kind == "code":
                is_end = c == "`"
            elif kind in ("pre", "pre_code"):
                is_end = c == "`" and nxt == "`" and at(i + 2) == "`"
            elif kind in ("text_link", "custom_emoji"):
                is_end = c == "]"
            elif kind == "underline":
                is_end = c == "_" and nxt == "_"
            elif kind == "strikethrough":
                is_end = c == "~"
            elif kind == "spoiler":
                is_end = c == "|" and nxt == "|"

        if not is_end:
            start = i
            argument = ""
            if c == "_":
                if nxt == "_":
                    kind = "underline"
                    i += 1
                else:
                    kind = "italic"
            elif c == "*":
                kind = "bold"
            elif c == "~":
                kind = "strikethrough"
            elif c == "|":
                if nxt != "|":
                    raise _reserved_error(c)
                kind = "spoiler"
                i += 1
            elif c == "[":
                kind = "text_link"
            elif c == "`":
                if nxt == "`" and at(i + 2) == "`":
                    i += 3
                    kind = "pre"
                    lang_end = i
                    while not _is_space(at(lang_end)) and at(lang_end) != "`":
                        lang_end += 1
                    if i != lang_end and lang_end < n and at(lang_end) != "`":
                        kind = "pre_code"
                        argument = text[i:lang_end]
                        i = lang_end
                    if at(i) in "\n\r":
                        if at(i + 1) in "\n\r" and at(i) != at(i + 1):
                            i += 2
                        else:
                            i += 1
                    i -= 1
                else:
                    kind = "code"
            elif c == "!":
                if nxt != "[":
                    raise _reserved_error(c)
                kind = "custom_emoji"
                i += 1
            elif c == "\n":
                out.append("\n")
                utf16 += 1
                kind = ""
                if i + 1 < n and nxt == ">":
                    i += 1
                    if not have_blockquote:
                        kind = "blockquote"
                        have_blockquote = True
            elif c == ">":
                if i != 0:
                    raise _reserved_error(c)
                kind = "blockquote"
                have_blockquote = True
            else:
                raise _reserved_error(c)
            i += 1
            if kind:
                stack.append(_MdOpen(kind, argument, utf16, start, len(out)))
            continue

        # End of an entity.
        top = stack[-1]
        if c == "\n" and top.kind != "blockquote":
            raise EntityParseError(
                f"Can't find end of {_MD2_TYPE_NAMES[top.kind]} entity at byte offset "
                f"{_byte_offset(text, top.byte_index)}"
            )
        skip = utf16 == top.offset
        entity: Entity | None = None
        if top.kind in ("underline", "spoiler"):
            i += 1
        elif top.kind in ("pre", "pre_code"):
            i += 2
        elif top.kind == "text_link":
            if nxt != "(":
                url = "".join(out[top.out_len :])
            else:
                i += 2
                url_begin = i
                parts: list[str] = []
                while i < n and text[i] != ")":
                    if text[i] == "\\" and 0 < ord(at(i + 1)) <= 126:
                        parts.append(text[i + 1])
                        i += 2
                        continue
                    parts.append(text[i])
                    i += 1
                if at(i) != ")":
                    raise EntityParseError(
                        f"Can't find end of a URL at byte offset {_byte_offset(text, url_begin)}"
                    )
                url = "".join(parts)
            if not skip:
                entity = _link_entity(top.offset, utf16 - top.offset, url, resolve_user)
                skip = entity is None
        elif top.kind == "custom_emoji":
            if nxt != "(":
                raise EntityParseError("Custom emoji entity must contain a tg://emoji URL")
            i += 2
            url_begin = i
            parts = []
            while i < n and text[i] != ")":
                if text[i] == "\\" and 0 < ord(at(i + 1)) <= 126:
                    parts.append(text[i + 1])
                    i += 2
                    continue
                parts.append(text[i])
                i += 1
            if at(i) != ")":
                raise EntityParseError(
                    "Can't find end of a custom emoji URL at byte offset "
                    f"{_byte_offset(text, url_begin)}"
                )
            emoji = re.match(r"^tg://emoji\?id=(\d+)$", "".join(parts))
            if not emoji or int(emoji.group(1)) == 0:
                raise EntityParseError("Invalid custom emoji identifier specified")
            argument = emoji.group(1)
            top.argument = argument
        elif top.kind == "blockquote":
            have_blockquote = False
            out.append(text[i])
            utf16 += 1
        if not skip:
            length = utf16 - top.offset
            if entity is None:
                if top.kind == "pre_code":
                    entity = {
                        "type": "pre",
                        "offset": top.offset,
                        "length": length,
                        "language": top.argument,
                    }
                elif top.kind == "custom_emoji":
                    entity = {
                        "type": "custom_emoji",
                        "offset": top.offset,
                        "length": length,
                        "custom_emoji_id": top.argument,
                    }
                else:
                    entity = {"type": top.kind, "offset": top.offset, "length": length}
            entities.append(entity)
        stack.pop()
        i += 1
    if have_blockquote and stack and stack[-1].kind == "blockquote":
        top = stack.pop()
        if utf16 != top.offset:
            entities.append(
                {"type": "blockquote", "offset": top.offset, "length": utf16 - top.offset}
            )
    if stack:
        top = stack[-1]
        raise EntityParseError(
            f"Can't find end of {_MD2_TYPE_NAMES[top.kind]} entity at byte offset "
            f"{_byte_offset(text, top.byte_index)}"
        )
    return "".join(out), sort_entities(entities)


def parse_markdown(
    text: str, *, resolve_user: UserResolver | None = None
) -> tuple[str, list[Entity]]:
    """Parse legacy Markdown (``parse_mode=Markdown``), or raise ``EntityParseError``."""
    n = len(text)

    def at(j: int) -> str:
        return text[j] if j < n else "\0"

    out: list[str] = []
    utf16 = 0
    entities: list[Entity] = []
    i = 0
    while i < n:
        c = text[i]
        if c == "\\" and at(i + 1) in "_*`[":
            out.append(text[i + 1])
            utf16 += 1
            i += 2
            continue
        if c not in "_*`[":
            out.append(c)
            utf16 += _u16(c)
            i += 1
            continue
        begin = i
        end_char = "]" if c == "[" else c
        is_pre = False
        i += 1
        language = ""
        if c == "`" and at(i) == "`" and at(i + 1) == "`":
            i += 2
            is_pre = True
            lang_end = i
            while not _is_space(at(lang_end)) and at(lang_end) != "`":
                lang_end += 1
            if i != lang_end and lang_end < n and at(lang_end) != "`":
                language = text[i:lang_end]
                i = lang_end
            if at(i) in "\n\r":
                if at(i + 1) in "\n\r" and at(i) != at(i + 1):
                    i += 2
                else:
                    i += 1
        start = utf16
        inner_begin = len(out)
        while i < n and (
            text[i] != end_char or (is_pre and not (at(i + 1) == "`" and at(i + 2) == "`"))
        ):
            out.append(text[i])
            utf16 += _u16(text[i])
            i += 1
        if i == n:
            raise EntityParseError(
                f"Can't find end of the entity starting at byte offset {_byte_offset(text, begin)}"
            )
        if utf16 != start:
            length = utf16 - start
            if c == "_":
                entities.append({"type": "italic", "offset": start, "length": length})
            elif c == "*":
                entities.append({"type": "bold", "offset": start, "length": length})
            elif c == "[":
                if at(i + 1) != "(":
                    url = "".join(out[inner_begin:])
                else:
                    i += 2
                    url_chars: list[str] = []
                    while i < n and text[i] != ")":
                        url_chars.append(text[i])
                        i += 1
                    url = "".join(url_chars)
                link = _link_entity(start, length, url, resolve_user)
                if link is not None:
                    entities.append(link)
            elif is_pre:
                pre: Entity = {"type": "pre", "offset": start, "length": length}
                if language:
                    pre["language"] = language
                entities.append(pre)
            else:
                entities.append({"type": "code", "offset": start, "length": length})
        if is_pre:
            i += 2
        i += 1
    return "".join(out), sort_entities(entities)


# --------------------------------------------------------------------------------------------
# Automatic entities (mentions, commands, hashtags, cashtags, URLs, e-mail addresses)


def _is_word_char(ch: str) -> bool:
    return ch == "_" or unicodedata.category(ch)[0] in "LN"


def _is_hashtag_char(ch: str) -> bool:
    code = ord(ch)
    if ch == "_" or code in (0x200C, 0xB7) or 0xD80 <= code <= 0xDFF:
        return True
    category = unicodedata.category(ch)
    return category[0] == "L" or category == "Nd"


_ALNUM_UNDERSCORE = re.compile(r"[A-Za-z0-9_]*")

# A fixed list of the top-level domains recognised in bare (scheme-less) links. The server
# uses the full IANA list; this subset covers what announcements realistically contain.
_TLDS = frozenset(
    [
        "com",
        "org",
        "net",
        "io",
        "gg",
        "xyz",
        "app",
        "dev",
        "fi",
        "co",
        "me",
        "ai",
        "info",
        "biz",
        "finance",
        "exchange",
        "network",
        "money",
        "capital",
        "eth",
        "crypto",
        "tech",
        "cloud",
        "link",
        "site",
        "online",
        "space",
        "live",
        "news",
        "blog",
        "page",
        "wiki",
        "tools",
        "uk",
        "de",
        "fr",
        "ru",
        "jp",
        "cn",
        "br",
        "in",
        "eu",
        "us",
        "ca",
        "au",
        "ch",
        "nl",
        "se",
        "no",
        "es",
        "it",
        "pl",
        "tv",
        "cc",
        "ly",
        "to",
        "sh",
        "so",
        "gl",
        "is",
        "ee",
        "lt",
        "lv",
        "at",
        "be",
        "dk",
        "cz",
        "sk",
        "hu",
        "ro",
        "bg",
        "gr",
        "pt",
        "ie",
        "kr",
        "sg",
        "hk",
        "tw",
        "nz",
        "za",
        "mx",
        "ar",
        "cl",
        "ua",
        "by",
        "kz",
        "tr",
        "il",
        "ae",
        "sa",
    ]
)
_URL_WITH_SCHEME = re.compile(r"(?i)\b(?:https?|ftp)://[^\s<>\"]+|\b(?:tg|ton)://[^\s<>\"]+")
_BARE_DOMAIN = re.compile(
    r"(?i)(?<![\w@./:-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,24}))"
    r"(?::\d{1,5})?(?:[/?#][^\s<>\"]*)?"
)
_EMAIL = re.compile(
    r"(?i)(?<![\w.+-])[a-z0-9][a-z0-9._+-]*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,24})\b"
)


def _trim_url(url: str) -> str:
    while url and url[-1] in ".,;:!?'\"":
        url = url[:-1]
    while url.endswith(")") and url.count(")") > url.count("("):
        url = url[:-1]
    return url


def find_entities(text: str) -> list[Entity]:
    """Entities the server detects on its own, with UTF-16 offsets, sorted."""
    found: list[tuple[int, int, str]] = []  # (start index, end index, type) in str indices
    n = len(text)

    for match in re.finditer("@", text):
        start = match.start()
        if start > 0 and _is_word_char(text[start - 1]):
            continue
        name = _ALNUM_UNDERSCORE.match(text, start + 1)
        end = name.end() if name else start + 1
        if not 2 <= end - start - 1 <= 32:
            continue
        if end < n and _is_word_char(text[end]):
            continue
        found.append((start, end, "mention"))

    for match in re.finditer("/", text):
        start = match.start()
        if start > 0 and (_is_word_char(text[start - 1]) or text[start - 1] in "/<>"):
            continue
        command = _ALNUM_UNDERSCORE.match(text, start + 1)
        end = command.end() if command else start + 1
        if not 1 <= end - start - 1 <= 64:
            continue
        if end < n and text[end] == "@":
            bot = _ALNUM_UNDERSCORE.match(text, end + 1)
            bot_end = bot.end() if bot else end + 1
            if not 3 <= bot_end - end - 1 <= 32:
                continue
            end = bot_end
        if end < n and (_is_word_char(text[end]) or text[end] in "/<>"):
            continue
        found.append((start, end, "bot_command"))

    for match in re.finditer("#", text):
        start = match.start()
        if start > 0 and _is_hashtag_char(text[start - 1]):
            continue
        end = start + 1
        letter = False
        while end < n and _is_hashtag_char(text[end]):
            letter = letter or unicodedata.category(text[end])[0] == "L"
            end += 1
        if end == start + 1 or not letter or (end < n and text[end] == "#"):
            continue
        found.append((start, min(end, start + 257), "hashtag"))

    for match in re.finditer(r"\$", text):
        start = match.start()
        if start > 0 and (_is_hashtag_char(text[start - 1]) or text[start - 1] == "$"):
            continue
        if text.startswith("1INCH", start + 1):
            end = start + 6
        else:
            end = start + 1
            while end < n and "A" <= text[end] <= "Z":
                end += 1
        if not 1 <= end - start - 1 <= 8:
            continue
        if end < n and (_is_hashtag_char(text[end]) or text[end] == "$"):
            continue
        found.append((start, end, "cashtag"))

    taken: list[tuple[int, int]] = []
    for match in _EMAIL.finditer(text):
        if match.group(1).lower() in _TLDS:
            found.append((match.start(), match.end(), "email"))
            taken.append((match.start(), match.end()))
    for match in _URL_WITH_SCHEME.finditer(text):
        url = _trim_url(match.group(0))
        if len(url) > match.group(0).find("//") + 2:
            found.append((match.start(), match.start() + len(url), "url"))
            taken.append((match.start(), match.start() + len(url)))
    for match in _BARE_DOMAIN.finditer(text):
        if match.group(2).lower() not in _TLDS:
            continue
        start = match.start()
        if any(a <= start < b for a, b in taken):
            continue
        url = _trim_url(match.group(0))
        found.append((start, start + len(url), "url"))

    # Mentions inside e-mails or URLs are not mentions.
    spans = [(a, b) for a, b, kind in found if kind in ("url", "email")]
    result: list[Entity] = []
    prefix = _Utf16Index(text)
    for start, end, kind in found:
        if kind not in ("url", "email") and any(a <= start < b for a, b in spans):
            continue
        offset = prefix.at(start)
        result.append({"type": kind, "offset": offset, "length": prefix.at(end) - offset})
    return sort_entities(result)


class _Utf16Index:
    """Maps str indices to UTF-16 offsets in O(1) after an O(n) pass."""

    def __init__(self, text: str) -> None:
        offsets = [0] * (len(text) + 1)
        total = 0
        for index, ch in enumerate(text):
            offsets[index] = total
            total += _u16(ch)
        offsets[len(text)] = total
        self._offsets = offsets

    def at(self, index: int) -> int:
        return self._offsets[index]


# --------------------------------------------------------------------------------------------
# The whole pipeline for a message text

_BLOCKING = frozenset({"code", "pre", "text_link", "text_mention", "custom_emoji"})
_WHITESPACE = " \t\r\n\v\f"


@dataclass(frozen=True)
class FormattedText:
    text: str
    entities: list[Entity]


def parse_text(
    text: str, parse_mode: str | None, *, resolve_user: UserResolver | None = None
) -> tuple[str, list[Entity]]:
    """Apply ``parse_mode`` (HTML, MarkdownV2, Markdown, or none) to ``text``."""
    mode = (parse_mode or "").strip()
    if not mode:
        return text, []
    lowered = mode.lower()
    if lowered == "html":
        return parse_html(text, resolve_user=resolve_user)
    if lowered == "markdownv2":
        return parse_markdown_v2(text, resolve_user=resolve_user)
    if lowered == "markdown":
        return parse_markdown(text, resolve_user=resolve_user)
    raise MessageTextError(f"Bad Request: unsupported parse_mode {mode!r}")


def _trim(text: str, entities: list[Entity]) -> tuple[str, list[Entity]]:
    stripped_left = len(text) - len(text.lstrip(_WHITESPACE))
    body = text.strip(_WHITESPACE)
    shift = utf16_len(text[:stripped_left])
    limit = utf16_len(body)
    trimmed: list[Entity] = []
    for entity in entities:
        start = max(0, entity["offset"] - shift)
        end = min(limit, entity["offset"] + entity["length"] - shift)
        if end > start:
            trimmed.append({**entity, "offset": start, "length": end - start})
    return body, trimmed


def prepare_text(
    text: str,
    parse_mode: str | None = None,
    entities: list[Entity] | None = None,
    *,
    resolve_user: UserResolver | None = None,
    max_length: int = MAX_TEXT_LENGTH,
) -> FormattedText:
    """Everything the server does to a message text before storing it.

    Parses the markup (or takes explicit ``entities``, which win over ``parse_mode`` as on the
    server), trims surrounding whitespace, checks the length 1..``max_length`` in UTF-16 code
    units, and adds the automatically detected entities that do not collide with code, pre or
    links.
    """
    if entities is not None:
        plain = text
        clipped = [_clip(entity, utf16_len(text)) for entity in entities]
        explicit = [entity for entity in clipped if entity is not None]
    else:
        plain, explicit = parse_text(text, parse_mode, resolve_user=resolve_user)
    plain, explicit = _trim(plain, explicit)
    if not plain:
        raise MessageTextError("Bad Request: message text is empty")
    if utf16_len(plain) > max_length:
        raise MessageTextError("Bad Request: message is too long")
    blocking = [
        (e["offset"], e["offset"] + e["length"]) for e in explicit if e["type"] in _BLOCKING
    ]
    automatic = [
        entity
        for entity in find_entities(plain)
        if not any(
            a < entity["offset"] + entity["length"] and entity["offset"] < b for a, b in blocking
        )
    ]
    return FormattedText(plain, sort_entities(explicit + automatic))


def _clip(entity: Entity, limit: int) -> Entity | None:
    start = max(0, int(entity.get("offset", 0)))
    end = min(limit, start + max(0, int(entity.get("length", 0))))
    if end <= start:
        return None
    return {**entity, "offset": start, "length": end - start}


def entity_text(text: str, entity: Entity) -> str:
    """The substring an entity covers (offsets are UTF-16)."""
    encoded = text.encode("utf-16-le", "surrogatepass")
    start = entity["offset"] * 2
    return encoded[start : start + entity["length"] * 2].decode("utf-16-le", "surrogatepass")
