"""Where announcements go: a Discord channel or a Telegram chat, with its practice options."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from comms.clock import utcnow
from comms.db import Base, UTCDateTime


class Visibility(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


class InternalUse(StrEnum):
    """What a private destination receives besides approved announcements."""

    APPROVERS = "approvers"  # "draft waiting for your approval"
    COMMS = "comms"  # delivery failures, for the Communication Manager
    RESPONDERS = "responders"  # community-report alerts


class Destination(Base):
    __tablename__ = "destinations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    platform: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(64))
    # Discord only: the server the channel belongs to, so the panel can link to messages.
    guild_id: Mapped[str] = mapped_column(String(32), default="")
    visibility: Mapped[str] = mapped_column(String(8), default=Visibility.PUBLIC.value)
    pin: Mapped[bool] = mapped_column(Boolean, default=False)
    silent: Mapped[bool] = mapped_column(Boolean, default=False)
    crosspost: Mapped[bool] = mapped_column(Boolean, default=False)
    allow_everyone: Mapped[bool] = mapped_column(Boolean, default=False)
    thread_updates: Mapped[bool] = mapped_column(Boolean, default=False)
    internal_uses: Mapped[list[str]] = mapped_column(JSON, default=list)
    responders_role_id: Mapped[str] = mapped_column(String(32), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    compromised: Mapped[bool] = mapped_column(Boolean, default=False)
    compromised_reason: Mapped[str] = mapped_column(Text, default="")
    compromised_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def is_public(self) -> bool:
        return self.visibility == Visibility.PUBLIC.value

    @property
    def can_receive(self) -> bool:
        return self.enabled and not self.compromised

    def options(self) -> dict[str, bool]:
        return {
            "pin": self.pin,
            "silent": self.silent,
            "crosspost": self.crosspost,
            "allow_everyone": self.allow_everyone,
            "thread_updates": self.thread_updates,
        }

    def __repr__(self) -> str:
        return f"<Destination {self.name} {self.platform}:{self.target}>"
