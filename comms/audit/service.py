"""Append to and verify the audit chain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit.models import GENESIS_HASH, AuditEvent, AuditHead
from comms.canonical import canonical_json, sha256_hex
from comms.clock import utcnow

SYSTEM_ACTOR = "system"


def event_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    details: dict[str, Any],
    prev_hash: str,
) -> str:
    body = {
        "seq": seq,
        "at": at.isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "target": target,
        "details": details,
    }
    return sha256_hex(canonical_json(body), prev_hash.encode("ascii"))


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain, in the caller's transaction.

    The head row is locked (PostgreSQL ``FOR UPDATE``; SQLite transactions are already
    exclusive) so two concurrent appends cannot fork the chain.
    """
    head = await _locked_head(session)
    at = utcnow()
    payload = dict(details or {})
    seq = head.seq + 1
    digest = event_hash(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        target=target,
        details=payload,
        prev_hash=head.hash,
    )
    event = AuditEvent(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        target=target,
        details=payload,
        prev_hash=head.hash,
        hash=digest,
    )
    session.add(event)
    head.seq = seq
    head.hash = digest
    # No flush: the session flushes before any query and at commit, so appends made in one
    # transaction go out together (one INSERT of many rows and one head update).
    return event


_HEAD_KEY = "comms.audit.locked_head"


async def _locked_head(session: AsyncSession) -> AuditHead:
    """The head row, read and locked once per transaction.

    Once this transaction holds the lock, nobody else can move the head, so a second append in
    the same transaction (the outbox's group commit appends one per delivery) reuses the row it
    has already read and advanced. Anything that could make that copy stale (another
    transaction, a rolled-back savepoint expiring it) makes us read it again.
    """
    transaction = session.sync_session.get_transaction()
    held = session.info.get(_HEAD_KEY)
    if held is not None and held[0] is transaction:
        head: AuditHead = held[1]
        state = inspect(head)
        if state.persistent and not state.expired_attributes:
            return head
    found = await session.scalar(select(AuditHead).where(AuditHead.id == 1).with_for_update())
    if found is None:
        found = AuditHead(id=1, seq=0, hash=GENESIS_HASH)
        session.add(found)
        await session.flush()
    session.info[_HEAD_KEY] = (transaction, found)
    return found


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
    head_hash: str | None = None

    def describe(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.checked} events, head {self.head_hash}"
        return f"audit chain broken at event #{self.first_bad_seq}: {self.problem}"


def verify_events(events: Sequence[AuditEvent], head: AuditHead | None) -> Verification:
    """Walk the chain in sequence order and name the first event that does not fit."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    for event in events:
        if event.seq != expected_seq:
            if event.seq > expected_seq:
                problem = f"event #{expected_seq} is missing (next present is #{event.seq})"
            else:
                problem = f"event #{event.seq} appears again after #{expected_seq - 1}"
            return Verification(False, expected_seq - 1, expected_seq, problem)
        if event.prev_hash != expected_prev:
            return Verification(
                False,
                expected_seq - 1,
                event.seq,
                "its link to the previous event does not match (inserted, removed or reordered)",
            )
        recomputed = event_hash(
            seq=event.seq,
            at=event.at,
            actor=event.actor,
            action=event.action,
            target=event.target,
            details=event.details,
            prev_hash=event.prev_hash,
        )
        if recomputed != event.hash:
            return Verification(
                False, expected_seq - 1, event.seq, "its content does not match its hash (changed)"
            )
        expected_prev = event.hash
        expected_seq += 1
    count = expected_seq - 1
    head_seq = head.seq if head is not None else 0
    head_hash = head.hash if head is not None else GENESIS_HASH
    if head_seq > count:
        return Verification(
            False,
            count,
            count + 1,
            f"events #{count + 1}..#{head_seq} are missing (the head records {head_seq})",
        )
    if head_seq < count:
        return Verification(
            False,
            head_seq,
            head_seq + 1,
            f"the head records {head_seq} events; #{head_seq + 1} onwards were added outside it",
        )
    if head_hash != expected_prev:
        return Verification(
            False, count - 1, count, "the newest event does not match the hash the head records"
        )
    return Verification(True, count, head_hash=expected_prev)


async def verify(session: AsyncSession) -> Verification:
    events = (await session.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all()
    head = await session.scalar(select(AuditHead).where(AuditHead.id == 1))
    return verify_events(events, head)


async def recent(
    session: AsyncSession,
    *,
    limit: int = 100,
    before_seq: int | None = None,
    action: str | None = None,
) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit)
    if before_seq is not None:
        query = query.where(AuditEvent.seq < before_seq)
    if action:
        query = query.where(AuditEvent.action == action)
    return list((await session.scalars(query)).all())


async def count(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(AuditEvent)) or 0)
