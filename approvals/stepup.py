"""Step-up before a decision that changes who or what may go out (approving a draft, approving
a Decision Maker grant): the session must have authenticated within ``COMMS_STEPUP_MINUTES``,
else the form carries the password or an authenticator code.

A failed step-up is returned, not raised, so its records (throttle, audit) commit; a successful
one rotates the session id, and the page rendered next carries the new CSRF token.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from approvals.routes.account import client_ip
from approvals.security import SESSION_COOKIE, csrf_token, set_cookie
from approvals.state import PanelState
from comms.auth import service as auth
from comms.auth import sessions, throttle
from comms.auth.models import WebSession
from comms.clock import utcnow
from comms.users.models import User


def is_fresh(state: PanelState, row: WebSession) -> bool:
    return bool(utcnow() - row.authenticated_at < state.stepup_window)


@dataclass
class StepUp:
    ok: bool
    message: str = ""  # why not, for the form
    status: int = 200  # 401 (wrong or missing credential) or 429 (throttled)
    cookie: str | None = None  # the rotated session id, to set on the response

    def apply(self, request: Request, response: Response, state: PanelState) -> Response:
        if self.cookie:
            set_cookie(response, request, state.settings, SESSION_COOKIE, self.cookie)
        return response


async def step_up(
    request: Request,
    session: AsyncSession,
    state: PanelState,
    *,
    user: User,
    row: WebSession,
    credential: str,
    what: str,
) -> StepUp:
    """Nothing to do when the session is fresh; else check ``credential`` (``what`` names the
    decision in the prompt, e.g. "approve")."""
    if is_fresh(state, row):
        return StepUp(ok=True)
    result = await auth.step_up(
        session,
        user=user,
        credential=credential[:2000],
        keys=state.keys,
        settings=state.settings,
        holder=throttle.for_session(row.id_hash),
        ip=client_ip(request),
    )
    if result.outcome is not auth.Outcome.OK:
        message = (
            result.message
            if credential
            else (
                f"Your last sign-in was more than {state.settings.stepup_minutes} minutes ago: "
                f"enter your password or an authenticator code to {what}."
            )
        )
        status = 429 if result.outcome is auth.Outcome.REFUSED else 401
        return StepUp(ok=False, message=message, status=status)
    cookie, fresh = await sessions.rotate(session, row=row)
    request.state.web_session = fresh
    request.state.csrf = csrf_token(state.keys, session_hash=fresh.id_hash, pre_session=None)
    return StepUp(ok=True, cookie=cookie)
