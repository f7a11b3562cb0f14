"""The policy's resolution checklist, and the week of monitoring that follows mitigation.

Moving an incident to ``mitigated`` puts the checklist in front of the team. Moving on to
``monitoring`` with items not ticked needs a rationale (the Incident Log names what was
skipped); so does leaving ``monitoring`` before ``COMMS_MONITORING_MIN_DAYS`` (default 7). The
rules live in ``service.change_status``; this module holds the list and reads the ticks.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.errors import FieldProblem, InvalidInput
from comms.incidents.models import ChecklistTick, Incident, IncidentLogEntry, LogKind

# (key, what the policy asks), in the policy's order.
CHECKLIST: tuple[tuple[str, str], ...] = (
    ("mitigation_applied", "Temporary mitigation applied"),
    ("mitigation_verified", "Mitigation verified"),
    ("stakeholders_notified", "Stakeholders notified"),
    ("permanent_fix_planned", "Permanent fix planned, with an owner and a timeline"),
)
LABELS = dict(CHECKLIST)
# Items whose tick must say more (who owns the permanent fix, and by when).
NOTE_REQUIRED = frozenset({"permanent_fix_planned"})


@dataclass(frozen=True)
class Item:
    key: str
    label: str
    tick: ChecklistTick | None


def parse_item(value: str, *, field: str = "item") -> str:
    key = value.strip().lower()
    if key not in LABELS:
        choices = ", ".join(LABELS)
        raise InvalidInput(
            FieldProblem(field, f"{value!r} is not a checklist item ({choices})")
        ) from None
    return key


async def items(session: AsyncSession, incident: Incident) -> list[Item]:
    """Every checklist item, with its tick when it has one."""
    ticks = {
        t.item: t
        for t in await session.scalars(
            select(ChecklistTick).where(ChecklistTick.incident_id == incident.id)
        )
    }
    return [Item(key, label, ticks.get(key)) for key, label in CHECKLIST]


async def missing(session: AsyncSession, incident: Incident) -> list[str]:
    """The labels of the items nobody ticked yet."""
    return [item.label for item in await items(session, incident) if item.tick is None]


async def monitoring_added(session: AsyncSession, incident: Incident) -> list[IncidentLogEntry]:
    """The Incident Log's "monitoring added" entries, oldest first."""
    return list(
        (
            await session.scalars(
                select(IncidentLogEntry)
                .where(
                    IncidentLogEntry.incident_id == incident.id,
                    IncidentLogEntry.kind == LogKind.MONITORING.value,
                )
                .order_by(IncidentLogEntry.at, IncidentLogEntry.id)
            )
        ).all()
    )
