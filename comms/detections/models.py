"""Detections: one row per community report or monitoring alert, with its extracted entities.

A detection keeps the reporter's text as it arrived (bounded, never rendered as markup) and the
entities found in it. The entities also live in their own indexed table, because clustering
asks "which open detections share this address?" for every report of a flood.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from comms.clock import utcnow
from comms.db import Base, UTCDateTime
from comms.dbtypes import str_enum
from comms.users.models import User

TEXT_LIMIT = 4000  # characters of a report kept (Discord's own message limit is 4,000)


class DetectionSource(StrEnum):
    DISCORD = "discord"
    TELEGRAM = "telegram"
    WEBHOOK = "webhook"  # POST /api/v1/detections
    ALERTMANAGER = "alertmanager"
    PANEL = "panel"


class DetectionSeverity(StrEnum):
    """A monitoring system's own judgement; community reports have none."""

    CRITICAL = "critical"
    HIGH = "high"
    WARNING = "warning"
    INFO = "info"


class DetectionStatus(StrEnum):
    NEW = "new"
    RESOLVED = "resolved"  # the monitoring system says the condition ended
    DISMISSED = "dismissed"
    ESCALATED = "escalated"


class ClusterKind(StrEnum):
    REPORTS = "reports"
    PHISHING = "phishing"  # formed around a look-alike domain


class ClusterStatus(StrEnum):
    OPEN = "open"
    ALERTED = "alerted"
    DISMISSED = "dismissed"
    ESCALATED = "escalated"
    MERGED = "merged"


OPEN_STATUSES = (ClusterStatus.OPEN, ClusterStatus.ALERTED)


class Cluster(Base):
    """Reports of one real event: they share an address, a tx hash or a foreign domain, or say
    the same thing, within a window of the cluster's last report."""

    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[ClusterKind] = mapped_column(str_enum(ClusterKind, length=16))
    status: Mapped[ClusterStatus] = mapped_column(
        str_enum(ClusterStatus, length=16), default=ClusterStatus.OPEN, index=True
    )
    reports: Mapped[int] = mapped_column(Integer, default=0)
    reporters: Mapped[int] = mapped_column(Integer, default=0)  # distinct
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id"), default=None)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), default=None)
    reason: Mapped[str] = mapped_column(Text, default="")  # why it was dismissed
    alerted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    @property
    def reference(self) -> str:
        return f"C-{self.id}"

    def __repr__(self) -> str:
        return f"<Cluster {self.reference} {self.kind.value} {self.status.value}>"


class Detection(Base):
    __tablename__ = "detections"
    __table_args__ = (UniqueConstraint("source", "external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[DetectionSource] = mapped_column(str_enum(DetectionSource, length=16))
    # What makes a repeated submission the same one: the webhook's ``id``, the platform's
    # message, Alertmanager's group key + fingerprint + start. NULL: never deduplicated.
    external_id: Mapped[str | None] = mapped_column(String(300), default=None)
    origin: Mapped[str] = mapped_column(String(64), default="")  # the monitor's own name
    title: Mapped[str] = mapped_column(String(200), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    severity: Mapped[DetectionSeverity | None] = mapped_column(
        str_enum(DetectionSeverity, length=16), default=None
    )
    status: Mapped[DetectionStatus] = mapped_column(
        str_enum(DetectionStatus, length=16), default=DetectionStatus.NEW
    )
    url: Mapped[str] = mapped_column(String(2000), default="")
    reporter_id: Mapped[str] = mapped_column(String(64), default="")  # the platform's user id
    reporter_name: Mapped[str] = mapped_column(String(128), default="")
    reporter_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    location: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # guild, channel, chat
    message_url: Mapped[str] = mapped_column(String(500), default="")
    entities: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # What a monitoring system sent beside the text (Alertmanager: labels, annotations, group
    # key, receiver, truncated alerts), kept for the responders.
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    submitted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    cluster_id: Mapped[int | None] = mapped_column(
        ForeignKey("clusters.id"), default=None, index=True
    )
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    submitted_by: Mapped[User | None] = relationship(lazy="joined")

    @property
    def reference(self) -> str:
        """What the reporter is told to quote: ``R-`` and the row's number."""
        return f"R-{self.id}"

    def __repr__(self) -> str:
        return f"<Detection {self.reference} {self.source.value}>"


class DetectionEntity(Base):
    """One entity of one detection, for lookups by value."""

    __tablename__ = "detection_entities"
    __table_args__ = (Index("ix_detection_entities_type_value", "type", "value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    detection_id: Mapped[int] = mapped_column(ForeignKey("detections.id"), index=True)
    type: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(String(500))  # longer values (URLs) are cut for the index
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
