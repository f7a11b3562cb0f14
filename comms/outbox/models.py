"""The outbox: one row per (approved version, destination), written in the approving
transaction, so an approval can never be recorded without its deliveries or vice versa."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from comms.clock import utcnow
from comms.db import Base, UTCDateTime
from comms.destinations.models import Destination


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"
    UNCERTAIN = "uncertain"  # sent or not? a person decides (Telegram has no idempotency key)
    SKIPPED = "skipped"  # destination compromised or disabled
    CANCELLED = "cancelled"  # the draft was edited or withdrawn before it went out


DONE = frozenset({DeliveryState.SENT, DeliveryState.SKIPPED, DeliveryState.CANCELLED})
NEEDS_PERSON = frozenset({DeliveryState.FAILED, DeliveryState.UNCERTAIN})


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    draft_id: Mapped[int] = mapped_column(ForeignKey("drafts.id"), index=True)
    draft_version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"), index=True)
    state: Mapped[str] = mapped_column(String(12), default=DeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    idempotency_key: Mapped[str] = mapped_column(String(25))
    platform_message_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_error: Mapped[str] = mapped_column(Text, default="")
    claimed_by: Mapped[str] = mapped_column(String(64), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    destination: Mapped[Destination] = relationship(lazy="selectin")

    @property
    def state_enum(self) -> DeliveryState:
        return DeliveryState(self.state)

    def __repr__(self) -> str:
        return f"<Delivery #{self.id} draft {self.draft_id} v{self.draft_version} {self.state}>"
