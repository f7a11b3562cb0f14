"""The outbox: one row per (approved version, destination), written in the approving
transaction, so an approval can never be recorded without its deliveries or vice versa."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from comms.clock import utcnow
from comms.db import Base, UTCDateTime
from comms.dbtypes import str_enum
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
    # The destination became stricter than what was approved for it (no more @everyone, no
    # pinning, now private or disabled...): not sent; the draft needs a new approval.
    HELD = "held"


DONE = frozenset({DeliveryState.SENT, DeliveryState.SKIPPED, DeliveryState.CANCELLED})
NEEDS_PERSON = frozenset({DeliveryState.FAILED, DeliveryState.UNCERTAIN, DeliveryState.HELD})


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    draft_id: Mapped[int] = mapped_column(ForeignKey("drafts.id"), index=True)
    draft_version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"), index=True)
    state: Mapped[DeliveryState] = mapped_column(
        str_enum(DeliveryState, length=12), default=DeliveryState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    idempotency_key: Mapped[str] = mapped_column(String(25))
    platform_message_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    platform_thread_id: Mapped[str] = mapped_column(String(32), default="")
    # Index of the message whose request may be on the wire; None when nothing is in flight.
    # After a crash it tells "maybe sent" (uncertain) from "certainly not sent" (safe to retry).
    inflight_index: Mapped[int | None] = mapped_column(Integer, default=None)
    # How many times the outcome was unknown; > 0 flags a possible duplicate on Telegram.
    uncertain_count: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # A correction that edited the original's messages (rather than posting anew).
    edited: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the sent delivery was written to the Incident Log and the audit log (in batches,
    # off the sending path; NULL while that is still to do).
    recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_error: Mapped[str] = mapped_column(Text, default="")
    claimed_by: Mapped[str] = mapped_column(String(64), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    destination: Mapped[Destination] = relationship(lazy="selectin")

    def __repr__(self) -> str:
        return f"<Delivery #{self.id} draft {self.draft_id} v{self.draft_version} {self.state}>"


class NotificationState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"


class Notification(Base):
    """An internal notification (approval request, delivery failure, responder alert).

    Kept apart from ``deliveries`` on purpose: announcements pass the approval gate, these
    never do, and the gate's code path has no exemption for them. They go only to private
    destinations, from fixed templates.
    """

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    ping_role: Mapped[str] = mapped_column(String(32), default="")
    state: Mapped[NotificationState] = mapped_column(
        str_enum(NotificationState, length=12), default=NotificationState.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    platform_message_id: Mapped[str] = mapped_column(String(32), default="")
    last_error: Mapped[str] = mapped_column(Text, default="")
    claimed_by: Mapped[str] = mapped_column(String(64), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # An edit of an earlier notification's message (a responders' alert kept up to date)
    # rather than a new post.
    edit_of_id: Mapped[int | None] = mapped_column(ForeignKey("notifications.id"), default=None)

    destination: Mapped[Destination] = relationship(lazy="selectin")


class PlatformPause(Base):
    """A platform refused the bot token (401): its deliveries wait instead of failing one by one,
    until a check finds the token working again (``comms.outbox.deliver``)."""

    __tablename__ = "platform_pauses"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    reason: Mapped[str] = mapped_column(Text, default="")


class PlatformSender(Base):
    """The worker that sends for a platform's bot, under a lease like a delivery's.

    The platforms' rate limits are per bot, and each worker process paces itself: two processes
    sending for one bot each believed they had the whole budget, and a fan-out with three
    workers drew thousands of 429s and ran 2-2.6 times its bound. One process sends per platform;
    the others stand by (and do every other kind of work) and one takes over within a lease when
    the sender stops or dies."""

    __tablename__ = "platform_senders"

    platform: Mapped[str] = mapped_column(String(16), primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(64), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
