"""Users, roles and passwords."""

from __future__ import annotations

import re
from collections.abc import Iterable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.auth import sessions
from comms.enums import Role
from comms.errors import Conflict, FieldProblem, InvalidInput, NotFound, RuleViolation
from comms.permissions import Action, require
from comms.settings import Settings
from comms.text import clean_text, is_storable_name
from comms.users import grants
from comms.users.models import User, UserRole

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,63}$")
PASSWORD_MIN = 12
PASSWORD_MAX = 256

# OWASP's minimum for Argon2id (m=19 MiB, t=2, p=1): strong enough, and fast enough that the
# panel's login stays responsive under an incident's load.
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Verified against when the username is unknown, so both cases cost the same time.
_DUMMY_HASH = HASHER.hash("comms-dummy-password-for-constant-time")


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def check_password_policy(password: str, *, field: str = "password") -> None:
    if len(password) < PASSWORD_MIN:
        raise InvalidInput(FieldProblem(field, f"must be at least {PASSWORD_MIN} characters"))
    if len(password) > PASSWORD_MAX:
        raise InvalidInput(FieldProblem(field, f"must be at most {PASSWORD_MAX} characters"))


def verify_password(user: User | None, password: str) -> bool:
    """Check a password in constant-ish time whether or not the user exists."""
    try:
        return HASHER.verify(user.password_hash if user else _DUMMY_HASH, password) and bool(user)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(user: User) -> bool:
    return HASHER.check_needs_rehash(user.password_hash)


def parse_roles(values: Iterable[str], *, field: str = "roles") -> set[Role]:
    roles: set[Role] = set()
    for value in values:
        try:
            roles.add(Role(value.strip().lower()))
        except ValueError:
            choices = ", ".join(r.value for r in Role)
            raise InvalidInput(
                FieldProblem(field, f"unknown role {value!r} (choose from {choices})")
            ) from None
    return roles


async def get_by_username(session: AsyncSession, *, username: str) -> User | None:
    if not is_storable_name(username):
        return None
    return await session.scalar(select(User).where(User.username == username.strip().lower()))


async def require_user(session: AsyncSession, *, username: str, field: str = "user") -> User:
    user = await get_by_username(session, username=username)
    if user is None:
        raise NotFound(f"no user named {username!r}", field=field)
    return user


async def get(session: AsyncSession, *, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def list_users(session: AsyncSession) -> list[User]:
    return list((await session.scalars(select(User).order_by(User.username))).all())


async def create(
    session: AsyncSession,
    *,
    username: str,
    password: str,
    roles: Iterable[Role],
    display_name: str | None = None,
    actor: User | None = None,
    settings: Settings | None = None,
) -> User:
    """Create a user. ``actor`` is None only for the operator at the CLI, who holds the DB and
    so creates the first Decision Makers directly; from the panel the decision_maker role is
    asked for (``comms.users.grants``) and counts once the Decision Makers approve it."""
    if actor is not None:
        require(actor, Action.USER_MANAGE)
    name = username.strip().lower()
    problems: list[FieldProblem] = []
    if not USERNAME_RE.match(name):
        problems.append(
            FieldProblem(
                "username", "use 2-64 characters: lowercase letters, digits, '.', '_' or '-'"
            )
        )
    role_set = set(roles)
    if not role_set:
        problems.append(FieldProblem("roles", "give at least one role"))
    try:
        check_password_policy(password)
    except InvalidInput as exc:
        problems.extend(exc.problems)
    if display_name is not None:
        try:
            display_name = clean_text(
                "display_name", display_name, limit=120, required=True, multiline=False
            )
        except InvalidInput as exc:
            problems.extend(exc.problems)
    if problems:
        raise InvalidInput(problems)
    if await get_by_username(session, username=name) is not None:
        raise Conflict(f"a user named {name!r} already exists", field="username")
    asked = role_set & grants.GATED_ROLES if actor is not None else set()
    user = User(
        username=name,
        display_name=(display_name or name).strip(),
        password_hash=hash_password(password),
        roles=[UserRole(role=r.value) for r in sorted(role_set - asked)],
    )
    session.add(user)
    await session.flush()
    await audit.record(
        session,
        actor=actor.username if actor else audit.SYSTEM_ACTOR,
        action="user.create",
        target=f"user:{name}",
        details={
            "roles": sorted(r.value for r in role_set - asked),
            "awaiting_approval": sorted(r.value for r in asked),
        },
    )
    await _ask_for(session, user=user, roles=asked, actor=actor, settings=settings)
    return user


async def _ask_for(
    session: AsyncSession,
    *,
    user: User,
    roles: set[Role],
    actor: User | None,
    settings: Settings | None,
) -> None:
    if not roles:
        return
    if actor is None or settings is None:
        raise ValueError("granting a gated role from the panel needs the actor and the settings")
    for role in sorted(roles):
        await grants.request(session, user=user, role=role, actor=actor, settings=settings)


async def set_roles(
    session: AsyncSession,
    *,
    user: User,
    roles: Iterable[Role],
    actor: User | None = None,
    settings: Settings | None = None,
) -> User:
    """Replace a user's roles. Approvals they gave are re-evaluated wherever quorum is counted.

    Nobody changes their own roles. From the panel (``actor`` set), a gated role the user does
    not hold yet is asked for instead of given (``comms.users.grants``); taking a role away, or
    the operator at the CLI (``actor`` None), acts at once.
    """
    if actor is not None:
        require(actor, Action.USER_MANAGE)
        if actor.id == user.id:
            raise RuleViolation("roles.self", "nobody changes their own roles; ask another admin")
    requested = set(roles)
    if not requested:
        raise InvalidInput(FieldProblem("roles", "give at least one role"))
    await user.awaitable_attrs.roles  # changed below: the collection, not the row's names
    old = user.role_set
    asked = (requested - old) & grants.GATED_ROLES if actor is not None else set()
    new = requested - asked
    for grant in await grants.pending(session, user=user):
        if Role(grant.role) not in requested and settings is not None:
            await grants.close(
                session,
                grant=grant,
                actor=actor,
                reason="the role was taken off the person's list",
                settings=settings,
            )
    for link in list(user.roles):
        if Role(link.role) not in new:
            user.roles.remove(link)
    for role in sorted(new - old):
        user.roles.append(UserRole(role=role.value))
    await session.flush()
    await audit.record(
        session,
        actor=actor.username if actor else audit.SYSTEM_ACTOR,
        action="user.roles",
        target=f"user:{user.username}",
        details={"before": sorted(r.value for r in old), "after": sorted(r.value for r in new)},
    )
    if new != old:
        # A changed role set must not ride on a session opened under the old one.
        await sessions.end_all(
            session,
            user=user,
            reason="roles changed",
            actor=actor.username if actor else audit.SYSTEM_ACTOR,
        )
    await _ask_for(session, user=user, roles=asked, actor=actor, settings=settings)
    return user


async def set_active(
    session: AsyncSession, *, user: User, active: bool, actor: User | None = None
) -> User:
    if actor is not None:
        require(actor, Action.USER_MANAGE)
        if actor.id == user.id and not active:
            raise InvalidInput(FieldProblem("active", "you cannot disable your own account"))
    user.active = active
    await session.flush()
    await audit.record(
        session,
        actor=actor.username if actor else audit.SYSTEM_ACTOR,
        action="user.enable" if active else "user.disable",
        target=f"user:{user.username}",
    )
    if not active:
        await sessions.end_all(
            session,
            user=user,
            reason="user disabled",
            actor=actor.username if actor else audit.SYSTEM_ACTOR,
        )
    return user


async def set_password(
    session: AsyncSession, *, user: User, password: str, actor: User | None = None
) -> None:
    if actor is not None and actor.id != user.id:
        require(actor, Action.USER_MANAGE)
    check_password_policy(password)
    user.password_hash = hash_password(password)
    await session.flush()
    await audit.record(
        session,
        actor=actor.username if actor else audit.SYSTEM_ACTOR,
        action="user.password",
        target=f"user:{user.username}",
    )
