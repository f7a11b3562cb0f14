"""Incidents: opening, the status machine, severity, roles, the leader hand-off, the log."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.clock import utcnow
from comms.enums import Role, Severity
from comms.errors import FieldProblem, InvalidInput, NotFound, PermissionDenied, RuleViolation
from comms.incidents import cadence, resolution
from comms.incidents.models import (
    ChecklistTick,
    Incident,
    IncidentAssignment,
    IncidentLogEntry,
    IncidentRole,
    IncidentStatus,
    LogKind,
)
from comms.jobs.scheduled import schedule
from comms.permissions import Action, require
from comms.text import clean_text, is_storable_name
from comms.users.models import User

S = IncidentStatus

# Forward through the policy's steps, back to investigating when a mitigation fails or the
# problem recurs, and closed early for a false alarm. Anything else is refused.
TRANSITIONS: dict[IncidentStatus, frozenset[IncidentStatus]] = {
    S.DETECTED: frozenset({S.COORDINATING, S.INVESTIGATING, S.CLOSED}),
    S.COORDINATING: frozenset({S.INVESTIGATING, S.MITIGATED, S.CLOSED}),
    S.INVESTIGATING: frozenset({S.MITIGATED, S.CLOSED}),
    S.MITIGATED: frozenset({S.MONITORING, S.INVESTIGATING}),
    S.MONITORING: frozenset({S.POST_INCIDENT, S.INVESTIGATING, S.CLOSED}),
    S.POST_INCIDENT: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
}
ORDER = list(IncidentStatus)
# The policy requires a post-mortem for P1-P3: those close only through post_incident.
POST_MORTEM_REQUIRED = frozenset({Severity.P1, Severity.P2, Severity.P3})

# Which service-wide role a person needs to take an incident role.
ROLE_REQUIREMENT: dict[IncidentRole, Role | None] = {
    IncidentRole.INCIDENT_LEADER: Role.INCIDENT_LEADER,
    IncidentRole.SCRIBE: Role.SCRIBE,
    IncidentRole.COMMS_MANAGER: Role.COMMS_MANAGER,
    IncidentRole.DECISION_MAKER: Role.DECISION_MAKER,
    IncidentRole.RESPONDER: None,
    IncidentRole.DETECTOR: None,
}

TITLE_MAX = 200
TEXT_MAX = 5000

# Notices the worker sends for incidents (``comms.incidents.notices`` handles the job kind):
# scheduled in the transaction of the event, so they exist exactly when the event does.
INCIDENT_NOTICE = cadence.JOB_KIND
# The policy: an offered Incident Leader acknowledges within minutes on a critical incident;
# after this long the worker reminds them and alerts the other Incident Leaders.
# The policy: monitor for at least a week after mitigation (COMMS_MONITORING_MIN_DAYS).
MIN_MONITORING = timedelta(days=7)
HANDOFF_ACK_WITHIN: dict[Severity, timedelta] = {
    Severity.P1: timedelta(minutes=5),
    Severity.P2: timedelta(minutes=15),
}


def parse_severity(value: str, *, field: str = "severity") -> Severity:
    try:
        return Severity(value.strip().upper())
    except ValueError:
        raise InvalidInput(
            FieldProblem(field, f"{value!r} is not a severity (use P1..P5)")
        ) from None


def parse_status(value: str, *, field: str = "status") -> IncidentStatus:
    try:
        return IncidentStatus(value.strip().lower())
    except ValueError:
        choices = ", ".join(s.value for s in IncidentStatus)
        raise InvalidInput(FieldProblem(field, f"{value!r} is not a status ({choices})")) from None


def parse_incident_role(value: str, *, field: str = "role") -> IncidentRole:
    try:
        return IncidentRole(value.strip().lower())
    except ValueError:
        choices = ", ".join(r.value for r in IncidentRole)
        raise InvalidInput(
            FieldProblem(field, f"{value!r} is not an incident role ({choices})")
        ) from None


def _check_text(
    field: str, value: str, *, required: bool, limit: int, multiline: bool = True
) -> str:
    return clean_text(field, value, limit=limit, required=required, multiline=multiline)


async def _notice(
    session: AsyncSession,
    *,
    notice: str,
    key: str,
    due_at: datetime | None = None,
    **payload: Any,
) -> None:
    await schedule(
        session,
        kind=INCIDENT_NOTICE,
        due_at=due_at or utcnow(),
        payload={"notice": notice, **payload},
        dedup_key=f"{INCIDENT_NOTICE}:{notice}:{key}",
    )


async def _p1_notice(session: AsyncSession, incident: Incident, *, event: str, by: str) -> None:
    """The policy: on a P1 the Decision Makers are alerted at once."""
    await _notice(
        session,
        notice="p1",
        key=f"{incident.id}:{utcnow():%Y%m%dT%H%M%S%f}",
        incident_id=incident.id,
        event=event,
        by=by,
    )


async def _replan_updates(session: AsyncSession, incident: Incident) -> None:
    """The next public update's due time may have moved: the worker plans its reminders."""
    now = utcnow()
    await cadence.plan_soon(session, incident_id=incident.id, key=f"{now:%Y%m%dT%H%M%S%f}", at=now)


async def get_by_key(session: AsyncSession, *, key: str) -> Incident | None:
    if not is_storable_name(key):
        return None
    return await session.scalar(select(Incident).where(Incident.key == key.strip().upper()))


async def require_incident(session: AsyncSession, *, key: str, field: str = "incident") -> Incident:
    incident = await get_by_key(session, key=key)
    if incident is None:
        raise NotFound(f"no incident {key!r}", field=field)
    return incident


async def get(session: AsyncSession, *, incident_id: int) -> Incident | None:
    return await session.get(Incident, incident_id)


async def list_incidents(session: AsyncSession, *, open_only: bool = False) -> list[Incident]:
    query = select(Incident).order_by(Incident.opened_at.desc(), Incident.id.desc())
    if open_only:
        query = query.where(Incident.status != S.CLOSED)
    return list((await session.scalars(query)).all())


async def _next_key(session: AsyncSession, year: int) -> str:
    prefix = f"INC-{year}-"
    last = await session.scalar(
        select(func.max(Incident.key)).where(Incident.key.like(f"{prefix}%"))
    )
    number = int(last.rsplit("-", 1)[1]) + 1 if last else 1
    return f"{prefix}{number:04d}"


async def log(
    session: AsyncSession,
    *,
    incident: Incident,
    kind: LogKind,
    text: str,
    actor: User | None,
    rationale: str = "",
    owner: User | None = None,
    due_at: datetime | None = None,
    channel: str = "",
) -> IncidentLogEntry:
    """Append to the Incident Log (used by every incident and comms event)."""
    return add_entry_row(
        session,
        incident_id=incident.id,
        kind=kind,
        text=text,
        actor=actor,
        rationale=rationale,
        owner=owner,
        due_at=due_at,
        channel=channel,
    )


def add_entry_row(
    session: AsyncSession,
    *,
    incident_id: int,
    kind: LogKind,
    text: str,
    actor: User | None,
    rationale: str = "",
    owner: User | None = None,
    due_at: datetime | None = None,
    channel: str = "",
) -> IncidentLogEntry:
    """``log`` by the incident's id (the outbox records each delivery without loading it)."""
    entry = IncidentLogEntry(
        incident_id=incident_id,
        at=utcnow(),
        actor_id=actor.id if actor else None,
        kind=kind.value,
        text=text,
        rationale=rationale,
        owner_id=owner.id if owner else None,
        due_at=due_at,
        channel=channel,
    )
    # The entry is a row of its own: the incident's row is left alone (every delivery of a
    # fan-out writes an entry, and several workers would otherwise queue on that one row).
    # Flushed with the rest of the transaction (before any query, at commit).
    session.add(entry)
    return entry


async def open_incident(
    session: AsyncSession,
    *,
    title: str,
    severity: Severity,
    actor: User,
    summary: str = "",
) -> Incident:
    """Open an incident; the opener is recorded as its Detector."""
    require(actor, Action.INCIDENT_OPEN)
    clean_title = _check_text("title", title, required=True, limit=TITLE_MAX, multiline=False)
    clean_summary = _check_text("summary", summary, required=False, limit=TEXT_MAX)
    now = utcnow()
    for _attempt in range(5):
        key = await _next_key(session, now.year)
        try:
            async with session.begin_nested():
                incident = Incident(
                    key=key,
                    title=clean_title,
                    summary=clean_summary,
                    severity=severity.value,
                    status=S.DETECTED,
                    opened_by_id=actor.id,
                    opened_at=now,
                    updated_at=now,
                )
                session.add(incident)
                await session.flush()
            break
        except IntegrityError:
            continue  # another process took this key; compute the next one
    else:  # pragma: no cover - five collisions in a row
        raise RuleViolation("incident.key", "could not allocate an incident key; try again")
    session.add(
        IncidentAssignment(
            incident_id=incident.id,
            role=IncidentRole.DETECTOR.value,
            user_id=actor.id,
            assigned_by_id=actor.id,
            assigned_at=now,
            acknowledged_at=now,
        )
    )
    await session.flush()
    await session.refresh(incident, ["assignments"])
    await log(
        session,
        incident=incident,
        kind=LogKind.STATUS,
        actor=actor,
        text=f"Incident opened as {severity.value} ({severity.label}): {clean_title}",
    )
    await audit.record(
        session,
        actor=actor.username,
        action="incident.open",
        target=f"incident:{key}",
        details={"severity": severity.value, "title": clean_title},
    )
    if severity is Severity.P1:
        await _p1_notice(session, incident, event="opened", by=actor.username)
    await _replan_updates(session, incident)
    return incident


async def change_status(
    session: AsyncSession,
    *,
    incident: Incident,
    status: IncidentStatus,
    actor: User,
    rationale: str = "",
    min_monitoring: timedelta = MIN_MONITORING,
) -> Incident:
    """Move through the status machine. Going back, closing early, moving to monitoring with
    the resolution checklist incomplete and ending monitoring before ``min_monitoring`` each
    need a rationale, which the Incident Log keeps."""
    require(actor, Action.INCIDENT_MANAGE)
    current = incident.status
    why = _check_text("rationale", rationale, required=False, limit=TEXT_MAX)
    if status == current:
        raise RuleViolation("incident.transition", f"{incident.key} is already {status.value}")
    if status not in TRANSITIONS[current]:
        allowed = ", ".join(s.value for s in sorted(TRANSITIONS[current], key=ORDER.index))
        raise RuleViolation(
            "incident.transition",
            f"{incident.key} cannot go from {current.value} to {status.value} "
            f"(allowed: {allowed or 'none, it is closed'})",
            field="status",
        )
    backwards = ORDER.index(status) < ORDER.index(current)
    early_close = status is S.CLOSED and current != S.POST_INCIDENT
    if (backwards or early_close) and not why:
        raise InvalidInput(
            FieldProblem(
                "rationale", "is required when an incident goes back a step or closes early"
            )
        )
    if (
        early_close
        and current == S.MONITORING
        and Severity(incident.severity) in POST_MORTEM_REQUIRED
    ):
        raise RuleViolation(
            "incident.post_mortem_required",
            f"{incident.key} is {incident.severity}: P1-P3 incidents close through post_incident "
            "(a post-mortem is required)",
            field="status",
        )
    now = utcnow()
    skipped: list[str] = []
    if current is S.MITIGATED and status is S.MONITORING:
        skipped = await resolution.missing(session, incident)
        if skipped and not why:
            raise InvalidInput(
                FieldProblem(
                    "rationale",
                    "is required while the resolution checklist is incomplete (not ticked: "
                    + "; ".join(skipped)
                    + ")",
                )
            )
    since = incident.monitoring_since
    if current is S.MONITORING and status in (S.POST_INCIDENT, S.CLOSED) and since is not None:
        may_end = since + min_monitoring
        if now < may_end and not why:
            raise InvalidInput(
                FieldProblem(
                    "rationale",
                    f"is required to end monitoring before {may_end:%Y-%m-%d %H:%M} UTC "
                    f"(the policy: at least {min_monitoring.days} days)",
                )
            )
    incident.status = status
    incident.updated_at = utcnow()
    if status is S.MONITORING:
        incident.monitoring_since = now
        await _notice(
            session,
            notice="monitoring_due",
            key=f"{incident.id}:{now:%Y%m%dT%H%M%S%f}",
            due_at=now + min_monitoring,
            incident_id=incident.id,
            since=now.isoformat(),
        )
    if status is S.MITIGATED and incident.mitigated_at is None:
        incident.mitigated_at = now
    if status in (S.POST_INCIDENT, S.CLOSED) and incident.resolved_at is None:
        incident.resolved_at = now
    if status is S.INVESTIGATING:
        incident.resolved_at = None
    await log(
        session,
        incident=incident,
        kind=LogKind.STATUS,
        actor=actor,
        rationale=why,
        text=f"Status {current.value} → {status.value}"
        + (f" (resolution checklist not complete: {'; '.join(skipped)})" if skipped else ""),
    )
    await audit.record(
        session,
        actor=actor.username,
        action="incident.status",
        target=f"incident:{incident.key}",
        details={"from": current.value, "to": status.value, "rationale": why},
    )
    await _replan_updates(session, incident)
    return incident


async def change_severity(
    session: AsyncSession,
    *,
    incident: Incident,
    severity: Severity,
    actor: User,
    rationale: str,
) -> Severity:
    """Change the severity; returns the old one. Callers re-render open drafts (see flows)."""
    require(actor, Action.INCIDENT_MANAGE)
    why = _check_text("rationale", rationale, required=True, limit=TEXT_MAX)
    old = Severity(incident.severity)
    if severity == old:
        raise RuleViolation("incident.severity", f"{incident.key} is already {severity.value}")
    if not incident.is_open:
        raise RuleViolation("incident.closed", f"{incident.key} is closed")
    incident.severity = severity.value
    incident.updated_at = utcnow()
    await log(
        session,
        incident=incident,
        kind=LogKind.SEVERITY,
        actor=actor,
        rationale=why,
        text=f"Severity {old.value} → {severity.value} ({severity.label})",
    )
    await audit.record(
        session,
        actor=actor.username,
        action="incident.severity",
        target=f"incident:{incident.key}",
        details={"from": old.value, "to": severity.value, "rationale": why},
    )
    if severity is Severity.P1:
        await _p1_notice(session, incident, event="raised", by=actor.username)
    await _replan_updates(session, incident)
    return old


async def assign(
    session: AsyncSession,
    *,
    incident: Incident,
    role: IncidentRole,
    user: User,
    actor: User,
) -> IncidentAssignment:
    """Assign an incident role.

    A new Incident Leader takes over only when they acknowledge (``acknowledge``); until then
    the current leader stays in charge. Assigning yourself is acknowledged at once.
    """
    require(actor, Action.INCIDENT_MANAGE)
    if not incident.is_open:
        raise RuleViolation("incident.closed", f"{incident.key} is closed")
    needed = ROLE_REQUIREMENT[role]
    if not user.active:
        raise RuleViolation("incident.assign", f"{user.username} is disabled", field="user")
    if needed is not None and not user.has_role(needed):
        raise RuleViolation(
            "incident.assign",
            f"{user.username} does not hold the {needed.value} role",
            field="user",
        )
    if any(a.user_id == user.id for a in incident.holders(role)):
        raise RuleViolation(
            "incident.assign",
            f"{user.username} is already {role.label} of {incident.key}",
            field="user",
        )
    now = utcnow()
    is_leader = role is IncidentRole.INCIDENT_LEADER
    if is_leader:
        pending = incident.pending_leader
        if pending is not None:
            pending.ended_at = now  # superseded before acknowledging
    self_ack = is_leader and user.id == actor.id
    assignment = IncidentAssignment(
        incident_id=incident.id,
        role=role.value,
        user_id=user.id,
        assigned_by_id=actor.id,
        assigned_at=now,
        acknowledged_at=now if (self_ack or not is_leader) else None,
    )
    session.add(assignment)
    await session.flush()
    await session.refresh(incident, ["assignments"])
    if is_leader and self_ack:
        await _complete_handoff(session, incident=incident, assignment=assignment, actor=actor)
    elif is_leader:
        await log(
            session,
            incident=incident,
            kind=LogKind.ROLE,
            actor=actor,
            text=f"Incident Leader hand-off offered to {user.username}; awaiting acknowledgment",
        )
        await _handoff_notices(session, incident=incident, assignment=assignment)
    else:
        await log(
            session,
            incident=incident,
            kind=LogKind.ROLE,
            actor=actor,
            text=f"{user.username} assigned as {role.label}",
        )
    await audit.record(
        session,
        actor=actor.username,
        action="incident.assign",
        target=f"incident:{incident.key}",
        details={"role": role.value, "user": user.username},
    )
    return assignment


async def _handoff_notices(
    session: AsyncSession, *, incident: Incident, assignment: IncidentAssignment
) -> None:
    """Ask the offered leader now; on P1 and P2, check again after the policy's window."""
    await _notice(
        session,
        notice="handoff_offered",
        key=str(assignment.id),
        assignment_id=assignment.id,
    )
    window = HANDOFF_ACK_WITHIN.get(Severity(incident.severity))
    if window is not None:
        await _notice(
            session,
            notice="handoff_overdue",
            key=str(assignment.id),
            due_at=assignment.assigned_at + window,
            assignment_id=assignment.id,
            minutes=int(window.total_seconds() // 60),
        )


async def _complete_handoff(
    session: AsyncSession, *, incident: Incident, assignment: IncidentAssignment, actor: User
) -> None:
    previous = [a for a in incident.holders(IncidentRole.INCIDENT_LEADER) if a.id != assignment.id]
    for old in previous:
        old.ended_at = assignment.acknowledged_at
    names = ", ".join(a.user.username for a in previous) or "nobody"
    await log(
        session,
        incident=incident,
        kind=LogKind.ROLE,
        actor=actor,
        text=f"Incident Leader hand-off {names} → {assignment.user.username} acknowledged",
    )


async def acknowledge_leadership(
    session: AsyncSession, *, incident: Incident, actor: User
) -> IncidentAssignment:
    """The offered leader accepts; only now does the hand-off take effect and get logged."""
    pending = incident.pending_leader
    if pending is None:
        raise RuleViolation(
            "incident.handoff", f"no Incident Leader hand-off is pending on {incident.key}"
        )
    if pending.user_id != actor.id:
        raise PermissionDenied(
            f"the hand-off on {incident.key} was offered to {pending.user.username}, not you",
            rule="incident.handoff",
        )
    if not actor.has_role(Role.INCIDENT_LEADER):
        raise PermissionDenied(
            "you no longer hold the incident_leader role", rule="incident.handoff"
        )
    pending.acknowledged_at = utcnow()
    await session.flush()
    await _complete_handoff(session, incident=incident, assignment=pending, actor=actor)
    await audit.record(
        session,
        actor=actor.username,
        action="incident.handoff",
        target=f"incident:{incident.key}",
        details={"leader": actor.username},
    )
    return pending


async def add_entry(
    session: AsyncSession,
    *,
    incident: Incident,
    kind: LogKind,
    text: str,
    actor: User,
    rationale: str = "",
    owner: User | None = None,
    due_at: datetime | None = None,
) -> IncidentLogEntry:
    """A person's entry: a note, a decision (rationale required) or an action (owner)."""
    require(actor, Action.INCIDENT_LOG)
    if kind not in (LogKind.NOTE, LogKind.DECISION, LogKind.ACTION, LogKind.MONITORING):
        raise InvalidInput(FieldProblem("kind", "choose note, decision, action or monitoring"))
    body = _check_text("text", text, required=True, limit=TEXT_MAX)
    why = _check_text("rationale", rationale, required=kind is LogKind.DECISION, limit=TEXT_MAX)
    if owner is not None and kind is not LogKind.ACTION:
        raise InvalidInput(FieldProblem("owner", "only actions have an owner"))
    return await log(
        session,
        incident=incident,
        kind=kind,
        text=body,
        actor=actor,
        rationale=why,
        owner=owner,
        due_at=due_at,
    )


async def entries(session: AsyncSession, *, incident: Incident) -> list[IncidentLogEntry]:
    query = (
        select(IncidentLogEntry)
        .where(IncidentLogEntry.incident_id == incident.id)
        .order_by(IncidentLogEntry.at, IncidentLogEntry.id)
    )
    return list((await session.scalars(query)).all())


async def tick_checklist(
    session: AsyncSession, *, incident: Incident, item: str, actor: User, note: str = ""
) -> ChecklistTick:
    """Tick one item of the resolution checklist: who and when are recorded, never undone."""
    require(actor, Action.INCIDENT_LOG)
    key = resolution.parse_item(item)
    if not incident.is_open:
        raise RuleViolation("incident.closed", f"{incident.key} is closed")
    done = await session.scalar(
        select(ChecklistTick).where(
            ChecklistTick.incident_id == incident.id, ChecklistTick.item == key
        )
    )
    if done is not None:
        raise RuleViolation(
            "incident.checklist",
            f"{resolution.LABELS[key]!r} was ticked by {done.ticked_by.username} at "
            f"{done.ticked_at:%Y-%m-%d %H:%M} UTC",
            field="item",
        )
    said = _check_text("note", note, required=key in resolution.NOTE_REQUIRED, limit=TEXT_MAX)
    tick = ChecklistTick(
        incident_id=incident.id, item=key, note=said, ticked_by_id=actor.id, ticked_at=utcnow()
    )
    session.add(tick)
    await session.flush()
    await session.refresh(tick, ["ticked_by"])
    await log(
        session,
        incident=incident,
        kind=LogKind.CHECKLIST,
        actor=actor,
        text=f"Resolution checklist: {resolution.LABELS[key]}" + (f": {said}" if said else ""),
    )
    await audit.record(
        session,
        actor=actor.username,
        action="incident.checklist",
        target=f"incident:{incident.key}",
        details={"item": key, "note": said},
    )
    return tick
