"""Builders for test data, going through the real services (never raw inserts)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from comms.destinations import service as destinations
from comms.destinations.models import Destination, InternalUse, Visibility
from comms.enums import Platform, Role, Severity
from comms.incidents import service as incidents
from comms.incidents.models import Incident
from comms.users import service as users
from comms.users.models import User

PASSWORD = "correct horse battery staple"


async def make_user(session: AsyncSession, username: str, *roles: Role) -> User:
    return await users.create(
        session, username=username, password=PASSWORD, roles=roles or (Role.RESPONDER,)
    )


async def make_team(session: AsyncSession) -> dict[str, User]:
    """A Communication Manager, three Decision Makers, a leader, a scribe, an admin."""
    return {
        "cm": await make_user(session, "carol", Role.COMMS_MANAGER),
        "dm1": await make_user(session, "dave", Role.DECISION_MAKER),
        "dm2": await make_user(session, "erin", Role.DECISION_MAKER),
        "dm3": await make_user(session, "frank", Role.DECISION_MAKER),
        "lead": await make_user(session, "leo", Role.INCIDENT_LEADER),
        "scribe": await make_user(session, "sam", Role.SCRIBE),
        "admin": await make_user(session, "ada", Role.ADMIN),
    }


async def make_incident(
    session: AsyncSession,
    actor: User,
    severity: Severity = Severity.P1,
    title: str = "Bridge exploit",
) -> Incident:
    return await incidents.open_incident(session, title=title, severity=severity, actor=actor)


async def make_destinations(session: AsyncSession) -> dict[str, Destination]:
    return {
        "discord": await destinations.create(
            session,
            name="discord-announcements",
            platform=Platform.DISCORD,
            target="3000000000000000001",
            actor=None,
            pin=True,
            crosspost=True,
            allow_everyone=True,
            thread_updates=True,
        ),
        "telegram": await destinations.create(
            session,
            name="telegram-announcements",
            platform=Platform.TELEGRAM,
            target="-1001000000001",
            actor=None,
            pin=True,
        ),
        "responders": await destinations.create(
            session,
            name="discord-responders",
            platform=Platform.DISCORD,
            target="3000000000000000003",
            actor=None,
            visibility=Visibility.PRIVATE,
            internal_uses=[InternalUse.APPROVERS, InternalUse.COMMS],
        ),
    }
