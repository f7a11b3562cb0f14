"""Incident tasks: the Incident Leader gives each person one piece of work at a time.

The policy asks for "one task per person at a time": a person with two open tasks drops one
of them under pressure. Giving someone a second open task is allowed (sometimes nobody else
can do it) but never silent: ``assign_task`` returns the person's other open tasks, and the
panel and the CLI show them as a warning. Every task event goes into the Incident Log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.clock import utcnow
from comms.errors import FieldProblem, InvalidInput, NotFound, PermissionDenied, RuleViolation
from comms.incidents import service as incidents
from comms.incidents.models import Incident, IncidentStatus, IncidentTask, LogKind, TaskStatus
from comms.permissions import Action, can, require
from comms.text import clean_text
from comms.users.models import User

TITLE_MAX = 200


@dataclass(frozen=True)
class Assigned:
    """A task just given, and the owner's other open tasks (the policy's warning)."""

    task: IncidentTask
    other_open: Sequence[IncidentTask]

    @property
    def warning(self) -> str | None:
        if not self.other_open:
            return None
        named = ", ".join(f"#{t.id} {t.title!r} ({t.incident.key})" for t in self.other_open)
        return (
            f"{self.task.owner.username} already has an open task: {named}. "
            "The policy asks for one task per person at a time."
        )


def parse_task_status(value: str, *, field: str = "status") -> TaskStatus:
    try:
        return TaskStatus(value.strip().lower())
    except ValueError:
        choices = ", ".join(s.value for s in TaskStatus)
        raise InvalidInput(
            FieldProblem(field, f"{value!r} is not a task status ({choices})")
        ) from None


async def open_tasks_of(
    session: AsyncSession, *, owner: User, excluding: int | None = None
) -> list[IncidentTask]:
    """``owner``'s open tasks in incidents that are not closed, oldest first."""
    query = (
        select(IncidentTask)
        .join(Incident, Incident.id == IncidentTask.incident_id)
        .where(
            IncidentTask.owner_id == owner.id,
            IncidentTask.status.in_([s for s in TaskStatus if s.is_open]),
            Incident.status != IncidentStatus.CLOSED,
        )
        .order_by(IncidentTask.created_at, IncidentTask.id)
    )
    if excluding is not None:
        query = query.where(IncidentTask.id != excluding)
    return list((await session.scalars(query)).all())


async def list_tasks(session: AsyncSession, *, incident: Incident) -> list[IncidentTask]:
    query = (
        select(IncidentTask)
        .where(IncidentTask.incident_id == incident.id)
        .order_by(IncidentTask.created_at, IncidentTask.id)
    )
    return list((await session.scalars(query)).all())


async def busy_owners(session: AsyncSession) -> dict[int, int]:
    """Open tasks per person (user id → count), for the assign form's warnings."""
    counts: dict[int, int] = {}
    for task in await _all_open(session):
        counts[task.owner_id] = counts.get(task.owner_id, 0) + 1
    return counts


async def _all_open(session: AsyncSession) -> list[IncidentTask]:
    query = (
        select(IncidentTask)
        .join(Incident, Incident.id == IncidentTask.incident_id)
        .where(
            IncidentTask.status.in_([s for s in TaskStatus if s.is_open]),
            Incident.status != IncidentStatus.CLOSED,
        )
    )
    return list((await session.scalars(query)).all())


async def get_task(session: AsyncSession, *, task_id: int, field: str = "task") -> IncidentTask:
    task = await session.get(IncidentTask, task_id)
    if task is None:
        raise NotFound(f"no task #{task_id}", field=field)
    return task


def _check_owner(owner: User) -> None:
    if not owner.active:
        raise RuleViolation("incident.task", f"{owner.username} is disabled", field="owner")


def _check_open(incident: Incident) -> None:
    if not incident.is_open:
        raise RuleViolation("incident.closed", f"{incident.key} is closed")


async def assign_task(
    session: AsyncSession, *, incident: Incident, title: str, owner: User, actor: User
) -> Assigned:
    """Give ``owner`` a task (the Incident Leader's call, so ``incident.manage``)."""
    require(actor, Action.INCIDENT_MANAGE)
    _check_open(incident)
    clean = clean_text("title", title, limit=TITLE_MAX, required=True, multiline=False)
    _check_owner(owner)
    now = utcnow()
    task = IncidentTask(
        incident_id=incident.id,
        title=clean,
        owner_id=owner.id,
        status=TaskStatus.OPEN,
        created_by_id=actor.id,
        created_at=now,
        updated_at=now,
    )
    session.add(task)
    await session.flush()
    await session.refresh(task, ["incident", "owner", "created_by"])
    others = await open_tasks_of(session, owner=owner, excluding=task.id)
    assigned = Assigned(task=task, other_open=others)
    text = f"Task #{task.id} assigned to {owner.username}: {clean}"
    if assigned.warning:
        text += f" (warning: {len(others)} other open task(s))"
    await incidents.log(
        session, incident=incident, kind=LogKind.TASK, text=text, actor=actor, owner=owner
    )
    await audit.record(
        session,
        actor=actor.username,
        action="incident.task.assign",
        target=f"incident:{incident.key}",
        details={"task": task.id, "owner": owner.username, "other_open": len(others)},
    )
    return assigned


def _may_update(task: IncidentTask, actor: User) -> None:
    if task.owner_id == actor.id or can(actor, Action.INCIDENT_MANAGE):
        return
    raise PermissionDenied(
        f"task #{task.id} belongs to {task.owner.username}: only they or an Incident Leader "
        "may change it",
        rule="incident.task",
    )


async def set_status(
    session: AsyncSession, *, task: IncidentTask, status: TaskStatus, actor: User
) -> IncidentTask:
    """The owner reports progress, or the Incident Leader closes or reopens the task."""
    _may_update(task, actor)
    _check_open(task.incident)
    old = task.status
    if status == old:
        raise RuleViolation("incident.task", f"task #{task.id} is already {status.value}")
    now = utcnow()
    task.status = status
    task.updated_at = now
    task.done_at = now if status is TaskStatus.DONE else None
    await incidents.log(
        session,
        incident=task.incident,
        kind=LogKind.TASK,
        text=f"Task #{task.id} {old.value} → {status.value}: {task.title}",
        actor=actor,
        owner=task.owner,
    )
    await audit.record(
        session,
        actor=actor.username,
        action="incident.task.status",
        target=f"incident:{task.incident.key}",
        details={"task": task.id, "from": old.value, "to": status.value},
    )
    return task


async def reassign(
    session: AsyncSession, *, task: IncidentTask, owner: User, actor: User
) -> Assigned:
    """Hand an open task to someone else (the Incident Leader's call)."""
    require(actor, Action.INCIDENT_MANAGE)
    _check_open(task.incident)
    if not task.status.is_open:
        raise RuleViolation("incident.task", f"task #{task.id} is {task.status.value}")
    if task.owner_id == owner.id:
        raise RuleViolation(
            "incident.task", f"task #{task.id} is already {owner.username}'s", field="owner"
        )
    _check_owner(owner)
    previous = task.owner
    task.owner_id = owner.id
    task.owner = owner
    task.updated_at = utcnow()
    await session.flush()
    others = await open_tasks_of(session, owner=owner, excluding=task.id)
    assigned = Assigned(task=task, other_open=others)
    text = f"Task #{task.id} handed from {previous.username} to {owner.username}: {task.title}"
    if assigned.warning:
        text += f" (warning: {len(others)} other open task(s))"
    await incidents.log(
        session, incident=task.incident, kind=LogKind.TASK, text=text, actor=actor, owner=owner
    )
    await audit.record(
        session,
        actor=actor.username,
        action="incident.task.reassign",
        target=f"incident:{task.incident.key}",
        details={"task": task.id, "from": previous.username, "to": owner.username},
    )
    return assigned


def task_document(task: IncidentTask) -> dict[str, object]:
    """The JSON form of ``comms incident task list --json``."""
    return {
        "id": task.id,
        "incident": task.incident.key,
        "title": task.title,
        "owner": task.owner.username,
        "status": task.status.value,
        "created_by": task.created_by.username,
        "created_at": task.created_at.isoformat(),
        "updated_at": task.updated_at.isoformat(),
        "done_at": task.done_at.isoformat() if task.done_at else None,
    }
