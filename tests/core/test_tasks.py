"""Incident tasks: one per person at a time (warned, not refused), owners and leaders update
them, every event in the Incident Log; and ``comms incident task``."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner

from comms.cli import cli
from comms.db import Database
from comms.enums import Role
from comms.errors import InvalidInput, PermissionDenied, RuleViolation
from comms.incidents import service as incidents
from comms.incidents import tasks
from comms.incidents.models import IncidentStatus, LogKind, TaskStatus
from tests.factories import make_incident, make_team, make_user


async def test_a_second_open_task_is_warned_and_logged(db: Database) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        rita = await make_user(session, "rita", Role.RESPONDER)
        first_incident = await make_incident(session, team["lead"])
        second_incident = await make_incident(session, team["lead"], title="Oracle")
        first = await tasks.assign_task(
            session,
            incident=first_incident,
            title="Pause the bridge",
            owner=rita,
            actor=team["lead"],
        )
        assert first.warning is None and first.task.status is TaskStatus.OPEN
        # Her open task in another incident counts too: she is one person.
        second = await tasks.assign_task(
            session,
            incident=second_incident,
            title="Check the oracle",
            owner=rita,
            actor=team["lead"],
        )
        assert [t.id for t in second.other_open] == [first.task.id]
        assert second.warning is not None and "one task per person" in second.warning
        assert "Pause the bridge" in second.warning
        # Once the first is done, a new task is no longer a second one.
        await tasks.set_status(session, task=first.task, status=TaskStatus.DONE, actor=rita)
        assert first.task.done_at is not None
        third = await tasks.assign_task(
            session, incident=first_incident, title="Write it up", owner=rita, actor=team["lead"]
        )
        assert [t.id for t in third.other_open] == [second.task.id]
        log = await incidents.entries(session, incident=first_incident)
    task_lines = [e for e in log if e.kind == LogKind.TASK.value]
    assert [e.text for e in task_lines] == [
        f"Task #{first.task.id} assigned to rita: Pause the bridge",
        f"Task #{first.task.id} open → done: Pause the bridge",
        f"Task #{third.task.id} assigned to rita: Write it up (warning: 1 other open task(s))",
    ]
    assert [e.actor.username for e in task_lines if e.actor] == ["leo", "rita", "leo"]
    assert all(e.owner is not None and e.owner.username == "rita" for e in task_lines)


async def test_who_may_give_and_change_tasks(db: Database) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        rita = await make_user(session, "rita", Role.RESPONDER)
        incident = await make_incident(session, team["lead"])
        with pytest.raises(PermissionDenied):  # giving tasks is the Incident Leader's call
            await tasks.assign_task(
                session, incident=incident, title="x", owner=rita, actor=team["scribe"]
            )
        given = await tasks.assign_task(
            session, incident=incident, title="Pause", owner=rita, actor=team["lead"]
        )
        with pytest.raises(PermissionDenied, match="belongs to rita"):
            await tasks.set_status(
                session, task=given.task, status=TaskStatus.DONE, actor=team["scribe"]
            )
        await tasks.set_status(session, task=given.task, status=TaskStatus.IN_PROGRESS, actor=rita)
        with pytest.raises(RuleViolation, match="already in_progress"):
            await tasks.set_status(
                session, task=given.task, status=TaskStatus.IN_PROGRESS, actor=rita
            )
        with pytest.raises(PermissionDenied):  # the owner may not hand it to someone else
            await tasks.reassign(session, task=given.task, owner=team["scribe"], actor=rita)
        handed = await tasks.reassign(
            session, task=given.task, owner=team["scribe"], actor=team["lead"]
        )
        assert handed.task.owner.username == "sam" and handed.warning is None
        with pytest.raises(InvalidInput) as bad:
            await tasks.assign_task(
                session, incident=incident, title="  ", owner=rita, actor=team["lead"]
            )
        assert bad.value.problems[0].field == "title"
        with pytest.raises(InvalidInput) as status:
            tasks.parse_task_status("finished")
        assert "not a task status" in str(status.value)
        for step in (
            IncidentStatus.INVESTIGATING,
            IncidentStatus.MITIGATED,
            IncidentStatus.MONITORING,
            IncidentStatus.POST_INCIDENT,
            IncidentStatus.CLOSED,
        ):
            await incidents.change_status(
                session, incident=incident, status=step, actor=team["lead"], rationale="drill"
            )
        with pytest.raises(RuleViolation, match="closed"):
            await tasks.assign_task(
                session, incident=incident, title="late", owner=rita, actor=team["lead"]
            )
        # A closed incident's open tasks no longer count as anyone's work.
        assert await tasks.open_tasks_of(session, owner=team["scribe"]) == []


async def test_the_cli_gives_lists_and_updates_tasks(db: Database, cli_env: dict[str, str]) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        await make_user(session, "rita", Role.RESPONDER)
        key = (await make_incident(session, team["lead"])).key
    runner = CliRunner()

    async def run(*args: str) -> tuple[int, str, str]:
        result = await asyncio.to_thread(runner.invoke, cli, list(args))
        return result.exit_code, result.stdout, result.stderr

    code, out, err = await run(
        "incident", "task", "add", key, "--title", "Pause the bridge", "--owner", "rita",
        "--by", "leo", "--json",
    )  # fmt: skip
    assert code == 0, err
    first = json.loads(out)
    assert (first["owner"], first["status"], first["warning"]) == ("rita", "open", None)
    code, out, err = await run(
        "incident", "task", "add", key, "--title", "Revoke approvals", "--owner", "rita",
        "--by", "leo",
    )  # fmt: skip
    assert code == 0 and "warning:" in err and "one task per person" in err
    code, out, err = await run(
        "incident", "task", "status", str(first["id"]), "done", "--by", "sam"
    )
    assert code == 3 and "refused by rule incident.task" in err
    code, out, err = await run(
        "incident", "task", "status", str(first["id"]), "done", "--by", "rita"
    )
    assert code == 0 and "is now done" in out
    code, out, err = await run(
        "incident", "task", "status", str(first["id"]), "finished", "--by", "rita"
    )
    assert code == 2 and "status" in err
    code, out, err = await run("incident", "task", "list", key, "--json")
    assert code == 0
    listed = json.loads(out)
    assert [(t["title"], t["status"]) for t in listed] == [
        ("Pause the bridge", "done"),
        ("Revoke approvals", "open"),
    ]
    assert listed[0]["done_at"] is not None
    code, out, err = await run(
        "incident", "task", "reassign", str(listed[1]["id"]), "--owner", "sam", "--by", "leo"
    )
    assert code == 0 and "→ sam" in out
    code, out, err = await run("incident", "log", key, "--json")
    texts = [e["text"] for e in json.loads(out) if e["kind"] == "task"]
    assert texts[-1].startswith(f"Task #{listed[1]['id']} handed from rita to sam")
