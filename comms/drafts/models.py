"""Drafts, their frozen versions, and the approvals bound to a version's content hash."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from comms.clock import utcnow
from comms.db import Base, UTCDateTime
from comms.dbtypes import str_enum
from comms.destinations.models import Destination
from comms.drafts.plan import AnnouncementPlan
from comms.incidents.models import Incident
from comms.users.models import User


class DraftStatus(StrEnum):
    DRAFT = "draft"
    IN_REVIEW = "in_review"
    APPROVED = "approved"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    PARTIALLY_FAILED = "partially_failed"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


EDITABLE = frozenset(
    {DraftStatus.DRAFT, DraftStatus.IN_REVIEW, DraftStatus.REJECTED, DraftStatus.APPROVED}
)


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class Draft(Base):
    __tablename__ = "drafts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    template: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[DraftStatus] = mapped_column(
        str_enum(DraftStatus, length=20), default=DraftStatus.DRAFT, index=True
    )
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    last_editor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # Everyone who created or edited any version: none of them may approve (four eyes).
    contributor_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    variables: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))
    warnings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    publish_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    correction_of_id: Mapped[int | None] = mapped_column(ForeignKey("drafts.id"), default=None)
    rejection_reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    incident: Mapped[Incident] = relationship(lazy="selectin")
    author: Mapped[User] = relationship(foreign_keys=[author_id], lazy="joined")
    last_editor: Mapped[User] = relationship(foreign_keys=[last_editor_id], lazy="joined")
    destinations: Mapped[list[Destination]] = relationship(
        secondary="draft_destinations", lazy="selectin", order_by="Destination.name"
    )
    approvals: Mapped[list[Approval]] = relationship(
        back_populates="draft", lazy="selectin", order_by="Approval.id"
    )

    @property
    def plan(self) -> AnnouncementPlan:
        """The current version's announcement plan (``payload`` is its stored JSON)."""
        return AnnouncementPlan.from_json(self.payload)

    def __repr__(self) -> str:
        return f"<Draft #{self.id} v{self.version} {self.template} {self.status}>"


class DraftDestination(Base):
    __tablename__ = "draft_destinations"

    draft_id: Mapped[int] = mapped_column(
        ForeignKey("drafts.id", ondelete="CASCADE"), primary_key=True
    )
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"), primary_key=True)


class DraftVersion(Base):
    """A frozen snapshot: what version N said, byte for byte. The publisher sends from here."""

    __tablename__ = "draft_versions"
    __table_args__ = (UniqueConstraint("draft_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    draft_id: Mapped[int] = mapped_column(ForeignKey("drafts.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    variables: Mapped[dict[str, str]] = mapped_column(JSON)
    editor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    editor: Mapped[User] = relationship(lazy="joined")

    @property
    def plan(self) -> AnnouncementPlan:
        return AnnouncementPlan.from_json(self.payload)


class Approval(Base):
    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    draft_id: Mapped[int] = mapped_column(ForeignKey("drafts.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    approver_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decision: Mapped[Decision] = mapped_column(str_enum(Decision, length=8))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    draft: Mapped[Draft] = relationship(back_populates="approvals")
    approver: Mapped[User] = relationship(lazy="joined")
    void: Mapped[ApprovalVoid | None] = relationship(lazy="joined")

    @property
    def voided(self) -> bool:
        return self.void is not None


class ApprovalVoid(Base):
    """An approval that never counts again: its approver was disabled or lost the
    decision_maker role after giving it. Restoring them does not revive it; they approve again.
    Approvals are append-only, so the voiding is a row of its own (append-only too)."""

    __tablename__ = "approval_voids"

    approval_id: Mapped[int] = mapped_column(ForeignKey("approvals.id"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    reason: Mapped[str] = mapped_column(Text, default="")
