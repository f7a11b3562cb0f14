"""What an approver must see besides the preview: every link expanded, and the diff."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from approvals.preview import display_url
from comms.drafts.plan import AnnouncementPlan

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


def links_in(plan: AnnouncementPlan, official_domains: list[str]) -> list[Link]:
    """Every distinct link target in the rendered messages, in order of appearance."""
    found: dict[str, Link] = {}
    for platform, texts in (("discord", plan.discord), ("telegram", plan.telegram)):
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


def diff(old: AnnouncementPlan | None, new: AnnouncementPlan) -> list[DiffLine]:
    """Line diff of the rendered text and destinations between two plans."""
    if old is None:
        return []

    def lines(plan: AnnouncementPlan) -> list[str]:
        result: list[str] = []
        for platform, texts in (("discord", plan.discord), ("telegram", plan.telegram)):
            for index, message in enumerate(texts, 1):
                result.append(f"=== {platform} message {index} ===")
                result.extend(message.split("\n"))
        result.append("=== destinations ===")
        for item in plan.deliveries:
            flags = [
                name
                for name, on in (
                    ("pin", item.pin),
                    ("silent", item.silent),
                    ("crosspost", item.crosspost),
                    ("thread_updates", item.thread_updates),
                )
                if on
            ]
            mentions = ",".join(item.mentions)
            result.append(
                f"{item.destination.name} ({item.platform.value}) {' '.join(flags)}"
                + (f" mentions:{mentions}" if mentions else "")
            )
        result.append(f"=== publish at: {plan.publish_at or 'now'} ===")
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
