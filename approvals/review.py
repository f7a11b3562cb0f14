"""What an approver must see besides the preview: every link expanded, and the diff."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from approvals.preview import display_url

_HREF = re.compile(r"""<a\s[^>]*href\s*=\s*["']([^"']*)["']""", re.IGNORECASE)
_MASKED = re.compile(r"\[([^\[\]\n]{1,500})\]\(\s*<?([^\s()<>]{1,2000})>?\s*\)")
_BARE = re.compile(r"https?://[^\s<>\"')\]]+")


@dataclass(frozen=True)
class Link:
    url: str  # as written in the message
    shown: str  # with the host in punycode
    host: str
    https: bool
    official: bool
    text: str  # the visible text of a masked link, if any


def _host(url: str) -> str:
    try:
        return (urlsplit(display_url(url)).hostname or "").lower()
    except ValueError:
        return ""


def _official(host: str, domains: list[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


def links_in(messages: dict[str, list[str]], official_domains: list[str]) -> list[Link]:
    """Every distinct link target in the rendered messages, in order of appearance."""
    found: dict[str, Link] = {}
    for platform, texts in messages.items():
        for text in texts:
            pairs: list[tuple[str, str]] = []
            if platform == "telegram":
                pairs += [(m.group(1).replace("&amp;", "&"), "") for m in _HREF.finditer(text)]
                plain = re.sub(r"<[^>]*>", " ", text)
                pairs += [(m.group(0).replace("&amp;", "&"), "") for m in _BARE.finditer(plain)]
            else:
                pairs += [(m.group(2), m.group(1)) for m in _MASKED.finditer(text)]
                pairs += [(m.group(0), "") for m in _BARE.finditer(_MASKED.sub(" ", text))]
            for url, label in pairs:
                if url in found:
                    continue
                host = _host(url)
                found[url] = Link(
                    url=url,
                    shown=display_url(url),
                    host=host,
                    https=url.lower().startswith("https://"),
                    official=_official(host, official_domains),
                    text=label,
                )
    return list(found.values())


@dataclass(frozen=True)
class DiffLine:
    kind: str  # add, del, ctx, head
    text: str


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[DiffLine]:
    """Line diff of the rendered text and destinations between two payloads."""
    if old is None:
        return []

    def lines(payload: dict[str, Any]) -> list[str]:
        result: list[str] = []
        rendered = payload.get("rendered", {})
        for platform in ("discord", "telegram"):
            for index, message in enumerate(rendered.get(platform, []), 1):
                result.append(f"=== {platform} message {index} ===")
                result.extend(str(message).split("\n"))
        result.append("=== destinations ===")
        for item in payload.get("deliveries", []):
            dest = item.get("destination", {})
            flags = [k for k in ("pin", "silent", "crosspost", "thread_updates") if item.get(k)]
            mentions = ",".join(item.get("mentions", []))
            result.append(
                f"{dest.get('name')} ({dest.get('platform')}) {' '.join(flags)}"
                + (f" mentions:{mentions}" if mentions else "")
            )
        result.append(f"=== publish at: {payload.get('publish_at') or 'now'} ===")
        return result

    out: list[DiffLine] = []
    for line in difflib.unified_diff(lines(old), lines(new), lineterm="", n=2):
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("@@"):
            out.append(DiffLine("head", line))
        elif line.startswith("+"):
            out.append(DiffLine("add", line[1:]))
        elif line.startswith("-"):
            out.append(DiffLine("del", line[1:]))
        else:
            out.append(DiffLine("ctx", line[1:]))
    return out
