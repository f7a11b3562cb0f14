"""API bearer tokens: 256-bit random, shown once, stored as SHA-256, each with scopes.

A request is allowed when the token's scope covers the action AND the token's user holds a
role the permission table allows: a token cannot do more than its owner.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.auth.crypto import sha256_hex
from comms.auth.models import ApiToken
from comms.clock import utcnow
from comms.errors import FieldProblem, InvalidInput, NotFound, RuleViolation
from comms.permissions import Action, require
from comms.users.models import User

if TYPE_CHECKING:
    from comms.auth.touches import Touches

TOKEN_PREFIX = "cmt_"  # noqa: S105 - a public marker, not a secret
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,63}$")


class Scope(StrEnum):
    READ = "read"
    DRAFT = "draft"
    APPROVE = "approve"
    DETECTIONS_WRITE = "detections:write"
    ADMIN = "admin"


# Which actions each scope unlocks. Roles are checked on top of this.
SCOPE_ACTIONS: dict[Scope, frozenset[Action]] = {
    Scope.READ: frozenset({Action.READ, Action.AUDIT_READ}),
    Scope.DRAFT: frozenset({Action.DRAFT_WRITE, Action.INCIDENT_OPEN, Action.INCIDENT_LOG}),
    Scope.APPROVE: frozenset({Action.DRAFT_APPROVE}),
    Scope.DETECTIONS_WRITE: frozenset({Action.DETECTION_WRITE}),
    Scope.ADMIN: frozenset(
        {
            Action.USER_MANAGE,
            Action.DESTINATION_MANAGE,
            Action.TOKEN_MANAGE,
            Action.INCIDENT_MANAGE,
            Action.DELIVERY_MANAGE,
        }
    ),
}


def scope_for(action: Action) -> Scope:
    for scope, actions in SCOPE_ACTIONS.items():
        if action in actions:
            return scope
    raise KeyError(action)  # pragma: no cover - every action has a scope (tested)


def parse_scopes(values: Iterable[str], *, field: str = "scopes") -> list[Scope]:
    scopes: set[Scope] = set()
    for value in values:
        try:
            scopes.add(Scope(value.strip()))
        except ValueError:
            choices = ", ".join(s.value for s in Scope)
            raise InvalidInput(
                FieldProblem(field, f"unknown scope {value!r} (choose from {choices})")
            ) from None
    if not scopes:
        raise InvalidInput(FieldProblem(field, "give at least one scope"))
    return sorted(scopes, key=list(Scope).index)


def token_allows(token: ApiToken, action: Action) -> bool:
    known = {scope.value for scope in Scope}
    return any(action in SCOPE_ACTIONS[Scope(s)] for s in token.scopes if s in known)


async def create(
    session: AsyncSession,
    *,
    user: User,
    name: str,
    scopes: Iterable[Scope],
    actor: User | None,
    expires_at: datetime | None = None,
) -> tuple[str, ApiToken]:
    """Create a token; the raw value is returned once and never stored."""
    if actor is not None:
        require(actor, Action.TOKEN_MANAGE)
    clean = name.strip()
    if not NAME_RE.match(clean):
        raise InvalidInput(
            FieldProblem("name", "1-64 characters: letters, digits, space, '_', '.', ':' or '-'")
        )
    chosen = sorted(set(scopes), key=list(Scope).index)
    if not chosen:
        raise InvalidInput(FieldProblem("scopes", "give at least one scope"))
    if not user.active:
        raise RuleViolation("token.user_disabled", f"{user.username} is disabled", field="user")
    now = utcnow()
    if expires_at is not None and expires_at <= now:
        raise InvalidInput(FieldProblem("expires_at", "must be in the future"))
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        user_id=user.id,
        name=clean,
        token_hash=sha256_hex(raw),
        prefix=raw[:12],
        scopes=[s.value for s in chosen],
        created_at=now,
        created_by=actor.username if actor else audit.SYSTEM_ACTOR,
        expires_at=expires_at,
    )
    session.add(token)
    await session.flush()
    await session.refresh(token, ["user"])
    await audit.record(
        session,
        actor=actor.username if actor else audit.SYSTEM_ACTOR,
        action="token.create",
        target=f"user:{user.username}",
        details={
            "token": token.id,
            "prefix": token.prefix,
            "name": clean,
            "scopes": token.scopes,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return raw, token


async def authenticate(
    session: AsyncSession, *, raw: str, now: datetime | None = None, touches: Touches | None = None
) -> ApiToken | None:
    """The live token for a bearer value (revoked, expired or disabled-owner tokens: None).

    With ``touches`` the use is noted there instead of written on the request path."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 100:
        return None
    token = await session.scalar(select(ApiToken).where(ApiToken.token_hash == sha256_hex(raw)))
    moment = now or utcnow()
    if token is None or token.revoked_at is not None or not token.user.active:
        return None
    if token.expires_at is not None and moment >= token.expires_at:
        return None
    if touches is not None:
        touches.token_used(token, moment)
    elif token.last_used_at is None or (moment - token.last_used_at).total_seconds() >= 60:
        token.last_used_at = moment
        await session.flush()
    return token


async def list_tokens(session: AsyncSession, *, user: User | None = None) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    if user is not None:
        query = query.where(ApiToken.user_id == user.id)
    return list((await session.scalars(query)).all())


async def get(session: AsyncSession, *, token_id: int) -> ApiToken:
    token = await session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no API token #{token_id}", field="token")
    return token


async def revoke(session: AsyncSession, *, token: ApiToken, actor: User | None) -> ApiToken:
    if actor is not None:
        require(actor, Action.TOKEN_MANAGE)
    if token.revoked_at is not None:
        raise RuleViolation("token.revoked", f"token {token.prefix}… is already revoked")
    token.revoked_at = utcnow()
    await session.flush()
    await audit.record(
        session,
        actor=actor.username if actor else audit.SYSTEM_ACTOR,
        action="token.revoke",
        target=f"user:{token.user.username}",
        details={"token": token.id, "prefix": token.prefix},
    )
    return token
