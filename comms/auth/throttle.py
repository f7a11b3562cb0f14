"""Brute-force protection that slows guessing down without letting a stranger lock out the owner.

Attempts are counted in buckets, each with its own backoff and lock:

* ``account``: the account name, for sign-ins from browsers that have not signed in to it
  before (the stranger's bucket). After ``login_slowdown_after`` consecutive failures each try
  must wait (1 s, 2 s, 4 s ... up to a minute); after ``lockout_after_failures`` the name is
  locked for ``lockout_minutes``; and whatever those settings say, at most
  ``login_max_attempts_per_hour`` (<= 100) attempts are evaluated per name in any sliding hour,
  so spreading guesses over many addresses does not help.
* ``device``: a browser that signed in to this account before carries a signed device cookie
  (OWASP's "device cookie" defence); its attempts are counted for that browser alone, so the
  owner is slowed down if they mistype, never locked out by someone else's guesses.
* ``session`` and ``token``: a step-up before approving, made by someone who already holds a
  signed-in session, or a valid API token plus an authenticator code; their failures count
  against that session or token only.
* ``source``: the address, across all account names (spraying one password over many names);
  it only slows down, since several honest people may share an address.

Every attempt is recorded with its address and audited by the caller.
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
# How far back the panel tells a person (and the admins) about guessing at their account.
REPORT_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class Bucket:
    """Whose attempts are counted together (see the module's docstring)."""

    key: str  # the LoginThrottle and LoginAttempt key
    kind: str  # account, device, session, token, source


def for_account(username: str) -> Bucket:
    return Bucket(account_key(username), "account")


def for_device(nonce: str) -> Bucket:
    return Bucket("device:" + nonce[:40], "device")


def for_session(id_hash: str) -> Bucket:
    return Bucket("session:" + id_hash[:40], "session")


def for_token(token_id: int) -> Bucket:
    return Bucket(f"token:{token_id}", "token")


def for_source(ip: str) -> Bucket:
    return Bucket("ip:" + (ip or "unknown")[:56], "source")


@dataclass(frozen=True)
class Refusal:
    reason: str  # locked, slow_down, hourly_cap
    retry_after: int  # seconds
    kind: str = "account"

    @property
    def message(self) -> str:
        if self.kind == "source":
            return (
                "Too many failed sign-ins from your network: wait "
                f"{self.retry_after} second(s) and try again."
            )
        if self.reason == "locked":
            minutes = max(1, math.ceil(self.retry_after / 60))
            if self.kind == "account":
                return (
                    "Too many failed attempts: sign-ins to this account from browsers it has not "
                    f"used before are locked for {minutes} more minute(s). From a browser you "
                    "signed in with before you can still sign in; an admin can also unlock it."
                )
            return f"Too many failed attempts: wait {minutes} minute(s) before trying again."
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
    session: AsyncSession, *, bucket: Bucket, settings: Settings, now: datetime
) -> Refusal | None:
    """A refusal if this bucket may not be tried now (nothing is evaluated then)."""
    account = bucket.key
    state = await session.get(LoginThrottle, account)
    if state is not None:
        if state.locked_until is not None and now < state.locked_until:
            return Refusal("locked", _seconds(state.locked_until - now), bucket.kind)
        if state.next_allowed_at is not None and now < state.next_allowed_at:
            return Refusal("slow_down", _seconds(state.next_allowed_at - now), bucket.kind)
    if bucket.kind == "source":
        return None  # the hourly cap is per account name
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
        return Refusal("hourly_cap", _seconds(wait), bucket.kind)
    return None


async def record_attempt(
    session: AsyncSession, *, account: str, ip: str, outcome: str, evaluated: bool, now: datetime
) -> None:
    session.add(
        LoginAttempt(account=account, at=now, ip=ip[:64], outcome=outcome, evaluated=evaluated)
    )
    await session.flush()


async def failure(
    session: AsyncSession, *, bucket: Bucket, settings: Settings, now: datetime
) -> LoginThrottle:
    """Count a failed evaluation: slow down, then lock (a source only slows down)."""
    state = await session.get(LoginThrottle, bucket.key)
    if state is None:
        state = LoginThrottle(account=bucket.key, failures=0)
        session.add(state)
    if bucket.kind == "source" and (
        state.last_failure_at is not None and now - state.last_failure_at > WINDOW
    ):
        state.failures = 0  # an address's count fades after a quiet hour
    state.failures += 1
    state.last_failure_at = now
    if bucket.kind == "source":
        extra = state.failures - settings.login_source_slowdown_after
        if extra >= 0:
            state.next_allowed_at = now + timedelta(seconds=min(2**extra, BACKOFF_MAX_SECONDS))
    elif state.failures >= settings.lockout_after_failures:
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


FAILED_OUTCOMES = ("bad_password", "unknown_user", "disabled", "bad_totp", "bad_credential")


@dataclass(frozen=True)
class Guessing:
    """What strangers tried against an account name, for its owner and the admins."""

    failures: int
    refused: int
    sources: tuple[str, ...]
    last_at: datetime | None
    locked_until: datetime | None

    @property
    def any(self) -> bool:
        return self.failures + self.refused > 0


async def guessing(
    session: AsyncSession, *, username: str, since: datetime, now: datetime
) -> Guessing:
    """Failed and refused sign-ins from unrecognised browsers since ``since``."""
    account = account_key(username)
    rows = (
        await session.execute(
            select(LoginAttempt.outcome, LoginAttempt.ip, LoginAttempt.at).where(
                LoginAttempt.account == account,
                LoginAttempt.at > since,
                LoginAttempt.outcome.in_([*FAILED_OUTCOMES, "refused"]),
            )
        )
    ).all()
    state = await session.get(LoginThrottle, account)
    locked = state.locked_until if state and state.locked_until else None
    if locked is not None and locked <= now:
        locked = None
    return Guessing(
        failures=sum(1 for r in rows if r.outcome != "refused"),
        refused=sum(1 for r in rows if r.outcome == "refused"),
        sources=tuple(sorted({r.ip for r in rows if r.ip})),
        last_at=max((r.at for r in rows), default=None),
        locked_until=locked,
    )


async def prune(session: AsyncSession, *, now: datetime) -> None:
    await session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - KEEP_ATTEMPTS))
