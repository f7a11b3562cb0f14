"""Who may approve is part of the gate (issue 9, finding 1): the CLI makes the first Decision
Makers and says so; the settings that weaken the gate are audited at start and the Decision
Makers are told; role grants count only approvals by current, independent Decision Makers."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from comms import flows
from comms.audit.models import AuditEvent
from comms.cli import cli
from comms.db import Database
from comms.enums import Role
from comms.errors import RuleViolation
from comms.outbox.models import Notification
from comms.settings import Settings
from comms.users import grants
from comms.users import service as users
from tests.factories import make_destinations, make_user


def test_user_add_says_the_cli_makes_the_first_decision_makers(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    result = runner.invoke(cli, ["user", "add", "dave", "--role", "decision_maker"])
    assert result.exit_code == 0, result.output
    assert "takes effect at once" in result.output
    assert "From the panel, granting decision_maker needs 1" in result.output
    help_text = runner.invoke(cli, ["user", "add", "--help"]).output
    assert "first Decision Makers" in help_text


async def test_weaker_gate_settings_are_audited_and_told_at_start(
    db: Database, settings: Settings
) -> None:
    strict = settings.model_copy(update={"approval_quorum": {**settings.approval_quorum, "P1": 2}})
    loose = settings.model_copy(update={"allow_self_approval": True, "approval_ttl_minutes": None})
    async with db.transaction() as session:
        await make_destinations(session)
        assert await flows.record_gate_configuration(session, settings=strict, process="t") == []
        # The same settings again record nothing new.
        assert await flows.record_gate_configuration(session, settings=strict, process="t") == []
        weaker = await flows.record_gate_configuration(session, settings=loose, process="worker")
    assert "P1 quorum lowered from 2 to 1" in weaker
    assert "self-approval turned on" in weaker
    async with db.transaction() as session:
        events = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action == "gate.configuration")
            )
        ).all()
        notes = (await session.scalars(select(Notification))).all()
    assert len(events) == 2 and events[-1].details["weakened"] == weaker
    assert any("Approval settings weakened" in n.text and "self-approval" in n.text for n in notes)


async def test_grant_counts_only_current_independent_decision_makers(
    db: Database, settings: Settings
) -> None:
    two = settings.model_copy(update={"approval_quorum": {**settings.approval_quorum, "P1": 2}})
    async with db.transaction() as session:
        admin = await make_user(session, "ada", Role.ADMIN)
        dual = await make_user(session, "duo", Role.ADMIN, Role.DECISION_MAKER)
        dave = await make_user(session, "dave", Role.DECISION_MAKER)
        erin = await make_user(session, "erin", Role.DECISION_MAKER)
        leo = await make_user(session, "leo", Role.INCIDENT_LEADER)
        grant = await grants.request(
            session, user=leo, role=Role.DECISION_MAKER, actor=dual, settings=two
        )
        with pytest.raises(RuleViolation) as asker:
            await grants.approve(session, grant=grant, actor=dual, settings=two)
        assert asker.value.rule == "role_grant.requester"
        await grants.approve(session, grant=grant, actor=dave, settings=two)
        # dave loses the role: his approval no longer counts towards the grant.
        await users.set_roles(session, user=dave, roles=[Role.RESPONDER])
        await grants.approve(session, grant=grant, actor=erin, settings=two)
        assert grant.status == "pending" and not leo.has_role(Role.DECISION_MAKER)
        with pytest.raises(RuleViolation) as self_change:
            await users.set_roles(
                session,
                user=admin,
                roles=[Role.ADMIN, Role.DECISION_MAKER],
                actor=admin,
                settings=two,
            )
        assert self_change.value.rule == "roles.self"
        frank = await make_user(session, "frank", Role.DECISION_MAKER)
        await grants.approve(session, grant=grant, actor=frank, settings=two)
        assert grant.status == "granted" and leo.has_role(Role.DECISION_MAKER)
        record: Any = await session.scalar(
            select(AuditEvent)
            .where(AuditEvent.action == "user.roles")
            .order_by(AuditEvent.seq.desc())
        )
        assert record.details["approvers"] == ["erin", "frank"]
