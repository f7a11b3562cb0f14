"""Deliveries as a queue on the job runner: claim due deliveries, check the gate again, send,
record.

Crash safety comes from the order of writes:

1. claim: ``pending|retrying`` → ``sending`` with a lease and ``attempts + 1`` (committed);
2. pre-send check, under a share lock on the draft: the frozen version still hashes to the
   approved hash, the draft still holds that hash, the quorum still counts
   (``comms.drafts.gate.may_send``); ``inflight_index`` marks the message about to go out
   (committed);
3. each accepted message's id is committed at once (``inflight_index`` moves on);
4. done: ``sent`` with the ids, an Incident Log entry and an audit event (committed).

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
from comms.incidents import service as incidents
from comms.incidents.models import Incident, LogKind
from comms.jobs.leases import Lease, LeasedTable
from comms.jobs.runner import Work
from comms.jobs.scheduled import JobRun, RetryLater, schedule
from comms.outbox import notify
from comms.outbox import service as outbox
from comms.outbox.models import Delivery, DeliveryState, PlatformPause
from comms.outbox.ports import Outcome, Publisher, PublishError, SendJob, SendResult
from comms.settings import Settings, TelegramUncertainPolicy
from comms.users.models import User

log = logging.getLogger("comms.worker")

CLAIMABLE = (DeliveryState.PENDING.value, DeliveryState.RETRYING.value)
ACTIVE = (*CLAIMABLE, DeliveryState.SENDING.value)
DELIVERIES = LeasedTable(Delivery, claimable=CLAIMABLE, held=DeliveryState.SENDING.value)
# An older delivery in one of these states holds back newer ones to the same destination.
HOLDS_BACK = (
    DeliveryState.PENDING.value,
    DeliveryState.RETRYING.value,
    DeliveryState.SENDING.value,
    DeliveryState.FAILED.value,
    DeliveryState.UNCERTAIN.value,
    DeliveryState.HELD.value,
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

    # ------------------------------------------------------------------ claiming

    async def claim(self, work: Work, *, limit: int) -> list[Lease]:
        """Take up to ``limit`` due deliveries, oldest first, platforms taking turns.

        Platforms take turns (oldest first within each), and the leases come back in that
        order, which is the order they are prepared and sent in: the platforms' rate limits are
        independent, and taking ids oldest first overall made a fan-out finish its first
        platform's deliveries before the next platform's began. A paused platform is skipped.
        """
        now = utcnow()
        async with work.db.transaction() as session:
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
                if p.value not in paused
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
                started = select(Delivery.draft_id).where(
                    Delivery.id.in_([lease.id for lease in leases])
                )
                await session.execute(
                    update(Draft)
                    .where(
                        Draft.id.in_(started),
                        Draft.status == DraftStatus.APPROVED.value,
                    )
                    .values(status=DraftStatus.PUBLISHING.value)
                    .execution_options(synchronize_session=False)
                )
            return leases

    async def next_due(self, session: AsyncSession, *, now: datetime) -> datetime | None:
        paused = await paused_platforms(session)
        waiting = await session.scalar(
            select(func.min(Delivery.next_attempt_at))
            .join(Destination, Destination.id == Delivery.destination_id)
            .where(
                Delivery.state.in_(CLAIMABLE),
                ~held_back(now),
                Destination.platform.notin_(paused),
            )
        )
        sending = await session.scalar(
            select(func.min(Delivery.lease_until)).where(
                Delivery.state == DeliveryState.SENDING.value
            )
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
                        select(Delivery)
                        .where(
                            DELIVERIES.expired(
                                now=now, worker_id=work.worker_id, alive=work.alive(self.name)
                            )
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

    async def process(self, work: Work, lease: Lease) -> None:
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

        async def progress(message_ids: list[str]) -> None:
            await self._record_progress(work, lease, message_ids, len(job.messages))

        try:
            result = await publisher.send(job, progress)
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
        """Re-check the gate (draft share-locked against edits) and build the exact job."""
        now = utcnow()

        async def unit(session: AsyncSession) -> SendJob | None:
            delivery = await session.get(
                Delivery,
                lease.id,
                with_for_update={"of": Delivery},
                populate_existing=True,
                options=[joinedload(Delivery.destination, innerjoin=True)],
            )
            if not DELIVERIES.holds(delivery, lease, work.worker_id):
                return None  # lost the lease, or claimed again since
            assert delivery is not None
            # The approvals and the incident come fresh with the locked row (populate_existing
            # runs the eager loaders again); the payload is read through the cache.
            found = (
                (
                    await session.execute(
                        select(Draft, cast(Draft.payload, Text))
                        .where(Draft.id == delivery.draft_id)
                        .options(*GATE_DRAFT, defer(Draft.payload, raiseload=True))
                        # Shared: deliveries of one fan-out check at the same time; an edit
                        # (which locks the draft exclusively) waits for them, and they for it.
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
                (row[0], self.plans.get(("version", row[0].id), row[1]))
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
            delivery.inflight_index = (
                job.start_index if job.start_index < len(job.messages) else None
            )
            delivery.updated_at = now
            return job

        return await work.commits.run(unit)

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

    async def _record_progress(
        self, work: Work, lease: Lease, message_ids: list[str], total: int
    ) -> None:
        async def unit(session: AsyncSession) -> bool:
            recorded = await session.scalar(
                update(Delivery)
                .where(DELIVERIES.fence(lease, work.worker_id))
                .values(
                    platform_message_ids=list(message_ids),
                    inflight_index=len(message_ids) if len(message_ids) < total else None,
                    updated_at=utcnow(),
                )
                .returning(Delivery.id)
                .execution_options(synchronize_session=False)
            )
            return recorded is not None

        if not await work.commits.run(unit, urgent=True):
            raise LeaseLost(f"delivery {lease.id}")

    async def _complete(self, work: Work, lease: Lease, job: SendJob, result: SendResult) -> None:
        now = utcnow()

        async def unit(session: AsyncSession) -> None:
            delivery = await session.get(
                Delivery,
                lease.id,
                with_for_update={"of": Delivery},
                populate_existing=True,
                options=[joinedload(Delivery.destination, innerjoin=True)],
            )
            if not DELIVERIES.holds(delivery, lease, work.worker_id):
                log.warning("delivery %s: sent, but its lease was lost; not recorded", lease.id)
                return
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
            if destination.is_public:
                # The first public delivery of this announcement marks the incident's last
                # public update; the rest of the fan-out leaves the incident row alone.
                await session.execute(
                    update(Incident)
                    .where(
                        Incident.id == draft.incident_id,
                        (Incident.last_public_update_at.is_(None))
                        | (Incident.last_public_update_at < (draft.approved_at or now)),
                    )
                    .values(last_public_update_at=now)
                    .execution_options(synchronize_session=False)
                )
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

        await work.commits.run(unit)

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
                delivery.state = DeliveryState.RETRYING.value
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
                delivery.state = DeliveryState.RETRYING.value
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
                    delivery.state = DeliveryState.RETRYING.value
                    delivery.inflight_index = None
                    delivery.next_attempt_at = now + timedelta(
                        seconds=work.backoff(delivery.attempts, error.retry_after)
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
