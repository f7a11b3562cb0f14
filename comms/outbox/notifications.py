"""Internal notifications as a queue on the job runner: post each to its private destination.

They never pass the approval gate (fixed templates, private destinations only, see
``comms.outbox.notify``), so this handler is short: post, then record the message id, a retry
with backoff, or the failure. A notification whose worker died while sending it is sent again:
an internal ping sent twice beats one never sent.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.clock import utcnow
from comms.enums import Platform
from comms.jobs.leases import Lease, LeasedTable
from comms.jobs.runner import Work
from comms.outbox.models import Notification, NotificationState
from comms.outbox.ports import Outcome, Publisher, PublishError

log = logging.getLogger("comms.worker")

# A notification's text as it should read when sent; None keeps the stored text.
Refresher = Callable[[AsyncSession, Notification], Awaitable[str | None]]

NOTIFICATIONS = LeasedTable(
    Notification, claimable=(NotificationState.PENDING,), held=NotificationState.SENDING
)


class NotificationQueue:
    name = "notifications"
    table = NOTIFICATIONS
    batch = 16

    def __init__(
        self,
        publishers: Mapping[Platform, Publisher],
        refreshers: Mapping[str, Refresher] | None = None,
    ) -> None:
        self.publishers = publishers
        # Per notification kind: the text as it should read now (a responders' alert shows
        # its cluster as it is when the message goes out, not when it was queued).
        self.refreshers = dict(refreshers or {})

    async def claim(self, work: Work, session: AsyncSession, *, limit: int) -> list[Lease]:
        now = utcnow()
        candidates = (
            select(Notification.id)
            .where(
                Notification.state == NotificationState.PENDING,
                Notification.next_attempt_at <= now,
            )
            .order_by(Notification.id)
            .limit(limit)
        )
        return await NOTIFICATIONS.claim(
            session,
            candidates=candidates,
            worker_id=work.worker_id,
            now=now,
            lease_seconds=work.config.lease_seconds,
            postgres=work.postgres,
        )

    async def process(self, work: Work, lease: Lease) -> None:
        async with work.db.transaction() as session:
            note = await session.get(Notification, lease.id, populate_existing=True)
            if note is None or not NOTIFICATIONS.holds(note, lease, work.worker_id):
                return
            destination = note.destination
            platform = Platform(destination.platform)
            refresh = self.refreshers.get(note.kind)
            if refresh is not None and (fresh := await refresh(session, note)):
                note.text = fresh  # what is sent is what is kept
            target, text, ping = destination.target, note.text, note.ping_role or None
            usable = destination.can_receive and not destination.is_public
            edit_id, wait = await self._edit_target(session, note)
        publisher = self.publishers.get(platform)
        error: str | None = None
        message_id = ""
        retry = False
        if not usable:
            error = "destination is public, disabled or compromised"
        elif publisher is None:
            error = f"no {platform.value} publisher is configured"
        elif wait:
            error, retry = "the message to edit is not posted yet", True
        else:
            try:
                if edit_id:
                    await publisher.edit_notification(target, edit_id, text, ping_role=ping)
                    message_id = edit_id
                else:
                    message_id = await publisher.notify(target, text, ping_role=ping)
            except PublishError as exc:
                error = exc.message
                retry = exc.outcome is Outcome.TRANSIENT or exc.status == 401
            except Exception as exc:
                log.exception("notification %s failed", lease.id)
                error = f"unexpected {type(exc).__name__}"
        now = utcnow()
        if error is None:
            values = {
                "state": NotificationState.SENT,
                "sent_at": now,
                "platform_message_id": message_id,
                "last_error": "",
            }
        elif retry and lease.attempt < work.config.max_attempts:
            values = {
                "state": NotificationState.PENDING,
                "next_attempt_at": now + timedelta(seconds=work.backoff(lease.attempt)),
                "last_error": error,
            }
        else:
            values = {"state": NotificationState.FAILED, "last_error": error}
        async with work.db.transaction() as session:
            await NOTIFICATIONS.let_go(session, lease, work.worker_id, now=now, **values)

    @staticmethod
    async def _edit_target(session: AsyncSession, note: Notification) -> tuple[str, bool]:
        """For an edit: (the message id to edit, whether to wait for the original's post).
        An original that failed to post leaves nothing to edit: the edit is posted instead."""
        if note.edit_of_id is None:
            return "", False
        original = await session.get(Notification, note.edit_of_id)
        if original is None or original.state is NotificationState.FAILED:
            return "", False
        if original.state is NotificationState.SENT and original.platform_message_id:
            return original.platform_message_id, False
        return "", True

    async def recover(self, work: Work) -> int:
        async with work.db.transaction() as session:
            return await NOTIFICATIONS.requeue_expired(
                session,
                now=utcnow(),
                worker_id=work.worker_id,
                alive=work.alive(self.name),
                state=NotificationState.PENDING,
            )

    async def keep(self, work: Work, session: AsyncSession) -> None:
        return None  # nothing beyond the rows' leases

    async def release(self, work: Work) -> None:
        return None

    async def next_due(
        self, work: Work, session: AsyncSession, *, now: datetime
    ) -> datetime | None:
        pending = await session.scalar(
            select(func.min(Notification.next_attempt_at)).where(
                Notification.state == NotificationState.PENDING
            )
        )
        sending = await session.scalar(
            select(func.min(Notification.lease_until)).where(
                Notification.state == NotificationState.SENDING
            )
        )
        found = [t for t in (pending, sending) if t is not None]
        return min(found) if found else None
