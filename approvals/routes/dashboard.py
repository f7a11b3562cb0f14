"""The dashboard, and the small fragment Decision Makers' pages poll for new drafts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from approvals.deps import CurrentUser, DbSession, Panel
from approvals.rules import Gate, allow
from approvals.web import page
from comms.auth import throttle
from comms.clock import utcnow
from comms.drafts import gate
from comms.drafts import service as drafts
from comms.drafts.models import Draft, DraftStatus
from comms.enums import Role
from comms.incidents import service as incidents
from comms.outbox.models import NEEDS_PERSON, Delivery
from comms.permissions import Action
from comms.settings import Settings
from comms.users import grants
from comms.users.models import User

router = APIRouter(include_in_schema=False)


def awaiting(draft: Draft, user: User, settings: Settings) -> bool:
    """True if ``user`` could add a counting approval to this draft right now."""
    return gate.may_approve(draft, user, settings=settings) is None


async def pending_for(
    session: AsyncSession, user: User, settings: Settings
) -> list[dict[str, Any]]:
    rows = [
        draft
        for draft in await drafts.list_drafts(
            session, statuses={DraftStatus.IN_REVIEW}, with_quorum=True
        )
        if awaiting(draft, user, settings)
    ]
    plans = await drafts.plans_of(session, rows)
    return [
        {"draft": draft, "quorum": drafts.quorum(draft, settings=settings, plan=plans[draft.id])}
        for draft in rows
    ]


@router.get("/")
@allow(Action.READ)
async def dashboard(
    request: Request, session: DbSession, state: Panel, user: CurrentUser
) -> HTMLResponse:
    open_incidents = await incidents.list_incidents(session, open_only=True)
    mine = (await drafts.list_drafts(session, author=user, with_quorum=True))[:20]
    plans = await drafts.plans_of(session, mine)
    failed = list(
        (
            await session.scalars(
                select(Delivery)
                .where(Delivery.state.in_([s.value for s in NEEDS_PERSON]))
                .order_by(Delivery.updated_at.desc())
                .limit(50)
            )
        ).all()
    )
    return page(
        request,
        "dashboard/get.html",
        {
            "incidents": open_incidents,
            "pending": await pending_for(session, user, state.settings),
            "mine": [
                {"draft": d, "quorum": drafts.quorum(d, settings=state.settings, plan=plans[d.id])}
                for d in mine
            ],
            "failed": failed,
            "is_dm": user.has_role(Role.DECISION_MAKER),
            "grants": [
                g for g in await grants.pending(session) if gate.may_approve_grant(g, user) is None
            ],
            # Strangers' guesses at this account: the owner hears of them (and is not locked).
            "guessing": await throttle.guessing(
                session,
                username=user.username,
                since=utcnow() - throttle.REPORT_WINDOW,
                now=utcnow(),
            ),
        },
    )


@router.get("/fragments/pending")
@allow(Action.READ)
async def pending_fragment(
    request: Request, session: DbSession, state: Panel, user: CurrentUser
) -> HTMLResponse:
    """The "waiting for my approval" list alone; the dashboard script polls it."""
    return page(
        request,
        "dashboard/_pending.html",
        {
            "pending": await pending_for(session, user, state.settings),
            "is_dm": user.has_role(Role.DECISION_MAKER),
        },
    )


@router.get("/healthz")
@allow(Gate.PUBLIC)
async def healthz() -> JSONResponse:
    return JSONResponse({"ok": True})
