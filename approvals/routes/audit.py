"""The audit log with the hash chain's verification state."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from approvals.deps import DbSession
from approvals.rules import allow
from approvals.web import OptionalRowQuery, page
from comms.audit import service as audit
from comms.permissions import Action

router = APIRouter(include_in_schema=False)


@router.get("/audit")
@allow(Action.AUDIT_READ)
async def audit_log(
    request: Request, session: DbSession, before: OptionalRowQuery = None, action: str = ""
) -> HTMLResponse:
    events = await audit.recent(session, limit=100, before_seq=before, action=action[:64] or None)
    return page(
        request,
        "audit/list.html",
        {
            "events": events,
            "verification": await audit.verify(session),
            "total": await audit.count(session),
            "action": action[:64],
            "older": events[-1].seq if len(events) == 100 else None,
        },
    )
