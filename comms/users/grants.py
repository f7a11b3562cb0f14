"""Roles that count only once others approve them: granting decision_maker.

The approval gate is only as strong as the list of people who may approve. So, from the panel,
giving someone the decision_maker role (at creation or later) is a change of that list that the
existing Decision Makers approve, with the P1 quorum by default (the way a multisig's owners
approve a new owner): the grant is recorded, every Decision Maker is told in their private
destination, and the role exists only once enough of them approve (neither the person who asked
nor the person receiving it can). Removing the role or disabling someone takes effect at once.
The operator at the CLI, who holds the database anyway, creates the first Decision Makers.
The counting rules are in ``comms.drafts.gate`` with the rest of the gate.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.auth import sessions
from comms.clock import utcnow
from comms.drafts import gate
from comms.enums import Role
from comms.errors import FieldProblem, InvalidInput, NotFound, RuleViolation
from comms.outbox import notify
from comms.permissions import Action, require
from comms.settings import Settings
from comms.text import clean_text
from comms.users.models import GrantStatus, RoleGrant, RoleGrantApproval, User, UserRole

# Roles that change who may approve, and so need the approvers' own approval.
GATED_ROLES = frozenset({Role.DECISION_MAKER})


async def get(session: AsyncSession, *, grant_id: int) -> RoleGrant:
    grant = await session.get(RoleGrant, grant_id)
    if grant is None:
        raise NotFound(f"no role grant #{grant_id}", field="grant")
    return grant


async def pending(session: AsyncSession, *, user: User | None = None) -> list[RoleGrant]:
    query = select(RoleGrant).where(RoleGrant.status == GrantStatus.PENDING).order_by(RoleGrant.id)
    if user is not None:
        query = query.where(RoleGrant.user_id == user.id)
    return list((await session.scalars(query)).all())


async def _notify(session: AsyncSession, grant: RoleGrant, settings: Settings, event: str) -> None:
    await notify.role_grant(
        session,
        settings=settings,
        grant_id=grant.id,
        event=event,
        values={
            "person": grant.user.username,
            "role": grant.role.replace("_", " "),
            "requested_by": grant.requested_by.username,
            "approvals": f"{gate.grant_approvals(grant)} of {gate.grant_quorum(settings)}",
        },
    )


async def request(
    session: AsyncSession, *, user: User, role: Role, actor: User, settings: Settings
) -> RoleGrant:
    """Ask the Decision Makers to approve giving ``role`` to ``user`` (idempotent)."""
    require(actor, Action.USER_MANAGE)
    if actor.id == user.id:
        raise RuleViolation("roles.self", "nobody changes their own roles; ask another admin")
    for existing in await pending(session, user=user):
        if existing.role == role.value:
            return existing
    grant = RoleGrant(
        user_id=user.id,
        role=role.value,
        requested_by_id=actor.id,
        requested_at=utcnow(),
        status=GrantStatus.PENDING,
    )
    session.add(grant)
    await session.flush()
    await session.refresh(grant, ["user", "requested_by", "approvals"])
    await audit.record(
        session,
        actor=actor.username,
        action="role_grant.request",
        target=f"user:{user.username}",
        details={"grant": grant.id, "role": role.value, "needed": gate.grant_quorum(settings)},
    )
    await _notify(session, grant, settings, "requested")
    return grant


async def _lock(session: AsyncSession, grant_id: int) -> RoleGrant:
    grant = await session.get(
        RoleGrant, grant_id, with_for_update={"of": RoleGrant}, populate_existing=True
    )
    if grant is None:
        raise NotFound(f"no role grant #{grant_id}", field="grant")
    await session.refresh(grant, ["approvals", "user", "requested_by"])
    return grant


async def approve(
    session: AsyncSession, *, grant: RoleGrant, actor: User, settings: Settings
) -> RoleGrant:
    """Add a Decision Maker's approval; at the quorum the role is given (and counts) at once."""
    grant = await _lock(session, grant.id)
    refusal = gate.may_approve_grant(grant, actor)
    if refusal is not None:
        if refusal.rule.startswith("permission."):
            require(actor, Action.ROLE_GRANT_DECIDE)
        raise RuleViolation(refusal.rule, refusal.message)
    session.add(RoleGrantApproval(grant_id=grant.id, approver_id=actor.id, at=utcnow()))
    await session.flush()
    await session.refresh(grant, ["approvals"])
    have, needed = gate.grant_approvals(grant), gate.grant_quorum(settings)
    await audit.record(
        session,
        actor=actor.username,
        action="role_grant.approve",
        target=f"user:{grant.user.username}",
        details={"grant": grant.id, "role": grant.role, "have": have, "needed": needed},
    )
    if have >= needed:
        await _give(session, grant=grant, settings=settings)
    return grant


async def _give(session: AsyncSession, *, grant: RoleGrant, settings: Settings) -> None:
    person = grant.user
    await person.awaitable_attrs.roles  # changed below: the collection, not the row's names
    grant.status = GrantStatus.GRANTED
    grant.decided_at = utcnow()
    if Role(grant.role) not in person.role_set:
        person.roles.append(UserRole(role=grant.role, granted_at=grant.decided_at))
    await session.flush()
    approvers = sorted(
        a.approver.username for a in grant.approvals if a.approver.has_role(Role.DECISION_MAKER)
    )
    await audit.record(
        session,
        actor=audit.SYSTEM_ACTOR,
        action="user.roles",
        target=f"user:{person.username}",
        details={"granted": grant.role, "grant": grant.id, "approvers": approvers},
    )
    await sessions.end_all(session, user=person, reason="role granted", actor=audit.SYSTEM_ACTOR)
    await _notify(session, grant, settings, "granted")


async def close(
    session: AsyncSession,
    *,
    grant: RoleGrant,
    actor: User | None,
    reason: str,
    settings: Settings,
    rejected: bool = False,
) -> RoleGrant:
    """End a pending grant: rejected by a Decision Maker, or cancelled (by an admin, or because
    the role was taken off the person's list)."""
    why = clean_text("reason", reason, limit=2000)
    if rejected and not why:
        raise InvalidInput(FieldProblem("reason", "a rejection needs a reason"))
    grant = await _lock(session, grant.id)
    if actor is not None:
        require(actor, Action.ROLE_GRANT_DECIDE if rejected else Action.USER_MANAGE)
    if grant.status != GrantStatus.PENDING:
        raise RuleViolation("role_grant.not_pending", f"this grant is {grant.status}")
    grant.status = GrantStatus.REJECTED if rejected else GrantStatus.CANCELLED
    grant.decided_at = utcnow()
    grant.reason = why
    await session.flush()
    await audit.record(
        session,
        actor=actor.username if actor else audit.SYSTEM_ACTOR,
        action=f"role_grant.{grant.status}",
        target=f"user:{grant.user.username}",
        details={"grant": grant.id, "role": grant.role, "reason": why},
    )
    await _notify(session, grant, settings, grant.status)
    return grant
