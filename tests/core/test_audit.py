"""The audit chain detects any changed, deleted, inserted or reordered event."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select, text

from comms.audit import service as audit
from comms.audit.models import AuditEvent, AuditHead
from comms.db import Database


async def _fill(db: Database, count: int) -> None:
    async with db.transaction() as session:
        for i in range(count):
            await audit.record(
                session,
                actor=f"user{i % 3}",
                action="test.event",
                target=f"thing:{i}",
                details={"i": i, "note": "ünïcode ✓"},
            )


async def _raw(db: Database, *statements: str) -> None:
    """Tamper as an attacker with database access would: drop the guard, edit rows."""
    async with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            await conn.execute(text("DROP TRIGGER IF EXISTS audit_events_no_update"))
            await conn.execute(text("DROP TRIGGER IF EXISTS audit_events_no_delete"))
        for statement in statements:
            await conn.execute(text(statement))
        if conn.dialect.name == "postgresql":
            await conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))


async def _verify(db: Database) -> audit.Verification:
    async with db.transaction() as session:
        return await audit.verify(session)


async def test_intact_chain_verifies(db: Database) -> None:
    await _fill(db, 20)
    result = await _verify(db)
    assert result.ok, result.describe()
    assert result.checked == 20


async def test_appends_across_transactions_and_rolled_back_savepoints_keep_one_chain(
    db: Database,
) -> None:
    """A transaction reads the head once and reuses it; a savepoint rolled back after an append
    must not leave that reused head ahead of what was kept."""
    await _fill(db, 2)
    async with db.transaction() as session:
        await audit.record(session, actor="a", action="kept", target="1")
        with pytest.raises(RuntimeError):
            async with session.begin_nested():
                await audit.record(session, actor="a", action="undone", target="2")
                raise RuntimeError("the unit failed")
        await audit.record(session, actor="a", action="kept", target="3")
    async with db.transaction() as session:
        await audit.record(session, actor="b", action="kept", target="4")
    result = await _verify(db)
    assert result.ok, result.describe()
    async with db.transaction() as session:
        events = (await session.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all()
        head = await session.scalar(select(AuditHead))
    assert [e.target for e in events] == ["thing:0", "thing:1", "1", "3", "4"]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert head is not None
    assert (head.seq, head.hash) == (5, events[-1].hash)


async def test_empty_chain_verifies(db: Database) -> None:
    assert (await _verify(db)).ok


async def test_database_refuses_update_and_delete(db: Database) -> None:
    await _fill(db, 2)
    for statement in (
        "UPDATE audit_events SET actor = 'mallory' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 2",
    ):
        with pytest.raises(Exception, match="append-only"):
            async with db.engine.begin() as conn:
                await conn.execute(text(statement))
    assert (await _verify(db)).ok


async def test_changed_entry_is_named(db: Database) -> None:
    await _fill(db, 10)
    await _raw(db, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 4")
    result = await _verify(db)
    assert not result.ok
    assert result.first_bad_seq == 4
    assert "changed" in (result.problem or "")


async def test_deleted_entry_is_named(db: Database) -> None:
    await _fill(db, 10)
    await _raw(db, "DELETE FROM audit_events WHERE seq = 6")
    result = await _verify(db)
    assert (result.ok, result.first_bad_seq) == (False, 6)


async def test_deleted_newest_entries_are_caught_by_the_head(db: Database) -> None:
    await _fill(db, 10)
    await _raw(db, "DELETE FROM audit_events WHERE seq >= 9")
    result = await _verify(db)
    assert (result.ok, result.first_bad_seq) == (False, 9)


async def test_reordered_entries_are_named(db: Database) -> None:
    await _fill(db, 10)
    # Swap the contents of #3 and #7 (keeping their own hashes): the order is wrong.
    await _raw(
        db,
        "UPDATE audit_events SET seq = -3 WHERE seq = 3",
        "UPDATE audit_events SET seq = 3 WHERE seq = 7",
        "UPDATE audit_events SET seq = 7 WHERE seq = -3",
    )
    result = await _verify(db)
    assert (result.ok, result.first_bad_seq) == (False, 3)


async def test_inserted_entry_is_named(db: Database) -> None:
    await _fill(db, 5)
    # Shift #3.. up by one and slip a forged event in at #3.
    await _raw(
        db,
        "UPDATE audit_events SET seq = seq + 100 WHERE seq >= 3",
        "UPDATE audit_events SET seq = seq - 99 WHERE seq >= 103",
        "INSERT INTO audit_events (seq, at, actor, action, target, details, prev_hash, hash) "
        f"SELECT 3, at, 'mallory', action, target, details, prev_hash, '{'f' * 64}' "
        "FROM audit_events WHERE seq = 4",
    )
    result = await _verify(db)
    assert (result.ok, result.first_bad_seq) == (False, 3)


@pytest.mark.slow
async def test_random_tampering_is_always_caught(db: Database) -> None:
    """Each kind of tampering, at random positions, over a long chain: caught every time."""
    await _fill(db, 300)
    rng = random.Random(20261127)
    async with db.transaction() as session:
        events = list((await session.scalars(select(AuditEvent).order_by(AuditEvent.seq))).all())
        head = await session.get(AuditHead, 1)
    assert head is not None
    for _round in range(400):
        tampered = [
            AuditEvent(
                **{
                    c: getattr(e, c)
                    for c in (
                        "seq",
                        "at",
                        "actor",
                        "action",
                        "target",
                        "details",
                        "prev_hash",
                        "hash",
                    )
                }
            )
            for e in events
        ]
        kind = rng.choice(["change", "delete", "insert", "reorder", "recompute"])
        index = rng.randrange(len(tampered) - 1)
        if kind == "change":
            tampered[index].details = {**tampered[index].details, "i": -1}
            expected = index + 1
        elif kind == "delete":
            del tampered[index]
            expected = index + 1
        elif kind == "insert":
            forged = AuditEvent(
                seq=index + 1,
                at=tampered[index].at,
                actor="mallory",
                action="x",
                target="",
                details={},
                prev_hash=tampered[index].prev_hash,
                hash="0" * 64,
            )
            tampered.insert(index, forged)
            for later in tampered[index + 1 :]:
                later.seq += 1
            expected = index + 1
        elif kind == "reorder":
            a, b = index, rng.randrange(index + 1, len(tampered))
            tampered[a], tampered[b] = tampered[b], tampered[a]
            tampered[a].seq, tampered[b].seq = a + 1, b + 1
            expected = a + 1
        else:  # change content and recompute that event's own hash: the next link breaks
            tampered[index].actor = "mallory"
            tampered[index].hash = audit.event_hash(
                seq=tampered[index].seq,
                at=tampered[index].at,
                actor="mallory",
                action=tampered[index].action,
                target=tampered[index].target,
                details=tampered[index].details,
                prev_hash=tampered[index].prev_hash,
            )
            expected = index + 2
        result = audit.verify_events(tampered, head)
        assert not result.ok, (kind, index)
        assert result.first_bad_seq == expected, (kind, index, result.describe())
