"""The resolution checklist and the week of monitoring (issue 12, item 6): moving on with the
checklist incomplete, or ending monitoring early, needs a rationale the Incident Log keeps;
each tick records who and when; and the CLI."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from comms.cli import cli
from comms.clock import FrozenClock
from comms.db import Database
from comms.errors import InvalidInput, RuleViolation
from comms.incidents import resolution
from comms.incidents import service as incidents
from comms.incidents.models import IncidentStatus, LogKind
from tests.factories import make_incident, make_team

S = IncidentStatus


async def test_the_checklist_is_ticked_by_someone_and_guards_monitoring(
    db: Database, clock: FrozenClock
) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        inc = await make_incident(session, team["lead"])
        for step in (S.INVESTIGATING, S.MITIGATED):
            await incidents.change_status(session, incident=inc, status=step, actor=team["lead"])
        with pytest.raises(InvalidInput) as refused:
            await incidents.change_status(
                session, incident=inc, status=S.MONITORING, actor=team["lead"]
            )
        problem = refused.value.problems[0]
        assert problem.field == "rationale" and "Mitigation verified" in problem.problem
        await incidents.tick_checklist(
            session, incident=inc, item="mitigation_applied", actor=team["lead"]
        )
        clock.advance(minutes=3)
        await incidents.tick_checklist(
            session, incident=inc, item="Mitigation_Verified", actor=team["scribe"]
        )
        with pytest.raises(RuleViolation, match="ticked by sam"):
            await incidents.tick_checklist(
                session, incident=inc, item="mitigation_verified", actor=team["lead"]
            )
        with pytest.raises(InvalidInput) as no_note:
            await incidents.tick_checklist(
                session, incident=inc, item="permanent_fix_planned", actor=team["lead"]
            )
        assert no_note.value.problems[0].field == "note"
        with pytest.raises(InvalidInput, match="not a checklist item"):
            await incidents.tick_checklist(session, incident=inc, item="vibes", actor=team["lead"])
        rows = await resolution.items(session, inc)
        assert [(r.key, r.tick.ticked_by.username if r.tick else None) for r in rows] == [
            ("mitigation_applied", "leo"),
            ("mitigation_verified", "sam"),
            ("stakeholders_notified", None),
            ("permanent_fix_planned", None),
        ]
        # Moving on anyway takes a rationale, and the log names what was skipped.
        await incidents.change_status(
            session,
            incident=inc,
            status=S.MONITORING,
            actor=team["lead"],
            rationale="exchanges told by phone; fix planned tomorrow",
        )
        log = await incidents.entries(session, incident=inc)
    ticks = [e for e in log if e.kind == LogKind.CHECKLIST.value]
    assert [e.text for e in ticks] == [
        "Resolution checklist: Temporary mitigation applied",
        "Resolution checklist: Mitigation verified",
    ]
    moved = log[-1]
    assert "mitigated → monitoring" in moved.text
    assert "not complete: Stakeholders notified; Permanent fix planned" in moved.text
    assert moved.rationale.startswith("exchanges told")


async def test_monitoring_lasts_a_week_unless_someone_says_why(
    db: Database, clock: FrozenClock
) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        inc = await make_incident(session, team["lead"])
        for step in (S.INVESTIGATING, S.MITIGATED, S.MONITORING):
            await incidents.change_status(
                session, incident=inc, status=step, actor=team["lead"], rationale="drill"
            )
        assert inc.monitoring_since == clock.now()
        clock.advance(days=6, hours=23)
        with pytest.raises(InvalidInput) as early:
            await incidents.change_status(
                session, incident=inc, status=S.POST_INCIDENT, actor=team["lead"]
            )
        assert "before 2026-01-08 12:00 UTC" in early.value.problems[0].problem
        clock.advance(hours=1)
        await incidents.change_status(
            session, incident=inc, status=S.POST_INCIDENT, actor=team["lead"]
        )
        other = await make_incident(session, team["lead"], title="Oracle")
        for step in (S.INVESTIGATING, S.MITIGATED, S.MONITORING):
            await incidents.change_status(
                session, incident=other, status=step, actor=team["lead"], rationale="drill"
            )
        await incidents.change_status(  # a shorter week, said and logged
            session,
            incident=other,
            status=S.POST_INCIDENT,
            actor=team["lead"],
            rationale="the contract is retired",
        )
        assert (await incidents.entries(session, incident=other))[-1].rationale == (
            "the contract is retired"
        )


async def test_the_cli_shows_and_ticks_the_checklist(db: Database, cli_env: dict[str, str]) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        key = (await make_incident(session, team["lead"])).key
    runner = CliRunner()

    async def run(*args: str) -> tuple[int, str, str]:
        result = await asyncio.to_thread(runner.invoke, cli, list(args))
        return result.exit_code, result.stdout, result.stderr

    code, out, err = await run(
        "incident", "tick", key, "permanent_fix_planned", "--note", "leo, by 15 Jan", "--by", "sam"
    )
    assert code == 0, err
    code, out, err = await run("incident", "tick", key, "permanent_fix_planned", "--by", "leo")
    assert code == 3 and "incident.checklist" in err and "ticked by sam" in err
    code, out, err = await run("incident", "tick", key, "stakeholders_notified", "--by", "nobody")
    assert code == 2 and "by" in err
    code, out, err = await run("incident", "checklist", key, "--json")
    rows = {r["item"]: r for r in json.loads(out)}
    assert rows["permanent_fix_planned"]["ticked_by"] == "sam"
    assert rows["permanent_fix_planned"]["note"] == "leo, by 15 Jan"
    assert rows["mitigation_applied"]["ticked_by"] is None
    code, out, err = await run("incident", "checklist", key)
    assert "[x] permanent_fix_planned" in out and "[ ] mitigation_applied" in out
    code, out, err = await run(
        "incident", "note", key, "Alert on bridge outflows > 100 ETH", "--kind", "monitoring",
        "--by", "leo",
    )  # fmt: skip
    assert code == 0, err
