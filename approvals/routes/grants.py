"""Role grants: the Decision Makers approve (or reject) giving someone the decision_maker role.

Like approving an announcement, approving a grant needs a recent authentication (step-up);
the counting rules are in ``comms.drafts.gate``, the workflow in ``comms.users.grants``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from approvals.deps import CurrentSession, CurrentUser, DbSession, Panel
from approvals.forms import FORM_LIMITS
from approvals.rules import allow
from approvals.state import PanelState
from approvals.stepup import is_fresh, step_up
from approvals.web import RowId, form_error, page, redirect_to
from comms.drafts import gate
from comms.errors import CommsError
from comms.permissions import Action
from comms.users import grants
from comms.users.models import RoleGrant, User

router = APIRouter(include_in_schema=False)


async def path_grant(session: DbSession, grant_id: RowId) -> RoleGrant:
    return await grants.get(session, grant_id=grant_id)


PathGrant = Annotated[RoleGrant, Depends(path_grant)]


async def _ctx(
    session: AsyncSession, state: PanelState, user: User, *, fresh: bool, **extra: Any
) -> dict[str, Any]:
    rows = [
        {
            "grant": g,
            "have": gate.grant_approvals(g),
            "refusal": gate.may_approve_grant(g, user),
        }
        for g in await grants.pending(session)
    ]
    return {
        "rows": rows,
        "needed": gate.grant_quorum(state.settings),
        "stepup_fresh": fresh,
        "stepup_minutes": state.settings.stepup_minutes,
        **extra,
    }


@router.get("/role-grants", name="grants:list")
@allow(Action.READ)
async def grant_list(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
) -> HTMLResponse:
    ctx = await _ctx(session, state, user, fresh=is_fresh(state, session_row))
    return page(request, "grants/list.html", ctx)


@router.post("/role-grants/{grant_id}/approve")
@allow(Action.ROLE_GRANT_DECIDE)
async def grant_approve(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
    grant: PathGrant,
) -> Response:
    form = await request.form(**FORM_LIMITS)
    credential = form.get("credential")
    stepped = await step_up(
        request,
        session,
        state,
        user=user,
        row=session_row,
        credential=credential if isinstance(credential, str) else "",
        what="approve the grant",
    )
    if not stepped.ok:
        ctx = await _ctx(session, state, user, fresh=False, stepup_error=stepped.message)
        return page(request, "grants/list.html", ctx, status=stepped.status)
    response: Response
    try:
        async with session.begin_nested():  # a refusal must not undo the step-up's records
            await grants.approve(session, grant=grant, actor=user, settings=state.settings)
    except CommsError as exc:
        refused = form_error(
            request, "grants/list.html", await _ctx(session, state, user, fresh=True), exc
        )
        response = HTMLResponse(refused.body, status_code=refused.status)
    else:
        response = redirect_to(request, "grants:list")
    return stepped.apply(request, response, state)


@router.post("/role-grants/{grant_id}/reject")
@allow(Action.ROLE_GRANT_DECIDE)
async def grant_reject(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
    grant: PathGrant,
) -> Response:
    form = await request.form(**FORM_LIMITS)
    reason = form.get("reason")
    try:
        await grants.close(
            session,
            grant=grant,
            actor=user,
            reason=reason if isinstance(reason, str) else "",
            settings=state.settings,
            rejected=True,
        )
    except CommsError as exc:
        ctx = await _ctx(session, state, user, fresh=is_fresh(state, session_row))
        raise form_error(request, "grants/list.html", ctx, exc) from exc
    return redirect_to(request, "grants:list")


@router.post("/role-grants/{grant_id}/cancel")
@allow(Action.USER_MANAGE)
async def grant_cancel(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
    grant: PathGrant,
) -> Response:
    form = await request.form(**FORM_LIMITS)
    reason = form.get("reason")
    try:
        await grants.close(
            session,
            grant=grant,
            actor=user,
            reason=reason if isinstance(reason, str) else "",
            settings=state.settings,
        )
    except CommsError as exc:
        ctx = await _ctx(session, state, user, fresh=is_fresh(state, session_row))
        raise form_error(request, "grants/list.html", ctx, exc) from exc
    return redirect_to(request, "admin.users:get", user_id=grant.user_id)
