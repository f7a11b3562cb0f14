"""Deliveries as a queue on the job runner: claim due deliveries, check the gate again, send,
record.

Crash safety comes from the order of writes:

1. claim: ``pending|retrying`` → ``sending`` with a lease and ``attempts + 1`` (committed);
2. pre-send check, under a share lock on the draft: the frozen version still hashes to the
   approved hash, the draft still holds that hash, the quorum still counts
   (``comms.drafts.gate.may_send``); on Discord ``inflight_index`` marks the message about
   to go out (committed); on Telegram it is marked just before the request leaves, once the
   rate limits have let it go (``Publisher.send``'s ``on_wire``), so the deliveries waiting
   their turn are never in doubt;
3. each accepted message's id is committed at once (``inflight_index`` moves on);
4. done: ``sent`` with the ids (committed); the Incident Log entry and the audit event follow
   in batches (``record_sent``).

Every write after the claim is fenced by the lease (``comms.jobs.leases``): a worker whose
lease ran out writes nothing, and stops sending. A worker killed anywhere leaves ``sending``
with an expired lease; ``recover`` then resumes it: Discord from the first unrecorded message
with the same nonces (Discord deduplicates), Telegram the same when nothing was in flight,
otherwise ``uncertain`` for a person to decide (Telegram has no idempotency key), unless
``COMMS_TELEGRAM_UNCERTAIN=resend``.

Order per destination: a newer delivery waits while an older one to the same destination is in
progress, scheduled, failed, uncertain or held, until it is sent or a person dismisses it, so an
update never overtakes (or lands in the thread of) an announcement still to come.

A 401 from a platform pauses that platform (``PlatformPause``): its deliveries wait instead of
failing one by one, the Communication Manager is told once, and a scheduled check resumes them
when the token works again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import zip_longest
from typing import Any

from sqlalchemy import ColumnElement, Text, and_, cast, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, defer, joinedload, raiseload
from sqlalchemy.orm.attributes import set_committed_value

from comms.audit import service as audit
from comms.clock import utcnow
from comms.destinations.models import Destination
from comms.drafts import gate
from comms.drafts import service as drafts
from comms.drafts.models import Approval, Draft, DraftStatus, DraftVersion
from comms.drafts.payload import content_hash
from comms.drafts.plan import AnnouncementPlan, PlanError, PlannedDelivery
from comms.enums import Platform, Severity
from comms.incidents import cadence
from comms.incidents import service as incidents
from comms.incidents.models import Incident, LogKind
from comms.jobs.leases import Lease, LeasedTable
from comms.jobs.runner import Work
from comms.jobs.scheduled import JobRun, RetryLater, schedule
from comms.outbox import notify
from comms.outbox import service as outbox
from comms.outbox.models import Delivery, DeliveryState, PlatformPause
from comms.outbox.ports import Outcome, Publisher, PublishError, SendJob, SendResult
from comms.outbox.senders import SenderRoles
from comms.settings import Settings, TelegramUncertainPolicy
from comms.users.models import User

log = logging.getLogger("comms.worker")

CLAIMABLE = (DeliveryState.PENDING, DeliveryState.RETRYING)
ACTIVE = (*CLAIMABLE, DeliveryState.SENDING)
DELIVERIES = LeasedTable(Delivery, claimable=CLAIMABLE, held=DeliveryState.SENDING)
# An older delivery in one of these states holds back newer ones to the same destination.
HOLDS_BACK = (
    DeliveryState.PENDING,
    DeliveryState.RETRYING,
    DeliveryState.SENDING,
    DeliveryState.FAILED,
    DeliveryState.UNCERTAIN,
    DeliveryState.HELD,
)
PLATFORM_CHECK = "platform.check"
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


@dataclass(frozen=True)
class _Earlier:
    """The incident's first announcement already sent to a destination (follow-ups thread
    after it)."""

    message_ids: tuple[str, ...]
    thread_id: str


class LeaseLost(Exception):
    """Raised from the progress callback: stop sending, someone else owns the delivery now."""


def held_back(now: datetime) -> ColumnElement[bool]:
    """An older delivery to the same destination is still to be sent, or needs a person."""
    older = aliased(Delivery)
    return exists().where(
        and_(
            older.destination_id == Delivery.destination_id,
            older.id < Delivery.id,
            older.state.in_(HOLDS_BACK),
        )
    )


async def paused_platforms(session: AsyncSession) -> set[str]:
    return set((await session.scalars(select(PlatformPause.platform))).all())


class DeliveryQueue:
    """The outbox's deliveries, sent by the publishers registered per platform."""

    name = "deliveries"
    table = DELIVERIES

    def __init__(
        self, *, settings: Settings, publishers: Mapping[Platform, Publisher], batch: int = 64
    ) -> None:
        self.settings = settings
        self.publishers = dict(publishers)
        self.batch = batch
        self.plans = _PlanCache()
        # Per delivery in hand: the row as claimed (with its destination), and the incident's
        # first announcement already sent to that destination.
        self._claimed: dict[int, Delivery] = {}
        self._earlier: dict[int, _Earlier] = {}
        self.senders = SenderRoles(self.publishers)

    # ------------------------------------------------------------------ claiming

    async def claim(self, work: Work, session: AsyncSession, *, limit: int) -> list[Lease]:
        """Take up to ``limit`` due deliveries, oldest first, platforms taking turns.

        Platforms take turns (oldest first within each), and the leases come back in that
        order, which is the order they are prepared and sent in: the platforms' rate limits are
        independent, and taking ids oldest first overall made a fan-out finish its first
        platform's deliveries before the next platform's began. A paused platform is skipped.
        """
        await self.record_sent(work, session)
        now = utcnow()
        senders = await self.senders.hold(work, session, now=now)
        paused = await paused_platforms(session)
        query = (
            select(Delivery.id)
            .join(Destination, Destination.id == Delivery.destination_id)
            .where(
                Delivery.state.in_(CLAIMABLE),
                Delivery.next_attempt_at <= now,
                ~held_back(now),
            )
            .order_by(Delivery.id)
            .limit(limit)
        )
        if work.postgres:
            query = query.with_for_update(skip_locked=True, of=Delivery)
        queues = [
            list((await session.scalars(query.where(Destination.platform == p.value))).all())
            for p in Platform
            if p.value in senders and p.value not in paused
        ]
        ids = [i for turn in zip_longest(*queues) for i in turn if i is not None][:limit]
        leases = await DELIVERIES.take(
            session,
            ids=ids,
            worker_id=work.worker_id,
            now=now,
            lease_seconds=work.config.lease_seconds,
        )
        if leases:
            # Their drafts are now publishing: once per claim, not once per delivery (the
            # draft row would otherwise be written by every delivery of a fan-out).
            # A draft an edit holds is skipped, not waited for: the edit may be waiting for
            # these very deliveries (to cancel them), and the gate refuses them anyway once
            # the edit has made a new version.
            started = select(Draft.id).where(
                Draft.id.in_(
                    select(Delivery.draft_id).where(Delivery.id.in_([lease.id for lease in leases]))
                ),
                Draft.status == DraftStatus.APPROVED,
            )
            if work.postgres:
                started = started.with_for_update(skip_locked=True)
            draft_ids = list((await session.scalars(started)).all())
            if draft_ids:
                await session.execute(
                    update(Draft)
                    .where(Draft.id.in_(draft_ids), Draft.status == DraftStatus.APPROVED)
                    .values(status=DraftStatus.PUBLISHING)
                    .execution_options(synchronize_session=False)
                )
            await self._read_claimed(session, [lease.id for lease in leases])
        return leases

    async def keep(self, work: Work, session: AsyncSession) -> None:
        """Renew the sender roles while this worker is too busy to claim."""
        await self.senders.hold(work, session, now=utcnow())

    async def release(self, work: Work) -> None:
        """Stopping: hand the sender roles over now rather than when their lease runs out."""
        await self.senders.release(work)

    async def _read_claimed(self, session: AsyncSession, ids: list[int]) -> None:
        """Read the claimed rows with their destinations, and each one's earlier announcement
        to its destination, in two queries for the whole claim instead of two per delivery.

        Exact at the claim: a newer delivery is claimable only once every older one to its
        destination is done, so no earlier announcement can be sent between now and its turn.
        """
        rows = (
            (
                await session.scalars(
                    select(Delivery)
                    .where(Delivery.id.in_(ids))
                    .options(joinedload(Delivery.destination, innerjoin=True))
                )
            )
            .unique()
            .all()
        )
        incident_of = dict(
            (
                await session.execute(
                    select(Draft.id, Draft.incident_id).where(
                        Draft.id.in_({row.draft_id for row in rows})
                    )
                )
            ).all()
        )
        sent = (
            await session.execute(
                select(
                    Draft.incident_id,
                    Delivery.destination_id,
                    Delivery.draft_id,
                    Delivery.platform_message_ids,
                    Delivery.platform_thread_id,
                )
                .join(Draft, Draft.id == Delivery.draft_id)
                .where(
                    Draft.incident_id.in_(set(incident_of.values())),
                    Delivery.destination_id.in_({row.destination_id for row in rows}),
                    Delivery.state == DeliveryState.SENT,
                )
                .order_by(Delivery.id)
            )
        ).all()
        for row in rows:
            self._claimed[row.id] = row
            incident = incident_of[row.draft_id]
            first = next(
                (
                    s
                    for s in sent
                    if s[0] == incident and s[1] == row.destination_id and s[2] != row.draft_id
                ),
                None,
            )
            if first is not None:
                self._earlier[row.id] = _Earlier(
                    message_ids=tuple(first[3] or ()), thread_id=first[4] or ""
                )

    async def next_due(
        self, work: Work, session: AsyncSession, *, now: datetime
    ) -> datetime | None:
        if await session.scalar(
            select(Delivery.id)
            .where(Delivery.state == DeliveryState.SENT, Delivery.recorded_at.is_(None))
            .limit(1)
        ):
            return now  # sent, still to be recorded
        paused = await paused_platforms(session)
        # A platform another live worker sends for is that worker's business.
        platforms = await self.senders.may_send(work, session, now=now) - paused
        waiting = await session.scalar(
            select(func.min(Delivery.next_attempt_at))
            .join(Destination, Destination.id == Delivery.destination_id)
            .where(
                Delivery.state.in_(CLAIMABLE),
                ~held_back(now),
                Destination.platform.in_(platforms),
            )
        )
        sending = await session.scalar(
            select(func.min(Delivery.lease_until)).where(Delivery.state == DeliveryState.SENDING)
        )
        found = [t for t in (waiting, sending) if t is not None]
        return min(found) if found else None

    async def recover(self, work: Work) -> int:
        """Resume deliveries whose worker died mid-send (their lease ran out)."""
        now = utcnow()
        async with work.db.transaction() as session:
            stale = list(
                (
                    await session.scalars(
                        DELIVERIES.lock_expired(
                            now=now, worker_id=work.worker_id, alive=work.alive(self.name)
                        )
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
                    delivery.state = DeliveryState.RETRYING
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
                    delivery.state = DeliveryState.RETRYING if resend else DeliveryState.UNCERTAIN
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
                    await _delivery_problem(session, delivery, self.settings)
                await audit.record(
                    session,
                    actor=audit.SYSTEM_ACTOR,
                    action=action,
                    target=f"delivery:{delivery.id}",
                    details={"worker": previous, "error": delivery.last_error},
                )
                if delivery.state == DeliveryState.UNCERTAIN:
                    await _settle(session, draft_id=delivery.draft_id)
        return len(stale)

    # ------------------------------------------------------------------ one delivery

    async def process(self, work: Work, lease: Lease) -> None:
        try:
            await self._process(work, lease)
        finally:
            self._claimed.pop(lease.id, None)
            self._earlier.pop(lease.id, None)

    async def _process(self, work: Work, lease: Lease) -> None:
        try:
            job = await self._prepare(work, lease)
        except Exception as exc:  # nothing was sent: give it back for a later attempt
            log.exception("delivery %s: check before sending failed", lease.id)
            await self._failed_attempt(
                work,
                lease,
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
                work,
                lease,
                PublishError(
                    f"no {job.platform.value} publisher is configured "
                    f"(set COMMS_{job.platform.value.upper()}_TOKEN)",
                    outcome=Outcome.PERMANENT,
                ),
            )
            return

        async def progress(message_ids: list[str], *, last: bool = False) -> None:
            if not last:  # the last ids are recorded with the result, in one write
                await self._record_progress(work, lease, job, message_ids)

        async def on_wire(index: int) -> None:
            await self._mark_inflight(work, lease, index)

        try:
            result = await publisher.send(job, progress, on_wire)
        except LeaseLost:
            log.warning("delivery %s: lease lost mid-send; stopped", lease.id)
            return
        except PublishError as error:
            await self._failed_attempt(work, lease, error)
            return
        except Exception as exc:  # a bug mid-send: the outcome is unknown
            log.exception("delivery %s: unexpected error while sending", lease.id)
            await self._failed_attempt(
                work,
                lease,
                PublishError(
                    f"unexpected {type(exc).__name__} while sending", outcome=Outcome.AMBIGUOUS
                ),
            )
            return
        await self._complete(work, lease, job, result)

    async def _prepare(self, work: Work, lease: Lease) -> SendJob | None:
        """Re-check the gate (draft share-locked against edits) and build the exact job.

        The delivery and its destination come as the claim read them (a few milliseconds
        before); the one write here, marking the message about to go out, is fenced by the
        lease, so a worker that lost the lease sends nothing. A delivery that must not go
        (refused, skipped, held) is loaded under its row lock and settled the usual way.
        """
        now = utcnow()
        claimed = self._claimed.get(lease.id)

        async def unit(session: AsyncSession) -> SendJob | None:
            delivery = claimed or await self._attached(session, work, lease)
            if delivery is None:
                return None  # lost the lease, or claimed again since
            draft, version, stored_hash, plan = await self._gate_read(
                session, delivery.draft_id, delivery.draft_version
            )
            destination = delivery.destination
            problem = gate.may_send(
                delivery, draft, version, stored_hash, plan, settings=self.settings, now=now
            )
            item = plan.delivery_to(destination.id) if plan else None
            conflicts = (
                gate.destination_conflicts(item, destination, draft.options, after_approval=True)
                if item
                else []
            )
            if problem is not None or destination.compromised or conflicts:
                await self._set_aside(session, work, lease, draft, problem, conflicts)
                return None
            assert plan is not None
            assert item is not None
            job = _build_job(
                delivery=delivery,
                plan=plan,
                item=item,
                earlier=self._earlier.get(lease.id),
                original=await _original_of(session, delivery, plan),
            )
            if len(job.messages) < len(job.edit_ids):
                # Editing would leave the original's last messages showing what the
                # correction replaces: not what was approved.
                await self._set_aside(
                    session,
                    work,
                    lease,
                    draft,
                    f"this correction is {len(job.messages)} message(s) here but the original "
                    f"was {len(job.edit_ids)}: editing would leave old text showing; "
                    "publish it as a new announcement instead",
                    [],
                )
                return None
            if job.platform not in IDEMPOTENT:
                return job  # marked in flight when the request leaves (``_mark_inflight``)
            marked = await DELIVERIES.write(
                session,
                lease,
                work.worker_id,
                inflight_index=job.start_index if job.start_index < len(job.messages) else None,
                updated_at=now,
            )
            if not marked:
                return None  # lost the lease since the claim
            return job

        return await work.commits.run(unit)

    async def _attached(self, session: AsyncSession, work: Work, lease: Lease) -> Delivery | None:
        """The delivery under its row lock in this session, if this worker still holds it."""
        delivery = await session.get(
            Delivery,
            lease.id,
            with_for_update={"of": Delivery},
            populate_existing=True,
            options=[joinedload(Delivery.destination, innerjoin=True)],
        )
        return delivery if DELIVERIES.holds(delivery, lease, work.worker_id) else None

    async def _set_aside(
        self,
        session: AsyncSession,
        work: Work,
        lease: Lease,
        draft: Draft,
        problem: str | None,
        conflicts: list[str],
    ) -> None:
        """A claimed delivery that must not go out: refused by the gate, skipped (destination
        compromised) or held (destination stricter than approved)."""
        delivery = await self._attached(session, work, lease)
        if delivery is None:
            return
        destination = delivery.destination
        if problem is not None:
            await self._refuse(session, delivery, problem)
        elif destination.compromised:
            reason = "destination marked compromised: " + destination.compromised_reason
            delivery.state = DeliveryState.SKIPPED
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
        else:
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

    async def _gate_read(
        self, session: AsyncSession, draft_id: int, version_number: int
    ) -> tuple[Draft, DraftVersion | None, str, AnnouncementPlan | None]:
        """The draft (share-locked, with fresh approvals and approvers' roles), the approved
        version, its stored hash and its plan: what the gate checks before each delivery.

        Read once per transaction and draft version: the deliveries of a fan-out prepared in one
        group commit share the read (and the lock), as they share the moment of the check.
        """
        memo: dict[tuple[int, int], Any] = _transaction_memo(session, "gate_reads")
        key = (draft_id, version_number)
        if key in memo:
            return memo[key]  # type: ignore[no-any-return]
        # The approvals and the incident come fresh with the row (populate_existing runs the
        # eager loaders again); the plan is read through the cache.
        found = (
            (
                await session.execute(
                    select(Draft, cast(Draft.payload, Text))
                    .where(Draft.id == draft_id)
                    .options(*GATE_DRAFT, defer(Draft.payload, raiseload=True))
                    # Shared: deliveries of one fan-out check at the same time; an edit (which
                    # locks the draft exclusively) waits for them, and they for it.
                    .with_for_update(read=True, of=Draft)
                    .execution_options(populate_existing=True)
                )
            )
            .unique()
            .first()
        )
        assert found is not None
        draft = found[0]
        _, _, draft_payload = self.plans.get(("draft", draft.id), found[1])
        set_committed_value(draft, "payload", draft_payload)  # as loaded: no history
        _keep(session, draft)
        row = (
            await session.execute(
                select(DraftVersion, cast(DraftVersion.payload, Text))
                .where(DraftVersion.draft_id == draft.id, DraftVersion.version == version_number)
                .options(
                    raiseload(DraftVersion.editor),
                    defer(DraftVersion.payload, raiseload=True),  # read through the cache
                    defer(DraftVersion.variables, raiseload=True),
                )
            )
        ).first()
        if row is None:
            memo[key] = (draft, None, "", None)
        else:
            stored_hash, plan, _ = self.plans.get(("version", row[0].id), row[1])
            memo[key] = (draft, row[0], stored_hash, plan)
        return memo[key]  # type: ignore[no-any-return]

    async def _refuse(self, session: AsyncSession, delivery: Delivery, problem: str) -> None:
        delivery.state = DeliveryState.FAILED
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
        await _delivery_problem(session, delivery, self.settings)
        await _settle(session, draft_id=delivery.draft_id)

    async def _record_progress(
        self, work: Work, lease: Lease, job: SendJob, message_ids: list[str]
    ) -> None:
        more = len(message_ids) < len(job.messages)
        # Discord: the next message is on its way (its nonce makes a retry safe either way);
        # Telegram: nothing is in flight until ``_mark_inflight`` says the next one leaves.
        inflight = len(message_ids) if more and job.platform in IDEMPOTENT else None

        async def unit(session: AsyncSession) -> bool:
            return await DELIVERIES.write(
                session,
                lease,
                work.worker_id,
                platform_message_ids=list(message_ids),
                inflight_index=inflight,
                updated_at=utcnow(),
            )

        if not await work.commits.run(unit, urgent=True):
            raise LeaseLost(f"delivery {lease.id}")

    async def _mark_inflight(self, work: Work, lease: Lease, index: int) -> None:
        """Message ``index`` is leaving now (the platform's limits have let it go): from here
        until its id is recorded, a crash leaves it in doubt. Fenced, so a worker that lost the
        lease while it waited its turn sends nothing."""

        async def unit(session: AsyncSession) -> bool:
            return await DELIVERIES.write(
                session, lease, work.worker_id, inflight_index=index, updated_at=utcnow()
            )

        if not await work.commits.run(unit, urgent=True):
            raise LeaseLost(f"delivery {lease.id}")

    async def _complete(self, work: Work, lease: Lease, job: SendJob, result: SendResult) -> None:
        """Record the result in one fenced write; the Incident Log entry, the audit event and
        the draft's status follow in batches (``record_sent``), off the sending path."""
        now = utcnow()

        async def unit(session: AsyncSession) -> None:
            recorded = await DELIVERIES.write(
                session,
                lease,
                work.worker_id,
                state=DeliveryState.SENT,
                sent_at=now,
                platform_message_ids=list(result.message_ids),
                # The thread this delivery opened, or the one its follow-ups went into.
                platform_thread_id=result.thread_id or job.into_thread or "",
                inflight_index=None,
                claimed_by="",
                lease_until=None,
                edited=bool(job.edit_ids),
                last_error="; ".join(result.notes),
                updated_at=now,
            )
            if not recorded:
                log.warning("delivery %s: sent, but its lease was lost; not recorded", lease.id)

        await work.commits.run(unit)

    async def record_sent(self, work: Work, session: AsyncSession, *, limit: int = 256) -> int:
        """Write the Incident Log entries and audit events of sent deliveries, and settle their
        drafts, in one transaction for many deliveries.

        Sending commits only the delivery's own row (one UPDATE); doing the rest there too made
        every delivery a transaction of several statements, one at a time as the platforms'
        rate limits release them. Crash-safe: a sent delivery is recorded exactly once, by
        whichever worker gets to it (``recorded_at``), within about one poll interval.
        """
        pending = (
            select(Delivery.id)
            .where(Delivery.state == DeliveryState.SENT, Delivery.recorded_at.is_(None))
            .order_by(Delivery.id)
            .limit(limit)
        )
        if work.postgres:
            pending = pending.with_for_update(skip_locked=True)
        ids = list((await session.scalars(pending)).all())
        if not ids:
            return 0
        now = utcnow()
        returned = (
            await session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids), Delivery.recorded_at.is_(None))
                .values(recorded_at=now)
                .returning(
                    Delivery.id,
                    Delivery.draft_id,
                    Delivery.draft_version,
                    Delivery.destination_id,
                    Delivery.content_hash,
                    Delivery.platform_message_ids,
                    Delivery.attempts,
                    Delivery.edited,
                    Delivery.sent_at,
                )
                .execution_options(synchronize_session=False)
            )
        ).all()
        rows = sorted(returned, key=lambda row: row.id)
        places = {
            d.id: d
            for d in (
                await session.scalars(
                    select(Destination).where(
                        Destination.id.in_({row.destination_id for row in rows})
                    )
                )
            ).all()
        }
        drafts_ = {
            row.id: row
            for row in (
                await session.execute(
                    select(Draft.id, Draft.incident_id, Draft.template).where(
                        Draft.id.in_({row.draft_id for row in rows})
                    )
                )
            ).all()
        }
        first_lines: dict[tuple[int, int, int], str] = {}
        for key in {(row.draft_id, row.draft_version) for row in rows}:
            found = (
                await session.execute(
                    select(DraftVersion.id, cast(DraftVersion.payload, Text)).where(
                        DraftVersion.draft_id == key[0], DraftVersion.version == key[1]
                    )
                )
            ).first()
            plan = self.plans.get(("version", found[0]), found[1])[1] if found else None
            for item in plan.deliveries if plan else ():
                text = item.messages[0].strip().splitlines()[0] if item.messages else ""
                first_lines[(*key, item.destination.id)] = _plain(text)[:140]
        latest: dict[int, datetime] = {}
        earliest: dict[int, datetime] = {}
        for row in rows:
            place, draft = places[row.destination_id], drafts_[row.draft_id]
            if place.is_public and row.sent_at is not None:
                latest[draft.incident_id] = max(
                    row.sent_at, latest.get(draft.incident_id, row.sent_at)
                )
                earliest[draft.incident_id] = min(
                    row.sent_at, earliest.get(draft.incident_id, row.sent_at)
                )
            incidents.add_entry_row(
                session,
                incident_id=draft.incident_id,
                kind=LogKind.COMMS,
                actor=None,
                channel=f"{place.platform} {place.name}",
                text=(
                    f"Communications {'edited' if row.edited else 'sent'}: draft "
                    f"#{row.draft_id} v{row.draft_version} ({draft.template}), "
                    f"{len(row.platform_message_ids)} message(s): "
                    f"{first_lines.get((row.draft_id, row.draft_version, place.id), '')}"
                ),
            )
            await audit.record(
                session,
                actor=audit.SYSTEM_ACTOR,
                action="delivery.sent",
                target=f"delivery:{row.id}",
                details={
                    "draft": row.draft_id,
                    "version": row.draft_version,
                    "content_hash": row.content_hash,
                    "destination": place.name,
                    "message_ids": list(row.platform_message_ids),
                    "attempts": row.attempts,
                    "edited": row.edited,
                    "sent_at": row.sent_at.isoformat() if row.sent_at else None,
                },
            )
        for incident_id, moment in latest.items():
            await session.execute(
                update(Incident)
                .where(
                    Incident.id == incident_id,
                    (Incident.last_public_update_at.is_(None))
                    | (Incident.last_public_update_at < moment),
                )
                .values(last_public_update_at=moment)
                .execution_options(synchronize_session=False)
            )
            # The next public update is due later now (or when this one promised).
            await cadence.plan_soon(
                session, incident_id=incident_id, key=f"sent:{moment:%Y%m%dT%H%M%S%f}", at=now
            )
        for incident_id, moment in earliest.items():  # time to first public announcement
            await session.execute(
                update(Incident)
                .where(Incident.id == incident_id, Incident.first_public_update_at.is_(None))
                .values(first_public_update_at=moment)
                .execution_options(synchronize_session=False)
            )
        for draft_id in sorted({row.draft_id for row in rows}):
            await _settle(session, draft_id=draft_id)
        return len(rows)

    async def _failed_attempt(self, work: Work, lease: Lease, error: PublishError) -> None:
        now = utcnow()
        async with work.db.transaction() as session:
            delivery = await session.get(
                Delivery, lease.id, with_for_update=True, populate_existing=True
            )
            if not DELIVERIES.holds(delivery, lease, work.worker_id):
                log.warning("delivery %s: %s, but its lease was lost", lease.id, error.message)
                return
            assert delivery is not None
            platform = Platform(delivery.destination.platform)
            outcome = error.outcome
            if outcome is Outcome.AMBIGUOUS and platform in IDEMPOTENT:
                outcome = Outcome.TRANSIENT  # the retry reuses the nonce
            delivery.claimed_by = ""
            delivery.lease_until = None
            delivery.updated_at = now
            delivery.last_error = error.message
            if error.status == 401:
                # The token was refused: the request was not applied. Wait with every other
                # delivery to this platform until the token works again, not fail each in turn.
                delivery.state = DeliveryState.RETRYING
                delivery.inflight_index = None
                delivery.next_attempt_at = now
                delivery.last_error = (
                    f"waiting: {platform.value} refused the bot token ({error.message}); "
                    "resumes when the token works again"
                )
                await self._pause(session, platform, error)
                return
            notify_person = False
            if outcome is Outcome.TRANSIENT and delivery.attempts < work.config.max_attempts:
                delivery.state = DeliveryState.RETRYING
                delivery.inflight_index = None
                delivery.next_attempt_at = now + timedelta(
                    seconds=work.backoff(delivery.attempts, error.retry_after)
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
                    delivery.state = DeliveryState.RETRYING
                    delivery.inflight_index = None
                    delivery.next_attempt_at = now + timedelta(
                        seconds=work.backoff(delivery.attempts, error.retry_after)
                    )
                else:
                    delivery.state = DeliveryState.UNCERTAIN
                    delivery.last_error = (
                        f"{error.message} — the message may or may not have "
                        "been posted; check the chat, then resend or dismiss"
                    )
                notify_person = True
            else:
                delivery.state = DeliveryState.FAILED
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
                await _delivery_problem(session, delivery, self.settings)
            await _settle(session, draft_id=delivery.draft_id)

    async def _pause(self, session: AsyncSession, platform: Platform, error: PublishError) -> None:
        """The platform refused the token: hold all its deliveries, tell a person once, and
        check the token until it works."""
        if await session.get(PlatformPause, platform.value) is not None:
            return
        now = utcnow()
        session.add(PlatformPause(platform=platform.value, since=now, reason=error.message[:2000]))
        await session.flush()
        key = now.strftime("%Y%m%dT%H%M%S%f")
        await schedule(
            session,
            kind=PLATFORM_CHECK,
            due_at=now + timedelta(seconds=5),
            payload={"platform": platform.value},
            dedup_key=f"{PLATFORM_CHECK}:{platform.value}:{key}",
        )
        await audit.record(
            session,
            actor=audit.SYSTEM_ACTOR,
            action="platform.paused",
            target=f"platform:{platform.value}",
            details={"reason": error.message[:500]},
        )
        await notify.platform_status(
            session,
            settings=self.settings,
            platform=platform.value,
            event="paused",
            reason=error.message,
            key=key,
        )


class PlatformCheck:
    """The scheduled job that finds out whether a paused platform's token works again; when it
    does, the platform resumes (its deliveries are claimed again) and the Communication Manager
    is told. Until then it checks again, backing off to every five minutes."""

    def __init__(self, *, settings: Settings, publishers: Mapping[Platform, Publisher]) -> None:
        self.settings = settings
        self.publishers = publishers

    async def __call__(self, run: JobRun) -> None:
        platform = Platform(run.payload["platform"])
        async with run.work.db.transaction() as session:
            if await session.get(PlatformPause, platform.value) is None:
                return  # resumed already
        publisher = self.publishers.get(platform)
        delay = timedelta(seconds=min(300.0, 5.0 * 2 ** max(run.attempt - 1, 0)))
        if publisher is None:
            raise RetryLater(utcnow() + delay, f"no {platform.value} publisher is configured")
        try:
            await publisher.check()
        except PublishError as error:
            raise RetryLater(utcnow() + delay, f"still refused: {error.message}") from None
        async with run.work.db.transaction() as session:
            pause = await session.get(PlatformPause, platform.value, with_for_update=True)
            if pause is None:
                return
            since = pause.since
            await session.delete(pause)
            await audit.record(
                session,
                actor=audit.SYSTEM_ACTOR,
                action="platform.resumed",
                target=f"platform:{platform.value}",
                details={"paused_since": since.isoformat()},
            )
            await notify.platform_status(
                session,
                settings=self.settings,
                platform=platform.value,
                event="resumed",
                reason=f"paused since {since:%H:%M} UTC",
                key=since.strftime("%Y%m%dT%H%M%S%f"),
            )


class _PlanCache:
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
        self._entries: OrderedDict[tuple[str, int, str], _PlanCache.Entry] = OrderedDict()

    def get(self, row: tuple[str, int], stored: str | bytes) -> _PlanCache.Entry:
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


def _transaction_memo(session: AsyncSession, name: str) -> dict[Any, Any]:
    """A dict that lives as long as the session's current transaction (then starts empty)."""
    transaction = session.sync_session.get_transaction()
    held = session.info.get(("memo", name))
    if held is None or held[0] is not transaction:
        held = (transaction, {})
        session.info[("memo", name)] = held
    memo: dict[Any, Any] = held[1]
    return memo


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


async def _delivery_problem(session: AsyncSession, delivery: Delivery, settings: Settings) -> None:
    """Tell the Communication Manager that ``delivery`` needs a person."""
    draft = await session.get(Draft, delivery.draft_id)
    if draft is not None:
        await notify.delivery_problem(session, delivery=delivery, draft=draft, settings=settings)


def _plain(text: str) -> str:
    """A one-line summary without markup, for the Incident Log."""

    no_tags = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[*_~`|>#\\]", "", no_tags).strip()


def _build_job(
    *,
    delivery: Delivery,
    plan: AnnouncementPlan,
    item: PlannedDelivery,
    earlier: _Earlier | None,
    original: Delivery | None,
) -> SendJob:
    """The exact job for one delivery: threaded after the incident's first announcement to
    this destination (``earlier``), or, for a correction, editing what its ``original`` sent."""
    platform = item.platform
    into_thread = reply_to = thread_name = lock_thread = None
    edit_ids: tuple[str, ...] = ()
    edit_channel = None
    if original is not None and original.platform_message_ids:
        edit_ids = tuple(original.platform_message_ids)
        thread = original.platform_thread_id
        # A follow-up posted into a thread lives there; a message that opened a thread (same
        # id) lives in the channel.
        if thread and thread not in edit_ids:
            edit_channel = thread
    if platform is Platform.DISCORD and item.thread_updates and not edit_ids:
        if earlier is not None and earlier.thread_id:
            into_thread = earlier.thread_id
        else:
            thread_name = f"{plan.incident} updates"[:100]
        if item.lock_thread:
            lock_thread = into_thread or ""  # "" = the thread this delivery opens
    if (
        platform is Platform.TELEGRAM
        and earlier is not None
        and earlier.message_ids
        and not edit_ids
    ):
        reply_to = earlier.message_ids[0]
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


async def _original_of(
    session: AsyncSession, delivery: Delivery, plan: AnnouncementPlan
) -> Delivery | None:
    """What the announcement a correction corrects sent to this destination, if anything."""
    if not plan.correction_of:
        return None
    found: Delivery | None = await session.scalar(
        select(Delivery)
        .where(
            Delivery.draft_id == plan.correction_of,
            Delivery.destination_id == delivery.destination_id,
            Delivery.state == DeliveryState.SENT,
        )
        .order_by(Delivery.id.desc())
        .limit(1)
    )
    return found


async def _incident_severity(session: AsyncSession, delivery: Delivery) -> Severity:
    found = await session.execute(
        select(Incident.severity)
        .join(Draft, Draft.incident_id == Incident.id)
        .where(Draft.id == delivery.draft_id)
    )
    return Severity(found.scalar_one())
