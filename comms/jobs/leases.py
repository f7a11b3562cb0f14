"""Leases on rows, written once for every queue: claim, renew, fence, recover, back off.

A leased row has ``state``, ``attempts``, ``next_attempt_at``, ``claimed_by``, ``lease_until``
and ``updated_at``. Claiming moves due rows from a claimable state to the held state, stamps the
worker and a lease, and adds one to ``attempts``; that attempt number is the worker's *fencing
token*: every later write of the worker is conditional on the row still being held by it at
that attempt (``fence``), so a worker whose lease ran out (and whose row someone else has since
claimed or recovered) can never overwrite the newer owner's state.

PostgreSQL: candidates are selected ``FOR UPDATE SKIP LOCKED``, so several workers claim
disjoint rows without waiting on each other. SQLite: the transaction is already exclusive
(``BEGIN IMMEDIATE``) and the update is conditional on the state, so a row is never claimed
twice.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

_FENCED: dict[tuple[Any, tuple[str, ...]], Any] = {}  # prepared fenced UPDATEs


@dataclass(frozen=True)
class Lease:
    """A row a worker holds, and the attempt number that fences its writes."""

    id: int
    attempt: int


@dataclass(frozen=True)
class LeasedTable:
    """A table whose rows workers lease; ``model`` has the leased columns."""

    model: Any
    claimable: tuple[str, ...]
    held: str

    async def claim(
        self,
        session: AsyncSession,
        *,
        candidates: Select[Any],
        worker_id: str,
        now: datetime,
        lease_seconds: float,
        postgres: bool,
    ) -> list[Lease]:
        """Lease the rows ``candidates`` selects (ids, in the order to process them)."""
        if postgres:
            candidates = candidates.with_for_update(skip_locked=True, of=self.model)
        ids = list((await session.scalars(candidates)).all())
        return await self.take(
            session, ids=ids, worker_id=worker_id, now=now, lease_seconds=lease_seconds
        )

    async def take(
        self,
        session: AsyncSession,
        *,
        ids: list[int],
        worker_id: str,
        now: datetime,
        lease_seconds: float,
    ) -> list[Lease]:
        """Lease these rows (selected, and on PostgreSQL locked, by the caller), in this order;
        a row no longer claimable is left out."""
        if not ids:
            return []
        model = self.model
        result = await session.execute(
            update(model)
            .where(model.id.in_(ids), model.state.in_(self.claimable))
            .values(
                state=self.held,
                claimed_by=worker_id,
                lease_until=now + timedelta(seconds=lease_seconds),
                attempts=model.attempts + 1,
                updated_at=now,
            )
            .returning(model.id, model.attempts)
            .execution_options(synchronize_session=False)
        )
        attempts = {row[0]: row[1] for row in result.all()}
        return [Lease(i, attempts[i]) for i in ids if i in attempts]

    async def renew(
        self,
        session: AsyncSession,
        *,
        leases: Iterable[Lease],
        worker_id: str,
        now: datetime,
        lease_seconds: float,
    ) -> None:
        """Extend the leases this worker still holds (a missed renewal only risks recovery).

        Never waits for a row lock (PostgreSQL; SQLite ignores the clause): a row locked
        elsewhere is in a transaction of this worker's own (a group commit writing it) or of a
        worker recovering it, and is skipped until the next round. Waiting let a renewal and a
        group commit each hold a row the other wanted; PostgreSQL failed the renewal, and the
        leases of a live worker ran out.
        """
        ids = sorted(lease.id for lease in leases)
        if not ids:
            return
        model = self.model
        mine = (
            select(model.id)
            .where(model.id.in_(ids), model.claimed_by == worker_id, model.state == self.held)
            .order_by(model.id)
            .with_for_update(skip_locked=True)
        )
        await session.execute(
            update(model)
            .where(model.id.in_(mine.scalar_subquery()))
            .values(lease_until=now + timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )

    def fence(self, lease: Lease, worker_id: str) -> ColumnElement[bool]:
        """True while ``worker_id`` still holds the row at this attempt."""
        model = self.model
        return and_(
            model.id == lease.id,
            model.state == self.held,
            model.claimed_by == worker_id,
            model.attempts == lease.attempt,
        )

    async def write(
        self, session: AsyncSession, lease: Lease, worker_id: str, **values: Any
    ) -> bool:
        """``UPDATE ... SET values WHERE fence``: False when the worker no longer holds the row.

        The statement is built once per set of columns and executed with parameters, and it does
        not flush the session first: what else the transaction adds (log entries, audit events)
        goes out together at commit instead of one flush per written row.
        """
        statement = _FENCED.get((self.model, tuple(sorted(values))))
        if statement is None:
            model = self.model
            statement = (
                update(model)
                .where(
                    model.id == bindparam("fence_id"),
                    model.state == self.held,
                    model.claimed_by == bindparam("fence_worker"),
                    model.attempts == bindparam("fence_attempt"),
                )
                .values({name: bindparam(f"set_{name}") for name in values})
                .returning(model.id)
                .execution_options(synchronize_session=False)
            )
            _FENCED[(self.model, tuple(sorted(values)))] = statement
        params = {f"set_{name}": value for name, value in values.items()}
        params.update(fence_id=lease.id, fence_worker=worker_id, fence_attempt=lease.attempt)
        with session.no_autoflush:
            written = (await session.execute(statement, params)).scalar()
        return written is not None

    async def let_go(
        self, session: AsyncSession, lease: Lease, worker_id: str, *, now: datetime, **values: Any
    ) -> bool:
        """The attempt's last write (fenced): its outcome ``values``, and the row unleased."""
        return await self.write(
            session, lease, worker_id, claimed_by="", lease_until=None, updated_at=now, **values
        )

    async def requeue_expired(
        self,
        session: AsyncSession,
        *,
        now: datetime,
        worker_id: str,
        alive: Iterable[int],
        state: str,
        **values: Any,
    ) -> int:
        """Rows whose worker died go back to ``state``, due now; how many."""
        model = self.model
        result = await session.execute(
            update(model)
            .where(model.id.in_(self.expired_ids(now=now, worker_id=worker_id, alive=alive)))
            .values(
                state=state,
                claimed_by="",
                lease_until=None,
                next_attempt_at=now,
                updated_at=now,
                **values,
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def holds(self, row: Any, lease: Lease, worker_id: str) -> bool:
        """The same as ``fence``, for a row already loaded (under a row lock)."""
        return bool(
            row is not None
            and row.state == self.held
            and row.claimed_by == worker_id
            and row.attempts == lease.attempt
        )

    def expired(
        self, *, now: datetime, worker_id: str, alive: Iterable[int]
    ) -> ColumnElement[bool]:
        """Rows held past their lease, except this worker's own live ones (it is running them:
        a slow renewal must not make it doubt them)."""
        model = self.model
        return and_(
            model.state == self.held,
            model.lease_until < now,
            ~and_(model.claimed_by == worker_id, model.id.in_(list(alive))),
        )

    def lock_expired(self, *, now: datetime, worker_id: str, alive: Iterable[int]) -> Select[Any]:
        """The expired rows, locked for recovery, skipping any another transaction has locked
        (PostgreSQL; SQLite ignores the clause): a plain FOR UPDATE let two recovering workers
        wait on each other's rows until PostgreSQL broke the deadlock by failing one. A row
        skipped now is looked at again on the next recovery."""
        model = self.model
        return (
            select(model)
            .where(self.expired(now=now, worker_id=worker_id, alive=alive))
            .order_by(model.id)
            .with_for_update(skip_locked=True, of=model)
        )

    def expired_ids(self, *, now: datetime, worker_id: str, alive: Iterable[int]) -> Select[Any]:
        """``lock_expired``'s ids, for an ``UPDATE ... WHERE id IN (...)``."""
        model = self.model
        return (
            select(model.id)
            .where(self.expired(now=now, worker_id=worker_id, alive=alive))
            .with_for_update(skip_locked=True)
        )


def backoff(
    attempts: int,
    retry_after: float | None,
    *,
    base: float,
    cap: float,
    rng: random.Random,
) -> float:
    """Seconds before the next attempt: doubling from ``base`` up to ``cap``, jittered (half to
    full), and never sooner than the platform's own ``retry_after``."""
    exponential = min(cap, base * 2 ** max(attempts - 1, 0))
    return float(max(exponential * rng.uniform(0.5, 1.0), float(retry_after or 0.0)))
