"""The policy's incident notices, sent by the worker through the sandbox (issue 12, item 3):
a P1 alerts the Decision Makers at once (opened or raised); an offered Incident Leader is
asked to acknowledge, and after 5 minutes on a P1 (15 on a P2) is reminded while the other
Incident Leaders are alerted, with a frozen clock."""

from __future__ import annotations

from typing import Any

from comms.clock import FrozenClock
from comms.db import Database
from comms.destinations.models import Destination, InternalUse
from comms.enums import Role, Severity
from comms.incidents import service as incidents
from comms.incidents.models import Incident, LogKind
from comms.outbox.worker import Worker
from comms.users import service as users
from tests.factories import make_user
from tests.publishing.conftest import Control, World


async def _texts(control: Control, world: World) -> list[str]:
    channel = world.info["discord_channels"]["responders"]
    return [m["text"] for m in await control.discord_messages(channel)]


async def _also_responders(db: Database, world: World) -> str:
    """The private channel gets responders' notices too, and names their role."""
    role = str(world.info["discord_roles"]["responders"])
    async with db.transaction() as session:
        dest = await session.get(Destination, world.dest["dc_responders"].id)
        assert dest is not None
        dest.internal_uses = [*dest.internal_uses, InternalUse.RESPONDERS.value]
        dest.responders_role_id = role
    return role


async def test_a_p1_alerts_the_decision_makers_when_opened_and_when_raised(
    db: Database, world: World, control: Control, worker: Worker
) -> None:
    await worker.run_until_settled(within=20)
    texts = await _texts(control, world)
    (opened,) = [t for t in texts if f"P1 incident: {world.incident.key}" in t]
    assert "Opened as P1 (critical) by: leo" in opened and "Bridge exploit" in opened
    async with db.transaction() as session:
        lower = await incidents.open_incident(
            session, title="Oracle drift", severity=Severity.P3, actor=world.team["lead"]
        )
    await worker.run_until_settled(within=20)
    assert not [t for t in await _texts(control, world) if lower.key in t]  # P3: nobody
    async with db.transaction() as session:
        found = await session.get(Incident, lower.id)
        assert found is not None
        await incidents.change_severity(
            session,
            incident=found,
            severity=Severity.P1,
            actor=world.team["lead"],
            rationale="worse",
        )
    await worker.run_until_settled(within=20)
    (raised,) = [t for t in await _texts(control, world) if f"P1 incident: {lower.key}" in t]
    assert "Raised to P1 (critical) by: leo" in raised
    assert "No Incident Leader has acknowledged yet" in raised


async def _offer(db: Database, incident_id: int, to: str, by: Any) -> None:
    async with db.transaction() as session:
        incident = await session.get(Incident, incident_id)
        user = await make_user(session, to, Role.INCIDENT_LEADER)
        assert incident is not None
        await incidents.assign(
            session,
            incident=incident,
            role=incidents.parse_incident_role("incident_leader"),
            user=user,
            actor=by,
        )


async def test_an_unacknowledged_hand_off_is_reminded_and_escalated_on_time(
    db: Database, world: World, control: Control, worker: Worker, clock: FrozenClock
) -> None:
    role = await _also_responders(db, world)
    key = world.incident.key
    await _offer(db, world.incident.id, "lena", world.team["lead"])
    await worker.run_until_settled(within=20)
    (asked,) = [t for t in await _texts(control, world) if "Incident Leader wanted" in t]
    assert key in asked and "Offered to: lena" in asked and f"comms incident ack {key}" in asked
    clock.advance(minutes=4, seconds=59)
    await worker.run_until_settled(within=20)
    assert not [t for t in await _texts(control, world) if "not acknowledged" in t]
    clock.advance(seconds=2)
    await worker.run_until_settled(within=20)
    (overdue,) = [
        t for t in await _texts(control, world) if "Incident Leader not acknowledged" in t
    ]
    assert "Not acknowledged after 5 minutes" in overdue
    assert "take the lead if needed: leo (leo)" in overdue
    channel = world.info["discord_channels"]["responders"]
    pinged = [m for m in await control.discord_messages(channel) if "not acknowledged" in m["text"]]
    assert pinged[0]["mention_roles"] == [role]  # the escalation pings the responders
    (asked_msg,) = [
        m for m in await control.discord_messages(channel) if "Incident Leader wanted" in m["text"]
    ]
    assert asked_msg["mention_roles"] == []  # asking pings nobody
    async with db.transaction() as session:
        incident = await session.get(Incident, world.incident.id)
        assert incident is not None
        log = [e.text for e in await incidents.entries(session, incident=incident)]
    assert any(
        "hand-off to lena not acknowledged after 5 minutes" in t and "(leo)" in t for t in log
    )


async def test_an_acknowledged_hand_off_sends_no_reminder_and_p2_waits_15_minutes(
    db: Database, world: World, control: Control, worker: Worker, clock: FrozenClock
) -> None:
    await _also_responders(db, world)
    await _offer(db, world.incident.id, "lena", world.team["lead"])
    async with db.transaction() as session:
        incident = await session.get(Incident, world.incident.id)
        assert incident is not None
        offered = await users.require_user(session, username="lena", field="by")
        await incidents.acknowledge_leadership(session, incident=incident, actor=offered)
        second = await incidents.open_incident(
            session, title="Frontend", severity=Severity.P2, actor=world.team["lead"]
        )
    await _offer(db, second.id, "lisa", world.team["lead"])
    clock.advance(minutes=6)
    await worker.run_until_settled(within=20)
    texts = await _texts(control, world)
    assert not [t for t in texts if "not acknowledged" in t]  # acknowledged; P2 not yet due
    clock.advance(minutes=10)
    await worker.run_until_settled(within=20)
    (overdue,) = [t for t in await _texts(control, world) if "not acknowledged" in t]
    assert second.key in overdue and "after 15 minutes" in overdue


async def test_the_leader_is_told_when_monitoring_may_end_with_what_was_added(
    clock: FrozenClock, db: Database, world: World, control: Control, worker: Worker
) -> None:
    await _also_responders(db, world)
    lead = world.team["lead"]
    async with db.transaction() as session:
        incident = await session.get(Incident, world.incident.id)
        assert incident is not None
        for step in ("investigating", "mitigated", "monitoring"):
            await incidents.change_status(
                session,
                incident=incident,
                status=incidents.parse_status(step),
                actor=lead,
                rationale="drill",
            )
        await incidents.add_entry(
            session,
            incident=incident,
            kind=LogKind.MONITORING,
            text="Alert on bridge outflows over 100 ETH",
            actor=lead,
        )
    await worker.run_until_settled(within=20)
    clock.advance(days=6, hours=23, minutes=59)
    await worker.run_until_settled(within=20)
    assert not [t for t in await _texts(control, world) if "Monitoring may end" in t]
    clock.advance(minutes=1)
    await worker.run_until_settled(within=20)
    (told,) = [t for t in await _texts(control, world) if "Monitoring may end" in t]
    assert world.incident.key in told and "- Alert on bridge outflows over 100 ETH" in told
    assert "Minimum period (days): 7" in told
