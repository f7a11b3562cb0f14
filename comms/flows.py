"""Work that spans domains (an incident change that re-renders drafts, and so on)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from comms.drafts import service as drafts
from comms.drafts.models import Draft
from comms.enums import Severity
from comms.incidents import service as incidents
from comms.incidents.models import Incident
from comms.settings import Settings
from comms.users.models import User


async def change_severity(
    session: AsyncSession,
    *,
    incident: Incident,
    severity: Severity,
    actor: User,
    rationale: str,
    settings: Settings,
) -> list[Draft]:
    """Change severity, then re-render the incident's unsent drafts.

    Quorum and @everyone depend on severity, so approvals given under the old severity must
    not carry over: the re-render makes a new version of each draft, which voids them.
    """
    await incidents.change_severity(
        session, incident=incident, severity=severity, actor=actor, rationale=rationale
    )
    return await drafts.rerender_open_drafts(
        session, incident=incident, actor=actor, settings=settings
    )
