"""Scheduled jobs: one row per piece of background work due at a time (reminders, checks)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from comms.clock import utcnow
from comms.db import Base, UTCDateTime
from comms.dbtypes import str_enum


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Job(Base):
    """Run ``kind``'s handler with ``payload`` at ``next_attempt_at``; leased like a delivery."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # At most one job per key (a second schedule() with the same key changes nothing).
    dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    state: Mapped[JobState] = mapped_column(str_enum(JobState, length=12), default=JobState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    claimed_by: Mapped[str] = mapped_column(String(64), default="")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    def __repr__(self) -> str:
        return f"<Job #{self.id} {self.kind} {self.state}>"
