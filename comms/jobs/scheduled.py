"""Scheduled jobs: work due at a time, handled by the handler registered for its kind.

``schedule`` writes a job in the caller's transaction (so it exists exactly when the event that
asks for it does); the ``JobQueue`` runs it when due. A handler gets a ``JobRun`` and opens its
own transactions (never one across a network call); returning means done, ``RetryLater`` asks
to run again at a given time, any other exception retries with backoff until the worker's
``max_attempts``, then the job is failed with the error. Handlers must be idempotent: a job
whose worker died mid-run runs again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.clock import utcnow
from comms.jobs.leases import Lease, LeasedTable
from comms.jobs.models import Job, JobState
from comms.jobs.runner import Work

log = logging.getLogger("comms.jobs")

JOBS = LeasedTable(Job, claimable=(JobState.PENDING,), held=JobState.RUNNING)


class RetryLater(Exception):
    """Raised by a handler: run this job again at ``at`` (not counted as a failure)."""

    def __init__(self, at: datetime, reason: str = "") -> None:
        super().__init__(reason or f"again at {at.isoformat()}")
        self.at = at
        self.reason = reason


@dataclass(frozen=True)
class JobRun:
    """One run of a job: what its handler needs."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempt: int
    work: Work


JobHandler = Callable[[JobRun], Awaitable[None]]


async def schedule(
    session: AsyncSession,
    *,
    kind: str,
    due_at: datetime,
    payload: dict[str, Any] | None = None,
    dedup_key: str | None = None,
) -> Job | None:
    """Add a job due at ``due_at``; None when a job with ``dedup_key`` exists already."""
    if dedup_key is not None and await session.scalar(
        select(Job.id).where(Job.dedup_key == dedup_key)
    ):
        return None
    now = utcnow()
    job = Job(
        kind=kind,
        payload=payload or {},
        dedup_key=dedup_key,
        state=JobState.PENDING,
        next_attempt_at=due_at,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    await session.flush()
    return job


class JobQueue:
    """The ``jobs`` table as a queue: only kinds this worker has handlers for are claimed."""

    name = "jobs"
    table = JOBS
    batch = 16

    def __init__(self, handlers: Mapping[str, JobHandler]) -> None:
        self.handlers = dict(handlers)

    async def claim(self, work: Work, session: AsyncSession, *, limit: int) -> list[Lease]:
        if not self.handlers:
            return []
        now = utcnow()
        candidates = (
            select(Job.id)
            .where(
                Job.state == JobState.PENDING,
                Job.next_attempt_at <= now,
                Job.kind.in_(list(self.handlers)),
            )
            .order_by(Job.next_attempt_at, Job.id)
            .limit(limit)
        )
        return await JOBS.claim(
            session,
            candidates=candidates,
            worker_id=work.worker_id,
            now=now,
            lease_seconds=work.config.lease_seconds,
            postgres=work.postgres,
        )

    async def process(self, work: Work, lease: Lease) -> None:
        async with work.db.transaction() as session:
            job = await session.get(Job, lease.id, populate_existing=True)
            if job is None or not JOBS.holds(job, lease, work.worker_id):
                return
            run = JobRun(job.id, job.kind, dict(job.payload), lease.attempt, work)
        values: dict[str, Any]
        try:
            await self.handlers[run.kind](run)
        except RetryLater as again:
            values = {"state": JobState.PENDING, "next_attempt_at": again.at}
            values["last_error"] = again.reason
        except Exception as error:
            log.exception("job #%s (%s) failed", run.id, run.kind)
            message = f"{type(error).__name__}: {error}"[:2000]
            if lease.attempt < work.config.max_attempts:
                delay = timedelta(seconds=work.backoff(lease.attempt))
                values = {
                    "state": JobState.PENDING,
                    "next_attempt_at": utcnow() + delay,
                    "last_error": message,
                }
            else:
                values = {"state": JobState.FAILED, "last_error": message}
        else:
            values = {"state": JobState.DONE, "done_at": utcnow(), "last_error": ""}
        async with work.db.transaction() as session:
            await JOBS.let_go(session, lease, work.worker_id, now=utcnow(), **values)

    async def recover(self, work: Work) -> int:
        """A job whose worker died runs again (handlers are idempotent)."""
        async with work.db.transaction() as session:
            return await JOBS.requeue_expired(
                session,
                now=utcnow(),
                worker_id=work.worker_id,
                alive=work.alive(self.name),
                state=JobState.PENDING,
                last_error="its worker stopped while running it; run again",
            )

    async def keep(self, work: Work, session: AsyncSession) -> None:
        return None  # nothing beyond the rows' leases

    async def release(self, work: Work) -> None:
        return None

    async def next_due(
        self, work: Work, session: AsyncSession, *, now: datetime
    ) -> datetime | None:
        """Jobs due now, or running elsewhere. A job due later (a reminder tomorrow, the next
        check of a paused platform) does not keep the queues from being settled."""
        if not self.handlers:
            return None
        pending = await session.scalar(
            select(func.min(Job.next_attempt_at)).where(
                Job.state == JobState.PENDING,
                Job.kind.in_(list(self.handlers)),
                Job.next_attempt_at <= now,
            )
        )
        abandoned = await session.scalar(  # held by a worker whose lease ran out
            select(func.min(Job.lease_until)).where(
                Job.state == JobState.RUNNING,
                Job.kind.in_(list(self.handlers)),
                Job.lease_until <= now,
            )
        )
        found = [t for t in (pending, abandoned) if t is not None]
        return min(found) if found else None
