"""The runner: the loop every kind of background work shares.

Each turn it recovers rows whose worker died, claims what is due from each queue in turn (up to
its free capacity) and starts handling each claimed row in its own task; in between it waits
for the poll interval. A background task renews the leases of the rows it holds.
Stopping lets the tasks in flight finish (within one lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from comms.clock import utcnow
from comms.db import Database
from comms.jobs.batch import GroupCommit
from comms.jobs.leases import Lease, LeasedTable, backoff

log = logging.getLogger("comms.jobs")


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class RunnerConfig:
    worker_id: str = field(default_factory=default_worker_id)
    batch_size: int = 64
    concurrency: int = 256
    poll_interval: float = 0.2
    lease_seconds: float = 30.0
    max_attempts: int = 16
    backoff_base: float = 1.0
    backoff_cap: float = 900.0


class Work:
    """What a queue's handler gets from the runner: the database, group commit, its identity
    and the leases it holds (alive: a handler still running)."""

    def __init__(self, *, database: Database, config: RunnerConfig, rng: random.Random) -> None:
        self.db = database
        self.config = config
        self.rng = rng
        self.commits = GroupCommit(database)
        self.postgres = database.engine.dialect.name == "postgresql"
        self.held: dict[str, dict[int, Lease]] = {}

    @property
    def worker_id(self) -> str:
        return self.config.worker_id

    def alive(self, queue: str) -> dict[int, Lease]:
        return self.held.setdefault(queue, {})

    def backoff(self, attempts: int, retry_after: float | None = None) -> float:
        return backoff(
            attempts,
            retry_after,
            base=self.config.backoff_base,
            cap=self.config.backoff_cap,
            rng=self.rng,
        )


class Queue(Protocol):
    """A table of leased rows and the handling of one row."""

    name: str
    table: LeasedTable
    batch: int  # at most this many claimed per turn

    async def claim(self, work: Work, session: AsyncSession, *, limit: int) -> list[Lease]:
        """Lease up to ``limit`` due rows in ``session``'s transaction (one per dispatch)."""
        ...

    async def process(self, work: Work, lease: Lease) -> None: ...

    async def recover(self, work: Work) -> int: ...

    async def keep(self, work: Work, session: AsyncSession) -> None:
        """Renew whatever else the queue holds under a lease (with the rows' leases)."""
        ...

    async def release(self, work: Work) -> None:
        """The worker is stopping: give up what ``keep`` renews."""
        ...

    async def next_due(
        self, work: Work, session: AsyncSession, *, now: datetime
    ) -> datetime | None:
        """When the earliest row this worker could claim is due (for ``run_until_settled``)."""
        ...


class Runner:
    """One worker process (or task) running every queue. Any number may share a database."""

    def __init__(
        self,
        *,
        database: Database,
        queues: Sequence[Queue],
        config: RunnerConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or RunnerConfig()
        self.work = Work(database=database, config=self.config, rng=rng or random.Random())
        self.queues = list(queues)
        self._tasks: set[asyncio.Task[None]] = set()
        self._recovered_at = float("-inf")

    @property
    def worker_id(self) -> str:
        return self.config.worker_id

    def queue(self, name: str) -> Queue:
        return next(q for q in self.queues if q.name == name)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then let the tasks in flight finish."""
        log.info("worker %s starting", self.worker_id)
        renewer = asyncio.create_task(self._renew_leases(stop))
        failures = 0
        try:
            while not stop.is_set():
                try:
                    await self._recover_now_and_then()
                    busy = await self.dispatch()
                except Exception:
                    # A deadlock, a dropped connection, a database restarting: the rows stay
                    # where they were (the transaction rolled back), so the next turn simply
                    # tries again. Ending the process instead would strand its leases.
                    failures += 1
                    log.exception(
                        "worker %s: a turn failed (%d in a row)", self.worker_id, failures
                    )
                    await self._idle(stop, min(self.config.poll_interval * 2**failures, 5.0))
                    continue
                failures = 0
                if not busy:
                    await self._idle(stop)
        finally:
            renewer.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self.config.lease_seconds)
            for queue in self.queues:
                try:
                    await queue.release(self.work)
                except Exception:  # what it held lapses with its lease instead
                    log.exception("%s: could not release on stop", queue.name)
            log.info("worker %s stopped", self.worker_id)

    async def _idle(self, stop: asyncio.Event, seconds: float | None = None) -> None:
        """Wait for the next poll (or ``seconds``), or until ``stop`` is set."""
        timeout = self.config.poll_interval if seconds is None else seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout)

    async def recover(self) -> int:
        """Take back what workers that died were holding (their leases ran out)."""
        self._recovered_at = asyncio.get_running_loop().time()
        return sum([await queue.recover(self.work) for queue in self.queues])

    async def _recover_now_and_then(self) -> None:
        """Recover when nothing is in hand, else at most every third of a lease (a lease runs
        out only after ``lease_seconds``): looking after every finished task cost a query per
        queue per delivery."""
        every = self.config.lease_seconds / 3
        if not self._tasks or asyncio.get_running_loop().time() - self._recovered_at >= every:
            await self.recover()

    async def claim_from(self, queue: Queue, *, limit: int) -> list[Lease]:
        """Lease up to ``limit`` due rows of ``queue`` for this worker."""
        async with self.work.db.transaction() as session:
            leases = await queue.claim(self.work, session, limit=limit)
        self._hold(queue, leases)
        return leases

    def _hold(self, queue: Queue, leases: list[Lease]) -> None:
        alive = self.work.alive(queue.name)
        for lease in leases:
            alive[lease.id] = lease

    async def dispatch(self) -> int:
        """Claim what is due from every queue (up to free capacity, in one transaction) and
        start handling it once that is committed; returns how many."""
        free = self.config.concurrency - len(self._tasks)
        if free <= 0:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            return 1
        claimed: list[tuple[Queue, list[Lease]]] = []
        async with self.work.db.transaction() as session:
            for queue in self.queues:
                leases = await queue.claim(self.work, session, limit=min(free, queue.batch))
                free -= len(leases)
                claimed.append((queue, leases))
                if free <= 0:
                    break
        for queue, leases in claimed:
            self._hold(queue, leases)
            for lease in leases:
                self._start(queue, lease)
        return sum(len(leases) for _, leases in claimed)

    def _start(self, queue: Queue, lease: Lease) -> None:
        async def handle() -> None:
            try:
                await queue.process(self.work, lease)
            except Exception:  # a handler must record its own failures; this is a bug
                log.exception("%s #%s: unhandled error", queue.name, lease.id)
            finally:
                alive = self.work.alive(queue.name)
                if alive.get(lease.id) == lease:
                    del alive[lease.id]

        task: asyncio.Task[None] = asyncio.create_task(handle())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run_until_settled(self, *, within: float = 60.0) -> None:
        """Work until nothing is waiting (tests and benchmarks)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        found_nothing_at = float("-inf")
        while True:
            await self._recover_now_and_then()
            if not self._tasks or loop.time() - found_nothing_at >= self.config.poll_interval:
                if await self.dispatch():
                    continue  # claim up to capacity before waiting, as ``run`` does
                found_nothing_at = loop.time()
            if self._tasks:
                # As ``run`` does: look for more work once a poll interval has passed (a task
                # ending early wakes us sooner), not after every finished task.
                await asyncio.wait(
                    self._tasks,
                    timeout=self.config.poll_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                continue
            wait = await self._seconds_until_next_due()
            if wait is None:
                return
            if asyncio.get_running_loop().time() + wait > deadline:
                raise TimeoutError("the queues did not settle in time")
            await asyncio.sleep(max(wait, 0.01))

    async def _seconds_until_next_due(self) -> float | None:
        now = utcnow()
        async with self.work.db.transaction() as session:
            dues = [await q.next_due(self.work, session, now=now) for q in self.queues]
        found = [t for t in dues if t is not None]
        if not found:
            return None
        return max((min(found) - utcnow()).total_seconds(), 0.0)

    async def _renew_leases(self, stop: asyncio.Event) -> None:
        interval = max(self.config.lease_seconds / 3, 0.05)
        while not stop.is_set():
            await asyncio.sleep(interval)
            held = {q.name: list(self.work.alive(q.name).values()) for q in self.queues}
            try:
                async with self.work.db.transaction() as session:
                    for queue in self.queues:
                        await queue.keep(self.work, session)
                        await queue.table.renew(
                            session,
                            leases=held[queue.name],
                            worker_id=self.worker_id,
                            now=utcnow(),
                            lease_seconds=self.config.lease_seconds,
                        )
            except Exception:  # a missed renewal only risks an early recovery
                log.exception("lease renewal failed")
