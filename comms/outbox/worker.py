"""The outbox worker: claims due deliveries, checks the gate again, sends, records.

Crash safety comes from the order of writes:

1. claim: ``pending|retrying`` → ``sending`` with a lease and ``attempts + 1`` (committed);
2. pre-send check, under the draft's row lock: the frozen version still hashes to the approved
   hash, the draft still holds that hash, the quorum still counts; ``inflight_index`` marks the
   message about to go out (committed);
3. each accepted message's id is committed at once (``inflight_index`` moves on);
4. done: ``sent`` with the ids, an Incident Log entry and an audit event (committed).

A worker killed anywhere leaves ``sending`` with an expired lease. ``recover`` then resumes it:
Discord from the first unrecorded message with the same nonces (Discord deduplicates), Telegram
the same when nothing was in flight, otherwise ``uncertain`` for a person to decide (Telegram
has no idempotency key), unless ``COMMS_TELEGRAM_UNCERTAIN=resend``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import secrets
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import zip_longest
from typing import Any, TypeVar

from sqlalchemy import Text, and_, cast, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, defer, joinedload, raiseload
from sqlalchemy.orm.attributes import set_committed_value

from comms.audit import service as audit
from comms.clock import utcnow
from comms.db import Database
from comms.destinations.models import Destination
from comms.drafts import gate
from comms.drafts import service as drafts
from comms.drafts.models import Approval, Draft, DraftStatus, DraftVersion
from comms.drafts.payload import content_hash
from comms.drafts.plan import AnnouncementPlan, PlanError, PlannedDelivery
from comms.enums import Platform, Severity
from comms.incidents import service as incidents
from comms.incidents.models import Incident, LogKind
from comms.outbox import notify
from comms.outbox import service as outbox
from comms.outbox.models import (
    Delivery,
    DeliveryState,
    Notification,
    NotificationState,
)
from comms.outbox.ports import Outcome, Publisher, PublishError, SendJob, SendResult
from comms.settings import Settings, TelegramUncertainPolicy
from comms.users.models import User

log = logging.getLogger("comms.worker")
T = TypeVar("T")
Unit = Callable[[AsyncSession], Awaitable[T]]  # a unit of work inside a transaction

CLAIMABLE = (DeliveryState.PENDING.value, DeliveryState.RETRYING.value)
ACTIVE = (*CLAIMABLE, DeliveryState.SENDING.value)
# What the worker reads of a draft: status, version, hash, payload, approvals and the
# incident's own columns, in one SELECT. By default a Draft also loads its destinations (for one
# delivery of an N-destination fan-out that is O(N) work, so O(N^2) for the fan-out) and,
# through the incident, every assignment and person with their roles: some 40 queries per
# delivery. raiseload makes any use of a skipped part fail loudly instead of loading it
# behind our back.
LEAN_DRAFT = (
    raiseload(Draft.destinations),
    raiseload(Draft.author),
    raiseload(Draft.last_editor),
    defer(Draft.warnings, raiseload=True),
    defer(Draft.variables, raiseload=True),
    joinedload(Draft.incident, innerjoin=True).raiseload("*"),
)
# The gate also needs the approvals, their approvers and the approvers' roles.
GATE_DRAFT = (
    *LEAN_DRAFT,
    joinedload(Draft.approvals).joinedload(Approval.approver).joinedload(User.roles),
    joinedload(Draft.approvals).joinedload(Approval.void),
)
# Platforms whose API deduplicates a retried create (Discord's nonce + enforce_nonce).
IDEMPOTENT = frozenset({Platform.DISCORD})


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class WorkerConfig:
    worker_id: str = field(default_factory=_default_worker_id)
    batch_size: int = 64
    concurrency: int = 256
    poll_interval: float = 0.2
    lease_seconds: float = 30.0
    max_attempts: int = 16
    backoff_base: float = 1.0
    backoff_cap: float = 900.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        return cls(
            lease_seconds=settings.worker_lease_seconds,
            poll_interval=settings.worker_poll_seconds,
            max_attempts=settings.worker_max_attempts,
            backoff_cap=settings.worker_backoff_cap_seconds,
        )


class Worker:
    """One worker process (or task). Any number may share a database."""

    def __init__(
        self,
        *,
        database: Database,
        settings: Settings,
        publishers: Mapping[Platform, Publisher],
        config: WorkerConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.db = database
        self.settings = settings
        self.publishers = dict(publishers)
        self.config = config or WorkerConfig.from_settings(settings)
        self.rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        # delivery id -> the attempt number this worker claimed: a fencing token, so a stale
        # task can never act on a delivery that has been claimed again since.
        self._inflight: dict[int, int] = {}
        self._wake = asyncio.Event()
        self._payloads = _PayloadCache()
        self._commits = _GroupCommit(self.db)

    @property
    def worker_id(self) -> str:
        return self.config.worker_id

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then let in-flight sends finish."""
        log.info("outbox worker %s starting", self.worker_id)
        renewer = asyncio.create_task(self._renew_leases(stop))
        try:
            while not stop.is_set():
                await self.recover()
                busy = await self.dispatch()
                if not busy:
                    await self._idle(stop)
        finally:
            renewer.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self.config.lease_seconds)
            log.info("outbox worker %s stopped", self.worker_id)

    def wake(self) -> None:
        """Look for work now instead of at the next poll (e.g. right after an approval)."""
        self._wake.set()

    async def _idle(self, stop: asyncio.Event) -> None:
        self._wake.clear()
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self._wake.wait())]
        try:
            await asyncio.wait(
                waiters, timeout=self.config.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def dispatch(self) -> int:
        """Claim what is due (up to free capacity) and start sending it; returns how many."""
        free = self.config.concurrency - len(self._tasks)
        if free <= 0:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            return 1
        ids = await self.claim(limit=min(free, self.config.batch_size))
        for delivery_id in ids:
            self._start(self.process(delivery_id))
        notes = await self.claim_notifications(limit=16)
        for note_id in notes:
            self._start(self.process_notification(note_id))
        return len(ids) + len(notes)

    def _start(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run_until_settled(self, *, within: float = 60.0) -> None:
        """Work until no delivery or notification is waiting (tests and benchmarks)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            await self.recover()
            if await self.dispatch():
                continue  # claim up to capacity before waiting, as ``run`` does
            if self._tasks:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            wait = await self._seconds_until_next_due()
            if wait is None:
                return
            if asyncio.get_running_loop().time() + wait > deadline:
                raise TimeoutError("outbox did not settle in time")
            await asyncio.sleep(max(wait, 0.01))

    async def _seconds_until_next_due(self) -> float | None:
        async with self.db.transaction() as session:
            soonest = await session.scalar(
                select(Delivery.next_attempt_at)
                .where(Delivery.state.in_([*CLAIMABLE, DeliveryState.SENDING.value]))
                .order_by(Delivery.next_attempt_at)
                .limit(1)
            )
            note = await session.scalar(
                select(Notification.next_attempt_at)
                .where(
                    Notification.state.in_(
                        [NotificationState.PENDING.value, NotificationState.SENDING.value]
                    )
                )
                .order_by(Notification.next_attempt_at)
                .limit(1)
            )
        candidates = [t for t in (soonest, note) if t is not None]
        if not candidates:
            return None
        return max((min(candidates) - utcnow()).total_seconds(), 0.0)

    # ------------------------------------------------------------------ claiming

    async def claim(self, *, limit: int) -> list[int]:
        """Atomically take up to ``limit`` due deliveries.

        PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets workers claim disjoint rows concurrently.
        SQLite: the transaction is already exclusive (``BEGIN IMMEDIATE``) and the update is
        conditional on the state, so a row is never claimed twice. Per destination, a newer
        delivery waits while an older one is still in progress, so updates keep their order.

        Platforms take turns (oldest first within each), and the ids come back in that order,
        which is the order they are prepared and sent in: the platforms' rate limits are
        independent, and taking ids oldest first overall made a fan-out finish its first
        platform's deliveries before the next platform's began.
        """
        now = utcnow()
        older = aliased(Delivery)
        blocker = exists().where(
            and_(
                older.destination_id == Delivery.destination_id,
                older.id < Delivery.id,
                (older.state.in_([DeliveryState.SENDING.value, DeliveryState.RETRYING.value]))
                | and_(older.state == DeliveryState.PENDING.value, older.next_attempt_at <= now),
            )
        )
        async with self.db.transaction() as session:
            query = (
                select(Delivery.id)
                .join(Destination, Destination.id == Delivery.destination_id)
                .where(Delivery.state.in_(CLAIMABLE), Delivery.next_attempt_at <= now, ~blocker)
                .order_by(Delivery.id)
                .limit(limit)
            )
            if self.db.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=Delivery)
            queues = [
                list((await session.scalars(query.where(Destination.platform == p.value))).all())
                for p in Platform
            ]
            ids = [i for turn in zip_longest(*queues) for i in turn if i is not None][:limit]
            if not ids:
                return []
            result = await session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids), Delivery.state.in_(CLAIMABLE))
                .values(
                    state=DeliveryState.SENDING.value,
                    claimed_by=self.worker_id,
                    lease_until=now + timedelta(seconds=self.config.lease_seconds),
                    attempts=Delivery.attempts + 1,
                    updated_at=now,
                )
                .returning(Delivery.id, Delivery.attempts)
                .execution_options(synchronize_session=False)
            )
            claimed = {row[0]: row[1] for row in result.all()}
        self._inflight.update(claimed)
        return [i for i in ids if i in claimed]

    async def _renew_leases(self, stop: asyncio.Event) -> None:
        interval = max(self.config.lease_seconds / 3, 0.05)
        while not stop.is_set():
            await asyncio.sleep(interval)
            if not self._inflight:
                continue
            try:
                async with self.db.transaction() as session:
                    await session.execute(
                        update(Delivery)
                        .where(
                            Delivery.id.in_(list(self._inflight)),
                            Delivery.claimed_by == self.worker_id,
                            Delivery.state == DeliveryState.SENDING.value,
                        )
                        .values(lease_until=utcnow() + timedelta(seconds=self.config.lease_seconds))
                        .execution_options(synchronize_session=False)
                    )
            except Exception:  # a missed renewal only risks an early recovery
                log.exception("lease renewal failed")

    async def recover(self) -> int:
        """Resume deliveries whose worker died mid-send (their lease ran out)."""
        now = utcnow()
        async with self.db.transaction() as session:
            stale = list(
                (
                    await session.scalars(
                        select(Delivery)
                        .where(
                            Delivery.state == DeliveryState.SENDING.value,
                            Delivery.lease_until < now,
                            # Our own sends are alive (we are running this); a slow lease
                            # renewal must not make us doubt them.
                            ~(
                                (Delivery.claimed_by == self.worker_id)
                                & Delivery.id.in_(list(self._inflight))
                            ),
                        )
                        .with_for_update()
                    )
                ).all()
            )
            for delivery in stale:
                platform = Platform(delivery.destination.platform)
                maybe_sent = delivery.inflight_index is not None and platform not in IDEMPOTENT
                previous = delivery.claimed_by
                delivery.claimed_by = ""
                delivery.lease_until = None
                delivery.updated_at = now
                if not maybe_sent:
                    delivery.state = DeliveryState.RETRYING.value
                    delivery.next_attempt_at = now
                    delivery.inflight_index = None
                    delivery.last_error = f"worker {previous} stopped mid-delivery; resumed" + (
                        " with the same nonce"
                        if platform in IDEMPOTENT
                        else " (no request was in flight)"
                    )
                    action = "delivery.resumed"
                else:
                    delivery.uncertain_count += 1
                    resend = self.settings.telegram_uncertain == TelegramUncertainPolicy.RESEND
                    delivery.state = (
                        DeliveryState.RETRYING if resend else DeliveryState.UNCERTAIN
                    ).value
                    delivery.next_attempt_at = now
                    delivery.last_error = (
                        f"worker {previous} stopped while message "
                        f"{(delivery.inflight_index or 0) + 1} was on the wire: "
                        "it may or may not have been posted"
                        + (
                            "; resending (COMMS_TELEGRAM_UNCERTAIN=resend)"
                            if resend
                            else "; check the chat, then resend or dismiss"
                        )
                    )
                    if resend:
                        delivery.inflight_index = None
                    action = "delivery.uncertain"
                    await notify.delivery_problem(
                        session, delivery=delivery, settings=self.settings
                    )
                await audit.record(
                    session,
                    actor=audit.SYSTEM_ACTOR,
                    action=action,
                    target=f"delivery:{delivery.id}",
                    details={"worker": previous, "error": delivery.last_error},
                )
                if delivery.state_enum is DeliveryState.UNCERTAIN:
                    await _settle(session, draft_id=delivery.draft_id)
        return len(stale)

    # ------------------------------------------------------------------ one delivery

    async def process(self, delivery_id: int) -> None:
        try:
            try:
                job = await self._prepare(delivery_id)
            except Exception as exc:  # nothing was sent: give it back for a later attempt
                log.exception("delivery %s: check before sending failed", delivery_id)
                await self._failed_attempt(
                    delivery_id,
                    PublishError(
                        f"internal error before sending: {type(exc).__name__}",
                        outcome=Outcome.TRANSIENT,
                    ),
                )
                return
            if job is None:
                return
            publisher = self.publishers.get(job.platform)
            if publisher is None:
                await self._failed_attempt(
                    delivery_id,
                    PublishError(
                        f"no {job.platform.value} publisher is configured "
                        f"(set COMMS_{job.platform.value.upper()}_TOKEN)",
                        outcome=Outcome.PERMANENT,
                    ),
                )
                return

            async def progress(message_ids: list[str]) -> None:
                await self._record_progress(delivery_id, message_ids, len(job.messages))

            try:
                result = await publisher.send(job, progress)
            except PublishError as error:
                await self._failed_attempt(delivery_id, error)
                return
            except Exception as exc:  # a bug mid-send: the outcome is unknown
                log.exception("delivery %s: unexpected error while sending", delivery_id)
                await self._failed_attempt(
                    delivery_id,
                    PublishError(
                        f"unexpected {type(exc).__name__} while sending", outcome=Outcome.AMBIGUOUS
                    ),
                )
                return
            await self._complete(delivery_id, job, result)
        finally:
            self._inflight.pop(delivery_id, None)

    async def _prepare(self, delivery_id: int) -> SendJob | None:
        """Re-check the gate under the draft's lock and build the exact job to send."""
        now = utcnow()

        async def work(session: AsyncSession) -> SendJob | None:
            delivery = await session.get(
                Delivery,
                delivery_id,
                with_for_update={"of": Delivery},
                populate_existing=True,
                options=[joinedload(Delivery.destination, innerjoin=True)],
            )
            if (
                delivery is None
                or delivery.state != DeliveryState.SENDING.value
                or delivery.claimed_by != self.worker_id
                or delivery.attempts != self._inflight.get(delivery_id)
            ):
                return None  # lost the lease, or claimed again since
            # The approvals and the incident come fresh with the locked row (populate_existing
            # runs the eager loaders again); the payload is read through the cache.
            found = (
                (
                    await session.execute(
                        select(Draft, cast(Draft.payload, Text))
                        .where(Draft.id == delivery.draft_id)
                        .options(*GATE_DRAFT, defer(Draft.payload, raiseload=True))
                        .with_for_update(of=Draft)
                        .execution_options(populate_existing=True)
                    )
                )
                .unique()
                .first()
            )
            assert found is not None
            draft = found[0]
            _, _, draft_payload = self._payloads.get(("draft", draft.id), found[1])
            set_committed_value(draft, "payload", draft_payload)  # as loaded: no history
            _keep(session, draft)
            destination = delivery.destination
            row = (
                await session.execute(
                    select(DraftVersion, cast(DraftVersion.payload, Text))
                    .where(
                        DraftVersion.draft_id == draft.id,
                        DraftVersion.version == delivery.draft_version,
                    )
                    .options(
                        raiseload(DraftVersion.editor),
                        defer(DraftVersion.payload, raiseload=True),  # read through the cache
                        defer(DraftVersion.variables, raiseload=True),
                    )
                )
            ).first()
            version, (stored_hash, plan, _) = (
                (row[0], self._payloads.get(("version", row[0].id), row[1]))
                if row
                else (None, ("", None, {}))
            )
            problem = gate.may_send(
                delivery, draft, version, stored_hash, plan, settings=self.settings, now=now
            )
            if problem is not None:
                await self._refuse(session, delivery, problem)
                return None
            assert version is not None
            assert plan is not None
            item = plan.delivery_to(destination.id)
            assert item is not None  # checked by the gate
            if destination.compromised:
                reason = "destination marked compromised: " + destination.compromised_reason
                delivery.state = DeliveryState.SKIPPED.value
                delivery.last_error = reason
                delivery.claimed_by = ""
                await audit.record(
                    session,
                    actor=audit.SYSTEM_ACTOR,
                    action="delivery.skipped",
                    target=f"delivery:{delivery.id}",
                    details={"reason": reason},
                )
                await _settle(session, draft_id=draft.id)
                return None
            conflicts = gate.destination_conflicts(
                item, destination, draft.options, after_approval=True
            )
            if conflicts:
                delivery.claimed_by = ""
                delivery.inflight_index = None
                held = await drafts.hold_delivery(
                    session,
                    delivery=delivery,
                    name=destination.name,
                    conflicts=conflicts,
                    settings=self.settings,
                )
                if held is None:
                    await _settle(session, draft_id=draft.id)
                return None
            job = await _build_job(session, delivery=delivery, draft=draft, plan=plan, item=item)
            if len(job.messages) < len(job.edit_ids):
                # Editing would leave the original's last messages showing what the
                # correction replaces: not what was approved.
                await self._refuse(
                    session,
                    delivery,
                    f"this correction is {len(job.messages)} message(s) here but the original "
                    f"was {len(job.edit_ids)}: editing would leave old text showing; publish it "
                    "as a new announcement instead",
                )
                return None
            if draft.status_enum is DraftStatus.APPROVED:
                draft.status = DraftStatus.PUBLISHING.value
            delivery.inflight_index = (
                job.start_index if job.start_index < len(job.messages) else None
            )
            delivery.updated_at = now
            return job

        return await self._commits.run(work)

    async def _refuse(self, session: AsyncSession, delivery: Delivery, problem: str) -> None:
        delivery.state = DeliveryState.FAILED.value
        delivery.last_error = f"refused by the approval gate: {problem}"
        delivery.claimed_by = ""
        delivery.inflight_index = None
        await audit.record(
            session,
            actor=audit.SYSTEM_ACTOR,
            action="delivery.refused",
            target=f"delivery:{delivery.id}",
            details={
                "draft": delivery.draft_id,
                "version": delivery.draft_version,
                "content_hash": delivery.content_hash,
                "problem": problem,
            },
        )
        await notify.delivery_problem(session, delivery=delivery, settings=self.settings)
        await _settle(session, draft_id=delivery.draft_id)

    async def _record_progress(self, delivery_id: int, message_ids: list[str], total: int) -> None:
        async def work(session: AsyncSession) -> None:
            recorded = await session.scalar(
                update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(
                    platform_message_ids=list(message_ids),
                    inflight_index=len(message_ids) if len(message_ids) < total else None,
                    updated_at=utcnow(),
                )
                .returning(Delivery.id)
                .execution_options(synchronize_session=False)
            )
            assert recorded is not None

        await self._commits.run(work, urgent=True)

    async def _complete(self, delivery_id: int, job: SendJob, result: SendResult) -> None:
        now = utcnow()

        async def work(session: AsyncSession) -> None:
            delivery = await session.get(
                Delivery,
                delivery_id,
                with_for_update={"of": Delivery},
                populate_existing=True,
                options=[joinedload(Delivery.destination, innerjoin=True)],
            )
            assert delivery is not None
            delivery.state = DeliveryState.SENT.value
            delivery.sent_at = now
            delivery.platform_message_ids = list(result.message_ids)
            # The thread this delivery opened, or the one its follow-ups went into.
            delivery.platform_thread_id = result.thread_id or job.into_thread or ""
            delivery.inflight_index = None
            delivery.claimed_by = ""
            delivery.lease_until = None
            delivery.last_error = "; ".join(result.notes)
            delivery.updated_at = now
            draft = await session.get(
                Draft,
                delivery.draft_id,
                options=[
                    *LEAN_DRAFT,
                    defer(Draft.payload, raiseload=True),
                    raiseload(Draft.approvals),
                ],
            )
            assert draft is not None
            _keep(session, draft)
            destination = delivery.destination
            first_line = job.messages[0].strip().splitlines()[0] if job.messages else ""
            verb = "edited" if job.edit_ids else "sent"
            if destination.is_public:  # before the log entry: one UPDATE of the incident
                draft.incident.last_public_update_at = now
            await incidents.log(
                session,
                incident=draft.incident,
                kind=LogKind.COMMS,
                actor=None,
                channel=f"{destination.platform} {destination.name}",
                text=(
                    f"Communications {verb}: draft #{draft.id} v{draft.version} "
                    f"({draft.template}), {len(result.message_ids)} message(s): "
                    f"{_plain(first_line)[:140]}"
                ),
            )
            await audit.record(
                session,
                actor=audit.SYSTEM_ACTOR,
                action="delivery.sent",
                target=f"delivery:{delivery.id}",
                details={
                    "draft": draft.id,
                    "version": delivery.draft_version,
                    "content_hash": delivery.content_hash,
                    "destination": destination.name,
                    "message_ids": result.message_ids,
                    "attempts": delivery.attempts,
                    "edited": bool(job.edit_ids),
                },
            )
            await _settle(session, draft_id=draft.id)

        await self._commits.run(work)

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        exponential = min(
            self.config.backoff_cap, self.config.backoff_base * 2 ** max(attempts - 1, 0)
        )
        delay: float = exponential * self.rng.uniform(0.5, 1.0)
        return max(delay, float(retry_after or 0.0))

    async def _failed_attempt(self, delivery_id: int, error: PublishError) -> None:
        now = utcnow()
        async with self.db.transaction() as session:
            delivery = await session.get(
                Delivery, delivery_id, with_for_update=True, populate_existing=True
            )
            assert delivery is not None
            platform = Platform(delivery.destination.platform)
            outcome = error.outcome
            if outcome is Outcome.AMBIGUOUS and platform in IDEMPOTENT:
                outcome = Outcome.TRANSIENT  # the retry reuses the nonce
            delivery.claimed_by = ""
            delivery.lease_until = None
            delivery.updated_at = now
            delivery.last_error = error.message
            notify_person = False
            if outcome is Outcome.TRANSIENT and delivery.attempts < self.config.max_attempts:
                delivery.state = DeliveryState.RETRYING.value
                delivery.inflight_index = None
                delivery.next_attempt_at = now + timedelta(
                    seconds=self._backoff(delivery.attempts, error.retry_after)
                )
                # During a P1 a person hears of a public destination's first failure at once,
                # not only when the outbox gives up; a rate limit is expected, not a failure.
                notify_person = (
                    delivery.attempts == 1
                    and error.status != 429
                    and delivery.destination.is_public
                    and await _incident_severity(session, delivery) is Severity.P1
                )
            elif outcome is Outcome.AMBIGUOUS:
                delivery.uncertain_count += 1
                if self.settings.telegram_uncertain == TelegramUncertainPolicy.RESEND:
                    delivery.state = DeliveryState.RETRYING.value
                    delivery.inflight_index = None
                    delivery.next_attempt_at = now + timedelta(
                        seconds=self._backoff(delivery.attempts, error.retry_after)
                    )
                else:
                    delivery.state = DeliveryState.UNCERTAIN.value
                    delivery.last_error = (
                        f"{error.message} — the message may or may not have "
                        "been posted; check the chat, then resend or dismiss"
                    )
                notify_person = True
            else:
                delivery.state = DeliveryState.FAILED.value
                delivery.inflight_index = None
                if outcome is Outcome.TRANSIENT:
                    delivery.last_error = (
                        f"gave up after {delivery.attempts} attempts: {error.message}"
                    )
                notify_person = True
            await audit.record(
                session,
                actor=audit.SYSTEM_ACTOR,
                action="delivery.attempt_failed",
                target=f"delivery:{delivery.id}",
                details={
                    "attempt": delivery.attempts,
                    "outcome": error.outcome.value,
                    "status": error.status,
                    "error": error.message,
                    "state": delivery.state,
                },
            )
            if notify_person:
                await notify.delivery_problem(session, delivery=delivery, settings=self.settings)
            await _settle(session, draft_id=delivery.draft_id)

    # ------------------------------------------------------------------ notifications

    async def claim_notifications(self, *, limit: int) -> list[int]:
        """Due notifications, and those whose worker died while sending them (``sending`` keeps
        its lease in ``next_attempt_at``): an internal ping sent twice beats one never sent."""
        now = utcnow()
        claimable = Notification.state.in_(
            [NotificationState.PENDING.value, NotificationState.SENDING.value]
        )
        async with self.db.transaction() as session:
            query = (
                select(Notification.id)
                .where(claimable, Notification.next_attempt_at <= now)
                .order_by(Notification.id)
                .limit(limit)
            )
            if self.db.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list((await session.scalars(query)).all())
            if not ids:
                return []
            result = await session.execute(
                update(Notification)
                .where(Notification.id.in_(ids), claimable, Notification.next_attempt_at <= now)
                .values(
                    state=NotificationState.SENDING.value,
                    attempts=Notification.attempts + 1,
                    next_attempt_at=now + timedelta(seconds=self.config.lease_seconds),
                )
                .returning(Notification.id)
                .execution_options(synchronize_session=False)
            )
            return sorted(result.scalars().all())

    async def process_notification(self, note_id: int) -> None:
        async with self.db.transaction() as session:
            note = await session.get(Notification, note_id, populate_existing=True)
            assert note is not None
            destination = note.destination
            platform = Platform(destination.platform)
            target, text, ping = destination.target, note.text, note.ping_role or None
            usable = destination.can_receive and not destination.is_public
        publisher = self.publishers.get(platform)
        error: str | None = None
        message_id = ""
        retry = False
        if not usable:
            error = "destination is public, disabled or compromised"
        elif publisher is None:
            error = f"no {platform.value} publisher is configured"
        else:
            try:
                message_id = await publisher.notify(target, text, ping_role=ping)
            except PublishError as exc:
                error = exc.message
                retry = exc.outcome is Outcome.TRANSIENT
            except Exception as exc:
                log.exception("notification %s failed", note_id)
                error = f"unexpected {type(exc).__name__}"
        async with self.db.transaction() as session:
            note = await session.get(
                Notification, note_id, with_for_update=True, populate_existing=True
            )
            assert note is not None
            now = utcnow()
            if error is None:
                note.state = NotificationState.SENT.value
                note.sent_at = now
                note.platform_message_id = message_id
                note.last_error = ""
            elif retry and note.attempts < self.config.max_attempts:
                note.state = NotificationState.PENDING.value
                note.next_attempt_at = now + timedelta(seconds=self._backoff(note.attempts, None))
                note.last_error = error
            else:
                note.state = NotificationState.FAILED.value
                note.last_error = error


class _GroupCommit:
    """Group commit: units of work that arrive while a transaction is busy share the next one.

    Each caller resumes only once its unit is committed, so every write-before-send order holds
    exactly as with one transaction per unit; what is shared is the BEGIN/COMMIT and the
    session (a draft loaded by one unit is found by the next). With SQLite every statement is a
    thread round trip in aiosqlite, and one transaction per step per delivery made that the
    whole cost of a fan-out. A unit that raises rolls the batch back; the others are then run
    again, one transaction each, so only the failing one sees its error. A caller cancelled
    before its unit started drops the unit.

    ``urgent`` units (a message id the platform has just accepted) go first: until that id is
    committed, a crash would leave the message to be resent (Telegram) or flagged. Batches are
    kept small for the same reason: an urgent unit waits at most for the batch in progress.
    """

    def __init__(self, db: Database, *, limit: int = 16) -> None:
        self._db = db
        self._limit = limit
        self._urgent: list[tuple[Unit[Any], asyncio.Future[Any]]] = []
        self._queue: list[tuple[Unit[Any], asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def run(self, work: Unit[T], *, urgent: bool = False) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._queue).append((work, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    def _next_batch(self) -> list[tuple[Unit[Any], asyncio.Future[Any]]]:
        taken = self._urgent[: self._limit]
        del self._urgent[: len(taken)]
        room = self._limit - len(taken)
        taken += self._queue[:room]
        del self._queue[:room]
        return [(w, f) for w, f in taken if not f.done()]

    async def _drain(self) -> None:
        batch: list[tuple[Unit[Any], asyncio.Future[Any]]] = []
        try:
            while self._urgent or self._queue:
                batch = self._next_batch()
                if not batch:
                    continue
                try:
                    async with self._db.transaction() as session:
                        results = [await work(session) for work, _ in batch]
                except Exception as exc:
                    if len(batch) == 1:
                        _resolve(batch[0][1], error=exc)
                    else:
                        for work, future in batch:
                            await self._alone(work, future)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    _resolve(future, result=result)
        except BaseException:  # cancelled (shutdown): nobody may wait for ever
            for _, future in batch + self._urgent + self._queue:
                future.cancel()
            self._urgent.clear()
            self._queue.clear()
            raise

    async def _alone(self, work: Unit[Any], future: asyncio.Future[Any]) -> None:
        if future.done():
            return
        try:
            async with self._db.transaction() as session:
                result = await work(session)
        except Exception as exc:
            _resolve(future, error=exc)
        else:
            _resolve(future, result=result)


def _resolve(
    future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _PayloadCache:
    """Stored plans (of drafts and their versions), parsed, and their content hashes, by exact
    stored text.

    Every delivery of an N-destination fan-out re-checks the same draft and approved version;
    parsing and canonically hashing their plans (which hold all N renderings) each time made
    the gate O(N) per delivery. An entry is reused only for byte-identical stored text (SHA-256
    of what the database returned), so a changed row is always parsed and hashed afresh.
    Entries are shared: read them, never change them.
    """

    Entry = tuple[str, AnnouncementPlan | None, dict[str, Any]]

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, int, str], _PayloadCache.Entry] = OrderedDict()

    def get(self, row: tuple[str, int], stored: str | bytes) -> _PayloadCache.Entry:
        """(content hash, plan or None when unreadable, stored JSON) of ``row``'s plan."""
        text = stored.decode() if isinstance(stored, bytes) else stored
        key = (*row, hashlib.sha256(text.encode()).hexdigest())
        entry = self._entries.get(key)
        if entry is None:
            payload = json.loads(text)
            try:
                plan: AnnouncementPlan | None = AnnouncementPlan.from_json(payload)
            except PlanError:
                plan = None  # refused by the gate, with the reason
            entry = (content_hash(payload), plan, payload)
            self._entries[key] = entry
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        return entry


def _keep(session: AsyncSession, draft: Draft) -> None:
    """Hold ``draft`` for the rest of the transaction: the identity map is weak, and the other
    units of a group commit find it there instead of loading it again."""
    session.info.setdefault("worker_drafts", {})[draft.id] = draft


async def _settle(session: AsyncSession, *, draft_id: int) -> None:
    """``outbox.settle``, skipped while another delivery of the draft's version is on its way.

    ``settle`` changes nothing in that case, but finding it out loads the whole draft (its
    destinations and payload): once per delivery, that made a fan-out quadratic.
    """
    current = select(Draft.version).where(Draft.id == draft_id).scalar_subquery()
    busy = await session.scalar(
        select(
            exists().where(
                Delivery.draft_id == draft_id,
                Delivery.draft_version == current,
                Delivery.state.in_(ACTIVE),
            )
        )
    )
    if not busy:
        await outbox.settle(session, draft_id=draft_id)


def _plain(text: str) -> str:
    """A one-line summary without markup, for the Incident Log."""
    import re

    no_tags = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[*_~`|>#\\]", "", no_tags).strip()


async def _build_job(
    session: AsyncSession,
    *,
    delivery: Delivery,
    draft: Draft,
    plan: AnnouncementPlan,
    item: PlannedDelivery,
) -> SendJob:
    platform = item.platform
    earlier = await _incident_first_delivery(session, draft=draft, delivery=delivery)
    into_thread = reply_to = thread_name = lock_thread = None
    edit_ids: tuple[str, ...] = ()
    edit_channel = None
    if plan.correction_of:
        original = await session.scalar(
            select(Delivery)
            .where(
                Delivery.draft_id == plan.correction_of,
                Delivery.destination_id == delivery.destination_id,
                Delivery.state == DeliveryState.SENT.value,
            )
            .order_by(Delivery.id.desc())
            .limit(1)
        )
        if original is not None and original.platform_message_ids:
            edit_ids = tuple(original.platform_message_ids)
            thread = original.platform_thread_id
            # A follow-up posted into a thread lives there; a message that opened a thread
            # (same id) lives in the channel.
            if thread and thread not in edit_ids:
                edit_channel = thread
    if platform is Platform.DISCORD and item.thread_updates and not edit_ids:
        if earlier is not None and earlier.platform_thread_id:
            into_thread = earlier.platform_thread_id
        else:
            thread_name = f"{plan.incident} updates"[:100]
        if item.lock_thread:
            lock_thread = into_thread or ""  # "" = the thread this delivery opens
    if (
        platform is Platform.TELEGRAM
        and earlier is not None
        and earlier.platform_message_ids
        and not edit_ids
    ):
        reply_to = earlier.platform_message_ids[0]
    return SendJob(
        delivery_id=delivery.id,
        platform=platform,
        target=item.destination.target,
        messages=item.messages,
        nonce=delivery.idempotency_key,
        start_index=len(delivery.platform_message_ids),
        sent_ids=tuple(delivery.platform_message_ids),
        silent=item.silent,
        pin=item.pin,
        crosspost=item.crosspost,
        mention_everyone=item.mentions_everyone,
        link_previews=plan.link_previews,
        thread_name=thread_name,
        into_thread=into_thread,
        reply_to=reply_to,
        lock_thread=lock_thread,
        edit_ids=edit_ids,
        edit_channel=edit_channel,
    )


async def _incident_severity(session: AsyncSession, delivery: Delivery) -> Severity:
    found = await session.execute(
        select(Incident.severity)
        .join(Draft, Draft.incident_id == Incident.id)
        .where(Draft.id == delivery.draft_id)
    )
    return Severity(found.scalar_one())


async def _incident_first_delivery(
    session: AsyncSession, *, draft: Draft, delivery: Delivery
) -> Delivery | None:
    """The first announcement of this incident already sent to this destination, if any."""
    return await session.scalar(
        select(Delivery)
        .join(Draft, Draft.id == Delivery.draft_id)
        .where(
            Draft.incident_id == draft.incident_id,
            Delivery.destination_id == delivery.destination_id,
            Delivery.draft_id != draft.id,
            Delivery.state == DeliveryState.SENT.value,
        )
        .order_by(Delivery.id)
        .limit(1)
    )
