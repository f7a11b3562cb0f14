"""Work that spans domains (an incident change that re-renders drafts, and so on)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from comms import canonical
from comms.audit import service as audit
from comms.audit.models import AuditEvent
from comms.clock import utcnow
from comms.destinations import service as destinations
from comms.destinations.models import Destination
from comms.drafts import gate
from comms.drafts import service as drafts
from comms.drafts.models import Draft
from comms.enums import Role, Severity
from comms.errors import RuleViolation
from comms.incidents import cadence
from comms.incidents import service as incidents
from comms.incidents.models import Incident
from comms.outbox import notify
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
    await users.set_roles(session, user=user, roles=roles, actor=actor, settings=settings)
    if was_deciding and not user.has_role(Role.DECISION_MAKER):
        await drafts.void_approvals_of(
            session,
            user=user,
            reason="lost the decision_maker role",
            actor=actor,
            settings=settings,
        )
    return user


async def record_gate_configuration(
    session: AsyncSession, *, settings: Settings, process: str
) -> list[str]:
    """At start: audit the settings that decide who may approve, when they differ from the last
    recorded ones, and tell the Decision Makers if they are weaker. Returns what got weaker.

    These settings come only from the environment or the config file (the panel and the API
    cannot change them), so whoever changes them holds the server; the audit log and the
    Decision Makers still hear of it, before the process acts on them.
    """
    current = gate.configuration(settings)
    last = await session.scalar(
        select(AuditEvent)
        .where(AuditEvent.action == "gate.configuration")
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    )
    before = last.details.get("configuration") if last is not None else None
    if before == current:
        return []
    weaker = gate.weakened(before, current) if before else []
    await audit.record(
        session,
        actor=audit.SYSTEM_ACTOR,
        action="gate.configuration",
        target="settings",
        details={"configuration": current, "before": before, "weakened": weaker, "by": process},
    )
    if weaker:
        await notify.gate_settings(
            session,
            settings=settings,
            fingerprint=canonical.sha256_hex(canonical.canonical_json(current))[:16],
            detail=f"{process} started with: " + "; ".join(weaker) + ".",
        )
    return weaker


async def update_destination(
    session: AsyncSession,
    *,
    destination: Destination,
    actor: User | None,
    settings: Settings,
    **changes: bool | None,
) -> Destination:
    """Change a destination's switches. An approved announcement not yet sent there that the
    destination no longer allows as approved (say @everyone turned off) is held at once and
    its draft goes back to review; a looser setting never widens what was approved."""
    await destinations.update(session, destination=destination, actor=actor, **changes)
    await drafts.recheck_destination(session, destination=destination, settings=settings)
    return destination


NO_NEWS_TEMPLATE = "active-exploit-update"
NO_NEWS_TEXT = (
    "There is no new information since our last update. The team is still working on it, "
    "and the advice in our earlier messages still stands."
)


def _next_slot(moment: datetime) -> datetime:
    """``moment`` rounded up to the next 5 minutes: a time people read at a glance."""
    base = moment.replace(second=0, microsecond=0)
    if base < moment:
        base += timedelta(minutes=1)
    return base + timedelta(minutes=-base.minute % 5)


async def no_news_draft(
    session: AsyncSession, *, incident: Incident, actor: User, settings: Settings
) -> Draft:
    """A "no new information; next update at T" draft from ``active-exploit-update``, to the
    destinations of the incident's last announcement that went out (it still needs approval).

    The policy wants updates on time even when nothing changed: this is the one-click version
    the Communication Manager gets when an update is due. T is one cadence interval from now
    (30 minutes when the severity has none); the user-funds line repeats the last one.
    """
    last = await session.scalar(
        select(Draft)
        .where(Draft.incident_id == incident.id, Draft.status.in_(cadence.SENT))
        .order_by(Draft.approved_at.desc(), Draft.id.desc())
        .limit(1)
    )
    if last is None:
        raise RuleViolation(
            "draft.no_news",
            f"no announcement about {incident.key} went out yet: write the first one",
            field="template",
        )
    interval = cadence.interval_for(settings, Severity(incident.severity)) or timedelta(minutes=30)
    funds = last.variables.get("funds_status") or "under_review"
    return await drafts.create(
        session,
        incident=incident,
        template=NO_NEWS_TEMPLATE,
        variables={
            "update": NO_NEWS_TEXT,
            "funds_status": funds,
            "next_update": _next_slot(utcnow() + interval).strftime("%Y-%m-%dT%H:%MZ"),
        },
        destinations=list(last.destinations),
        actor=actor,
        settings=settings,
    )
