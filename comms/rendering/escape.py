"""Per-platform escaping of untrusted text, and the trusted fragments the helpers build.

The rule: a value can only ever produce plain visible characters. Everything that Discord's
Markdown or Telegram's HTML would interpret is escaped, after :mod:`comms.rendering.text` has made
links inert and broken mentions.

Discord (message content, Markdown):
  * a backslash before every ``\\ * _ ~ | ` [ ] < >`` anywhere (bold, italics, strike, spoilers,
    code, masked links, ``<@id>``/``<#id>``/``<t:..>``/custom emoji, block quotes);
  * at the start of each line of the value (and at the start of the value), a backslash before a
    ``#``, ``-``, ``+`` or the ``.``/``)`` of ``1.``/``1)`` (headers, subtext, lists);
  * Discord renders ``\\X`` as ``X`` for any ASCII punctuation ``X``, so readers see the text.

Telegram (HTML parse mode): ``& < > "`` as entities (the only named ones Telegram accepts), and a
zero-width space after a ``/`` that would start a bot command.
"""

from __future__ import annotations

import html
import re
from typing import Final

from comms.enums import Platform
from comms.rendering.text import break_commands, neutralise

_DISCORD_EVERYWHERE: Final = frozenset("\\*_~|`[]<>")
_DISCORD_LINE_START = re.compile(r"^([^\S\n]*)(?:([#\-+])|(\d+)([.)]))")
_BLANK_RUNS = re.compile(r"\s*\n\s*")


class Trusted:
    """Output built by a template helper for one platform; printed without further escaping.

    Not a ``str`` subclass on purpose: any string operation on it inside a template (``~``,
    filters) yields a plain string, which the finaliser then escapes like any other value.
    """

    __slots__ = ("platform", "text")

    def __init__(self, text: str, platform: Platform) -> None:
        self.text = text
        self.platform = platform

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Trusted({self.text!r}, {self.platform})"


def _html(value: str) -> str:
    """``& < > "`` only: Telegram knows no other named entity, and ``'`` needs none."""
    return html.escape(value, quote=False).replace('"', "&quot;")


def _discord_line(line: str) -> str:
    out: list[str] = []
    match = _DISCORD_LINE_START.match(line)
    start = 0
    if match:
        out.append(match.group(1))
        if match.group(2):
            out.append("\\" + match.group(2))
        else:
            out.append(match.group(3) + "\\" + match.group(4))
        start = match.end()
    for char in line[start:]:
        out.append("\\" + char if char in _DISCORD_EVERYWHERE else char)
    return "".join(out)


def discord_text(value: str) -> str:
    """Escape a value for Discord message content: nothing in it renders as Markdown."""
    return "\n".join(_discord_line(line) for line in neutralise(value).split("\n"))


def telegram_text(value: str) -> str:
    """Escape a value for Telegram HTML: no tag, entity, link, mention or command survives."""
    return _html(break_commands(neutralise(value)))


def telegram_attribute(value: str) -> str:
    """Escape an attribute value (an already validated URL) for ``href="..."``."""
    return _html(value)


def one_line(value: str) -> str:
    """Collapse line breaks so a helper's fragment cannot span paragraphs or quote lines."""
    return _BLANK_RUNS.sub(" ", value).strip()


def discord_code(value: str) -> str:
    """An inline code span. Backticks cannot be escaped inside one, so they become U+02CB."""
    inner = one_line(neutralise(value)).replace("`", "\u02cb")
    return f"`{inner}`" if inner else ""


def telegram_code(value: str) -> str:
    inner = one_line(value)
    return f"<code>{telegram_text(inner)}</code>" if inner else ""


def discord_bold(value: str) -> str:
    inner = discord_text(one_line(value))
    return f"**{inner}**" if inner else ""


def telegram_bold(value: str) -> str:
    inner = telegram_text(one_line(value))
    return f"<b>{inner}</b>" if inner else ""


def discord_quote(value: str) -> str:
    """A one-line block quote: line breaks become " / " so the quote marker appears once."""
    inner = discord_text(" / ".join(part for part in value.split("\n") if part.strip()))
    return f"> {inner}" if inner else ""


def telegram_quote(value: str) -> str:
    inner = telegram_text(" / ".join(part for part in value.split("\n") if part.strip()))
    return f"<blockquote>{inner}</blockquote>" if inner else ""
