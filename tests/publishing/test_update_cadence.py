"""The public-update cadence (issue 12, item 5), through the worker and the sandbox with a
frozen clock: the Communication Manager is reminded 5 minutes before and when an update is
due, the Decision Makers and responders when it is overdue by half the interval again; an
update that goes out (and the time it promised) moves the due time; stages the worker slept
through are not sent late."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner
from sqlalchemy import update

from comms.cli import cli
from comms.clock import FrozenClock
from comms.db import Database
from comms.drafts import service as drafts
from comms.enums import Severity
from comms.incidents import cadence
from comms.incidents import service as incidents
from comms.incidents.models import Incident
from comms.jobs.models import Job, JobState
from comms.outbox.worker import Worker
from comms.settings import Settings
from tests.publishing.conftest import Control, World, approved_draft


async def _notices(control: Control, world: World, key: str) -> list[str]:
    channel = world.info["discord_channels"]["responders"]
    return [
        m["text"]
        for m in await control.discord_messages(channel)
        if "Public update" in m["text"] and key in m["text"]
    ]


async def test_reminders_before_when_due_and_overdue(
    clock: FrozenClock, db: Database, world: World, control: Control, worker: Worker
) -> None:
    key = world.incident.key  # a P1 opened at 12:00, nothing published: due 12:30
    await worker.run_until_settled(within=20)
    clock.advance(minutes=24, seconds=59)
    await worker.run_until_settled(within=20)
    assert await _notices(control, world, key) == []
    clock.advance(seconds=1)
    await worker.run_until_settled(within=20)
    (soon,) = await _notices(control, world, key)
    assert "Public update due in 5 minutes" in soon and "1 Jan 2026, 12:30 UTC" in soon
    assert "every 30 minutes" in soon
    clock.advance(minutes=5)
    await worker.run_until_settled(within=20)
    assert "Public update due now" in (await _notices(control, world, key))[-1]
    clock.advance(minutes=14, seconds=59)  # overdue at 12:45: half the interval again
    await worker.run_until_settled(within=20)
    assert len(await _notices(control, world, key)) == 2
    clock.advance(seconds=1)
    await worker.run_until_settled(within=20)
    overdue = (await _notices(control, world, key))[-1]
    assert "Public update overdue" in overdue and "Decision Makers and Incident Leader" in overdue
    async with db.transaction() as session:
        incident = await session.get(Incident, world.incident.id)
        assert incident is not None
        log = [e.text for e in await incidents.entries(session, incident=incident)]
    assert any(t.startswith("Public update overdue: it was due at 12:30 UTC") for t in log)

    # A worker that died after committing a notice runs its job again: nothing changes.
    async with db.transaction() as session:
        await session.execute(
            update(Job)
            .where(Job.kind == cadence.JOB_KIND, Job.state == JobState.DONE)
            .values(state=JobState.PENDING, next_attempt_at=clock.now(), done_at=None)
        )
    await worker.run_until_settled(within=20)
    assert len(await _notices(control, world, key)) == 3
    async with db.transaction() as session:
        incident = await session.get(Incident, world.incident.id)
        assert incident is not None
        again = [e.text for e in await incidents.entries(session, incident=incident)]
    assert again == log


async def test_an_update_that_goes_out_moves_the_due_time_to_its_promise(
    clock: FrozenClock,
    db: Database,
    world: World,
    control: Control,
    worker: Worker,
    pub_settings: Settings,
) -> None:
    key = world.incident.key
    await worker.run_until_settled(within=20)
    clock.advance(minutes=10)
    await approved_draft(db, world, pub_settings)  # promises the next update at 13:00
    await worker.run_until_settled(within=20)
    async with db.transaction() as session:
        incident = await session.get(Incident, world.incident.id)
        assert incident is not None
        due = await cadence.next_update(session, incident, pub_settings)
    assert due is not None and due.promised and f"{due.at:%H:%M}" == "13:00"
    clock.advance(minutes=20)  # 12:30: the first plan's reminders are stale now
    await worker.run_until_settled(within=20)
    assert await _notices(control, world, key) == []
    clock.advance(minutes=25)  # 12:55
    await worker.run_until_settled(within=20)
    (soon,) = await _notices(control, world, key)
    assert "due in 5 minutes" in soon and "promised the community an update" in soon


async def test_stages_slept_through_are_not_sent_late_and_p4_owes_nothing(
    clock: FrozenClock, db: Database, world: World, control: Control, worker: Worker
) -> None:
    async with db.transaction() as session:
        quiet = await incidents.open_incident(
            session, title="Docs typo", severity=Severity.P4, actor=world.team["lead"]
        )
    await worker.run_until_settled(within=20)
    clock.advance(minutes=50)  # the worker was down from 12:00 to 12:50
    await worker.run_until_settled(within=20)
    notices = await _notices(control, world, world.incident.key)
    assert len(notices) == 1 and "overdue" in notices[0]
    clock.advance(hours=6)
    await worker.run_until_settled(within=20)
    assert await _notices(control, world, quiet.key) == []


async def test_raising_the_severity_brings_the_due_time_forward(
    clock: FrozenClock, db: Database, world: World, control: Control, worker: Worker
) -> None:
    async with db.transaction() as session:
        minor = await incidents.open_incident(
            session, title="Oracle drift", severity=Severity.P3, actor=world.team["lead"]
        )
    await worker.run_until_settled(within=20)
    clock.advance(minutes=10)
    async with db.transaction() as session:
        found = await session.get(Incident, minor.id)
        assert found is not None
        await incidents.change_severity(
            session, incident=found, severity=Severity.P1, actor=world.team["lead"], rationale="x"
        )
    await worker.run_until_settled(within=20)
    clock.advance(minutes=15)  # 12:25: 5 minutes before 12:30 (P1: opened + 30 minutes)
    await worker.run_until_settled(within=20)
    (soon,) = await _notices(control, world, minor.key)
    assert "due in 5 minutes" in soon


async def test_no_news_drafts_the_next_update_to_the_same_destinations(
    clock: FrozenClock,
    db: Database,
    world: World,
    worker: Worker,
    pub_settings: Settings,
    cli_env: dict[str, str],
) -> None:
    key = world.incident.key
    sent = await approved_draft(db, world, pub_settings)  # at_risk, to dc_news and tg_news
    await worker.run_until_settled(within=20)
    clock.advance(minutes=31, seconds=10)  # 12:31:10 + 30 min → next update at 13:05
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["incident", "no-news", key, "--by", "carol"]
    )
    assert result.exit_code == 0, result.output
    async with db.transaction() as session:
        draft = await drafts.require_draft(session, draft_id=int(result.stdout))
        assert draft.template == "active-exploit-update" and draft.status == "draft"
        assert draft.variables["funds_status"] == "at_risk"
        assert draft.variables["next_update"].startswith("2026-01-01T13:05")
        assert "no new information" in draft.variables["update"]
        assert {d.name for d in draft.destinations} == {d.name for d in sent.destinations}
        assert draft.approvals == []  # it still needs approval
    shown = await asyncio.to_thread(CliRunner().invoke, cli, ["incident", "show", key, "--json"])
    due = json.loads(shown.stdout)["next_update"]
    assert due["basis"] == "promised" and due["due_at"].startswith("2026-01-01T13:00")
