"""Which worker sends for which platform bot: one at a time, under a lease.

The platforms' rate limits are per bot, and each worker paces itself: two processes sending for
one bot would each believe they had the whole budget. A worker sends for a platform while it
holds that platform's row in ``platform_senders``; the others stand by and take the role over
when its holder stops (it gives the role up) or dies (its lease runs out).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from comms.clock import utcnow
from comms.enums import Platform
from comms.jobs.runner import Work
from comms.outbox.models import PlatformSender


class SenderRoles:
    """The sender roles of one worker, for the platforms it has publishers for."""

    def __init__(self, publishers: Iterable[Platform]) -> None:
        self.publishers = list(publishers)
        self._sending: dict[str, datetime] = {}  # the platforms sent for, and until when
        self._rows_exist = False

    async def hold(self, work: Work, session: AsyncSession, *, now: datetime) -> set[str]:
        """Renew or take the sender role of each platform this worker has a publisher for; the
        platforms it sends for now (with those nobody can send for, ``_orphans``).

        A role is renewed once a third of its lease has gone, and taken when free (never held,
        given up on stopping) or when its holder's lease ran out: a standby worker takes over a
        dead sender's platforms within one lease. On PostgreSQL the conditional update waits
        only on a row its holder is renewing, which then no longer matches.
        """
        lease = timedelta(seconds=work.config.lease_seconds)
        fresh = {p for p, held in self._sending.items() if held - now > lease * 2 / 3}
        wanted = [p.value for p in self.publishers if p.value not in fresh]
        if wanted:
            until = now + lease
            claim = (
                update(PlatformSender)
                .where(
                    PlatformSender.platform.in_(wanted),
                    or_(
                        PlatformSender.worker_id == work.worker_id,
                        PlatformSender.lease_until.is_(None),
                        PlatformSender.lease_until <= now,
                    ),
                )
                .values(worker_id=work.worker_id, lease_until=until)
                .returning(PlatformSender.platform)
                .execution_options(synchronize_session=False)
            )
            taken = set((await session.scalars(claim)).all())
            if len(taken) < len(wanted) and not self._rows_exist:
                # A platform nobody has sent for yet has no row: add it, free, and try again.
                insert = pg_insert if work.postgres else sqlite_insert
                await session.execute(
                    insert(PlatformSender)
                    .values([{"platform": p, "worker_id": "", "lease_until": None} for p in wanted])
                    .on_conflict_do_nothing(index_elements=["platform"])
                )
                self._rows_exist = True
                taken = set((await session.scalars(claim)).all())
            for platform in wanted:
                if platform in taken:
                    self._sending[platform] = until
                else:  # another worker sends for it (or took it over while we were away)
                    self._sending.pop(platform, None)
        held = {p for p, until in self._sending.items() if until > now}
        return held | await self._orphans(session, now=now)

    async def _orphans(self, session: AsyncSession, *, now: datetime) -> set[str]:
        """Platforms this worker has no publisher for and no live worker sends for: their
        deliveries are claimed here to fail with a clear "no publisher is configured" rather
        than wait unseen."""
        missing = [p.value for p in Platform if p not in self.publishers]
        if not missing:
            return set()
        live = set(
            (
                await session.scalars(
                    select(PlatformSender.platform).where(
                        PlatformSender.platform.in_(missing),
                        PlatformSender.worker_id != "",
                        PlatformSender.lease_until > now,
                    )
                )
            ).all()
        )
        return set(missing) - live

    async def may_send(self, work: Work, session: AsyncSession, *, now: datetime) -> set[str]:
        """The platforms whose deliveries this worker could claim now (read only)."""
        elsewhere = set(
            (
                await session.scalars(
                    select(PlatformSender.platform).where(
                        PlatformSender.worker_id.notin_(["", work.worker_id]),
                        PlatformSender.lease_until > now,
                    )
                )
            ).all()
        )
        return {p.value for p in Platform} - elsewhere

    async def release(self, work: Work) -> None:
        """Stopping: hand the sender roles over now rather than when their lease runs out."""
        if not self._sending:
            return
        async with work.db.transaction() as session:
            await session.execute(
                update(PlatformSender)
                .where(PlatformSender.worker_id == work.worker_id)
                .values(worker_id="", lease_until=utcnow())  # free from now
                .execution_options(synchronize_session=False)
            )
        self._sending.clear()
