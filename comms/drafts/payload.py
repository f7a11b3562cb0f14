"""Build the announcement plan a draft version will send (``comms.drafts.plan``).

The plan's canonical JSON is hashed; approvals bind to that hash, and the publisher recomputes it
from the frozen version just before sending.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from comms.canonical import canonical_json, sha256_hex
from comms.destinations.models import Destination
from comms.drafts.plan import AnnouncementPlan, PlannedDelivery, PlannedDestination
from comms.enums import Platform, Severity
from comms.rendering import RenderContext, Rendered, TemplateSpec, render


@dataclass(frozen=True)
class DraftOptions:
    """Per-draft choices; ``None`` means "use the destination's setting"."""

    pin: bool | None = None
    silent: bool | None = None
    link_previews: bool = False
    publish_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "pin": self.pin,
            "silent": self.silent,
            "link_previews": self.link_previews,
            "publish_at": self.publish_at.isoformat() if self.publish_at else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DraftOptions:
        publish_at = data.get("publish_at")
        return cls(
            pin=data.get("pin"),
            silent=data.get("silent"),
            link_previews=bool(data.get("link_previews", False)),
            publish_at=datetime.fromisoformat(publish_at) if publish_at else None,
        )


def content_hash(stored: dict[str, Any]) -> str:
    """The hash of a stored plan's JSON, as read back (the worker checks it before sending)."""
    return sha256_hex(canonical_json(stored))


def idempotency_key(content_hash_hex: str, destination_id: int) -> str:
    """22 characters, so a per-message suffix still fits Discord's 25-character nonce."""
    return hashlib.sha256(f"{content_hash_hex}:{destination_id}".encode()).hexdigest()[:22]


def wants_everyone(spec: TemplateSpec, severity: Severity, destination: Destination) -> bool:
    """@everyone only where the template asks, the incident is P1 and the destination allows."""
    return (
        spec.mentions_everyone
        and severity is Severity.P1
        and destination.allow_everyone
        and destination.platform == Platform.DISCORD.value
    )


def build_plan(
    *,
    draft_id: int,
    version: int,
    spec: TemplateSpec,
    values: dict[str, str],
    ctx: RenderContext,
    destinations: list[Destination],
    options: DraftOptions,
    correction_of: int | None,
) -> AnnouncementPlan:
    """Render ``spec`` for every destination: the plan an approval of this version covers."""
    if ctx.severity is None:
        raise ValueError("an announcement is rendered for an incident's severity")
    severity = ctx.severity
    cache: dict[bool, Rendered] = {}

    def rendered(everyone: bool) -> Rendered:
        if everyone not in cache:
            cache[everyone] = render(spec, values, ctx, everyone=everyone)
        return cache[everyone]

    deliveries = []
    for destination in sorted(destinations, key=lambda d: d.id):
        everyone = wants_everyone(spec, severity, destination)
        out = rendered(everyone)
        platform = Platform(destination.platform)
        is_discord = platform is Platform.DISCORD
        deliveries.append(
            PlannedDelivery(
                destination=PlannedDestination(
                    id=destination.id,
                    name=destination.name,
                    platform=platform,
                    target=destination.target,
                    visibility=destination.visibility,
                ),
                messages=tuple(out.discord if is_discord else out.telegram),
                mentions_everyone=everyone,
                pin=destination.pin if options.pin is None else options.pin,
                silent=destination.silent if options.silent is None else options.silent,
                crosspost=destination.crosspost and is_discord,
                thread_updates=destination.thread_updates and is_discord,
                lock_thread=spec.locks_thread and destination.thread_updates and is_discord,
            )
        )
    return AnnouncementPlan(
        draft=draft_id,
        version=version,
        incident=ctx.incident_key,
        severity=severity,
        template=spec.name,
        correction_of=correction_of,
        link_previews=options.link_previews,
        publish_at=options.publish_at.isoformat() if options.publish_at else None,
        discord=tuple(rendered(False).discord),
        telegram=tuple(rendered(False).telegram),
        deliveries=tuple(deliveries),
    )
