"""Safe HTML previews of the exact text sent to Telegram (HTML) and Discord (Markdown).

Both renderers build their output from scratch: every piece of text goes through
``html.escape`` and the only tags emitted are the few written here, with attributes we set
ourselves. A link becomes an anchor only for ``https`` targets, and its target is printed next to
it (hosts in punycode) so an approver sees where it really goes. Mentions are shown as inert
styled text. Nothing a variable contains can become a script, an event handler or a non-https
link; ``tests/panel/test_preview.py`` checks that with generated input.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from urllib.parse import urlsplit, urlunsplit

import idna
from markupsafe import Markup

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def esc(text: str) -> str:
    return html.escape(_CONTROL.sub("\ufffd", text), quote=True)


def display_url(url: str) -> str:
    """The URL with its host in punycode (what the browser will really contact)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    host = parts.hostname or ""
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii") if host else ""
    except (idna.IDNAError, UnicodeError):
        ascii_host = host.encode("ascii", "backslashreplace").decode("ascii")
    netloc = ascii_host + (f":{parts.port}" if _safe_port(parts) else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _safe_port(parts: object) -> int | None:
    try:
        return getattr(parts, "port", None)
    except ValueError:
        return None


def safe_href(url: str) -> str | None:
    """``url`` if it is a plain https URL we are willing to make clickable, else None."""
    candidate = url.strip()
    if not candidate or any(c.isspace() or ord(c) < 0x20 for c in candidate):
        return None
    try:
        parts = urlsplit(candidate)
    except ValueError:
        return None
    if parts.scheme.lower() != "https" or not parts.hostname or parts.username is not None:
        return None
    return display_url(candidate)


def _link(text_html: str, url: str) -> str:
    href = safe_href(url)
    if href is None:
        return (
            f'<span class="bad-link">{text_html}</span> '
            f'<span class="href">[not a https link: {esc(url)}]</span>'
        )
    return (
        f'<a href="{esc(href)}" rel="noopener noreferrer nofollow" target="_blank">'
        f'{text_html}</a> <span class="href">({esc(href)})</span>'
    )


# --------------------------------------------------------------------------- Telegram HTML

_TG_TAGS = {
    "b": "strong",
    "strong": "strong",
    "i": "em",
    "em": "em",
    "u": "u",
    "ins": "u",
    "s": "s",
    "strike": "s",
    "del": "s",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-spoiler": "span",
    "tg-emoji": "",
    "a": "a",
    "span": "span",
}


class _TelegramPreview(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.stack: list[tuple[str, str, str]] = []  # (telegram tag, closing html, suffix)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: (v or "") for k, v in attrs}
        mapped = _TG_TAGS.get(tag)
        if mapped is None or (tag == "span" and values.get("class") != "tg-spoiler"):
            self.out.append(esc(self.get_starttag_text() or f"<{tag}>"))
            self.stack.append((tag, esc(f"</{tag}>"), ""))
            return
        if tag == "a":
            href = safe_href(values.get("href", ""))
            if href is None:
                self.out.append('<span class="bad-link">')
                self.stack.append(
                    (
                        tag,
                        "</span>",
                        f' <span class="href">[not a https link: '
                        f"{esc(values.get('href', ''))}]</span>",
                    )
                )
            else:
                self.out.append(
                    f'<a href="{esc(href)}" rel="noopener noreferrer nofollow" target="_blank">'
                )
                self.stack.append((tag, "</a>", f' <span class="href">({esc(href)})</span>'))
            return
        if tag in ("tg-spoiler", "span"):
            self.out.append('<span class="spoiler" tabindex="0">')
            self.stack.append((tag, "</span>", ""))
            return
        if mapped == "":
            self.stack.append((tag, "", ""))
            return
        self.out.append(f"<{mapped}>")
        self.stack.append((tag, f"</{mapped}>", ""))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.out.append(esc(self.get_starttag_text() or f"<{tag}/>"))

    def handle_endtag(self, tag: str) -> None:
        if any(open_tag == tag for open_tag, _c, _s in self.stack):
            while self.stack:
                open_tag, closing, suffix = self.stack.pop()
                self.out.append(closing + suffix)
                if open_tag == tag:
                    return
        self.out.append(esc(f"</{tag}>"))

    def handle_data(self, data: str) -> None:
        self.out.append(esc(data))

    def handle_comment(self, data: str) -> None:
        self.out.append(esc(f"<!--{data}-->"))

    def handle_decl(self, decl: str) -> None:
        self.out.append(esc(f"<!{decl}>"))

    def handle_pi(self, data: str) -> None:
        self.out.append(esc(f"<?{data}>"))

    def unknown_decl(self, data: str) -> None:
        self.out.append(esc(f"<![{data}]>"))

    def finish(self) -> str:
        self.close()
        while self.stack:
            _tag, closing, suffix = self.stack.pop()
            self.out.append(closing + suffix)
        return "".join(self.out)


def telegram_html(message: str) -> Markup:
    """Telegram's HTML parse mode as a browser shows it, with only safe elements."""
    parser = _TelegramPreview()
    parser.feed(message)
    body = parser.finish()
    return Markup(body)  # noqa: S704 - built only from escaped text and our own tags


# ---------------------------------------------------------------------------- Discord Markdown

_MENTION_USER = re.compile(r"<@!?(\d{1,20})>")
_MENTION_ROLE = re.compile(r"<@&(\d{1,20})>")
_MENTION_CHANNEL = re.compile(r"<#(\d{1,20})>")
_TIMESTAMP = re.compile(r"<t:(-?\d{1,12})(?::([tTdDfFR]))?>")
_ANGLE_URL = re.compile(r"<(https?://[^\s>]+)>")
_URL = re.compile(r"https?://[^\s<]+[^\s<.,:;\"')\]!?]")
_MASKED = re.compile(r"\[([^\[\]\n]{1,500})\]\(\s*<?([^\s()<>]{1,2000})>?\s*\)")
_EVERYONE = re.compile(r"@(everyone|here)\b")

_PAIRS = [
    ("***", "strong-em"),
    ("**", "strong"),
    ("__", "u"),
    ("~~", "s"),
    ("||", "spoiler"),
    ("*", "em"),
    ("_", "em"),
]


# The only characters at which inline markup can start; everything else is copied as text.
_SPECIAL_CHARS = frozenset("\\`<@[h*_~|")
_SPECIAL = re.compile(r"[\\`<@\[h*_~|]")


def _wrap(kind: str, inner: str) -> str:
    if kind == "strong-em":
        return f"<strong><em>{inner}</em></strong>"
    if kind == "spoiler":
        return f'<span class="spoiler" tabindex="0">{inner}</span>'
    return f"<{kind}>{inner}</{kind}>"


def _mention(text: str) -> str:
    return f'<span class="mention">{esc(text)}</span>'


def _timestamp(raw: str, style: str | None) -> str:
    try:
        moment = datetime.fromtimestamp(int(raw), tz=UTC)
    except (OverflowError, OSError, ValueError):
        return esc(f"<t:{raw}>")
    return f'<span class="mention">{esc(moment.strftime("%Y-%m-%d %H:%M UTC"))}</span>'


def _inline(text: str, depth: int = 0) -> str:
    """Discord's inline Markdown, rendered from escaped pieces only."""
    if depth > 8:
        return esc(text)
    out: list[str] = []
    i = 0
    n = len(text)
    plain_start = 0

    def flush(upto: int) -> None:
        if upto > plain_start:
            out.append(esc(text[plain_start:upto]))

    while i < n:
        ch = text[i]
        if ch not in _SPECIAL_CHARS:  # plain text: on to the next character that may matter
            found = _SPECIAL.search(text, i)
            i = found.start() if found else n
            continue
        if ch == "\\" and i + 1 < n and not text[i + 1].isalnum() and not text[i + 1].isspace():
            flush(i)
            out.append(esc(text[i + 1]))
            i += 2
            plain_start = i
            continue
        if ch == "`":
            fence = "``" if text.startswith("``", i) else "`"
            end = text.find(fence, i + len(fence))
            if end > i + len(fence) - 1 and end != -1:
                flush(i)
                out.append(f"<code>{esc(text[i + len(fence) : end])}</code>")
                i = end + len(fence)
                plain_start = i
                continue
        if ch == "<":
            renderers: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
                (_MENTION_ROLE, lambda m: _mention(f"@role:{m.group(1)}")),
                (_MENTION_USER, lambda m: _mention(f"@user:{m.group(1)}")),
                (_MENTION_CHANNEL, lambda m: _mention(f"#channel:{m.group(1)}")),
                (_TIMESTAMP, lambda m: _timestamp(m.group(1), m.group(2))),
                (_ANGLE_URL, lambda m: _link(esc(m.group(1)), m.group(1))),
            )
            for pattern, render in renderers:
                match = pattern.match(text, i)
                if match:
                    flush(i)
                    out.append(render(match))
                    i = match.end()
                    plain_start = i
                    break
            else:
                i += 1
            continue
        if ch == "@":
            match = _EVERYONE.match(text, i)
            if match:
                flush(i)
                out.append(_mention(match.group(0)))
                i = match.end()
                plain_start = i
                continue
        if ch == "[":
            match = _MASKED.match(text, i)
            if match:
                flush(i)
                out.append(_link(_inline(match.group(1), depth + 1), match.group(2)))
                i = match.end()
                plain_start = i
                continue
        if ch == "h" and text.startswith(("https://", "http://"), i):
            match = _URL.match(text, i)
            if match:
                flush(i)
                out.append(_link(esc(match.group(0)), match.group(0)))
                i = match.end()
                plain_start = i
                continue
        matched = False
        for marker, kind in _PAIRS:
            if text.startswith(marker, i):
                end = text.find(marker, i + len(marker))
                if end > i + len(marker) and not text[i + len(marker)].isspace():
                    flush(i)
                    out.append(_wrap(kind, _inline(text[i + len(marker) : end], depth + 1)))
                    i = end + len(marker)
                    plain_start = i
                    matched = True
                break
        if not matched:
            i += 1
    flush(n)
    return "".join(out)


_HEADER = re.compile(r"^(#{1,3}) (.+)$")
_SUBTEXT = re.compile(r"^-# (.+)$")
_BULLET = re.compile(r"^\s*[-*] (.+)$")
_NUMBERED = re.compile(r"^\s*(\d{1,9})\. (.+)$")


def discord_markdown(message: str) -> Markup:
    """Discord's Markdown as the client shows it: headers, lists, quotes, code, inline styles."""
    lines = message.split("\n")
    out: list[str] = []
    i = 0
    quote_rest = False
    open_list: str | None = None

    def close_list() -> None:
        nonlocal open_list
        if open_list:
            out.append(f"</{open_list}>")
            open_list = None

    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            close_list()
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            out.append(f"<pre><code>{esc(chr(10).join(body))}</code></pre>")
            i += 1
            continue
        quoted = quote_rest
        if line.startswith(">>> "):
            quote_rest = quoted = True
            line = line[4:]
        elif line.startswith("> "):
            quoted = True
            line = line[2:]
        match_bullet = _BULLET.match(line)
        match_number = _NUMBERED.match(line)
        if match_bullet or match_number:
            kind = "ul" if match_bullet else "ol"
            if open_list != kind:
                close_list()
                out.append(f"<{kind}>")
                open_list = kind
            item = match_bullet.group(1) if match_bullet else match_number.group(2)  # type: ignore[union-attr]
            out.append(f"<li>{_inline(item)}</li>")
            i += 1
            continue
        close_list()
        header = _HEADER.match(line)
        subtext = _SUBTEXT.match(line)
        if header:
            level = len(header.group(1))
            rendered = f"<h{level}>{_inline(header.group(2))}</h{level}>"
        elif subtext:
            rendered = f'<span class="subtext">{_inline(subtext.group(1))}</span>\n'
        else:
            rendered = _inline(line) + "\n"
        if quoted:
            rendered = f"<blockquote>{rendered.rstrip(chr(10))}</blockquote>"
        out.append(rendered)
        i += 1
    close_list()
    return Markup("".join(out).rstrip("\n"))  # noqa: S704 - built only from escaped pieces


def render(platform: str, message: str) -> Markup:
    return discord_markdown(message) if platform == "discord" else telegram_html(message)
