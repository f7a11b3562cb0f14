"""The JSON API under ``/api/v1``: the same services and rules as the panel, bearer tokens.

A request needs a token whose scope covers the action AND a user whose roles allow it. Approving
needs more: a current TOTP code of the token's user in ``X-Comms-TOTP``, consumed like a login
code (single use, throttled, audited). A bearer token alone, however it leaked, cannot approve.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Security
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from approvals.deps import CurrentToken, CurrentUser, DbSession, Panel, bearer_scheme
from approvals.errors import error_body, on_comms_error
from approvals.routes.account import client_ip
from approvals.rules import allow
from approvals.schemas import (
    ERRORS,
    ApproveIn,
    DeliveryOut,
    DestinationOut,
    DraftCreate,
    DraftEdit,
    DraftOptionsIn,
    DraftOut,
    DraftSummary,
    IncidentCreate,
    IncidentOut,
    MeOut,
    RejectIn,
    TemplateOut,
)
from comms.auth import service as auth
from comms.auth import throttle, totp
from comms.db import ROW_ID_MAX
from comms.destinations import service as destinations
from comms.destinations.models import Destination
from comms.drafts import service as drafts
from comms.drafts.models import Draft, DraftStatus
from comms.drafts.payload import DraftOptions
from comms.drafts.views import draft_document
from comms.errors import CommsError, FieldProblem, InvalidInput
from comms.incidents import service as incidents
from comms.incidents.models import Incident
from comms.outbox import service as outbox
from comms.permissions import Action
from comms.rendering import TemplateSpec, registry_for
from comms.settings import Settings

router = APIRouter(
    prefix="/api/v1", tags=["api"], responses=ERRORS, dependencies=[Security(bearer_scheme)]
)

DraftId = Annotated[int, Path(ge=1, le=ROW_ID_MAX, description="Draft id")]
IncidentKey = Annotated[str, Path(min_length=1, max_length=32, description="e.g. INC-2026-0001")]
TemplateName = Annotated[str, Path(min_length=1, max_length=64)]


async def api_draft(session: DbSession, draft_id: DraftId) -> Draft:
    return await drafts.require_draft(session, draft_id=draft_id)


async def api_incident(session: DbSession, key: IncidentKey) -> Incident:
    return await incidents.require_incident(session, key=key)


ApiDraft = Annotated[Draft, Depends(api_draft)]
ApiIncident = Annotated[Incident, Depends(api_incident)]


def incident_out(incident: Incident) -> dict[str, Any]:
    return {
        "key": incident.key,
        "title": incident.title,
        "summary": incident.summary,
        "severity": incident.severity,
        "status": incident.status,
        "opened_at": incident.opened_at,
        "opened_by": incident.opened_by.username,
        "leader": incident.leader.username if incident.leader else None,
        "last_public_update_at": incident.last_public_update_at,
        "roles": [
            {"role": a.role, "user": a.user.username, "acknowledged_at": a.acknowledged_at}
            for a in incident.assignments
            if a.ended_at is None
        ],
    }


def options_of(data: DraftOptionsIn) -> DraftOptions:
    publish_at: datetime | None = data.publish_at
    if publish_at is not None and publish_at.utcoffset() != timedelta(0):
        # UTC only, as in the panel and the CLI: an announcement's time is never ambiguous.
        raise InvalidInput(FieldProblem("options.publish_at", "must be UTC (end with Z)"))
    return DraftOptions(
        pin=data.pin, silent=data.silent, link_previews=data.link_previews, publish_at=publish_at
    )


async def destinations_named(session: AsyncSession, names: list[str]) -> list[Destination]:
    return [
        await destinations.require_destination(session, name=n[:64], field="destinations")
        for n in names
    ]


async def document(session: AsyncSession, draft: Draft, settings: Settings) -> dict[str, Any]:
    return await draft_document(session, draft=draft, settings=settings)


@router.get("/me", response_model=MeOut)
@allow(Action.READ)
async def me(token: CurrentToken, user: CurrentUser) -> dict[str, Any]:
    """Who this token acts as."""
    return {
        "username": user.username,
        "roles": sorted(user.role_set),
        "scopes": token.scopes,
        "two_factor": totp.is_enrolled(user),
    }


@router.get("/incidents", response_model=list[IncidentOut])
@allow(Action.READ)
async def list_incidents(
    session: DbSession, open_only: bool = Query(default=False)
) -> list[dict[str, Any]]:
    return [incident_out(i) for i in await incidents.list_incidents(session, open_only=open_only)]


@router.post("/incidents", response_model=IncidentOut, status_code=201)
@allow(Action.INCIDENT_OPEN)
async def create_incident(
    session: DbSession, user: CurrentUser, body: IncidentCreate
) -> dict[str, Any]:
    created = await incidents.open_incident(
        session, title=body.title, severity=body.severity, summary=body.summary, actor=user
    )
    return incident_out(created)


@router.get("/incidents/{key}", response_model=IncidentOut)
@allow(Action.READ)
async def get_incident(incident: ApiIncident) -> dict[str, Any]:
    return incident_out(incident)


@router.get("/drafts", response_model=list[DraftSummary])
@allow(Action.READ)
async def list_drafts(
    session: DbSession,
    incident: Annotated[str | None, Query(max_length=32)] = None,
    status: DraftStatus | None = None,
) -> list[dict[str, Any]]:
    found = (
        await incidents.require_incident(session, key=incident, field="incident")
        if incident
        else None
    )
    rows = await drafts.list_drafts(session, incident=found, statuses={status} if status else None)
    return [
        {
            "id": d.id,
            "incident": d.incident.key,
            "template": d.template,
            "version": d.version,
            "status": d.status,
            "content_hash": d.content_hash,
            "author": d.author.username,
            "updated_at": d.updated_at,
        }
        for d in rows
    ]


@router.post("/drafts", response_model=DraftOut, status_code=201)
@allow(Action.DRAFT_WRITE)
async def create_draft(
    session: DbSession, state: Panel, user: CurrentUser, body: DraftCreate
) -> dict[str, Any]:
    incident = await incidents.require_incident(session, key=body.incident, field="incident")
    original = (
        await drafts.require_draft(session, draft_id=body.correction_of, field="correction_of")
        if body.correction_of is not None
        else None
    )
    created = await drafts.create(
        session,
        incident=incident,
        template=body.template,
        variables=body.variables,
        destinations=await destinations_named(session, body.destinations),
        actor=user,
        settings=state.settings,
        options=options_of(body.options),
        correction_of=original,
    )
    return await document(session, created, state.settings)


@router.get("/drafts/{draft_id}", response_model=DraftOut)
@allow(Action.READ)
async def get_draft(session: DbSession, state: Panel, draft: ApiDraft) -> dict[str, Any]:
    return await document(session, draft, state.settings)


@router.patch("/drafts/{draft_id}", response_model=DraftOut)
@allow(Action.DRAFT_WRITE)
async def edit_draft(
    session: DbSession, state: Panel, user: CurrentUser, draft: ApiDraft, body: DraftEdit
) -> dict[str, Any]:
    """A new version; approvals of earlier versions stop counting."""
    edited = await drafts.edit(
        session,
        draft=draft,
        actor=user,
        settings=state.settings,
        variables=body.variables,
        replace_variables=body.variables is not None,
        destinations=await destinations_named(session, body.destinations)
        if body.destinations is not None
        else None,
        options=options_of(body.options) if body.options is not None else None,
        expected_version=body.expected_version,
    )
    return await document(session, edited, state.settings)


@router.post("/drafts/{draft_id}/submit", response_model=DraftOut)
@allow(Action.DRAFT_WRITE)
async def submit_draft(
    session: DbSession, state: Panel, user: CurrentUser, draft: ApiDraft
) -> dict[str, Any]:
    return await document(
        session,
        await drafts.submit(session, draft=draft, actor=user, settings=state.settings),
        state.settings,
    )


@router.post("/drafts/{draft_id}/approve", response_model=DraftOut)
@allow(Action.DRAFT_APPROVE)
async def approve_draft(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    token: CurrentToken,
    draft: ApiDraft,
    body: ApproveIn,
    totp_code: Annotated[
        str | None,
        Header(
            alias="X-Comms-TOTP", pattern=r"^\d{6}$", description="Current TOTP code (required)"
        ),
    ] = None,
) -> Any:
    """Approve the version whose hash you reviewed; needs a current code in ``X-Comms-TOTP``."""
    result = await auth.totp_header_step_up(
        session,
        user=user,
        code=totp_code,
        keys=state.keys,
        settings=state.settings,
        holder=throttle.for_token(token.id),
        ip=client_ip(request),
    )
    if result.outcome is not auth.Outcome.OK:
        # Returned, not raised: the failure's throttle and audit records are committed.
        status = 429 if result.outcome is auth.Outcome.REFUSED else 403
        headers = {"Retry-After": str(result.retry_after)} if status == 429 else None
        return JSONResponse(
            error_body(
                code="forbidden",
                message=result.message,
                field="X-Comms-TOTP",
                rule="approval.step_up",
            ),
            status_code=status,
            headers=headers,
        )
    try:
        # A savepoint: if the approval is refused, the code just checked stays used (committed
        # with the request), so it cannot approve a second time.
        async with session.begin_nested():
            approved = await drafts.approve(
                session,
                draft=draft,
                actor=user,
                settings=state.settings,
                expected_hash=body.expected_hash,
            )
    except CommsError as exc:
        return await on_comms_error(request, exc)
    return await document(session, approved, state.settings)


@router.post("/drafts/{draft_id}/reject", response_model=DraftOut)
@allow(Action.DRAFT_APPROVE)
async def reject_draft(
    session: DbSession, state: Panel, user: CurrentUser, draft: ApiDraft, body: RejectIn
) -> dict[str, Any]:
    rejected = await drafts.reject(
        session, draft=draft, actor=user, reason=body.reason, expected_hash=body.expected_hash
    )
    return await document(session, rejected, state.settings)


@router.get("/drafts/{draft_id}/deliveries", response_model=list[DeliveryOut])
@allow(Action.READ)
async def draft_deliveries(session: DbSession, draft: ApiDraft) -> list[dict[str, Any]]:
    return [
        {
            "id": d.id,
            "destination": d.destination.name,
            "platform": d.destination.platform,
            "state": d.state,
            "attempts": d.attempts,
            "version": d.draft_version,
            "message_ids": d.platform_message_ids,
            "sent_at": d.sent_at,
            "last_error": d.last_error,
        }
        for d in await outbox.for_draft(session, draft_id=draft.id)
    ]


@router.get("/destinations", response_model=list[DestinationOut])
@allow(Action.READ)
async def list_destinations(session: DbSession) -> list[dict[str, Any]]:
    return [
        {
            "id": d.id,
            "name": d.name,
            "platform": d.platform,
            "target": d.target,
            "visibility": d.visibility,
            "enabled": d.enabled,
            "compromised": d.compromised,
            **d.options(),
        }
        for d in await destinations.list_destinations(session)
    ]


def template_out(spec: TemplateSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "title": spec.title,
        "description": spec.description,
        "audience": spec.audience,
        "needs_next_update": spec.needs_next_update,
        "mentions_everyone": spec.mentions_everyone,
        "variables": [
            {
                "name": v.name,
                "type": v.type.value,
                "required": v.required,
                "label": v.label,
                "help": v.help,
                "choices": list(v.choices),
                "max_length": v.max_length,
            }
            for v in spec.variables
        ],
    }


@router.get("/templates", response_model=list[TemplateOut])
@allow(Action.READ)
async def list_templates(state: Panel) -> list[dict[str, Any]]:
    return [template_out(s) for s in registry_for(state.settings).list("public")]


@router.get("/templates/{name}", response_model=TemplateOut)
@allow(Action.READ)
async def get_template(state: Panel, name: TemplateName) -> dict[str, Any]:
    spec = registry_for(state.settings).get(name)
    if spec.audience != "public":
        raise InvalidInput(FieldProblem("name", f"{name} is an internal template"))
    return template_out(spec)
