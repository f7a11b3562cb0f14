"""Work that spans domains (an incident change that re-renders drafts, and so on)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from comms.drafts import service as drafts
from comms.drafts.models import Draft
from comms.enums import Role, Severity
from comms.incidents import service as incidents
from comms.incidents.models import Incident
from comms.settings import Settings
from comms.users import service as users
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


async def set_active(
    session: AsyncSession, *, user: User, active: bool, actor: User | None, settings: Settings
) -> User:
    """Enable or disable a person; disabling a Decision Maker voids their open approvals."""
    was_deciding = user.has_role(Role.DECISION_MAKER)
    await users.set_active(session, user=user, active=active, actor=actor)
    if was_deciding and not active:
        await drafts.void_approvals_of(
            session, user=user, reason="was disabled", actor=actor, settings=settings
        )
    return user


async def set_roles(
    session: AsyncSession,
    *,
    user: User,
    roles: Iterable[Role],
    actor: User | None,
    settings: Settings,
) -> User:
    """Replace a person's roles; losing decision_maker voids their open approvals."""
    was_deciding = user.has_role(Role.DECISION_MAKER)
    await users.set_roles(session, user=user, roles=roles, actor=actor)
    if was_deciding and not user.has_role(Role.DECISION_MAKER):
        await drafts.void_approvals_of(
            session,
            user=user,
            reason="lost the decision_maker role",
            actor=actor,
            settings=settings,
        )
    return user
