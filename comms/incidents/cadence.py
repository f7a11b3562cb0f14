"""When the next public update is due, and the reminders that keep the team to it.

The policy asks for regular public updates, more often the higher the severity (by default
every 30 minutes on a P1, 60 on a P2, 4 hours on a P3, none below: ``COMMS_UPDATE_CADENCE``).
The next update is due when the last published announcement promised it (its
``next_update``: the community was told that time), else one interval after the last public
update (after the incident was opened, before the first). Post-incident and closed incidents
owe no updates.

Reminders are scheduled jobs (kind ``incident.notice``) for one due time: the Communication
Manager 5 minutes before and when due, the Decision Makers and the responders (the Incident
Leader) when overdue by half the interval again. A reminder recomputes the due time when it
runs: when an update went out meanwhile, or the severity changed, it plans the reminders of
the new due time instead of reminding (so no event has to cancel anything).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.drafts.models import Draft, DraftStatus
from comms.enums import Severity
from comms.incidents.models import Incident, IncidentStatus
from comms.jobs.scheduled import schedule
from comms.rendering.values import BadValue, parse_datetime
from comms.settings import Settings

JOB_KIND = "incident.notice"  # handled by ``comms.incidents.notices``
SOON = timedelta(minutes=5)  # the Communication Manager's first reminder, before the due time
NO_CADENCE_GRACE = timedelta(minutes=15)  # overdue after a promise, when the severity has none
FINISHED = frozenset({IncidentStatus.POST_INCIDENT, IncidentStatus.CLOSED})
SENT = (DraftStatus.PUBLISHING, DraftStatus.PUBLISHED, DraftStatus.PARTIALLY_FAILED)


class Stage(StrEnum):
    SOON = "soon"  # due within SOON
    DUE = "due"
    OVERDUE = "overdue"  # by half the interval again


@dataclass(frozen=True)
class Due:
    """The next public update: when, the severity's interval, and whether it was promised."""

    at: datetime
    interval: timedelta | None
    promised: bool

    @property
    def overdue_at(self) -> datetime:
        grace = self.interval / 2 if self.interval is not None else NO_CADENCE_GRACE
        return self.at + grace

    def stage_at(self, stage: Stage) -> datetime:
        if stage is Stage.SOON:
            return self.at - SOON
        if stage is Stage.DUE:
            return self.at
        return self.overdue_at

    def stage(self, now: datetime) -> Stage | None:
        """The latest stage reached at ``now`` (None: not yet within SOON)."""
        reached = [s for s in Stage if self.stage_at(s) <= now]
        return reached[-1] if reached else None

    def key(self) -> str:
        return self.at.strftime("%Y%m%dT%H%M%S")


def interval_for(settings: Settings, severity: Severity) -> timedelta | None:
    minutes = settings.update_cadence.get(severity)
    return timedelta(minutes=minutes) if minutes else None


async def promised_next_update(session: AsyncSession, incident: Incident) -> datetime | None:
    """The ``next_update`` of the incident's latest announcement that went out, if it said one."""
    draft = await session.scalar(
        select(Draft)
        .where(Draft.incident_id == incident.id, Draft.status.in_(SENT))
        .order_by(Draft.approved_at.desc(), Draft.id.desc())
        .limit(1)
    )
    raw = draft.variables.get("next_update") if draft is not None else None
    if not raw:
        return None
    try:
        return parse_datetime(raw)
    except BadValue:  # validated when the draft was written; never trust stored text blindly
        return None


async def next_update(session: AsyncSession, incident: Incident, settings: Settings) -> Due | None:
    """When ``incident``'s next public update is due, or None when it owes none."""
    if incident.status in FINISHED:
        return None
    interval = interval_for(settings, Severity(incident.severity))
    promised = await promised_next_update(session, incident)
    if promised is not None:
        return Due(at=promised, interval=interval, promised=True)
    if interval is None:
        return None
    base = incident.last_public_update_at or incident.opened_at
    return Due(at=base + interval, interval=interval, promised=False)


async def plan_soon(session: AsyncSession, *, incident_id: int, key: str, at: datetime) -> None:
    """Ask the worker to (re)plan ``incident_id``'s reminders at ``at``: scheduled by events
    that may move the due time (opening, severity, status, a public update going out)."""
    await schedule(
        session,
        kind=JOB_KIND,
        due_at=at,
        payload={"notice": "cadence_plan", "incident_id": incident_id},
        dedup_key=f"{JOB_KIND}:cadence_plan:{incident_id}:{key}",
    )


async def plan(session: AsyncSession, incident: Incident, settings: Settings) -> Due | None:
    """Schedule the reminders of the incident's current due time (each once: by due time)."""
    due = await next_update(session, incident, settings)
    if due is None:
        return None
    for stage in Stage:
        await schedule(
            session,
            kind=JOB_KIND,
            due_at=due.stage_at(stage),
            payload={
                "notice": "cadence",
                "incident_id": incident.id,
                "stage": stage.value,
                "due": due.at.isoformat(),
            },
            dedup_key=f"{JOB_KIND}:cadence:{incident.id}:{due.key()}:{stage.value}",
        )
    return due
