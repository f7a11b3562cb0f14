"""Drafts in the panel: the editor with a live preview, and the review page where they are
approved, rejected, submitted or withdrawn. A draft's deliveries are in ``deliveries``; what the
forms post is declared in ``approvals.forms``, what the review page shows in ``approvals.review``.

The approve form carries the content hash of the version on screen; the service refuses if the
draft changed since (409 with a clear message), so nobody approves bytes they did not see.
Approving also needs an authentication from the last ``stepup_minutes`` minutes: the form
asks for the password or an authenticator code when it is older.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from approvals import review
from approvals.deps import CurrentSession, CurrentUser, DbSession, Panel
from approvals.forms import (
    ApproveForm,
    EditDraftForm,
    EditorForm,
    NewDraftForm,
    PreviewForm,
    RejectForm,
    Submitted,
    WithdrawForm,
    posted_options,
    stored_options,
)
from approvals.review import review_context
from approvals.rules import allow
from approvals.state import PanelState
from approvals.stepup import is_fresh, step_up
from approvals.web import OptionalRowQuery, RowId, form_error, page, problems_of, redirect_to
from comms.destinations import service as destinations
from comms.destinations.models import Destination
from comms.detections import triage
from comms.drafts import service as drafts
from comms.drafts.models import Draft, DraftStatus
from comms.drafts.payload import DraftOptions, build_plan
from comms.errors import CommsError
from comms.incidents import service as incidents
from comms.incidents.models import Incident
from comms.permissions import Action
from comms.rendering import (
    TemplateSpec,
    check_values,
    registry_for,
    render_context,
    validate_values,
)

router = APIRouter(include_in_schema=False)


async def current_draft(session: DbSession, draft_id: RowId) -> Draft:
    """The draft named in the path, or a 404 naming it (the deliveries pages use it too)."""
    return await drafts.require_draft(session, draft_id=draft_id)


async def path_incident(session: DbSession, key: str) -> Incident:
    return await incidents.require_incident(session, key=key[:32])


CurrentDraft = Annotated[Draft, Depends(current_draft)]
PathIncident = Annotated[Incident, Depends(path_incident)]


async def chosen_destinations(session: AsyncSession, names: list[str]) -> list[Destination]:
    """The ticked destinations; an unknown name is a 404 naming the field."""
    found = []
    for name in names[:50]:
        found.append(
            await destinations.require_destination(session, name=name, field="destinations")
        )
    return found


async def corrected_draft(session: AsyncSession, draft_id: int | None) -> Draft | None:
    """The announcement a new draft corrects (the editor's hidden ``correction_of``), if any."""
    if draft_id is None:
        return None
    return await drafts.require_draft(session, draft_id=draft_id, field="correction_of")


# ------------------------------------------------------------------------------- preview


async def build_preview(
    session: AsyncSession,
    state: PanelState,
    *,
    spec: TemplateSpec,
    incident: Incident,
    raw: dict[str, str],
    chosen: list[Destination],
    options: DraftOptions,
    correction_of: int | None = None,
) -> dict[str, Any]:
    """Render what would be sent, without saving anything; problems are shown, not raised."""
    try:
        values = validate_values(spec, raw)
        if not chosen:
            fallback = [
                d
                for d in await destinations.list_destinations(session)
                if d.is_public and d.can_receive
            ]
        else:
            fallback = chosen
        plan = build_plan(
            draft_id=0,
            version=0,
            spec=spec,
            values=values,
            ctx=render_context(state.settings, incident),  # the same context as saving
            destinations=fallback,
            options=options,
            correction_of=correction_of,
        )
        warnings = check_values(
            spec,
            values,
            official_domains=state.settings.official_domains,
            known_contracts=state.settings.known_contracts,
        )
    except CommsError as exc:
        return {"preview_error": exc, "preview_problems": problems_of(exc)}
    return {
        "plan": plan,
        "warnings": [w.message for w in warnings],
        "links": review.links_in(plan, state.settings.official_domains),
    }


# --------------------------------------------------------------------------------- editor


async def _editor_ctx(
    session: AsyncSession,
    state: PanelState,
    *,
    incident: Incident,
    spec: TemplateSpec | None,
    raw: dict[str, str],
    chosen: list[str],
    options: dict[str, str],
    draft: Draft | None = None,
    show_preview: dict[str, Any] | None = None,
    correction_of: str = "",
) -> dict[str, Any]:
    registry = registry_for(state.settings)
    return {
        "incident": incident,
        "spec": spec,
        "draft": draft,
        "correction_of": correction_of,
        "values": raw,
        "chosen": chosen,
        "options": options,
        "templates": registry.list("public"),
        "destinations": await destinations.list_destinations(session),
        "preview": show_preview,
    }


async def _posted_editor_ctx(
    session: AsyncSession,
    state: PanelState,
    submitted: Submitted[EditorForm],
    *,
    incident: Incident,
    spec: TemplateSpec | None,
    draft: Draft | None = None,
    correction_of: str = "",
) -> dict[str, Any]:
    """The editor as it was posted, to show again with a preview or the form's errors."""
    return await _editor_ctx(
        session,
        state,
        incident=incident,
        spec=spec,
        raw=submitted.raw(EditorForm.variables),
        chosen=submitted.raw(EditorForm.destinations),
        options=posted_options(submitted),
        draft=draft,
        correction_of=correction_of,
    )


@router.get("/incidents/{key}/drafts/new", name="drafts:new")
@allow(Action.DRAFT_WRITE)
async def draft_new(
    request: Request,
    session: DbSession,
    state: Panel,
    incident: PathIncident,
    template: str = "",
    correction_of: OptionalRowQuery = None,
    from_cluster: OptionalRowQuery = None,
) -> HTMLResponse:
    """The editor; ``correction_of`` (a published announcement's draft id) writes a correction;
    ``from_cluster`` starts the first alert from what a cluster of community reports knows."""
    raw: dict[str, str] = {}
    if correction_of is not None:
        await drafts.require_draft(session, draft_id=correction_of, field="correction_of")
        template = template or "correction"
    if from_cluster is not None:
        cluster = await triage.require_cluster(session, from_cluster, field="from_cluster")
        raw = await triage.draft_values(session, cluster, settings=state.settings)
        template = template or "active-exploit-initial"
    spec = registry_for(state.settings).get(template[:64]) if template else None
    if spec is not None and spec.audience != "public":
        spec = None
    defaults = [
        d.name
        for d in await destinations.list_destinations(session)
        if d.is_public and d.can_receive
    ]
    return page(
        request,
        "drafts/edit.html",
        await _editor_ctx(
            session,
            state,
            incident=incident,
            spec=spec,
            raw=raw,
            chosen=defaults,
            options=stored_options(None),
            correction_of=str(correction_of or ""),
        ),
    )


@router.post("/incidents/{key}/drafts", name="drafts:create")
@allow(Action.DRAFT_WRITE)
async def draft_create(
    request: Request, session: DbSession, state: Panel, user: CurrentUser, incident: PathIncident
) -> Response:
    submitted = await NewDraftForm.read(request)
    name = submitted.raw(NewDraftForm.template)
    spec = registry_for(state.settings).get(name)
    ctx = await _posted_editor_ctx(
        session,
        state,
        submitted,
        incident=incident,
        spec=spec,
        correction_of=submitted.raw(NewDraftForm.correction_of)[:12],
    )
    try:
        form = submitted.valid()
        chosen = await chosen_destinations(session, form.destinations)
        original = await corrected_draft(session, form.correction_of)
        if form.action == "preview":
            ctx["preview"] = await build_preview(
                session,
                state,
                spec=spec,
                incident=incident,
                raw=form.variables,
                chosen=chosen,
                options=form.options,
                correction_of=original.id if original else None,
            )
            return page(request, "drafts/edit.html", ctx)
        created = await drafts.create(
            session,
            incident=incident,
            template=name,
            variables=form.variables,
            destinations=chosen,
            actor=user,
            settings=state.settings,
            options=form.options,
            correction_of=original,
        )
        if form.action == "submit":
            await drafts.submit(session, draft=created, actor=user, settings=state.settings)
    except CommsError as exc:
        raise form_error(request, "drafts/edit.html", ctx, exc) from exc
    return redirect_to(request, "drafts:get", draft_id=created.id)


@router.post("/drafts/preview", name="drafts:preview")
@allow(Action.DRAFT_WRITE)
async def draft_preview(request: Request, session: DbSession, state: Panel) -> HTMLResponse:
    """The live preview fragment (the editor's script posts the form here). Saves nothing."""
    submitted = await PreviewForm.read(request)
    incident = await incidents.require_incident(session, key=submitted.raw(PreviewForm.incident))
    spec = registry_for(state.settings).get(submitted.raw(PreviewForm.template))
    try:
        form = submitted.valid()
        chosen = await chosen_destinations(session, form.destinations)
    except CommsError as exc:
        return page(
            request,
            "drafts/_preview.html",
            {"preview": {"preview_error": exc, "preview_problems": problems_of(exc)}},
        )
    result = await build_preview(
        session,
        state,
        spec=spec,
        incident=incident,
        raw=form.variables,
        chosen=chosen,
        options=form.options,
    )
    return page(request, "drafts/_preview.html", {"preview": result})


@router.get("/drafts/{draft_id}/edit", name="drafts:edit_form")
@allow(Action.DRAFT_WRITE)
async def draft_edit_form(
    request: Request, session: DbSession, state: Panel, draft: CurrentDraft
) -> HTMLResponse:
    spec = registry_for(state.settings).get(draft.template)
    return page(
        request,
        "drafts/edit.html",
        await _editor_ctx(
            session,
            state,
            incident=draft.incident,
            spec=spec,
            raw=dict(draft.variables),
            chosen=[d.name for d in draft.destinations],
            options=stored_options(draft),
            draft=draft,
        ),
    )


@router.post("/drafts/{draft_id}/edit", name="drafts:edit")
@allow(Action.DRAFT_WRITE)
async def draft_edit(
    request: Request, session: DbSession, state: Panel, user: CurrentUser, draft: CurrentDraft
) -> Response:
    submitted = await EditDraftForm.read(request)
    spec = registry_for(state.settings).get(draft.template)
    ctx = await _posted_editor_ctx(
        session, state, submitted, incident=draft.incident, spec=spec, draft=draft
    )
    try:
        form = submitted.valid()
        chosen = await chosen_destinations(session, form.destinations)
        if form.action == "preview":
            ctx["preview"] = await build_preview(
                session,
                state,
                spec=spec,
                incident=draft.incident,
                raw=form.variables,
                chosen=chosen,
                options=form.options,
            )
            return page(request, "drafts/edit.html", ctx)
        assert form.expected_version is not None  # EditDraftForm.check refuses a save without
        edited = await drafts.edit(
            session,
            draft=draft,
            actor=user,
            settings=state.settings,
            variables=form.variables,
            replace_variables=True,
            destinations=chosen,
            options=form.options,
            expected_version=form.expected_version,
        )
        if form.action == "submit" and edited.status == DraftStatus.DRAFT.value:
            await drafts.submit(session, draft=edited, actor=user, settings=state.settings)
    except CommsError as exc:
        raise form_error(request, "drafts/edit.html", ctx, exc) from exc
    return redirect_to(request, "drafts:get", draft_id=draft.id)


# ---------------------------------------------------------------------------- review page


@router.get("/drafts", name="drafts:list")
@allow(Action.READ)
async def draft_list(request: Request, session: DbSession, status: str = "") -> HTMLResponse:
    statuses = {DraftStatus(status)} if status in {s.value for s in DraftStatus} else None
    return page(
        request,
        "drafts/list.html",
        {
            "drafts": await drafts.list_drafts(session, statuses=statuses),
            "status": status,
            "statuses": [s.value for s in DraftStatus],
        },
    )


@router.get("/drafts/{draft_id}", name="drafts:get")
@allow(Action.READ)
async def draft_get(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
    draft: CurrentDraft,
) -> HTMLResponse:
    return page(
        request,
        "drafts/get.html",
        await review_context(
            session, state, draft, user=user, stepup_fresh=is_fresh(state, session_row)
        ),
    )


@router.post("/drafts/{draft_id}/approve", name="drafts:approve")
@allow(Action.DRAFT_APPROVE)
async def draft_approve(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
    draft: CurrentDraft,
) -> Response:
    submitted = await ApproveForm.read(request)
    stepped = await step_up(
        request,
        session,
        state,
        user=user,
        row=session_row,
        credential=submitted.raw(ApproveForm.credential),
        what="approve",
    )
    if not stepped.ok:
        # Returned, not raised: the failure's records (throttle, audit) commit.
        ctx = await review_context(
            session, state, draft, user=user, stepup_fresh=False, stepup_error=stepped.message
        )
        return page(request, "drafts/get.html", ctx, status=stepped.status)
    response: Response
    try:
        form = submitted.valid()  # after the step-up: its records stand whatever the form says
        # A savepoint: a refused approval rolls back alone, and the step-up just made (the
        # code it used up, the rotated session) is still committed with the request.
        async with session.begin_nested():
            await drafts.approve(
                session,
                draft=draft,
                actor=user,
                settings=state.settings,
                expected_hash=form.expected_hash,
            )
    except CommsError as exc:
        current = await drafts.require_draft(session, draft_id=draft.id)
        ctx = await review_context(session, state, current, user=user, stepup_fresh=True)
        refused = form_error(request, "drafts/get.html", ctx, exc)
        response = HTMLResponse(refused.body, status_code=refused.status)
    else:
        response = redirect_to(request, "drafts:get", draft_id=draft.id)
    return stepped.apply(request, response, state)


@router.post("/drafts/{draft_id}/reject", name="drafts:reject")
@allow(Action.DRAFT_APPROVE)
async def draft_reject(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
    draft: CurrentDraft,
) -> Response:
    form = (await RejectForm.read(request)).valid()
    try:
        await drafts.reject(
            session,
            draft=draft,
            actor=user,
            reason=form.reason,
            expected_hash=form.expected_hash or None,
        )
    except CommsError as exc:
        current = await drafts.require_draft(session, draft_id=draft.id)
        ctx = await review_context(
            session,
            state,
            current,
            user=user,
            stepup_fresh=is_fresh(state, session_row),
            reject_reason=form.reason,
        )
        raise form_error(request, "drafts/get.html", ctx, exc) from exc
    return redirect_to(request, "drafts:get", draft_id=draft.id)


@router.post("/drafts/{draft_id}/submit", name="drafts:submit")
@allow(Action.DRAFT_WRITE)
async def draft_submit(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
    draft: CurrentDraft,
) -> Response:
    try:
        await drafts.submit(session, draft=draft, actor=user, settings=state.settings)
    except CommsError as exc:
        ctx = await review_context(
            session, state, draft, user=user, stepup_fresh=is_fresh(state, session_row)
        )
        raise form_error(request, "drafts/get.html", ctx, exc) from exc
    return redirect_to(request, "drafts:get", draft_id=draft.id)


@router.post("/drafts/{draft_id}/withdraw", name="drafts:withdraw")
@allow(Action.DRAFT_WRITE)
async def draft_withdraw(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
    draft: CurrentDraft,
) -> Response:
    form = (await WithdrawForm.read(request)).valid()
    try:
        await drafts.withdraw(session, draft=draft, actor=user, reason=form.reason)
    except CommsError as exc:
        ctx = await review_context(
            session, state, draft, user=user, stepup_fresh=is_fresh(state, session_row)
        )
        raise form_error(request, "drafts/get.html", ctx, exc) from exc
    return redirect_to(request, "drafts:get", draft_id=draft.id)
