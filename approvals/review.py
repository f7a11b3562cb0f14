"""What an approver must see: the messages as the clients show them, every link expanded,
the diff from the previous version, the approvals that count, and whether they may decide.

``review_context`` builds the review page's context in one place, because every route that
shows the page again (a refused approval, rejection, submit or withdrawal) must show the same
facts as the page the person decided on.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from approvals import preview
from approvals.preview import display_url
from approvals.state import PanelState
from comms.drafts import gate
from comms.drafts import service as drafts
from comms.drafts.models import Draft
from comms.drafts.plan import AnnouncementPlan, PlannedDelivery
from comms.enums import Role
from comms.users.models import User

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


@dataclass(frozen=True)
class Previewed:
    """A planned delivery with its messages as the clients show them (for the templates)."""

    item: PlannedDelivery
    html: list[Markup]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.item, name)


def previews(plan: AnnouncementPlan) -> list[Previewed]:
    return [
        Previewed(item, [preview.render(item.platform.value, m) for m in item.messages])
        for item in plan.deliveries
    ]


async def review_context(
    session: AsyncSession,
    state: PanelState,
    draft: Draft,
    *,
    user: User,
    stepup_fresh: bool,
    **extra: Any,
) -> dict[str, Any]:
    """Everything ``drafts/get.html`` shows; ``extra`` carries what a refused form adds (the
    step-up error, the reason typed)."""
    previous = (
        await drafts.get_version(session, draft_id=draft.id, version=draft.version - 1)
        if draft.version > 1
        else None
    )
    quorum = drafts.quorum(draft, settings=state.settings)
    standing = {s.approval.id: s for s in quorum.standings}
    plan = draft.plan
    refusal = gate.may_approve(
        draft, user, settings=state.settings, versions=await drafts.versions(session, draft=draft)
    )
    original = (
        await drafts.require_draft(session, draft_id=draft.correction_of_id)
        if draft.correction_of_id
        else None
    )
    return {
        "original": original,
        "original_deliveries": previews(original.plan) if original else [],
        "draft": draft,
        "quorum": quorum,
        "standing": standing,
        "deliveries": previews(plan),
        "plan": plan,
        "links": links_in(plan, state.settings.official_domains),
        "diff": diff(previous.plan if previous else None, plan),
        "previous": previous,
        "can_decide": refusal is None,
        # Why a Decision Maker sees no approve button (e.g. they edited a version).
        "refusal": refusal if user.has_role(Role.DECISION_MAKER) else None,
        "stepup_fresh": stepup_fresh,
        "stepup_minutes": state.settings.stepup_minutes,
        **extra,
    }
