"""A draft's deliveries in the panel: each destination's state, live, and what a person may do
about one that failed, is uncertain or is held (retry, resend, dismiss; each audited).

The pages live under the draft (``/drafts/{id}/deliveries``); the actions under the delivery
(``/deliveries/{id}/...``), and send the person back to the draft's deliveries.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from approvals.deps import CurrentUser, DbSession, Panel
from approvals.forms import DeliveryActionForm
from approvals.routes.drafts import CurrentDraft
from approvals.rules import allow
from approvals.state import PanelState
from approvals.web import RowId, form_error, page, redirect_to
from comms.drafts import service as drafts
from comms.drafts.models import Draft
from comms.errors import CommsError
from comms.outbox import service as outbox
from comms.outbox.links import message_links
from comms.permissions import Action
from comms.users.models import User

router = APIRouter(include_in_schema=False)

DeliveryId = RowId
DeliveryAction = Literal["retry", "resend", "dismiss"]


async def _delivery_rows(
    session: AsyncSession, state: PanelState, draft: Draft
) -> list[dict[str, Any]]:
    rows = []
    for delivery in await outbox.for_draft(session, draft_id=draft.id):
        rows.append(
            {
                "d": delivery,
                "links": message_links(delivery, delivery.destination, state.settings),
            }
        )
    return rows


async def deliveries_context(
    session: AsyncSession, state: PanelState, draft: Draft
) -> dict[str, Any]:
    """What ``deliveries/list.html`` shows; a refused action renders the same page again."""
    return {
        "draft": draft,
        "rows": await _delivery_rows(session, state, draft),
        "poll_seconds": min(state.settings.panel_poll_seconds, 3),
    }


@router.get("/drafts/{draft_id}/deliveries", name="deliveries:list")
@allow(Action.READ)
async def draft_deliveries(
    request: Request, session: DbSession, state: Panel, draft: CurrentDraft
) -> HTMLResponse:
    """Each destination's state, live (the rows poll), with links and the actions a person has."""
    return page(request, "deliveries/list.html", await deliveries_context(session, state, draft))


@router.get("/drafts/{draft_id}/deliveries/rows", name="deliveries:rows")
@allow(Action.READ)
async def draft_delivery_rows(
    request: Request, session: DbSession, state: Panel, draft: CurrentDraft
) -> HTMLResponse:
    """The rows alone; the deliveries page polls this to show progress without reloading."""
    return page(
        request,
        "deliveries/_rows.html",
        {"draft": draft, "rows": await _delivery_rows(session, state, draft)},
    )


async def _delivery_action(
    request: Request,
    session: AsyncSession,
    state: PanelState,
    user: User,
    delivery_id: int,
    action: DeliveryAction,
) -> Response:
    delivery = await outbox.require_delivery(session, delivery_id=delivery_id)
    form = (await DeliveryActionForm.read(request)).valid()
    try:
        if action == "retry":
            await outbox.retry(session, delivery=delivery, actor=user)
        else:
            await outbox.resolve_uncertain(
                session,
                delivery=delivery,
                actor=user,
                resend=action == "resend",
                note=form.note,
            )
    except CommsError as exc:
        draft = await drafts.require_draft(session, draft_id=delivery.draft_id)
        ctx = await deliveries_context(session, state, draft)
        raise form_error(request, "deliveries/list.html", ctx, exc) from exc
    return redirect_to(request, "deliveries:list", draft_id=delivery.draft_id)


@router.post("/deliveries/{delivery_id}/retry", name="deliveries:retry")
@allow(Action.DELIVERY_MANAGE)
async def delivery_retry(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    delivery_id: DeliveryId,
) -> Response:
    """Send a failed delivery again: the same approved bytes, no new approval, audited."""
    return await _delivery_action(request, session, state, user, delivery_id, "retry")


@router.post("/deliveries/{delivery_id}/resend", name="deliveries:resend")
@allow(Action.DELIVERY_MANAGE)
async def delivery_resend(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    delivery_id: DeliveryId,
) -> Response:
    """Resend an uncertain delivery after checking the chat (it may already be there)."""
    return await _delivery_action(request, session, state, user, delivery_id, "resend")


@router.post("/deliveries/{delivery_id}/dismiss", name="deliveries:dismiss")
@allow(Action.DELIVERY_MANAGE)
async def delivery_dismiss(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    delivery_id: DeliveryId,
) -> Response:
    """Dismiss a failed, uncertain or held delivery (it arrived, or it is no longer wanted)."""
    return await _delivery_action(request, session, state, user, delivery_id, "dismiss")
