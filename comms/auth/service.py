"""Login, second factor and step-up, with throttling and an audit event for every failure.

These functions never raise for a wrong credential: they return a result and leave the
failure's records (attempt row, throttle state, audit event) in the caller's transaction, which
the caller must commit even though the person sees an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.auth import throttle, totp
from comms.auth.crypto import Keys
from comms.clock import utcnow
from comms.settings import Settings
from comms.users import service as users
from comms.users.models import User, UserRole

PASSWORD_INPUT_MAX = 1024


class Outcome(StrEnum):
    OK = "ok"
    NEED_TOTP = "need_totp"
    NEED_ENROL = "need_enrol"
    FAILED = "failed"
    REFUSED = "refused"


@dataclass(frozen=True)
class AuthResult:
    outcome: Outcome
    user: User | None = None
    retry_after: int = 0
    message: str = ""
    factor: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.OK, Outcome.NEED_TOTP, Outcome.NEED_ENROL)


GENERIC_FAILURE = "Wrong username or password."


def requires_2fa(user: User, settings: Settings) -> bool:
    return bool(user.role_set.intersection(settings.require_2fa_for))


async def _refused(
    session: AsyncSession,
    *,
    account: str,
    bucket: throttle.Bucket,
    ip: str,
    refusal: throttle.Refusal,
    kind: str,
) -> AuthResult:
    now = utcnow()
    await throttle.record_attempt(
        session, account=bucket.key, ip=ip, outcome="refused", evaluated=False, now=now
    )
    await audit.record(
        session,
        actor=account,
        action=f"auth.{kind}_refused",
        target=f"account:{account}",
        details={
            "reason": refusal.reason,
            "retry_after": refusal.retry_after,
            "ip": ip,
            "bucket": refusal.kind,
        },
    )
    return AuthResult(Outcome.REFUSED, retry_after=refusal.retry_after, message=refusal.message)


async def _failed(
    session: AsyncSession,
    *,
    account: str,
    buckets: list[throttle.Bucket],
    ip: str,
    settings: Settings,
    kind: str,
    why: str,
    message: str,
) -> AuthResult:
    now = utcnow()
    await throttle.record_attempt(
        session, account=buckets[0].key, ip=ip, outcome=why, evaluated=True, now=now
    )
    locked = False
    for bucket in buckets:
        state = await throttle.failure(session, bucket=bucket, settings=settings, now=now)
        locked = locked or (state.locked_until is not None and state.locked_until > now)
    await audit.record(
        session,
        actor=account,
        action=f"auth.{kind}_failed",
        target=f"account:{account}",
        details={"reason": why, "ip": ip, "locked": locked, "bucket": buckets[0].kind},
    )
    return AuthResult(Outcome.FAILED, message=message)


async def _first_refusal(
    session: AsyncSession, buckets: list[throttle.Bucket], settings: Settings
) -> tuple[throttle.Bucket, throttle.Refusal] | None:
    now = utcnow()
    for bucket in buckets:
        refusal = await throttle.check(session, bucket=bucket, settings=settings, now=now)
        if refusal is not None:
            return bucket, refusal
    return None


def sign_in_buckets(username: str, *, ip: str, device: str | None) -> list[throttle.Bucket]:
    """A browser that signed in to this account before has its own bucket; any other attempt
    counts against the account name (for unrecognised browsers) and the source address."""
    if device:
        return [throttle.for_device(device)]
    return [throttle.for_account(username), throttle.for_source(ip)]


async def password_login(
    session: AsyncSession,
    *,
    username: str,
    password: str,
    settings: Settings,
    ip: str = "",
    device: str | None = None,
) -> AuthResult:
    """First factor. Unknown users cost the same argon2 verification as wrong passwords.

    ``device`` is the nonce of this browser's verified device cookie for ``username``, if any.
    """
    account = throttle.account_key(username)
    buckets = sign_in_buckets(username, ip=ip, device=device)
    now = utcnow()
    refused = await _first_refusal(session, buckets, settings)
    if refused is not None:
        return await _refused(
            session, account=account, bucket=refused[0], ip=ip, refusal=refused[1], kind="login"
        )
    user = (
        await users.get_by_username(session, username=username)
        if len(username.strip()) <= 64
        else None
    )
    if user is None:
        # A known user's roles are loaded with a second query; do the same amount of work.
        await session.execute(select(UserRole.id).where(UserRole.user_id == -1))
    ok = len(password) <= PASSWORD_INPUT_MAX and users.verify_password(user, password)
    if not ok or user is None or not user.active:
        why = "bad_password" if user is not None else "unknown_user"
        if ok and user is not None and not user.active:
            why = "disabled"
        return await _failed(
            session,
            account=account,
            buckets=buckets,
            ip=ip,
            settings=settings,
            kind="login",
            why=why,
            message=GENERIC_FAILURE,
        )
    if users.needs_rehash(user):
        user.password_hash = users.hash_password(password)
    await throttle.record_attempt(
        session, account=buckets[0].key, ip=ip, outcome="password_ok", evaluated=True, now=now
    )
    if totp.is_enrolled(user):
        await audit.record(
            session,
            actor=user.username,
            action="auth.password_ok",
            target=f"user:{user.username}",
            details={"ip": ip},
        )
        return AuthResult(Outcome.NEED_TOTP, user=user, factor="password")
    await throttle.success(session, account=buckets[0].key)
    if requires_2fa(user, settings):
        await audit.record(
            session,
            actor=user.username,
            action="auth.password_ok",
            target=f"user:{user.username}",
            details={"ip": ip, "must_enrol_2fa": True},
        )
        return AuthResult(Outcome.NEED_ENROL, user=user, factor="password")
    await audit.record(
        session,
        actor=user.username,
        action="auth.login",
        target=f"user:{user.username}",
        details={"ip": ip, "factors": "password"},
    )
    return AuthResult(Outcome.OK, user=user, factor="password")


async def second_factor(
    session: AsyncSession,
    *,
    user: User,
    code: str,
    keys: Keys,
    settings: Settings,
    ip: str = "",
    device: str | None = None,
) -> AuthResult:
    """The authenticator (or recovery) code after the password, at login."""
    account = throttle.account_key(user.username)
    buckets = sign_in_buckets(user.username, ip=ip, device=device)
    now = utcnow()
    refused = await _first_refusal(session, buckets, settings)
    if refused is not None:
        return await _refused(
            session, account=account, bucket=refused[0], ip=ip, refusal=refused[1], kind="login"
        )
    factor = await totp.verify(session, user=user, keys=keys, code=code[:64], now=now)
    if factor is None:
        return await _failed(
            session,
            account=account,
            buckets=buckets,
            ip=ip,
            settings=settings,
            kind="login",
            why="bad_totp",
            message="That code is not valid (or was used).",
        )
    await throttle.record_attempt(
        session, account=buckets[0].key, ip=ip, outcome="ok", evaluated=True, now=now
    )
    await throttle.success(session, account=buckets[0].key)
    await audit.record(
        session,
        actor=user.username,
        action="auth.login",
        target=f"user:{user.username}",
        details={"ip": ip, "factors": f"password+{factor}"},
    )
    return AuthResult(Outcome.OK, user=user, factor=factor)


async def step_up(
    session: AsyncSession,
    *,
    user: User,
    credential: str,
    keys: Keys,
    settings: Settings,
    holder: throttle.Bucket,
    ip: str = "",
) -> AuthResult:
    """Fresh authentication before approving: the password, or a TOTP code if enrolled.

    ``holder`` is the session or API token the person already proved: only its own failures
    slow it down, never a stranger's guesses at the account name.
    """
    account = throttle.account_key(user.username)
    now = utcnow()
    refused = await _first_refusal(session, [holder], settings)
    if refused is not None:
        return await _refused(
            session, account=account, bucket=holder, ip=ip, refusal=refused[1], kind="stepup"
        )
    text = credential.strip()
    factor: str | None = None
    if totp.is_enrolled(user) and text.isdigit() and len(text) == 6:
        factor = await totp.verify(session, user=user, keys=keys, code=text, now=now)
    elif (
        credential
        and len(credential) <= PASSWORD_INPUT_MAX
        and users.verify_password(user, credential)
    ):
        factor = "password"
    if factor is None:
        return await _failed(
            session,
            account=account,
            buckets=[holder],
            ip=ip,
            settings=settings,
            kind="stepup",
            why="bad_credential",
            message="That password or code is not valid; nothing was approved.",
        )
    await throttle.record_attempt(
        session, account=holder.key, ip=ip, outcome="ok", evaluated=True, now=now
    )
    await throttle.success(session, account=holder.key)
    await audit.record(
        session,
        actor=user.username,
        action="auth.stepup",
        target=f"user:{user.username}",
        details={"ip": ip, "factor": factor, "holder": holder.kind},
    )
    return AuthResult(Outcome.OK, user=user, factor=factor)


async def totp_header_step_up(
    session: AsyncSession,
    *,
    user: User,
    code: str | None,
    keys: Keys,
    settings: Settings,
    holder: throttle.Bucket,
    ip: str = "",
) -> AuthResult:
    """API step-up: a current TOTP code in ``X-Comms-TOTP``; a bearer token alone never approves."""
    if not totp.is_enrolled(user):
        return AuthResult(
            Outcome.FAILED,
            message=(
                "approving through the API needs two-factor: enrol TOTP in the panel, then send "
                "a current code in the X-Comms-TOTP header"
            ),
        )
    if not code or not code.strip().isdigit() or len(code.strip()) != 6:
        return AuthResult(
            Outcome.FAILED,
            message=(
                "approving through the API needs a current authenticator code in the "
                "X-Comms-TOTP header"
            ),
        )
    return await step_up(
        session, user=user, credential=code, keys=keys, settings=settings, holder=holder, ip=ip
    )
