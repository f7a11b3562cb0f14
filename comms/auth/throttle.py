"""Brute-force protection per account name, known or not (so it reveals nothing).

After ``login_slowdown_after`` consecutive failures each further try must wait (1 s, 2 s, 4 s
... up to a minute); after ``lockout_after_failures`` the account name is locked for
``lockout_minutes``; and whatever those settings say, at most ``login_max_attempts_per_hour``
(<= 100) attempts are evaluated per account name in any sliding hour. The source address is
recorded but not used as a key, so spreading attempts over many addresses does not help.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.auth.crypto import sha256_hex
from comms.auth.models import LoginAttempt, LoginThrottle
from comms.settings import Settings

WINDOW = timedelta(hours=1)
BACKOFF_MAX_SECONDS = 60
KEEP_ATTEMPTS = timedelta(days=7)


@dataclass(frozen=True)
class Refusal:
    reason: str  # locked, slow_down, hourly_cap
    retry_after: int  # seconds

    @property
    def message(self) -> str:
        if self.reason == "locked":
            minutes = max(1, math.ceil(self.retry_after / 60))
            return (
                f"Too many failed attempts: this account is locked for {minutes} more "
                "minute(s). An admin can unlock it."
            )
        if self.reason == "hourly_cap":
            return (
                "Too many attempts for this account in the last hour; try again in "
                f"{max(1, math.ceil(self.retry_after / 60))} minute(s)."
            )
        return f"Too many failed attempts: wait {self.retry_after} second(s) and try again."


def account_key(username: str) -> str:
    """The throttle key of a typed username (long or odd input is hashed to fit)."""
    text = username.strip().lower()
    if 0 < len(text) <= 64 and text.isprintable():
        return text
    return "#" + sha256_hex(text)[:63]


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


async def evaluated_in_window(session: AsyncSession, *, account: str, now: datetime) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(LoginAttempt)
            .where(
                LoginAttempt.account == account,
                LoginAttempt.evaluated.is_(True),
                LoginAttempt.at > now - WINDOW,
            )
        )
        or 0
    )


async def check(
    session: AsyncSession, *, account: str, settings: Settings, now: datetime
) -> Refusal | None:
    """A refusal if this account name may not be tried now (nothing is evaluated then)."""
    state = await session.get(LoginThrottle, account)
    if state is not None:
        if state.locked_until is not None and now < state.locked_until:
            return Refusal("locked", _seconds(state.locked_until - now))
        if state.next_allowed_at is not None and now < state.next_allowed_at:
            return Refusal("slow_down", _seconds(state.next_allowed_at - now))
    cap = min(settings.login_max_attempts_per_hour, 100)
    if await evaluated_in_window(session, account=account, now=now) >= cap:
        oldest = await session.scalar(
            select(func.min(LoginAttempt.at)).where(
                LoginAttempt.account == account,
                LoginAttempt.evaluated.is_(True),
                LoginAttempt.at > now - WINDOW,
            )
        )
        wait = (oldest + WINDOW - now) if oldest is not None else WINDOW
        return Refusal("hourly_cap", _seconds(wait))
    return None


async def record_attempt(
    session: AsyncSession, *, account: str, ip: str, outcome: str, evaluated: bool, now: datetime
) -> None:
    session.add(
        LoginAttempt(account=account, at=now, ip=ip[:64], outcome=outcome, evaluated=evaluated)
    )
    await session.flush()


async def failure(
    session: AsyncSession, *, account: str, settings: Settings, now: datetime
) -> LoginThrottle:
    """Count a failed evaluation: slow down, then lock."""
    state = await session.get(LoginThrottle, account)
    if state is None:
        state = LoginThrottle(account=account, failures=0)
        session.add(state)
    state.failures += 1
    state.last_failure_at = now
    if state.failures >= settings.lockout_after_failures:
        state.locked_until = now + timedelta(minutes=settings.lockout_minutes)
        state.next_allowed_at = None
        state.failures = 0
    elif state.failures >= settings.login_slowdown_after:
        extra = state.failures - settings.login_slowdown_after
        state.next_allowed_at = now + timedelta(seconds=min(2**extra, BACKOFF_MAX_SECONDS))
    await session.flush()
    return state


async def success(session: AsyncSession, *, account: str) -> None:
    await session.execute(delete(LoginThrottle).where(LoginThrottle.account == account))
    await session.flush()


async def unlock(session: AsyncSession, *, account: str) -> bool:
    """Clear a lock (an admin vouches for the person); the hourly cap still applies."""
    state = await session.get(LoginThrottle, account)
    if state is None:
        return False
    await session.delete(state)
    await session.flush()
    return True


async def state_of(session: AsyncSession, *, account: str) -> LoginThrottle | None:
    return await session.get(LoginThrottle, account)


async def prune(session: AsyncSession, *, now: datetime) -> None:
    await session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - KEEP_ATTEMPTS))
