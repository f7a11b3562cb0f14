"""Request dependencies: one transaction per request, the app-wide guard, the current user.

The guard runs before every endpoint (it is an app-level dependency): it finds the endpoint's
declared rule, authenticates (session cookie for the panel, bearer token for ``/api``),
checks CSRF on unsafe panel requests, and checks the permission table. Services check the
table again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from approvals.rules import Gate, Rule, rule_of, writes_apart_of
from approvals.security import (
    CSRF_FIELD,
    CSRF_HEADER,
    FORM_PROBLEMS,
    FORM_TYPES,
    PRE_COOKIE,
    SAFE_METHODS,
    SESSION_COOKIE,
    check_fetch_metadata,
    check_token,
    csrf_token,
    read_cookie,
)
from approvals.state import PanelState
from comms.auth import sessions, tokens
from comms.auth.models import ApiToken, WebSession
from comms.auth.sessions import Stage
from comms.enums import Role
from comms.errors import AuthenticationRequired, FieldProblem, InvalidInput, PermissionDenied
from comms.permissions import ALLOWED, Action, require
from comms.users.models import User

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API token from `comms token create USERNAME --scope ...` or the admin page.",
)


@dataclass(frozen=True)
class Viewer:
    """A snapshot of who is asking, safe to use after the transaction rolled back."""

    id: int
    username: str
    display_name: str
    roles: frozenset[Role]

    @classmethod
    def of(cls, user: User) -> Viewer:
        return cls(user.id, user.username, user.display_name, user.role_set)

    def can(self, action: Action) -> bool:
        return bool(self.roles.intersection(ALLOWED[action]))

    def has(self, role: Role) -> bool:
        return role in self.roles


class StageRequired(Exception):
    """The session is half logged in; send the person to the step they still owe."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def panel(request: Request) -> PanelState:
    state = request.app.state.panel
    assert isinstance(state, PanelState)
    return state


async def _panel(request: Request) -> PanelState:
    """``panel`` as a dependency. FastAPI runs a plain ``def`` dependency in its thread pool,
    a thread hop per request for a lookup: every dependency here is ``async`` for that."""
    return panel(request)


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed when the endpoint returns, rolled back on error.

    GET and HEAD read in a read-only transaction (``Database.read``): a page view takes no
    write lock and cannot write. So do the endpoints that write through a shared writer
    (``writes_apart``). Any other method writes in a transaction of its own, which also
    carries the visits noted since the last flush (``Touches``).
    """
    state = panel(request)
    if request.method in SAFE_METHODS or writes_apart_of(request.scope.get("endpoint")):
        async with state.database.read() as session:
            yield session
        return
    async with state.database.transaction() as session:
        if state.touches.pending:
            await state.touches.flush(session)
        yield session


DbSession = Annotated[AsyncSession, Depends(db_session, scope="function")]


async def _form_token(request: Request) -> str | None:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(FORM_TYPES):
        return None
    form = await request.form(max_files=0, max_fields=400, max_part_size=200_000)
    value = form.get(CSRF_FIELD)
    return value if isinstance(value, str) else None


async def guard(request: Request, session: DbSession) -> None:
    """Authenticate and authorize every request against its endpoint's declared rule."""
    request.state.user = None
    request.state.web_session = None
    request.state.token = None
    request.state.csrf = ""
    request.state.viewer = None
    rule = rule_of(request.scope.get("endpoint"))
    if rule is None:
        raise PermissionDenied(
            "this route declares no access rule, so it is refused", rule="route.no_rule"
        )
    if request.url.path.startswith("/api/"):
        await _guard_api(request, session, rule)
    else:
        await _guard_panel(request, session, rule)


def _check_query(request: Request) -> None:
    """Unknown query parameters are an error, not silently ignored (a typo must not pass)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    known: set[str] = set()
    pending = [dependant]
    while pending:
        current = pending.pop()
        known.update(param.alias for param in current.query_params)
        pending.extend(current.dependencies)
    unknown = sorted(set(request.query_params.keys()) - known)
    if unknown:
        raise InvalidInput(
            [FieldProblem(name[:64], "unknown query parameter") for name in unknown[:10]]
        )


async def _guard_api(request: Request, session: AsyncSession, rule: Rule) -> None:
    _check_query(request)
    if rule.gate is Gate.PUBLIC:
        return
    scheme, _, raw = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise AuthenticationRequired("send an API token: Authorization: Bearer <token>")
    token = await tokens.authenticate(session, raw=raw.strip(), touches=panel(request).touches)
    if token is None:
        raise AuthenticationRequired(
            "the API token is not valid (unknown, revoked or expired, or its user is disabled)"
        )
    request.state.token = token
    request.state.user = token.user
    request.state.viewer = Viewer.of(token.user)
    if rule.gate is Gate.ACTION:
        assert rule.action is not None
        if not tokens.token_allows(token, rule.action):
            needed = tokens.scope_for(rule.action).value
            raise PermissionDenied(f"this token lacks the {needed!r} scope", rule="token.scope")
        require(token.user, rule.action)


async def _guard_panel(request: Request, session: AsyncSession, rule: Rule) -> None:
    state = panel(request)
    raw = read_cookie(request, state.settings, SESSION_COOKIE)
    row = (
        await sessions.load(session, raw=raw, timeouts=state.timeouts, touches=state.touches)
        if raw
        else None
    )
    request.state.web_session = row
    pre = read_cookie(request, state.settings, PRE_COOKIE)
    request.state.csrf = csrf_token(
        state.keys, session_hash=row.id_hash if row else None, pre_session=pre or None
    )
    unsafe = request.method not in SAFE_METHODS
    if unsafe:
        check_fetch_metadata(request)
    if rule.gate is not Gate.PUBLIC and row is None:
        raise AuthenticationRequired("log in to continue (your session may have timed out)")
    if unsafe:
        supplied = request.headers.get(CSRF_HEADER) or await _form_token(request)
        check_token(request.state.csrf, supplied)
        problems = getattr(request.state, FORM_PROBLEMS, None)
        if problems:  # found by BodyLimitMiddleware, which saw the raw bytes
            raise InvalidInput(problems)
    if row is None:
        return
    stage = Stage(row.stage)
    if stage is Stage.FULL:
        request.state.user = row.user
        request.state.viewer = Viewer.of(row.user)
    if rule.gate in (Gate.PUBLIC, Gate.PENDING):
        return
    if rule.gate is Gate.ENROL and stage in (Stage.ENROL, Stage.FULL):
        return
    if stage is Stage.TOTP:
        raise StageRequired("/login/totp")
    if stage is Stage.ENROL:
        raise StageRequired("/account/2fa")
    if rule.gate is Gate.ACTION:
        assert rule.action is not None
        require(row.user, rule.action)


async def _current_user(request: Request) -> User:
    user = getattr(request.state, "user", None)
    if not isinstance(user, User):
        raise AuthenticationRequired("log in to continue")
    return user


async def _current_session(request: Request) -> WebSession:
    row = getattr(request.state, "web_session", None)
    if not isinstance(row, WebSession):
        raise AuthenticationRequired("log in to continue")
    return row


async def _current_token(request: Request) -> ApiToken:
    token = getattr(request.state, "token", None)
    if not isinstance(token, ApiToken):
        raise AuthenticationRequired("send an API token: Authorization: Bearer <token>")
    return token


CurrentUser = Annotated[User, Depends(_current_user)]
CurrentSession = Annotated[WebSession, Depends(_current_session)]
CurrentToken = Annotated[ApiToken, Depends(_current_token)]
Panel = Annotated[PanelState, Depends(_panel)]
