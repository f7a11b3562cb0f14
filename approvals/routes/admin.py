"""Admin pages: users (roles, disable, 2FA reset, unlock, sessions), destinations, API tokens."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.responses import Response

from approvals.deps import CurrentUser, DbSession, Panel
from approvals.forms import FORM_LIMITS, parse_when
from approvals.rules import allow
from approvals.web import RowId, form_error, page, redirect_to
from comms import flows
from comms.audit import service as audit
from comms.auth import sessions, throttle, tokens, totp
from comms.clock import utcnow
from comms.destinations import service as destinations
from comms.destinations.models import Destination, InternalUse, Visibility
from comms.enums import Role
from comms.errors import CommsError, FieldProblem, InvalidInput, NotFound
from comms.permissions import Action
from comms.users import grants
from comms.users import service as users
from comms.users.models import User

router = APIRouter(include_in_schema=False, prefix="/admin")


def _text(form: FormData, name: str, limit: int = 300) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def _strings(form: FormData, name: str) -> list[str]:
    return [v[:64] for v in form.getlist(name) if isinstance(v, str)][:20]


async def target_user(session: DbSession, user_id: RowId) -> User:
    found = await users.get(session, user_id=user_id)
    if found is None:
        raise NotFound(f"no user #{user_id}", field="user")
    return found


async def target_destination(session: DbSession, destination_id: RowId) -> Destination:
    found = await destinations.get(session, destination_id=destination_id)
    if found is None:
        raise NotFound(f"no destination #{destination_id}", field="destination")
    return found


TargetUser = Annotated[User, Depends(target_user)]
TargetDestination = Annotated[Destination, Depends(target_destination)]


# ---------------------------------------------------------------------------------- users


async def _users_ctx(session: AsyncSession, **extra: Any) -> dict[str, Any]:
    rows = []
    now = utcnow()
    since = now - throttle.REPORT_WINDOW
    for u in await users.list_users(session):
        lock = await throttle.state_of(session, account=throttle.account_key(u.username))
        rows.append(
            {
                "user": u,
                "two_factor": totp.is_enrolled(u),
                "lock": lock,
                "sessions": await sessions.count_for_user(session, user_id=u.id),
                "guessing": await throttle.guessing(
                    session, username=u.username, since=since, now=now
                ),
            }
        )
    return {
        "rows": rows,
        "roles": [r.value for r in Role],
        "form": {"username": "", "display_name": "", "roles": []},
        **extra,
    }


@router.get("/users")
@allow(Action.USER_MANAGE)
async def user_list(request: Request, session: DbSession) -> HTMLResponse:
    return page(request, "admin/users/list.html", await _users_ctx(session))


@router.post("/users")
@allow(Action.USER_MANAGE)
async def user_create(
    request: Request, session: DbSession, state: Panel, actor: CurrentUser
) -> Response:
    form = await request.form(**FORM_LIMITS)
    data: dict[str, Any] = {
        "username": _text(form, "username"),
        "display_name": _text(form, "display_name"),
        "roles": _strings(form, "roles"),
    }
    ctx = await _users_ctx(session, form=data)
    try:
        created = await users.create(
            session,
            username=data["username"],
            password=_text(form, "password", 2000),
            roles=users.parse_roles(data["roles"]),
            display_name=data["display_name"] or None,
            actor=actor,
            settings=state.settings,
        )
    except CommsError as exc:
        raise form_error(request, "admin/users/list.html", ctx, exc) from exc
    return redirect_to(request, "admin.users:get", user_id=created.id)


async def _user_ctx(session: AsyncSession, user: User, **extra: Any) -> dict[str, Any]:
    return {
        "target": user,
        "roles": [r.value for r in Role],
        "two_factor": totp.is_enrolled(user),
        "lock": await throttle.state_of(session, account=throttle.account_key(user.username)),
        "guessing": await throttle.guessing(
            session,
            username=user.username,
            since=utcnow() - throttle.REPORT_WINDOW,
            now=utcnow(),
        ),
        "sessions": await sessions.for_user(session, user=user),
        "tokens": await tokens.list_tokens(session, user=user),
        "grants": await grants.pending(session, user=user),
        **extra,
    }


@router.get("/users/{user_id}", name="admin.users:get")
@allow(Action.USER_MANAGE)
async def user_get(request: Request, session: DbSession, target: TargetUser) -> HTMLResponse:
    return page(request, "admin/users/get.html", await _user_ctx(session, target))


@router.post("/users/{user_id}/roles")
@allow(Action.USER_MANAGE)
async def user_roles(
    request: Request, session: DbSession, state: Panel, actor: CurrentUser, target: TargetUser
) -> Response:
    form = await request.form(**FORM_LIMITS)
    ctx = await _user_ctx(session, target)
    try:
        await flows.set_roles(
            session,
            user=target,
            roles=users.parse_roles(_strings(form, "roles")),
            actor=actor,
            settings=state.settings,
        )
    except CommsError as exc:
        raise form_error(request, "admin/users/get.html", ctx, exc) from exc
    return redirect_to(request, "admin.users:get", user_id=target.id)


@router.post("/users/{user_id}/active")
@allow(Action.USER_MANAGE)
async def user_active(
    request: Request, session: DbSession, state: Panel, actor: CurrentUser, target: TargetUser
) -> Response:
    form = await request.form(**FORM_LIMITS)
    ctx = await _user_ctx(session, target)
    try:
        value = _text(form, "active")
        if value not in ("yes", "no"):
            raise InvalidInput(FieldProblem("active", "choose yes or no"))
        await flows.set_active(
            session, user=target, active=value == "yes", actor=actor, settings=state.settings
        )
    except CommsError as exc:
        raise form_error(request, "admin/users/get.html", ctx, exc) from exc
    return redirect_to(request, "admin.users:get", user_id=target.id)


@router.post("/users/{user_id}/reset-2fa")
@allow(Action.USER_MANAGE)
async def user_reset_2fa(
    request: Request, session: DbSession, actor: CurrentUser, target: TargetUser
) -> Response:
    await totp.reset(session, user=target, actor=actor)
    return redirect_to(request, "admin.users:get", user_id=target.id)


@router.post("/users/{user_id}/unlock")
@allow(Action.USER_MANAGE)
async def user_unlock(
    request: Request, session: DbSession, actor: CurrentUser, target: TargetUser
) -> Response:
    if await throttle.unlock(session, account=throttle.account_key(target.username)):
        await audit.record(
            session, actor=actor.username, action="auth.unlock", target=f"user:{target.username}"
        )
    return redirect_to(request, "admin.users:get", user_id=target.id)


@router.post("/users/{user_id}/end-sessions")
@allow(Action.USER_MANAGE)
async def user_end_sessions(
    request: Request, session: DbSession, actor: CurrentUser, target: TargetUser
) -> Response:
    await sessions.end_all(session, user=target, reason="ended by an admin", actor=actor.username)
    return redirect_to(request, "admin.users:get", user_id=target.id)


# --------------------------------------------------------------------------- destinations

FLAGS = ("pin", "silent", "crosspost", "allow_everyone", "thread_updates")


async def _dest_ctx(session: AsyncSession, **extra: Any) -> dict[str, Any]:
    return {
        "destinations": await destinations.list_destinations(session),
        "flags": FLAGS,
        "uses": [u.value for u in InternalUse],
        "form": {"name": "", "platform": "discord", "target": "", "visibility": "public"},
        **extra,
    }


@router.get("/destinations", name="admin.destinations:list")
@allow(Action.DESTINATION_MANAGE)
async def destination_list(request: Request, session: DbSession) -> HTMLResponse:
    return page(request, "admin/destinations/list.html", await _dest_ctx(session))


@router.post("/destinations")
@allow(Action.DESTINATION_MANAGE)
async def destination_create(request: Request, session: DbSession, actor: CurrentUser) -> Response:
    form = await request.form(**FORM_LIMITS)
    data = {k: _text(form, k) for k in ("name", "platform", "target", "visibility")}
    ctx = await _dest_ctx(session, form=data)
    try:
        try:
            visibility = Visibility(data["visibility"])
            uses = [InternalUse(u) for u in _strings(form, "internal_uses")]
        except ValueError:
            raise InvalidInput(FieldProblem("visibility", "choose public or private")) from None
        await destinations.create(
            session,
            name=data["name"],
            platform=destinations.parse_platform(data["platform"]),
            target=data["target"],
            actor=actor,
            visibility=visibility,
            internal_uses=uses,
            pin=_text(form, "pin") == "on",
            silent=_text(form, "silent") == "on",
            crosspost=_text(form, "crosspost") == "on",
            allow_everyone=_text(form, "allow_everyone") == "on",
            thread_updates=_text(form, "thread_updates") == "on",
        )
    except CommsError as exc:
        raise form_error(request, "admin/destinations/list.html", ctx, exc) from exc
    return redirect_to(request, "admin.destinations:list")


@router.post("/destinations/{destination_id}/update")
@allow(Action.DESTINATION_MANAGE)
async def destination_update(
    request: Request,
    session: DbSession,
    state: Panel,
    actor: CurrentUser,
    target: TargetDestination,
) -> Response:
    form = await request.form(**FORM_LIMITS)
    ctx = await _dest_ctx(session)
    try:
        await flows.update_destination(
            session,
            destination=target,
            actor=actor,
            settings=state.settings,
            enabled=_text(form, "enabled") == "on",
            **{flag: _text(form, flag) == "on" for flag in FLAGS},
        )
    except CommsError as exc:
        raise form_error(request, "admin/destinations/list.html", ctx, exc) from exc
    return redirect_to(request, "admin.destinations:list")


@router.post("/destinations/{destination_id}/compromised")
@allow(Action.DESTINATION_MANAGE)
async def destination_compromised(
    request: Request, session: DbSession, actor: CurrentUser, target: TargetDestination
) -> Response:
    form = await request.form(**FORM_LIMITS)
    ctx = await _dest_ctx(session)
    try:
        restore = _text(form, "restore") == "yes"
        await destinations.mark_compromised(
            session,
            destination=target,
            reason=_text(form, "reason", 2000),
            actor=actor,
            compromised=not restore,
        )
    except CommsError as exc:
        raise form_error(request, "admin/destinations/list.html", ctx, exc) from exc
    return redirect_to(request, "admin.destinations:list")


# --------------------------------------------------------------------------------- tokens


async def _token_ctx(session: AsyncSession, **extra: Any) -> dict[str, Any]:
    return {
        "tokens": await tokens.list_tokens(session),
        "people": [u.username for u in await users.list_users(session) if u.active],
        "scopes": [s.value for s in tokens.Scope],
        "form": {"username": "", "name": "", "scopes": [], "expires_at": ""},
        **extra,
    }


@router.get("/tokens", name="admin.tokens:list")
@allow(Action.TOKEN_MANAGE)
async def token_list(request: Request, session: DbSession) -> HTMLResponse:
    return page(request, "admin/tokens/list.html", await _token_ctx(session))


@router.post("/tokens")
@allow(Action.TOKEN_MANAGE)
async def token_create(request: Request, session: DbSession, actor: CurrentUser) -> Response:
    form = await request.form(**FORM_LIMITS)
    data: dict[str, Any] = {
        "username": _text(form, "username", 64),
        "name": _text(form, "name", 64),
        "scopes": _strings(form, "scopes"),
        "expires_at": _text(form, "expires_at"),
    }
    ctx = await _token_ctx(session, form=data)
    try:
        owner = await users.require_user(session, username=data["username"], field="username")
        raw, created = await tokens.create(
            session,
            user=owner,
            name=str(data["name"]),
            scopes=tokens.parse_scopes(data["scopes"]),
            actor=actor,
            expires_at=parse_when(str(data["expires_at"]), "expires_at"),
        )
    except CommsError as exc:
        raise form_error(request, "admin/tokens/list.html", ctx, exc) from exc
    ctx = await _token_ctx(session, new_token=raw, new_token_row=created)
    return page(request, "admin/tokens/list.html", ctx)


@router.post("/tokens/{token_id}/revoke")
@allow(Action.TOKEN_MANAGE)
async def token_revoke(
    request: Request, session: DbSession, actor: CurrentUser, token_id: RowId
) -> Response:
    await tokens.revoke(session, token=await tokens.get(session, token_id=token_id), actor=actor)
    return redirect_to(request, "admin.tokens:list")
