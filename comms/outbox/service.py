"""Writing and reading the outbox. Sending is the worker's job (``comms.outbox.worker``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.clock import utcnow
from comms.destinations.models import Destination
from comms.drafts.models import Draft
from comms.drafts.payload import idempotency_key
from comms.outbox.models import Delivery, DeliveryState

UNSENT = (DeliveryState.PENDING.value, DeliveryState.RETRYING.value)


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
    for item in draft.payload["deliveries"]:
        destination_id = int(item["destination"]["id"])
        destination = await session.get(Destination, destination_id)
        reason = _skip_reason(destination)
        delivery = Delivery(
            draft_id=draft.id, draft_version=draft.version, content_hash=draft.content_hash,
            destination_id=destination_id,
            state=DeliveryState.SKIPPED.value if reason else DeliveryState.PENDING.value,
            next_attempt_at=due, idempotency_key=idempotency_key(draft.content_hash, destination_id),
            last_error=reason or "", created_at=now, updated_at=now,
        )
        session.add(delivery)
        created.append(delivery)
    await session.flush()
    for delivery in created:
        if delivery.state == DeliveryState.SKIPPED.value:
            await audit.record(
                session, actor=audit.SYSTEM_ACTOR, action="delivery.skipped",
                target=f"delivery:{delivery.id}",
                details={"draft": draft.id, "destination": delivery.destination_id,
                         "reason": delivery.last_error},
            )
    return created


async def for_draft(session: AsyncSession, *, draft_id: int) -> list[Delivery]:
    query = select(Delivery).where(Delivery.draft_id == draft_id).order_by(Delivery.id)
    return list((await session.scalars(query)).all())


async def all_unsent(session: AsyncSession, *, draft: Draft) -> bool:
    """True if no delivery of the draft has started (so an edit can still replace it)."""
    deliveries = await for_draft(session, draft_id=draft.id)
    return all(
        d.state in (*UNSENT, DeliveryState.SKIPPED.value, DeliveryState.CANCELLED.value)
        and d.attempts == 0
        for d in deliveries
    )


async def cancel_unsent(session: AsyncSession, *, draft: Draft, reason: str) -> int:
    count = 0
    now = utcnow()
    for delivery in await for_draft(session, draft_id=draft.id):
        if delivery.state in UNSENT:
            delivery.state = DeliveryState.CANCELLED.value
            delivery.last_error = reason
            delivery.updated_at = now
            count += 1
    await session.flush()
    return count
