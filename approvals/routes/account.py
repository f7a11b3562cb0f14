"""Logging in and out, the second factor, two-factor enrolment, one's own account."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from approvals.deps import CurrentSession, CurrentUser, DbSession, Panel, Viewer
from approvals.rules import Gate, allow
from approvals.security import (
    DEVICE_COOKIE,
    DEVICE_COOKIE_DAYS,
    PRE_COOKIE,
    SESSION_COOKIE,
    clear_cookie,
    csrf_token,
    device_cookie,
    device_nonce,
    new_pre_session,
    read_cookie,
    set_cookie,
)
from approvals.web import form_error, page, path_to, redirect, redirect_to
from comms.auth import service as auth
from comms.auth import sessions, totp
from comms.auth.models import WebSession
from comms.auth.sessions import Stage
from comms.errors import CommsError, FieldProblem, InvalidInput
from comms.users import service as users

router = APIRouter(include_in_schema=False)

Text = Annotated[str, Form(max_length=300)]
Secret = Annotated[str, Form(max_length=2000)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def safe_next(target: str | None) -> str:
    """Only local paths: a login link must not bounce the user to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target[:500]


def _start_session(request: Request, response: Response, state: Panel, raw: str) -> Response:
    set_cookie(response, request, state.settings, SESSION_COOKIE, raw)
    return response


def _device(request: Request, state: Panel, username: str) -> str | None:
    """This browser's device-cookie nonce for ``username``, if it signed in to it before."""
    return device_nonce(state.keys, read_cookie(request, state.settings, DEVICE_COOKIE), username)


def _remember_device(request: Request, response: Response, state: Panel, username: str) -> None:
    """After a complete sign-in: this browser now has its own attempt budget for the account."""
    if _device(request, state, username) is None:
        set_cookie(
            response,
            request,
            state.settings,
            DEVICE_COOKIE,
            device_cookie(state.keys, username),
            max_age=DEVICE_COOKIE_DAYS * 86400,
        )


@router.get("/login", name="account:login")
@allow(Gate.PUBLIC)
async def login_form(request: Request, state: Panel, next: str = "/") -> Response:
    row = request.state.web_session
    if isinstance(row, WebSession) and row.stage == Stage.FULL.value:
        return redirect(safe_next(next))
    pre = read_cookie(request, state.settings, PRE_COOKIE)
    fresh = None
    if not pre:
        fresh = new_pre_session()
        request.state.csrf = csrf_token(state.keys, session_hash=None, pre_session=fresh)
    response = page(request, "auth/login.html", {"next": safe_next(next), "username": ""})
    if fresh:
        set_cookie(response, request, state.settings, PRE_COOKIE, fresh)
    return response


@router.post("/login")
@allow(Gate.PUBLIC)
async def login(
    request: Request,
    session: DbSession,
    state: Panel,
    username: Text = "",
    password: Secret = "",
    next: Text = "/",
) -> Response:
    result = await auth.password_login(
        session,
        username=username,
        password=password,
        settings=state.settings,
        ip=client_ip(request),
        device=_device(request, state, username),
    )
    ctx = {"next": safe_next(next), "username": username[:64], "message": result.message}
    if result.outcome is auth.Outcome.REFUSED:
        return page(
            request,
            "auth/login.html",
            ctx,
            status=429,
            headers={"Retry-After": str(result.retry_after)},
        )
    if result.outcome is auth.Outcome.FAILED or result.user is None:
        return page(request, "auth/login.html", ctx, status=401)
    old = request.state.web_session
    if isinstance(old, WebSession):
        await sessions.end(session, row=old)
    stage = {
        auth.Outcome.OK: Stage.FULL,
        auth.Outcome.NEED_TOTP: Stage.TOTP,
        auth.Outcome.NEED_ENROL: Stage.ENROL,
    }[result.outcome]
    raw, _row = await sessions.create(
        session,
        user=result.user,
        stage=stage,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent", ""),
    )
    target = {
        Stage.FULL: safe_next(next),
        Stage.ENROL: path_to(request, "account:2fa"),
        Stage.TOTP: f"{path_to(request, 'account:totp')}?next={safe_next(next)}",
    }[stage]
    response = _start_session(request, redirect(target), state, raw)
    if stage is Stage.FULL:
        _remember_device(request, response, state, result.user.username)
    return response


@router.get("/login/totp", name="account:totp")
@allow(Gate.PENDING)
async def totp_form(request: Request, session_row: CurrentSession, next: str = "/") -> Response:
    if session_row.stage == Stage.FULL.value:
        return redirect(safe_next(next))
    return page(request, "auth/totp.html", {"next": safe_next(next)})


@router.post("/login/totp")
@allow(Gate.PENDING)
async def totp_submit(
    request: Request,
    session: DbSession,
    state: Panel,
    session_row: CurrentSession,
    code: Text = "",
    next: Text = "/",
) -> Response:
    if session_row.stage != Stage.TOTP.value:
        return redirect(safe_next(next))
    result = await auth.second_factor(
        session,
        user=session_row.user,
        code=code,
        keys=state.keys,
        settings=state.settings,
        ip=client_ip(request),
        device=_device(request, state, session_row.user.username),
    )
    ctx = {"next": safe_next(next), "message": result.message}
    if result.outcome is auth.Outcome.REFUSED:
        return page(
            request,
            "auth/totp.html",
            ctx,
            status=429,
            headers={"Retry-After": str(result.retry_after)},
        )
    if result.outcome is not auth.Outcome.OK:
        return page(request, "auth/totp.html", ctx, status=401)
    raw, _row = await sessions.rotate(session, row=session_row, stage=Stage.FULL)
    response = _start_session(request, redirect(safe_next(next)), state, raw)
    _remember_device(request, response, state, session_row.user.username)
    return response


@router.post("/logout")
@allow(Gate.PENDING)
async def logout(
    request: Request, session: DbSession, state: Panel, session_row: CurrentSession
) -> Response:
    await sessions.end(session, row=session_row)
    response = redirect_to(request, "account:login")
    clear_cookie(response, request, state.settings, SESSION_COOKIE)
    return response


@router.get("/account", name="account:get")
@allow(Gate.SELF)
async def account_page(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
) -> HTMLResponse:
    return page(request, "account/get.html", await _account_ctx(session, state, user, session_row))


async def _account_ctx(
    session: DbSession, state: Panel, user: CurrentUser, session_row: WebSession
) -> dict[str, object]:
    return {
        "account": user,
        "enrolled": totp.is_enrolled(user),
        "required": auth.requires_2fa(user, state.settings),
        "recovery_left": await totp.remaining_recovery_codes(session, user=user),
        "sessions": await sessions.for_user(session, user=user),
        "current_hash": session_row.id_hash,
    }


@router.post("/account/password")
@allow(Gate.SELF)
async def change_password(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
    current: Secret = "",
    password: Secret = "",
) -> Response:
    ctx = await _account_ctx(session, state, user, session_row)
    try:
        if not users.verify_password(user, current):
            raise InvalidInput(FieldProblem("current", "that is not your current password"))
        await users.set_password(session, user=user, password=password, actor=user)
    except CommsError as exc:
        raise form_error(request, "account/get.html", ctx, exc) from exc
    await sessions.end_all(session, user=user, reason="password changed", actor=user.username)
    raw, _row = await sessions.create(
        session,
        user=user,
        stage=Stage.FULL,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent", ""),
    )
    return _start_session(request, redirect_to(request, "account:get"), state, raw)


def _enrol_ctx(state: Panel, row: WebSession, **extra: object) -> dict[str, object]:
    user = row.user
    secret = totp.pending_secret(user, state.keys)
    qr = None
    if secret:
        uri = totp.provisioning_uri(
            secret, username=user.username, issuer=f"{state.settings.protocol_name} comms"
        )
        from markupsafe import Markup

        qr = Markup(totp.qr_svg(uri))  # noqa: S704 - segno's own SVG of our URI
    return {
        "secret": secret,
        "qr": qr,
        "enrolled": totp.is_enrolled(user),
        "required": auth.requires_2fa(user, state.settings),
        **extra,
    }


@router.get("/account/2fa", name="account:2fa")
@allow(Gate.ENROL)
async def enrol_page(request: Request, state: Panel, session_row: CurrentSession) -> HTMLResponse:
    return page(request, "account/2fa.html", _enrol_ctx(state, session_row))


@router.post("/account/2fa/start")
@allow(Gate.ENROL)
async def enrol_start(
    request: Request, session: DbSession, state: Panel, session_row: CurrentSession
) -> Response:
    await totp.begin_enrolment(session, user=session_row.user, keys=state.keys)
    return redirect_to(request, "account:2fa")


@router.post("/account/2fa/confirm")
@allow(Gate.ENROL)
async def enrol_confirm(
    request: Request, session: DbSession, state: Panel, session_row: CurrentSession, code: Text = ""
) -> Response:
    try:
        codes = await totp.confirm_enrolment(
            session, user=session_row.user, keys=state.keys, code=code
        )
    except CommsError as exc:
        raise form_error(request, "account/2fa.html", _enrol_ctx(state, session_row), exc) from exc
    raw, fresh = await sessions.rotate(session, row=session_row, stage=Stage.FULL)
    request.state.web_session = fresh
    request.state.user = fresh.user
    request.state.viewer = Viewer.of(fresh.user)
    request.state.csrf = csrf_token(state.keys, session_hash=fresh.id_hash, pre_session=None)
    response = page(request, "account/2fa.html", {"codes": codes, "enrolled": True})
    return _start_session(request, response, state, raw)
