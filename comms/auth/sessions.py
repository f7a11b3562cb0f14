"""Server-side panel sessions.

The cookie carries a 256-bit random id; the table stores only its SHA-256, so a database leak
does not hand out live sessions. Sessions end on logout, on idle or absolute timeout, when the
user is disabled or their roles change, and the id is replaced at login and at every
re-authentication.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.auth.crypto import sha256_hex
from comms.auth.models import WebSession
from comms.clock import utcnow
from comms.users.models import User

if TYPE_CHECKING:
    from comms.auth.touches import Touches

# Only refresh ``last_seen_at`` this often: every page view need not be a write.
TOUCH_EVERY = timedelta(seconds=30)


class Stage(StrEnum):
    FULL = "full"  # logged in with every required factor
    TOTP = "totp"  # password accepted, authenticator code pending
    ENROL = "enrol"  # password accepted, must enrol two-factor before anything else


@dataclass(frozen=True)
class Timeouts:
    idle: timedelta
    absolute: timedelta


def new_id() -> str:
    """256 random bits, URL-safe (the cookie value)."""
    return secrets.token_urlsafe(32)


def hash_id(raw: str) -> str:
    return sha256_hex(raw)


async def create(
    session: AsyncSession,
    *,
    user: User,
    stage: Stage,
    ip: str = "",
    user_agent: str = "",
    now: datetime | None = None,
) -> tuple[str, WebSession]:
    moment = now or utcnow()
    raw = new_id()
    row = WebSession(
        id_hash=hash_id(raw),
        user_id=user.id,
        stage=stage.value,
        created_at=moment,
        last_seen_at=moment,
        authenticated_at=moment,
        ip=ip[:64],
        user_agent=user_agent[:200],
    )
    session.add(row)
    await session.flush()
    return raw, row


def expired(
    row: WebSession, *, timeouts: Timeouts, now: datetime, last_seen: datetime | None = None
) -> str | None:
    """Why the session is no longer valid, or None (``last_seen``: if known better than the
    row's, from ``Touches``)."""
    if now - (last_seen or row.last_seen_at) >= timeouts.idle:
        return "idle timeout"
    if now - row.created_at >= timeouts.absolute:
        return "absolute timeout"
    if not row.user.active:
        return "user disabled"
    return None


async def load(
    session: AsyncSession,
    *,
    raw: str,
    timeouts: Timeouts,
    now: datetime | None = None,
    touches: Touches | None = None,
) -> WebSession | None:
    """The live session for a cookie value.

    With ``touches`` (the panel) nothing is written: the visit is noted there and an expired
    session is only refused (``touches.purge_expired`` deletes it later). Without, expired
    sessions are deleted on sight and the visit is written at once.
    """
    if not raw or len(raw) > 128:
        return None
    row = await session.get(WebSession, hash_id(raw))
    if row is None:
        return None
    moment = now or utcnow()
    last_seen = touches.last_seen(row) if touches is not None else None
    if expired(row, timeouts=timeouts, now=moment, last_seen=last_seen) is not None:
        if touches is None:
            await session.delete(row)
            await session.flush()
        return None
    if touches is not None:
        touches.session_seen(row, moment)
    elif moment - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = moment
        await session.flush()
    return row


async def rotate(
    session: AsyncSession,
    *,
    row: WebSession,
    stage: Stage | None = None,
    authenticated: bool = True,
    now: datetime | None = None,
) -> tuple[str, WebSession]:
    """Replace the id (login completion, re-authentication); the old id stops working."""
    moment = now or utcnow()
    raw = new_id()
    fresh = WebSession(
        id_hash=hash_id(raw),
        user_id=row.user_id,
        stage=(stage or Stage(row.stage)).value,
        created_at=row.created_at,
        last_seen_at=moment,
        authenticated_at=moment if authenticated else row.authenticated_at,
        ip=row.ip,
        user_agent=row.user_agent,
    )
    await session.delete(row)
    await session.flush()
    session.add(fresh)
    await session.flush()
    await session.refresh(fresh, ["user"])
    return raw, fresh


async def end(session: AsyncSession, *, row: WebSession) -> None:
    await session.delete(row)
    await session.flush()


async def end_all(
    session: AsyncSession, *, user: User, reason: str, actor: str = audit.SYSTEM_ACTOR
) -> int:
    """End every session of ``user`` (disabled, roles changed, password or 2FA reset)."""
    count = int(
        await session.scalar(
            select(func.count()).select_from(WebSession).where(WebSession.user_id == user.id)
        )
        or 0
    )
    await session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    await session.flush()
    if count:
        await audit.record(
            session,
            actor=actor,
            action="auth.sessions_ended",
            target=f"user:{user.username}",
            details={"count": count, "reason": reason},
        )
    return count


async def for_user(session: AsyncSession, *, user: User) -> list[WebSession]:
    query = (
        select(WebSession)
        .where(WebSession.user_id == user.id)
        .order_by(WebSession.created_at.desc())
    )
    return list((await session.scalars(query)).all())


async def count_for_user(session: AsyncSession, *, user_id: int) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(WebSession).where(WebSession.user_id == user_id)
        )
        or 0
    )
