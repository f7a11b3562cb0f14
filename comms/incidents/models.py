"""Incidents, who holds which incident role, and the append-only Incident Log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from comms.clock import utcnow
from comms.db import Base, UTCDateTime
from comms.dbtypes import str_enum
from comms.users.models import User


class IncidentStatus(StrEnum):
    DETECTED = "detected"
    COORDINATING = "coordinating"
    INVESTIGATING = "investigating"
    MITIGATED = "mitigated"
    MONITORING = "monitoring"
    POST_INCIDENT = "post_incident"
    CLOSED = "closed"

    @property
    def summary(self) -> str:
        """The status word of the Incident Log layout: Active, Mitigated or Resolved."""
        if self in (
            IncidentStatus.DETECTED,
            IncidentStatus.COORDINATING,
            IncidentStatus.INVESTIGATING,
        ):
            return "Active"
        if self in (IncidentStatus.MITIGATED, IncidentStatus.MONITORING):
            return "Mitigated"
        return "Resolved"


class IncidentRole(StrEnum):
    """Roles within one incident (the policy's), distinct from service-wide user roles."""

    DETECTOR = "detector"
    INCIDENT_LEADER = "incident_leader"
    SCRIBE = "scribe"
    COMMS_MANAGER = "comms_manager"
    DECISION_MAKER = "decision_maker"
    RESPONDER = "responder"

    @property
    def label(self) -> str:
        return _ROLE_TITLES[self]


_ROLE_TITLES = {
    IncidentRole.DETECTOR: "Detector",
    IncidentRole.INCIDENT_LEADER: "Incident Leader",
    IncidentRole.SCRIBE: "Scribe",
    IncidentRole.COMMS_MANAGER: "Communication Manager",
    IncidentRole.DECISION_MAKER: "Decision Maker",
    IncidentRole.RESPONDER: "Responder / SME",
}


class LogKind(StrEnum):
    NOTE = "note"
    DECISION = "decision"
    ACTION = "action"
    STATUS = "status"
    SEVERITY = "severity"
    ROLE = "role"
    COMMS = "comms"
    TASK = "task"
    MONITORING = "monitoring"  # monitoring added after mitigation (the policy's step)
    CHECKLIST = "checklist"  # a resolution checklist item ticked


class TaskStatus(StrEnum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        """Still someone's work: the policy's "one task per person at a time" counts these."""
        return self in (TaskStatus.OPEN, TaskStatus.IN_PROGRESS)


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(16), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(Text, default="")
    severity: Mapped[str] = mapped_column(String(2))
    status: Mapped[IncidentStatus] = mapped_column(
        str_enum(IncidentStatus, length=16), default=IncidentStatus.DETECTED
    )
    affected_services: Mapped[str] = mapped_column(Text, default="")
    call_link: Mapped[str] = mapped_column(String(500), default="")
    chat_channel: Mapped[str] = mapped_column(String(200), default="")
    opened_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # When the problem was first seen, if before the incident was opened (the first community
    # report of the cluster it was escalated from): time to detect counts from here.
    detected_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    mitigated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_public_update_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    first_public_update_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # When the incident last entered ``monitoring`` (the policy's week starts here).
    monitoring_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    opened_by: Mapped[User] = relationship(lazy="joined")
    assignments: Mapped[list[IncidentAssignment]] = relationship(
        back_populates="incident", lazy="selectin", order_by="IncidentAssignment.id"
    )

    @property
    def is_open(self) -> bool:
        return self.status != IncidentStatus.CLOSED

    def holders(self, role: IncidentRole) -> list[IncidentAssignment]:
        """Current (not ended) assignments for ``role``; a leader counts only once acknowledged."""
        return [
            a
            for a in self.assignments
            if a.role == role.value
            and a.ended_at is None
            and (role is not IncidentRole.INCIDENT_LEADER or a.acknowledged_at is not None)
        ]

    @property
    def leader(self) -> User | None:
        current = self.holders(IncidentRole.INCIDENT_LEADER)
        return current[-1].user if current else None

    @property
    def pending_leader(self) -> IncidentAssignment | None:
        pending = [
            a
            for a in self.assignments
            if a.role == IncidentRole.INCIDENT_LEADER.value
            and a.ended_at is None
            and a.acknowledged_at is None
        ]
        return pending[-1] if pending else None

    def __repr__(self) -> str:
        return f"<Incident {self.key} {self.severity} {self.status}>"


class IncidentAssignment(Base):
    __tablename__ = "incident_assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    assigned_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    incident: Mapped[Incident] = relationship(back_populates="assignments")
    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="joined")
    assigned_by: Mapped[User] = relationship(foreign_keys=[assigned_by_id], lazy="joined")


class IncidentLogEntry(Base):
    """One line of the Incident Log. The table refuses UPDATE and DELETE (triggers)."""

    __tablename__ = "incident_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    kind: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    rationale: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    channel: Mapped[str] = mapped_column(String(200), default="")

    actor: Mapped[User | None] = relationship(foreign_keys=[actor_id], lazy="joined")
    owner: Mapped[User | None] = relationship(foreign_keys=[owner_id], lazy="joined")


class IncidentTask(Base):
    """One piece of work the Incident Leader gave one person during an incident."""

    __tablename__ = "incident_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[TaskStatus] = mapped_column(
        str_enum(TaskStatus, length=16), default=TaskStatus.OPEN
    )
    created_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    incident: Mapped[Incident] = relationship(lazy="joined")
    owner: Mapped[User] = relationship(foreign_keys=[owner_id], lazy="joined")
    created_by: Mapped[User] = relationship(foreign_keys=[created_by_id], lazy="joined")

    def __repr__(self) -> str:
        return f"<IncidentTask #{self.id} {self.status} {self.title!r}>"


class ChecklistTick(Base):
    """One item of the policy's resolution checklist, ticked by someone (never unticked)."""

    __tablename__ = "incident_checklist"
    __table_args__ = (UniqueConstraint("incident_id", "item"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    item: Mapped[str] = mapped_column(String(40))
    note: Mapped[str] = mapped_column(Text, default="")
    ticked_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    ticked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    ticked_by: Mapped[User] = relationship(lazy="joined")
