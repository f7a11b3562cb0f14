"""Independent models of what Discord and Telegram would interpret in a message.

These deliberately do not reuse the renderer's regexes: they scan the *output* the way the
platforms do, so the tests check the result, not the implementation's own idea of it.
"""

from __future__ import annotations

import html
import re
import string
from collections import Counter
from html.parser import HTMLParser

from comms.enums import Severity
from comms.rendering import OfficialLink, RenderContext, TemplateSpec, VarType

ZWSP = "\u200b"
_ASCII_PUNCT = frozenset(string.punctuation)

# --- Discord --------------------------------------------------------------------------------------

_DISCORD_LINE_MARKERS = re.compile(
    r"^[ \t]*(?:#{1,3}\s|-#\s|>{1,3}\s|[-*+]\s|\d+[.)]\s)", re.MULTILINE
)


def discord_mask(message: str) -> tuple[str, int]:
    """Replace escaped characters and code-span contents by NUL, as Discord's parser reads them.

    Returns the masked text and the number of inline code spans. Scanning left to right mirrors
    the Markdown rules: ``\\X`` (X ASCII punctuation) is a literal X; a backtick opens a code span
    that runs to the next backtick, inside which nothing is interpreted.
    """
    out: list[str] = []
    spans = 0
    i = 0
    while i < len(message):
        char = message[i]
        if char == "\\" and i + 1 < len(message) and message[i + 1] in _ASCII_PUNCT:
            out.append("\0\0")
            i += 2
            continue
        if char == "`":
            end = message.find("`", i + 1)
            if end != -1:
                spans += 1
                out.append("`" + "\0" * (end - i - 1) + "`")
                i = end + 1
                continue
        out.append(char)
        i += 1
    return "".join(out), spans


def discord_constructs(message: str) -> Counter[str]:
    """Everything in a Discord message that pings, links or formats."""
    masked, spans = discord_mask(message)
    found: Counter[str] = Counter()
    # Mentions are counted on the raw text: a backslash does not stop a ping server-side.
    found["mention:everyone/here"] = len(re.findall(r"@(?:everyone|here)", message))
    found["mention:user/role"] = len(re.findall(r"<@[!&]?\d+>", message))
    # Channel links only render (they never ping), so escapes and code spans do stop them.
    found["mention:channel"] = len(re.findall(r"<#\d+>", masked))
    found["link:autolink"] = len(re.findall(r"(?i)(?:https?|steam)://", message))
    found["link:masked"] = len(re.findall(r"\[[^\]\n]*\]\([^)\n]*\)", masked))
    found["code:spans"] = spans
    for char in "*_~|`[]<>":
        found[f"char:{char}"] = masked.count(char)
    found["line:markers"] = len(_DISCORD_LINE_MARKERS.findall(masked))
    return +found


def discord_visible(message: str) -> str:
    """What a reader sees: escapes resolved, zero-width spaces invisible."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", message).replace(ZWSP, "")


# --- Telegram -------------------------------------------------------------------------------------

TELEGRAM_TAGS = frozenset({"b", "i", "u", "s", "code", "pre", "a", "blockquote"})
_RAW_TAG = re.compile(r'<(/?)([a-z]+)((?: [a-z]+="[^"<>]*")*)>')
_BAD_AMP = re.compile(r"&(?!(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)")


class TelegramHTMLError(AssertionError):
    pass


class _TelegramParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.tags: Counter[str] = Counter()
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TELEGRAM_TAGS:
            raise TelegramHTMLError(f"tag <{tag}> is not supported by Telegram")
        names = [name for name, _ in attrs]
        if tag == "a":
            if names != ["href"]:
                raise TelegramHTMLError(f"<a> must have exactly one href, got {names}")
            self.hrefs.append(attrs[0][1] or "")
        elif names:
            raise TelegramHTMLError(f"<{tag}> must not have attributes, got {names}")
        self.stack.append(tag)
        self.tags[tag] += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raise TelegramHTMLError(f"self-closing <{tag}/> is not supported")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            raise TelegramHTMLError(f"unbalanced </{tag}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        if name not in ("lt", "gt", "amp", "quot"):
            raise TelegramHTMLError(f"entity &{name}; is not supported by Telegram")
        self.text.append(html.unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self.text.append(html.unescape(f"&#{name};"))

    def handle_comment(self, data: str) -> None:
        raise TelegramHTMLError("comments are not supported")

    def handle_decl(self, decl: str) -> None:
        raise TelegramHTMLError("declarations are not supported")

    def unknown_decl(self, data: str) -> None:
        raise TelegramHTMLError("declarations are not supported")

    def handle_pi(self, data: str) -> None:
        raise TelegramHTMLError("processing instructions are not supported")


def parse_telegram(message: str) -> _TelegramParser:
    """Parse a Telegram HTML message, raising TelegramHTMLError when Telegram would refuse it."""
    for match in re.finditer(r"<", message):
        if not _RAW_TAG.match(message, match.start()):
            raise TelegramHTMLError(
                f"bare '<' at {match.start()}: {message[match.start() :][:20]!r}"
            )
    if _BAD_AMP.search(message):
        raise TelegramHTMLError("bare '&' that is not an entity")
    parser = _TelegramParser()
    parser.feed(message)
    parser.close()
    if parser.stack:
        raise TelegramHTMLError(f"unclosed <{parser.stack[-1]}>")
    return parser


_TG_DOT = "[.\u2024\ufe52\uff0e\u3002\uff61]"
_TG_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_TG_DOMAIN = re.compile(rf"(?<![\w\-])(?:[^\W_][\w\-]*{_TG_DOT})+[^\W\d_]{{2,}}")
_TG_IP = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?!\d)")
_TG_MENTION = re.compile(r"@[A-Za-z0-9_]{3,}")
_TG_COMMAND = re.compile(r"(?<![\w/])/[A-Za-z][A-Za-z0-9_]*")


def telegram_constructs(message: str) -> Counter[str]:
    """Tags, links and what Telegram auto-detects in the visible text (urls, domains, mentions,
    bot commands)."""
    parser = parse_telegram(message)
    text = "".join(parser.text)
    found: Counter[str] = Counter()
    for tag, count in parser.tags.items():
        found[f"tag:{tag}"] = count
    found["href"] = len(parser.hrefs)
    found["auto:url"] = len(_TG_URL.findall(text))
    found["auto:domain"] = len(_TG_DOMAIN.findall(text))
    found["auto:ip"] = len(_TG_IP.findall(text))
    found["auto:mention"] = len(_TG_MENTION.findall(text))
    found["auto:command"] = len(_TG_COMMAND.findall(text))
    return +found


def telegram_visible(message: str) -> str:
    return "".join(parse_telegram(message).text).replace(ZWSP, "")


def total(counters: list[Counter[str]]) -> Counter[str]:
    result: Counter[str] = Counter()
    for counter in counters:
        result.update(counter)
    return result


# --- sample values ----------------------------------------------------------------------------

SAMPLES: dict[VarType, str] = {
    VarType.TEXT: "Plain words",
    VarType.URL: "https://status.example.org/incidents/7",
    VarType.ADDRESS: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    VarType.DATETIME: "2026-11-27T10:30Z",
    VarType.DURATION: "1h30m",
}

CTX = RenderContext(
    protocol_name="Example Protocol",
    incident_key="INC-2026-0007",
    incident_title="Lending pool drained",
    severity=Severity.P1,
    official_links=(
        OfficialLink("Status page", "https://status.example.org"),
        OfficialLink("Discord", "https://discord.gg/example"),
    ),
)


def sample_values(spec: TemplateSpec, *, optional: bool = True) -> dict[str, str]:
    """Valid values for every (or every required) variable of ``spec``."""
    values: dict[str, str] = {}
    for var in spec.variables:
        if not var.required and not optional:
            continue
        values[var.name] = var.choices[0] if var.type is VarType.CHOICE else SAMPLES[var.type]
    return values
