"""Incidents: keys, the status machine, severity, roles, the leader hand-off, the log."""

from __future__ import annotations

import pytest

from comms.clock import FrozenClock
from comms.db import Database
from comms.enums import Role, Severity
from comms.errors import InvalidInput, PermissionDenied, RuleViolation
from comms.incidents import export
from comms.incidents import service as incidents
from comms.incidents.models import IncidentRole, IncidentStatus, LogKind
from tests.factories import make_incident, make_team, make_user

S = IncidentStatus


async def test_keys_count_up_per_year(db: Database, clock: FrozenClock) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        first = await make_incident(session, team["lead"])
        second = await make_incident(session, team["lead"])
    assert (first.key, second.key) == ("INC-2026-0001", "INC-2026-0002")
    clock.advance(days=365)
    async with db.transaction() as session:
        lead = await make_user(session, "lea", Role.INCIDENT_LEADER)
        third = await make_incident(session, lead)
    assert third.key == "INC-2027-0001"


async def test_opener_is_detector_and_opening_is_logged(db: Database) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        inc = await make_incident(session, team["scribe"])
        entries = await incidents.entries(session, incident=inc)
    assert [a.user.username for a in inc.holders(IncidentRole.DETECTOR)] == ["sam"]
    assert entries[0].kind == "status" and "opened as P1" in entries[0].text
    assert entries[0].at.tzinfo is not None and entries[0].at.utcoffset().total_seconds() == 0


async def test_the_full_lifecycle(db: Database, clock: FrozenClock) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        inc = await make_incident(session, team["lead"])
        for status in (
            S.COORDINATING,
            S.INVESTIGATING,
            S.MITIGATED,
            S.MONITORING,
            S.POST_INCIDENT,
            S.CLOSED,
        ):
            if status is S.MONITORING:  # the resolution checklist, ticked
                for item in ("mitigation_applied", "mitigation_verified", "stakeholders_notified"):
                    await incidents.tick_checklist(
                        session, incident=inc, item=item, actor=team["lead"]
                    )
                await incidents.tick_checklist(
                    session,
                    incident=inc,
                    item="permanent_fix_planned",
                    actor=team["lead"],
                    note="leo, audit of the bridge by 15 Jan",
                )
            if status is S.POST_INCIDENT:
                clock.advance(days=7)  # the policy's week of monitoring
            await incidents.change_status(session, incident=inc, status=status, actor=team["lead"])
        assert inc.status == "closed" and inc.resolved_at is not None and inc.mitigated_at


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ([], S.MITIGATED),
        ([S.INVESTIGATING], S.MONITORING),
        ([S.INVESTIGATING, S.MITIGATED], S.POST_INCIDENT),
        ([S.INVESTIGATING, S.MITIGATED, S.MONITORING, S.POST_INCIDENT, S.CLOSED], S.INVESTIGATING),
    ],
)
async def test_invalid_transitions_are_refused(
    db: Database, path: list[IncidentStatus], target: IncidentStatus
) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        inc = await make_incident(session, team["lead"])
        for status in path:
            await incidents.change_status(
                session, incident=inc, status=status, actor=team["lead"], rationale="why not"
            )
        before = inc.status
        with pytest.raises(RuleViolation) as caught:
            await incidents.change_status(
                session, incident=inc, status=target, actor=team["lead"], rationale="try"
            )
        assert caught.value.rule == "incident.transition"
        assert inc.status == before


async def test_going_back_needs_a_rationale(db: Database) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        inc = await make_incident(session, team["lead"])
        await incidents.change_status(
            session, incident=inc, status=S.INVESTIGATING, actor=team["lead"]
        )
        await incidents.change_status(session, incident=inc, status=S.MITIGATED, actor=team["lead"])
        with pytest.raises(InvalidInput, match="rationale"):
            await incidents.change_status(
                session, incident=inc, status=S.INVESTIGATING, actor=team["lead"]
            )
        await incidents.change_status(
            session,
            incident=inc,
            status=S.INVESTIGATING,
            actor=team["lead"],
            rationale="the pause did not hold",
        )
        assert inc.status == "investigating"


async def test_p1_cannot_skip_the_post_mortem(db: Database) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        inc = await make_incident(session, team["lead"], Severity.P2)
        for status in (S.INVESTIGATING, S.MITIGATED, S.MONITORING):
            await incidents.change_status(
                session, incident=inc, status=status, actor=team["lead"], rationale="drill"
            )
        with pytest.raises(RuleViolation) as caught:
            await incidents.change_status(
                session, incident=inc, status=S.CLOSED, actor=team["lead"], rationale="done"
            )
        assert caught.value.rule == "incident.post_mortem_required"
        low = await make_incident(session, team["lead"], Severity.P4)
        for status in (S.INVESTIGATING, S.MITIGATED, S.MONITORING):
            await incidents.change_status(
                session, incident=low, status=status, actor=team["lead"], rationale="drill"
            )
        await incidents.change_status(
            session,
            incident=low,
            status=S.CLOSED,
            actor=team["lead"],
            rationale="minor, no review needed",
        )


async def test_only_leaders_manage(db: Database) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        inc = await make_incident(session, team["scribe"])
        with pytest.raises(PermissionDenied):
            await incidents.change_status(
                session, incident=inc, status=S.INVESTIGATING, actor=team["cm"]
            )


async def test_severity_change_needs_rationale_and_is_logged(db: Database) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        inc = await make_incident(session, team["lead"], Severity.P3)
        with pytest.raises(InvalidInput, match="rationale"):
            await incidents.change_severity(
                session, incident=inc, severity=Severity.P1, actor=team["lead"], rationale=""
            )
        await incidents.change_severity(
            session,
            incident=inc,
            severity=Severity.P1,
            actor=team["lead"],
            rationale="funds moving",
        )
        entries = await incidents.entries(session, incident=inc)
    assert inc.severity == "P1"
    assert entries[-1].kind == "severity" and entries[-1].rationale == "funds moving"


@pytest.mark.parametrize("bad", ["P0", "p6", "critical", ""])
def test_bad_severity_names_the_field(bad: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        incidents.parse_severity(bad)
    assert caught.value.field == "severity"


async def test_leader_handoff_takes_effect_only_on_acknowledgment(db: Database) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        second = await make_user(session, "lena", Role.INCIDENT_LEADER)
        inc = await make_incident(session, team["lead"])
        await incidents.assign(
            session,
            incident=inc,
            role=IncidentRole.INCIDENT_LEADER,
            user=team["lead"],
            actor=team["lead"],
        )
        assert inc.leader is not None and inc.leader.username == "leo"

        await incidents.assign(
            session,
            incident=inc,
            role=IncidentRole.INCIDENT_LEADER,
            user=second,
            actor=team["lead"],
        )
        assert inc.leader.username == "leo"  # not yet
        assert inc.pending_leader is not None and inc.pending_leader.user.username == "lena"
        with pytest.raises(PermissionDenied):
            await incidents.acknowledge_leadership(session, incident=inc, actor=team["dm1"])

        await incidents.acknowledge_leadership(session, incident=inc, actor=second)
        await session.refresh(inc, ["assignments"])
        assert inc.leader.username == "lena"
        assert inc.pending_leader is None
        texts = [e.text for e in await incidents.entries(session, incident=inc)]
    assert any("hand-off leo → lena acknowledged" in t for t in texts)
    assert sum("acknowledged" in t for t in texts) == 2


async def test_role_assignment_requires_the_matching_role(db: Database) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        inc = await make_incident(session, team["lead"])
        with pytest.raises(RuleViolation, match="scribe"):
            await incidents.assign(
                session, incident=inc, role=IncidentRole.SCRIBE, user=team["cm"], actor=team["lead"]
            )
        await incidents.assign(
            session, incident=inc, role=IncidentRole.SCRIBE, user=team["scribe"], actor=team["lead"]
        )
        await incidents.assign(
            session, incident=inc, role=IncidentRole.RESPONDER, user=team["cm"], actor=team["lead"]
        )
        assert [a.user.username for a in inc.holders(IncidentRole.SCRIBE)] == ["sam"]


async def test_log_entries_and_markdown_export(db: Database, clock: FrozenClock) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        inc = await make_incident(session, team["lead"], title="Vault | drained <b>now</b>")
        await incidents.assign(
            session,
            incident=inc,
            role=IncidentRole.INCIDENT_LEADER,
            user=team["lead"],
            actor=team["lead"],
        )
        clock.advance(minutes=7)
        await incidents.add_entry(
            session,
            incident=inc,
            kind=LogKind.NOTE,
            actor=team["scribe"],
            text="Attacker address seen in https://explorer.example.org/tx/1",
        )
        with pytest.raises(InvalidInput, match="rationale"):
            await incidents.add_entry(
                session,
                incident=inc,
                kind=LogKind.DECISION,
                actor=team["lead"],
                text="Pause the vault",
            )
        await incidents.add_entry(
            session,
            incident=inc,
            kind=LogKind.DECISION,
            actor=team["lead"],
            text="Pause the vault",
            rationale="stops further withdrawals",
        )
        await incidents.add_entry(
            session,
            incident=inc,
            kind=LogKind.ACTION,
            actor=team["lead"],
            text="Contact SEAL 911",
            owner=team["dm1"],
        )
        entries = await incidents.entries(session, incident=inc)
    markdown = export.render_markdown(inc, entries)
    assert markdown.startswith("# INC-2026-0001: Vault \\| drained \\<b\\>now\\</b\\>")
    for heading in (
        "## Summary",
        "## Roles",
        "## Communication channels",
        "## Timeline",
        "## Investigation",
        "## Actions",
        "## Resolution summary",
        "## Communications sent",
        "## Post-incident",
        "## Links and evidence",
    ):
        assert heading in markdown
    assert "| Status | Active (detected) |" in markdown
    assert "- 12:07 UTC - [note] Attacker address" in markdown
    assert "| 12:07 UTC | Contact SEAL 911 | dave |" in markdown
    assert "(rationale: stops further withdrawals)" in markdown
    assert "| Incident Leader | leo (leo) |" in markdown
    assert "<https://explorer.example.org/tx/1>" in markdown
    assert "<b>" not in markdown
    assert export.filename(inc) == "2026-01-01-vault-drained-b-now-b.md"
