"""TOTP two-factor: enrolment with a locally rendered QR code, single-use codes, recovery codes.

Codes are accepted for the current 30-second step and the one before (clock skew), and each
step is accepted once per user (``users.totp_last_step``), so an observed code cannot be
replayed. Recovery codes are 50-bit random, stored as HMACs, usable once.
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import datetime

import pyotp
import segno
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.auth import sessions
from comms.auth.crypto import Keys, SecretBoxError
from comms.auth.models import RecoveryCode
from comms.clock import utcnow
from comms.errors import FieldProblem, InvalidInput, RuleViolation
from comms.permissions import Action, require
from comms.users.models import User

STEP_SECONDS = 30
RECOVERY_CODES = 10
_RECOVERY_ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"  # no 0/O, 1/I/L, U
_CODE_RE = re.compile(r"^\d{6}$")


def new_secret() -> str:
    return pyotp.random_base32()  # 160 bits


def _associated(user: User) -> str:
    return f"totp:user:{user.id}"


def provisioning_uri(secret: str, *, username: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """An inline SVG QR code, made here (the secret never leaves the server)."""
    svg = segno.make(uri, error="m").svg_inline(scale=5, border=2, dark="#111", light="#fff")
    assert isinstance(svg, str)
    return svg


def step_of(moment: datetime) -> int:
    return int(moment.timestamp()) // STEP_SECONDS


def code_at(secret: str, step: int) -> str:
    """The code for a step (tests use it to act as the authenticator app)."""
    return str(pyotp.TOTP(secret).at(step * STEP_SECONDS))


def is_enrolled(user: User) -> bool:
    return user.totp_enabled_at is not None and user.totp_secret_encrypted is not None


def pending_secret(user: User, keys: Keys) -> str | None:
    """The secret being enrolled (shown on the enrolment page until confirmed)."""
    if user.totp_enabled_at is not None or not user.totp_secret_encrypted:
        return None
    try:
        return keys.decrypt(user.totp_secret_encrypted, associated=_associated(user))
    except SecretBoxError:
        return None


def _secret(user: User, keys: Keys) -> str | None:
    if not user.totp_secret_encrypted:
        return None
    try:
        return keys.decrypt(user.totp_secret_encrypted, associated=_associated(user))
    except SecretBoxError:
        return None


def _match(secret: str, code: str, *, now: datetime, last_step: int | None) -> int | None:
    current = step_of(now)
    for step in (current, current - 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(code_at(secret, step), code):
            return step
    return None


def _normal_recovery(code: str) -> str:
    return re.sub(r"[\s-]", "", code).upper()


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


async def begin_enrolment(session: AsyncSession, *, user: User, keys: Keys) -> str:
    if is_enrolled(user):
        raise RuleViolation("totp.enrolled", "two-factor is already set up; reset it first")
    secret = new_secret()
    user.totp_secret_encrypted = keys.encrypt(secret, associated=_associated(user))
    user.totp_enabled_at = None
    user.totp_last_step = None
    await session.flush()
    return secret


async def confirm_enrolment(
    session: AsyncSession, *, user: User, keys: Keys, code: str, now: datetime | None = None
) -> list[str]:
    """Check the first code from the app; returns the recovery codes (shown once)."""
    secret = pending_secret(user, keys)
    if secret is None:
        raise RuleViolation("totp.not_enrolling", "start the two-factor setup first")
    moment = now or utcnow()
    step = (
        _match(secret, code.strip(), now=moment, last_step=None)
        if _CODE_RE.match(code.strip())
        else None
    )
    if step is None:
        raise InvalidInput(
            FieldProblem(
                "code",
                "that code does not match; check the time on your phone and try the next one",
            )
        )
    user.totp_enabled_at = moment
    user.totp_last_step = step
    codes = await _replace_recovery_codes(session, user=user, keys=keys, now=moment)
    await audit.record(
        session, actor=user.username, action="auth.2fa_enrolled", target=f"user:{user.username}"
    )
    return codes


async def _replace_recovery_codes(
    session: AsyncSession, *, user: User, keys: Keys, now: datetime
) -> list[str]:
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
    for code in codes:
        session.add(
            RecoveryCode(
                user_id=user.id,
                code_hash=keys.mac(keys.recovery, _normal_recovery(code)),
                created_at=now,
            )
        )
    await session.flush()
    return codes


async def verify(
    session: AsyncSession, *, user: User, keys: Keys, code: str, now: datetime | None = None
) -> str | None:
    """Check a second factor; returns ``"totp"`` or ``"recovery"``, or None. Consumes it."""
    if not is_enrolled(user):
        return None
    moment = now or utcnow()
    text = code.strip().replace(" ", "")
    if _CODE_RE.match(text):
        secret = _secret(user, keys)
        if secret is None:
            return None
        step = _match(secret, text, now=moment, last_step=user.totp_last_step)
        if step is None:
            return None
        user.totp_last_step = step
        await session.flush()
        return "totp"
    wanted = keys.mac(keys.recovery, _normal_recovery(text))
    rows = (
        await session.scalars(
            select(RecoveryCode).where(
                RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
            )
        )
    ).all()
    for row in rows:
        if hmac.compare_digest(row.code_hash, wanted):
            row.used_at = moment
            await session.flush()
            await audit.record(
                session,
                actor=user.username,
                action="auth.recovery_code_used",
                target=f"user:{user.username}",
                details={"remaining": len(rows) - 1},
            )
            return "recovery"
    return None


async def remaining_recovery_codes(session: AsyncSession, *, user: User) -> int:
    rows = (
        await session.scalars(
            select(RecoveryCode).where(
                RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)
            )
        )
    ).all()
    return len(rows)


async def reset(session: AsyncSession, *, user: User, actor: User | None) -> None:
    """Remove a user's two-factor (lost phone); they must enrol again at next login."""
    if actor is not None:
        require(actor, Action.USER_MANAGE)
    user.totp_secret_encrypted = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    await session.flush()
    name = actor.username if actor else audit.SYSTEM_ACTOR
    await audit.record(session, actor=name, action="auth.2fa_reset", target=f"user:{user.username}")
    await sessions.end_all(session, user=user, reason="two-factor reset", actor=name)
