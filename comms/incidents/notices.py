"""The worker's side of the incident notices the policy asks for (job kind
``incident.notice``, scheduled by ``comms.incidents.service``):

- ``p1``: an incident opened as P1, or raised to P1, alerts the Decision Makers at once;
- ``handoff_offered``: the person offered the Incident Leader role is asked to acknowledge;
- ``handoff_overdue``: still unacknowledged after the window (5 minutes on a P1, 15 on a
  P2), they are reminded and the other Incident Leaders are alerted, and the Incident Log
  says so;
- ``cadence_plan`` and ``cadence``: the public-update reminders (``comms.incidents.cadence``);
- ``monitoring_due``: the minimum monitoring period is over; the Incident Leader is told, with
  the monitoring recorded as added.

Each runs in one transaction and queues internal notifications (their dedup keys make a
rerun after a crash send nothing twice). A hand-off acknowledged, superseded or on a closed
incident by the time its job runs sends nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.clock import utcnow
from comms.enums import Role
from comms.incidents import cadence, resolution
from comms.incidents import service as incidents
from comms.incidents.models import (
    Incident,
    IncidentAssignment,
    IncidentLogEntry,
    IncidentStatus,
    LogKind,
)
from comms.jobs.scheduled import JobRun
from comms.outbox import notify
from comms.settings import Settings
from comms.users import service as users
from comms.users.models import User


def _name(user: User) -> str:
    return f"{user.display_name} ({user.username})"


class IncidentNotices:
    """The handler of ``incidents.INCIDENT_NOTICE`` jobs."""

    def __init__(self, *, settings: Settings) -> None:
        self.settings = settings

    async def __call__(self, run: JobRun) -> None:
        async with run.work.db.transaction() as session:
            notice = run.payload.get("notice")
            if notice == "p1":
                await self._p1(session, run)
            elif notice in ("handoff_offered", "handoff_overdue"):
                await self._handoff(session, run, overdue=notice == "handoff_overdue")
            elif notice == "cadence_plan":
                incident = await session.get(Incident, run.payload["incident_id"])
                if incident is not None:
                    await cadence.plan(session, incident, self.settings)
            elif notice == "cadence":
                await self._cadence(session, run)
            elif notice == "monitoring_due":
                await self._monitoring(session, run)
            else:
                raise ValueError(f"unknown incident notice {notice!r}")

    async def _p1(self, session: AsyncSession, run: JobRun) -> None:
        incident = await session.get(Incident, run.payload["incident_id"])
        if incident is None or not incident.is_open:
            return
        leader = incident.leader
        await notify.incident_p1(
            session,
            settings=self.settings,
            incident=incident,
            event=str(run.payload["event"]),
            by=str(run.payload["by"]),
            leader=_name(leader) if leader else "",
            key=f"job:{run.id}",
        )

    async def _handoff(self, session: AsyncSession, run: JobRun, *, overdue: bool) -> None:
        assignment = await session.get(IncidentAssignment, run.payload["assignment_id"])
        if assignment is None or assignment.acknowledged_at or assignment.ended_at:
            return  # acknowledged or superseded meanwhile: nothing to ask
        incident = await session.get(Incident, assignment.incident_id)
        if incident is None or not incident.is_open:
            return
        offered = assignment.user
        if not overdue:
            await notify.leader_handoff(
                session,
                settings=self.settings,
                incident=incident,
                event="offered",
                leader=_name(offered),
                by=_name(assignment.assigned_by),
                key=str(assignment.id),
            )
            return
        said = f"Incident Leader hand-off to {offered.username} not acknowledged after"
        if await self._logged(session, incident, said, assignment.assigned_at):
            return  # this job ran before and its worker died before marking it done
        others = [
            u
            for u in await users.list_users(session)
            if u.active and u.has_role(Role.INCIDENT_LEADER) and u.id != offered.id
        ]
        minutes = str(run.payload.get("minutes", ""))
        await notify.leader_handoff(
            session,
            settings=self.settings,
            incident=incident,
            event="overdue",
            leader=_name(offered),
            by=_name(assignment.assigned_by),
            key=str(assignment.id),
            minutes=minutes,
            others=", ".join(_name(u) for u in others),
        )
        alerted = ", ".join(u.username for u in others) or "nobody else holds the role"
        await incidents.log(
            session,
            incident=incident,
            kind=LogKind.ROLE,
            actor=None,
            text=f"{said} {minutes} minutes: reminded; other Incident Leaders alerted ({alerted})",
        )
        await audit.record(
            session,
            actor=audit.SYSTEM_ACTOR,
            action="incident.handoff_overdue",
            target=f"incident:{incident.key}",
            details={"offered": offered.username, "alerted": [u.username for u in others]},
        )

    async def _cadence(self, session: AsyncSession, run: JobRun) -> None:
        incident = await session.get(Incident, run.payload["incident_id"])
        if incident is None:
            return
        due = await cadence.next_update(session, incident, self.settings)
        if due is None:
            return  # resolved meanwhile, or the severity owes no updates now
        if due.at.isoformat() != run.payload["due"]:
            await cadence.plan(session, incident, self.settings)  # an update went out, ...
            return
        stage = cadence.Stage(run.payload["stage"])
        if due.stage(utcnow()) is not stage:
            return  # a later stage is reached already: its own job reminds
        said = f"Public update overdue: it was due at {due.at:%H:%M} UTC"
        if stage is cadence.Stage.OVERDUE and await self._logged(session, incident, said, due.at):
            return  # this job ran before and its worker died before marking it done
        interval = due.interval
        await notify.update_due(
            session,
            settings=self.settings,
            incident=incident,
            stage=stage.value,
            due=due.at,
            promised=due.promised,
            cadence=f"every {int(interval.total_seconds() // 60)} minutes" if interval else "",
        )
        if stage is cadence.Stage.OVERDUE:
            await incidents.log(
                session,
                incident=incident,
                kind=LogKind.COMMS,
                actor=None,
                text=f"{said}; Decision Makers and responders reminded",
            )

    async def _monitoring(self, session: AsyncSession, run: JobRun) -> None:
        incident = await session.get(Incident, run.payload["incident_id"])
        if incident is None or incident.status is not IncidentStatus.MONITORING:
            return  # moved on (or back) meanwhile
        since = incident.monitoring_since
        if since is None or since.isoformat() != run.payload["since"]:
            return  # it left monitoring and entered again: that period has its own job
        added = await resolution.monitoring_added(session, incident)
        await notify.monitoring_due(
            session,
            settings=self.settings,
            incident=incident,
            since=since,
            days=self.settings.monitoring_min_days,
            added="\n".join(f"- {e.text}" for e in added),
        )

    @staticmethod
    async def _logged(
        session: AsyncSession, incident: Incident, said: str, since: datetime
    ) -> bool:
        """Whether the Incident Log already says ``said…`` since ``since``: what makes a
        rerun of a job whose worker died after committing change nothing."""
        found = await session.scalar(
            select(IncidentLogEntry.id)
            .where(
                IncidentLogEntry.incident_id == incident.id,
                IncidentLogEntry.at >= since,
                IncidentLogEntry.text.startswith(said, autoescape=True),
            )
            .limit(1)
        )
        return found is not None
