"""Destinations: validated once here so a typo never surfaces mid-incident as a 400."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.clock import utcnow
from comms.destinations.models import Destination, InternalUse, Visibility
from comms.enums import Platform
from comms.errors import Conflict, FieldProblem, InvalidInput, NotFound, RuleViolation
from comms.permissions import Action, require
from comms.text import clean_text, is_storable_name
from comms.users.models import User

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
DISCORD_ID_RE = re.compile(r"^[1-9]\d{5,19}$")
TELEGRAM_ID_RE = re.compile(r"^(-?[1-9]\d{0,15}|@[A-Za-z][A-Za-z0-9_]{4,31})$")
DISCORD_ONLY = ("crosspost", "allow_everyone", "thread_updates")


def parse_platform(value: str, *, field: str = "platform") -> Platform:
    try:
        return Platform(value.strip().lower())
    except ValueError:
        raise InvalidInput(FieldProblem(field, f"{value!r} is not discord or telegram")) from None


def _validate(
    *,
    name: str,
    platform: Platform,
    target: str,
    visibility: Visibility,
    options: dict[str, bool],
    internal_uses: Iterable[InternalUse],
) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    if not NAME_RE.match(name):
        problems.append(
            FieldProblem("name", "use 1-64 characters: lowercase letters, digits, '.', '_' or '-'")
        )
    if platform is Platform.DISCORD and not DISCORD_ID_RE.match(target):
        problems.append(FieldProblem("target", "a Discord channel id is a number (a snowflake)"))
    if platform is Platform.TELEGRAM and not TELEGRAM_ID_RE.match(target):
        problems.append(
            FieldProblem(
                "target", "a Telegram chat id is a number (e.g. -1001234567890) or @channelname"
            )
        )
    if platform is Platform.TELEGRAM:
        for option in DISCORD_ONLY:
            if options.get(option):
                problems.append(FieldProblem(option, "exists only on Discord"))
    uses = list(internal_uses)
    if uses and visibility is Visibility.PUBLIC:
        problems.append(
            FieldProblem("internal_uses", "internal notifications go only to private destinations")
        )
    if options.get("allow_everyone") and visibility is Visibility.PRIVATE:
        problems.append(FieldProblem("allow_everyone", "@everyone is for public announcements"))
    return problems


async def get_by_name(session: AsyncSession, *, name: str) -> Destination | None:
    if not is_storable_name(name):
        return None
    return await session.scalar(select(Destination).where(Destination.name == name.strip().lower()))


async def require_destination(
    session: AsyncSession, *, name: str, field: str = "destination"
) -> Destination:
    destination = await get_by_name(session, name=name)
    if destination is None:
        raise NotFound(f"no destination named {name!r}", field=field)
    return destination


async def get(session: AsyncSession, *, destination_id: int) -> Destination | None:
    return await session.get(Destination, destination_id)


async def list_destinations(session: AsyncSession) -> list[Destination]:
    return list((await session.scalars(select(Destination).order_by(Destination.name))).all())


async def for_internal_use(session: AsyncSession, *, use: InternalUse) -> list[Destination]:
    """Private, enabled, not-compromised destinations that receive ``use`` notifications."""
    return [
        d
        for d in await list_destinations(session)
        if use.value in d.internal_uses and d.can_receive and not d.is_public
    ]


async def create(
    session: AsyncSession,
    *,
    name: str,
    platform: Platform,
    target: str,
    actor: User | None,
    visibility: Visibility = Visibility.PUBLIC,
    pin: bool = False,
    silent: bool = False,
    crosspost: bool = False,
    allow_everyone: bool = False,
    thread_updates: bool = False,
    internal_uses: Iterable[InternalUse] = (),
    responders_role_id: str = "",
    guild_id: str = "",
) -> Destination:
    if actor is not None:
        require(actor, Action.DESTINATION_MANAGE)
    clean = name.strip().lower()
    options = {
        "pin": pin,
        "silent": silent,
        "crosspost": crosspost,
        "allow_everyone": allow_everyone,
        "thread_updates": thread_updates,
    }
    uses = sorted({u.value for u in internal_uses})
    problems = _validate(
        name=clean,
        platform=platform,
        target=target.strip(),
        visibility=visibility,
        options=options,
        internal_uses=[InternalUse(u) for u in uses],
    )
    if guild_id and (platform is not Platform.DISCORD or not DISCORD_ID_RE.match(guild_id)):
        problems.append(FieldProblem("guild_id", "a Discord server id is a number (Discord only)"))
    if responders_role_id and not DISCORD_ID_RE.match(responders_role_id):
        problems.append(FieldProblem("responders_role_id", "a Discord role id is a number"))
    if problems:
        raise InvalidInput(problems)
    if await get_by_name(session, name=clean) is not None:
        raise Conflict(f"a destination named {clean!r} already exists", field="name")
    destination = Destination(
        name=clean,
        platform=platform.value,
        target=target.strip(),
        visibility=visibility.value,
        internal_uses=uses,
        responders_role_id=responders_role_id,
        guild_id=guild_id,
        **options,
    )
    session.add(destination)
    await session.flush()
    await audit.record(
        session,
        actor=actor.username if actor else audit.SYSTEM_ACTOR,
        action="destination.create",
        target=f"destination:{clean}",
        details={
            "platform": platform.value,
            "target": destination.target,
            "visibility": visibility.value,
            **options,
            "internal_uses": uses,
        },
    )
    return destination


async def update(
    session: AsyncSession,
    *,
    destination: Destination,
    actor: User | None,
    enabled: bool | None = None,
    pin: bool | None = None,
    silent: bool | None = None,
    crosspost: bool | None = None,
    allow_everyone: bool | None = None,
    thread_updates: bool | None = None,
) -> Destination:
    if actor is not None:
        require(actor, Action.DESTINATION_MANAGE)
    changes = {
        key: value
        for key, value in {
            "enabled": enabled,
            "pin": pin,
            "silent": silent,
            "crosspost": crosspost,
            "allow_everyone": allow_everyone,
            "thread_updates": thread_updates,
        }.items()
        if value is not None
    }
    options = {**destination.options(), **{k: v for k, v in changes.items() if k != "enabled"}}
    problems = _validate(
        name=destination.name,
        platform=Platform(destination.platform),
        target=destination.target,
        visibility=Visibility(destination.visibility),
        options=options,
        internal_uses=[InternalUse(u) for u in destination.internal_uses],
    )
    if problems:
        raise InvalidInput(problems)
    for key, value in changes.items():
        setattr(destination, key, value)
    await session.flush()
    await audit.record(
        session,
        actor=actor.username if actor else audit.SYSTEM_ACTOR,
        action="destination.update",
        target=f"destination:{destination.name}",
        details=changes,
    )
    return destination


async def mark_compromised(
    session: AsyncSession,
    *,
    destination: Destination,
    reason: str,
    actor: User | None,
    compromised: bool = True,
) -> Destination:
    """A compromised destination never receives anything again until cleared."""
    if actor is not None:
        require(actor, Action.DESTINATION_MANAGE)
    why = clean_text("reason", reason, limit=2000)
    if compromised and not why:
        raise InvalidInput(FieldProblem("reason", "say why the destination is compromised"))
    if destination.compromised == compromised:
        state = "already" if compromised else "not"
        raise RuleViolation("destination.compromised", f"{destination.name} is {state} compromised")
    destination.compromised = compromised
    destination.compromised_reason = why if compromised else ""
    destination.compromised_at = utcnow() if compromised else None
    await session.flush()
    await audit.record(
        session,
        actor=actor.username if actor else audit.SYSTEM_ACTOR,
        action="destination.compromised" if compromised else "destination.restored",
        target=f"destination:{destination.name}",
        details={"reason": why},
    )
    return destination
