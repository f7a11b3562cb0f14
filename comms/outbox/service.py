"""Writing and reading the outbox. Sending is the worker's job (``comms.outbox.worker``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.clock import utcnow
from comms.destinations.models import Destination
from comms.drafts import gate
from comms.drafts.models import Draft, DraftStatus
from comms.drafts.payload import idempotency_key
from comms.errors import NotFound, RuleViolation
from comms.outbox.models import NEEDS_PERSON, Delivery, DeliveryState
from comms.permissions import Action, require
from comms.text import clean_text
from comms.users.models import User

UNSENT = (DeliveryState.PENDING, DeliveryState.RETRYING)


def _skip_reason(destination: Destination | None) -> str | None:
    if destination is None:
        return "destination no longer exists"
    if destination.compromised:
        return f"destination marked compromised: {destination.compromised_reason}"
    if not destination.enabled:
        return "destination disabled"
    return None


async def enqueue(session: AsyncSession, *, draft: Draft, now: datetime) -> list[Delivery]:
    """One delivery per destination of the approved version, in the approving transaction.

    Compromised or disabled destinations get a ``skipped`` row with the reason, so the panel
    shows that they were deliberately left out rather than forgotten.
    """
    due = draft.publish_at if draft.publish_at and draft.publish_at > now else now
    created: list[Delivery] = []
    for item in draft.plan.deliveries:
        destination_id = item.destination.id
        destination = await session.get(Destination, destination_id)
        reason = _skip_reason(destination)
        delivery = Delivery(
            draft_id=draft.id,
            draft_version=draft.version,
            content_hash=draft.content_hash,
            destination_id=destination_id,
            state=DeliveryState.SKIPPED if reason else DeliveryState.PENDING,
            next_attempt_at=due,
            idempotency_key=idempotency_key(draft.content_hash, destination_id),
            last_error=reason or "",
            created_at=now,
            updated_at=now,
        )
        session.add(delivery)
        created.append(delivery)
    await session.flush()
    for delivery in created:
        if delivery.state == DeliveryState.SKIPPED:
            await audit.record(
                session,
                actor=audit.SYSTEM_ACTOR,
                action="delivery.skipped",
                target=f"delivery:{delivery.id}",
                details={
                    "draft": draft.id,
                    "destination": delivery.destination_id,
                    "reason": delivery.last_error,
                },
            )
    return created


async def for_draft(session: AsyncSession, *, draft_id: int) -> list[Delivery]:
    query = select(Delivery).where(Delivery.draft_id == draft_id).order_by(Delivery.id)
    return list((await session.scalars(query)).all())


async def all_unsent(session: AsyncSession, *, draft: Draft) -> bool:
    """True if no delivery of the draft has started (so an edit can still replace it)."""
    deliveries = await for_draft(session, draft_id=draft.id)
    return all(
        d.state in (*UNSENT, DeliveryState.SKIPPED, DeliveryState.CANCELLED) and d.attempts == 0
        for d in deliveries
    )


async def cancel_unsent(session: AsyncSession, *, draft: Draft, reason: str) -> int:
    count = 0
    now = utcnow()
    for delivery in await for_draft(session, draft_id=draft.id):
        if delivery.state in UNSENT:
            delivery.state = DeliveryState.CANCELLED
            delivery.last_error = reason
            delivery.updated_at = now
            count += 1
    await session.flush()
    return count


async def require_delivery(session: AsyncSession, *, delivery_id: int) -> Delivery:
    delivery = await session.get(Delivery, delivery_id)
    if delivery is None:
        raise NotFound(f"no delivery #{delivery_id}", field="delivery")
    return delivery


async def needing_attention(session: AsyncSession) -> list[Delivery]:
    """Failed and uncertain deliveries, newest first: the dashboard shows these first."""
    query = (
        select(Delivery)
        .where(Delivery.state.in_([s.value for s in NEEDS_PERSON]))
        .order_by(Delivery.updated_at.desc(), Delivery.id.desc())
    )
    return list((await session.scalars(query)).all())


async def retry(session: AsyncSession, *, delivery: Delivery, actor: User) -> Delivery:
    """Send a failed delivery again. Same approved content: no new approval, but audited.

    The worker re-checks the gate before sending, so a retry can never send content that is no
    longer approved.
    """
    require(actor, Action.DELIVERY_MANAGE)
    await session.refresh(delivery, with_for_update=True)
    if delivery.state != DeliveryState.FAILED:
        raise RuleViolation(
            "delivery.retry",
            f"delivery #{delivery.id} is {delivery.state}, only failed deliveries can be retried",
        )
    return await _requeue(session, delivery=delivery, actor=actor, action="delivery.retry")


async def resolve_uncertain(
    session: AsyncSession, *, delivery: Delivery, actor: User, resend: bool, note: str = ""
) -> Delivery:
    """A person decides a delivery that waits for one: resend an uncertain one, or dismiss an
    uncertain, failed or held one (it did arrive, or let it go). Later deliveries to the same
    destination wait until then, so updates never overtake it.

    Resending may duplicate the message if the first attempt did arrive; the person has
    checked the chat, which is why this needs a human.
    """
    require(actor, Action.DELIVERY_MANAGE)
    await session.refresh(delivery, with_for_update=True)
    state = delivery.state
    if resend and state is not DeliveryState.UNCERTAIN:
        raise RuleViolation(
            "delivery.uncertain",
            f"delivery #{delivery.id} is {state.value}, not uncertain"
            + (
                "; a held delivery needs a new approval, not a resend"
                if state is DeliveryState.HELD
                else ""
            ),
        )
    if not resend and state not in NEEDS_PERSON:
        raise RuleViolation(
            "delivery.dismiss",
            f"delivery #{delivery.id} is {state.value}: only failed, uncertain or held "
            "deliveries are dismissed",
        )
    if resend:
        return await _requeue(session, delivery=delivery, actor=actor, action="delivery.resend")
    why = clean_text("note", note, limit=2000) or "dismissed"
    delivery.state = DeliveryState.SKIPPED
    delivery.last_error = f"dismissed by {actor.username}: {why}"
    delivery.inflight_index = None
    delivery.updated_at = utcnow()
    await session.flush()
    await audit.record(
        session,
        actor=actor.username,
        action="delivery.dismiss",
        target=f"delivery:{delivery.id}",
        details={"note": why},
    )
    await settle(session, draft_id=delivery.draft_id)
    return delivery


async def _requeue(
    session: AsyncSession, *, delivery: Delivery, actor: User, action: str
) -> Delivery:
    now = utcnow()
    previous = delivery.last_error
    delivery.state = DeliveryState.RETRYING
    delivery.next_attempt_at = now
    delivery.inflight_index = None
    delivery.attempts = 0
    delivery.last_error = f"{action.split('.')[1]} requested by {actor.username}"
    delivery.updated_at = now
    draft = await session.get(Draft, delivery.draft_id)
    if draft is not None and draft.status == DraftStatus.PARTIALLY_FAILED:
        draft.status = DraftStatus.PUBLISHING
    await session.flush()
    await audit.record(
        session,
        actor=actor.username,
        action=action,
        target=f"delivery:{delivery.id}",
        details={
            "draft": delivery.draft_id,
            "version": delivery.draft_version,
            "content_hash": delivery.content_hash,
            "previous": previous,
        },
    )
    return delivery


async def settle(session: AsyncSession, *, draft_id: int) -> None:
    """Once no delivery is still on its way, the draft is published or partially failed."""
    draft = await session.get(Draft, draft_id, populate_existing=True)
    if draft is None:
        return
    states = (
        await session.scalars(
            select(Delivery.state).where(
                Delivery.draft_id == draft_id, Delivery.draft_version == draft.version
            )
        )
    ).all()
    if not states or draft.status not in gate.PUBLISHABLE:
        return
    active = {DeliveryState.PENDING, DeliveryState.SENDING, DeliveryState.RETRYING}
    if any(s in active for s in states):
        return
    if all(s in (DeliveryState.SENT, DeliveryState.SKIPPED) for s in states):
        status = DraftStatus.PUBLISHED
    else:
        status = DraftStatus.PARTIALLY_FAILED
    if draft.status != status:
        draft.status = status
        if status is DraftStatus.PUBLISHED:
            draft.published_at = utcnow()
        await audit.record(
            session,
            actor=audit.SYSTEM_ACTOR,
            action=f"draft.{status.value}",
            target=f"draft:{draft.id}",
            details={"version": draft.version, "states": sorted(s.value for s in states)},
        )
