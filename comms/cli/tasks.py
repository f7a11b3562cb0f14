"""``comms incident task``: the Incident Leader's tasks, one per person at a time."""

from __future__ import annotations

import click
from sqlalchemy.ext.asyncio import AsyncSession

from comms.cli.base import ROW_ID, AppContext, emit, in_session
from comms.cli.incidents import incident
from comms.incidents import service as incidents
from comms.incidents import tasks
from comms.users import service as users


@incident.group("task")
def task() -> None:
    """Tasks of an incident: title, owner, status."""


def _warn(assigned: tasks.Assigned) -> None:
    if assigned.warning:
        click.echo(f"warning: {assigned.warning}", err=True)


@task.command("add")
@click.argument("key")
@click.option("--title", required=True)
@click.option("--owner", required=True, help="Who does it.")
@click.option("--by", "by", required=True, help="The Incident Leader giving it.")
@click.option("--json", "as_json", is_flag=True)
@in_session
async def task_add(
    app: AppContext, session: AsyncSession, key: str, title: str, owner: str, by: str, as_json: bool
) -> None:
    """Give someone a task; warns (on stderr) when they already have an open one."""

    actor = await users.require_user(session, username=by, field="by")
    owner_user = await users.require_user(session, username=owner, field="owner")
    inc = await incidents.require_incident(session, key=key)
    assigned = await tasks.assign_task(
        session, incident=inc, title=title, owner=owner_user, actor=actor
    )
    _warn(assigned)
    document = {**tasks.task_document(assigned.task), "warning": assigned.warning}
    emit(document, as_json, lambda: f"task #{assigned.task.id} → {owner_user.username}")


@task.command("list")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
@in_session
async def task_list(app: AppContext, session: AsyncSession, key: str, as_json: bool) -> None:
    """An incident's tasks, oldest first."""

    inc = await incidents.require_incident(session, key=key)
    rows = await tasks.list_tasks(session, incident=inc)
    emit(
        [tasks.task_document(t) for t in rows],
        as_json,
        lambda: (
            "\n".join(
                f"#{t.id:<5} {t.status.value:<11} {t.owner.username:<16} {t.title}" for t in rows
            )
            or "(no tasks)"
        ),
    )


@task.command("status")
@click.argument("task_id", type=ROW_ID)
@click.argument("status")
@click.option("--by", "by", required=True, help="The owner, or an Incident Leader.")
@in_session
async def task_status(
    app: AppContext, session: AsyncSession, task_id: int, status: str, by: str
) -> None:
    """Move a task to open, in_progress, done or cancelled."""

    actor = await users.require_user(session, username=by, field="by")
    found = await tasks.get_task(session, task_id=task_id)
    await tasks.set_status(session, task=found, status=tasks.parse_task_status(status), actor=actor)
    click.echo(f"task #{found.id} is now {found.status.value}")


@task.command("reassign")
@click.argument("task_id", type=ROW_ID)
@click.option("--owner", required=True)
@click.option("--by", "by", required=True, help="The Incident Leader.")
@in_session
async def task_reassign(
    app: AppContext, session: AsyncSession, task_id: int, owner: str, by: str
) -> None:
    """Hand an open task to someone else."""

    actor = await users.require_user(session, username=by, field="by")
    owner_user = await users.require_user(session, username=owner, field="owner")
    found = await tasks.get_task(session, task_id=task_id)
    assigned = await tasks.reassign(session, task=found, owner=owner_user, actor=actor)
    _warn(assigned)
    click.echo(f"task #{found.id} → {owner_user.username}")
