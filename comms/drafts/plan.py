"""The announcement plan: exactly what an approved version will send, typed.

An approval binds to the content hash of a plan's canonical JSON (``to_json``), and the
publisher sends from the plan of the frozen version, after hashing it again. The plan lists,
per destination, every message text that will go out and every option that changes what members
see (pin, silent, crosspost, thread, @everyone), plus what holds for all (link previews,
schedule, the correction it is). It is frozen: nothing changes a plan after it is built; an edit
builds a new one.

The JSON layout is the one stored since the first release (``PLAN_SCHEMA`` 1); its bytes are
pinned by ``tests/rendering/test_golden_hashes.py``. Reading checks the schema, so a plan
written by a newer release is refused instead of misread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comms.canonical import canonical_json, sha256_hex
from comms.enums import Platform, Severity

PLAN_SCHEMA = 1
FORMATS = {Platform.DISCORD: "discord-markdown", Platform.TELEGRAM: "telegram-html"}


class PlanError(ValueError):
    """A stored plan that this release cannot read (another schema, a missing field)."""


@dataclass(frozen=True)
class PlannedDestination:
    """Where a planned delivery goes, as it was when the plan was rendered."""

    id: int
    name: str
    platform: Platform
    target: str
    visibility: str

    @property
    def is_public(self) -> bool:
        return self.visibility == "public"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "platform": self.platform.value,
            "target": self.target,
            "visibility": self.visibility,
        }


@dataclass(frozen=True)
class PlannedDelivery:
    """One destination's messages and options."""

    destination: PlannedDestination
    messages: tuple[str, ...]
    mentions_everyone: bool
    pin: bool
    silent: bool
    crosspost: bool
    thread_updates: bool
    lock_thread: bool

    @property
    def platform(self) -> Platform:
        return self.destination.platform

    @property
    def format(self) -> str:
        return FORMATS[self.platform]

    @property
    def mentions(self) -> tuple[str, ...]:
        return ("everyone",) if self.mentions_everyone else ()

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination.to_json(),
            "format": self.format,
            "messages": list(self.messages),
            "mentions": list(self.mentions),
            "pin": self.pin,
            "silent": self.silent,
            "crosspost": self.crosspost,
            "thread_updates": self.thread_updates,
            "lock_thread": self.lock_thread,
        }


@dataclass(frozen=True)
class AnnouncementPlan:
    """What one version of a draft sends, everywhere; see the module's docstring."""

    draft: int
    version: int
    incident: str | None  # the incident's key
    severity: Severity
    template: str
    correction_of: int | None
    link_previews: bool
    publish_at: str | None  # ISO 8601 with its offset, as rendered
    # The messages without @everyone, per platform: what the review shows as "the text".
    discord: tuple[str, ...]
    telegram: tuple[str, ...]
    deliveries: tuple[PlannedDelivery, ...]

    def to_json(self) -> dict[str, Any]:
        """The stored and hashed form (byte for byte the layout of schema 1)."""
        return {
            "schema": PLAN_SCHEMA,
            "draft": self.draft,
            "version": self.version,
            "incident": self.incident,
            "severity": self.severity.value,
            "template": self.template,
            "correction_of": self.correction_of,
            "link_previews": self.link_previews,
            "publish_at": self.publish_at,
            "rendered": {"discord": list(self.discord), "telegram": list(self.telegram)},
            "deliveries": [d.to_json() for d in self.deliveries],
        }

    @property
    def content_hash(self) -> str:
        return sha256_hex(canonical_json(self.to_json()))

    def delivery_to(self, destination_id: int) -> PlannedDelivery | None:
        return next((d for d in self.deliveries if d.destination.id == destination_id), None)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnnouncementPlan:
        """Read a stored plan; PlanError names what this release cannot read."""
        schema = data.get("schema")
        if schema != PLAN_SCHEMA:
            raise PlanError(
                f"announcement plan schema {schema!r}; this release reads {PLAN_SCHEMA}"
            )
        try:
            return cls(
                draft=int(data["draft"]),
                version=int(data["version"]),
                incident=_optional_str(data["incident"]),
                severity=Severity(data["severity"]),
                template=str(data["template"]),
                correction_of=None if data["correction_of"] is None else int(data["correction_of"]),
                link_previews=bool(data["link_previews"]),
                publish_at=_optional_str(data["publish_at"]),
                discord=tuple(data["rendered"]["discord"]),
                telegram=tuple(data["rendered"]["telegram"]),
                deliveries=tuple(_delivery(item) for item in data["deliveries"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"announcement plan unreadable: {exc!r}") from None


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _delivery(item: dict[str, Any]) -> PlannedDelivery:
    place = item["destination"]
    platform = Platform(place["platform"])
    if item["format"] != FORMATS[platform]:
        raise ValueError(f"format {item['format']!r} for {platform.value}")
    return PlannedDelivery(
        destination=PlannedDestination(
            id=int(place["id"]),
            name=str(place["name"]),
            platform=platform,
            target=str(place["target"]),
            visibility=str(place["visibility"]),
        ),
        messages=tuple(item["messages"]),
        mentions_everyone="everyone" in item["mentions"],
        pin=bool(item["pin"]),
        silent=bool(item["silent"]),
        crosspost=bool(item["crosspost"]),
        thread_updates=bool(item["thread_updates"]),
        lock_thread=bool(item["lock_thread"]),
    )
