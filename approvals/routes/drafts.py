"""Drafts in the panel: the editor with a live preview, the approval view, deliveries.

The approve form carries the content hash of the version on screen; the service refuses if the
draft changed since (409 with a clear message), so nobody approves bytes they did not see.
Approving also needs an authentication from the last ``stepup_minutes`` minutes: the form
asks for the password or an authenticator code when it is older.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.responses import Response

from approvals import preview, review
from approvals.deps import CurrentSession, CurrentUser, DbSession, Panel
from approvals.rules import allow
from approvals.state import PanelState
from approvals.stepup import is_fresh, step_up
from approvals.web import OptionalRowQuery, RowId, form_error, page, problems_of, redirect
from comms.db import ROW_ID_MAX
from comms.destinations import service as destinations
from comms.destinations.models import Destination
from comms.drafts import gate
from comms.drafts import service as drafts
from comms.drafts.models import Draft, DraftStatus
from comms.drafts.payload import DraftOptions, build_plan
from comms.drafts.plan import AnnouncementPlan, PlannedDelivery
from comms.enums import Role
from comms.errors import CommsError, FieldProblem, InvalidInput
from comms.incidents import service as incidents
from comms.incidents.models import Incident
from comms.outbox import service as outbox
from comms.outbox.links import message_links
from comms.permissions import Action
from comms.rendering import TemplateSpec, check_values, validate_values
from comms.users.models import User

router = APIRouter(include_in_schema=False)
FORM_LIMITS = {"max_files": 0, "max_fields": 400, "max_part_size": 200_000}


async def current_draft(session: DbSession, draft_id: RowId) -> Draft:
    return await drafts.require_draft(session, draft_id=draft_id)


async def path_incident(session: DbSession, key: str) -> Incident:
    return await incidents.require_incident(session, key=key[:32])


CurrentDraft = Annotated[Draft, Depends(current_draft)]
PathIncident = Annotated[Incident, Depends(path_incident)]


# ------------------------------------------------------------------------- form handling


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _tri(value: str, field: str) -> bool | None:
    if value in ("", "default"):
        return None
    if value in ("yes", "no"):
        return value == "yes"
    raise InvalidInput(FieldProblem(field, "choose default, yes or no"))


def parse_when(value: str, field: str) -> datetime | None:
    text = value.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" UTC", ""))
    except ValueError:
        raise InvalidInput(FieldProblem(field, "use YYYY-MM-DD HH:MM (UTC)")) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment.utcoffset() != UTC.utcoffset(None):
        raise InvalidInput(FieldProblem(field, "must be UTC"))
    return moment


def parse_options(form: FormData) -> DraftOptions:
    problems: list[FieldProblem] = []
    values: dict[str, Any] = {}
    for name in ("pin", "silent"):
        try:
            values[name] = _tri(_text(form, f"options.{name}"), f"options.{name}")
        except InvalidInput as exc:
            problems += exc.problems
    try:
        values["publish_at"] = parse_when(_text(form, "options.publish_at"), "options.publish_at")
    except InvalidInput as exc:
        problems += exc.problems
    if problems:
        raise InvalidInput(problems)
    return DraftOptions(
        pin=values["pin"],
        silent=values["silent"],
        link_previews=_text(form, "options.link_previews") == "on",
        publish_at=values["publish_at"],
    )


def form_values(form: FormData) -> dict[str, str]:
    return {k[4:]: v for k, v in form.multi_items() if k.startswith("var.") and isinstance(v, str)}


async def chosen_destinations(session: AsyncSession, form: FormData) -> list[Destination]:
    names = [v for v in form.getlist("destinations") if isinstance(v, str)]
    found = []
    for name in names[:50]:
        found.append(
            await destinations.require_destination(session, name=name, field="destinations")
        )
    return found


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
            ctx=drafts._render_context(incident, state.settings),  # the same context as saving
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
    registry = drafts.registry_for(state.settings)
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


def _option_strings(form: FormData | None, draft: Draft | None = None) -> dict[str, str]:
    if form is not None:
        return {
            k: _text(form, f"options.{k}") for k in ("pin", "silent", "publish_at", "link_previews")
        }
    if draft is not None:
        opts = draft.options

        def tri(v: Any) -> str:
            return "" if v is None else ("yes" if v else "no")

        return {
            "pin": tri(opts.get("pin")),
            "silent": tri(opts.get("silent")),
            "publish_at": (opts.get("publish_at") or "").replace("+00:00", ""),
            "link_previews": "on" if opts.get("link_previews") else "",
        }
    return {"pin": "", "silent": "", "publish_at": "", "link_previews": ""}


@router.get("/incidents/{key}/drafts/new")
@allow(Action.DRAFT_WRITE)
async def draft_new(
    request: Request,
    session: DbSession,
    state: Panel,
    incident: PathIncident,
    template: str = "",
    correction_of: OptionalRowQuery = None,
) -> HTMLResponse:
    """The editor; ``correction_of`` (a published announcement's draft id) writes a correction."""
    if correction_of is not None:
        await drafts.require_draft(session, draft_id=correction_of, field="correction_of")
        template = template or "correction"
    spec = drafts.registry_for(state.settings).get(template[:64]) if template else None
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
            raw={},
            chosen=defaults,
            options=_option_strings(None),
            correction_of=str(correction_of or ""),
        ),
    )


async def corrected_draft(session: AsyncSession, form: FormData) -> Draft | None:
    """The announcement a new draft corrects (the editor's hidden ``correction_of``), if any."""
    value = _text(form, "correction_of").strip()
    if not value:
        return None
    if not value.isdigit() or not 1 <= int(value) <= ROW_ID_MAX:
        raise InvalidInput(FieldProblem("correction_of", "must be a draft id"))
    return await drafts.require_draft(session, draft_id=int(value), field="correction_of")


@router.post("/incidents/{key}/drafts")
@allow(Action.DRAFT_WRITE)
async def draft_create(
    request: Request, session: DbSession, state: Panel, user: CurrentUser, incident: PathIncident
) -> Response:
    form = await request.form(**FORM_LIMITS)
    name = _text(form, "template")[:64]
    raw = form_values(form)
    chosen_names = [v for v in form.getlist("destinations") if isinstance(v, str)]
    spec = drafts.registry_for(state.settings).get(name)
    ctx = await _editor_ctx(
        session,
        state,
        incident=incident,
        spec=spec,
        raw=raw,
        chosen=chosen_names,
        options=_option_strings(form),
        correction_of=_text(form, "correction_of")[:12],
    )
    try:
        options = parse_options(form)
        chosen = await chosen_destinations(session, form)
        original = await corrected_draft(session, form)
        if _text(form, "action") == "preview":
            ctx["preview"] = await build_preview(
                session,
                state,
                spec=spec,
                incident=incident,
                raw=raw,
                chosen=chosen,
                options=options,
                correction_of=original.id if original else None,
            )
            return page(request, "drafts/edit.html", ctx)
        created = await drafts.create(
            session,
            incident=incident,
            template=name,
            variables=raw,
            destinations=chosen,
            actor=user,
            settings=state.settings,
            options=options,
            correction_of=original,
        )
        if _text(form, "action") == "submit":
            await drafts.submit(session, draft=created, actor=user, settings=state.settings)
    except CommsError as exc:
        raise form_error(request, "drafts/edit.html", ctx, exc) from exc
    return redirect(f"/drafts/{created.id}")


@router.post("/drafts/preview")
@allow(Action.DRAFT_WRITE)
async def draft_preview(request: Request, session: DbSession, state: Panel) -> HTMLResponse:
    """The live preview fragment (the editor's script posts the form here). Saves nothing."""
    form = await request.form(**FORM_LIMITS)
    incident = await incidents.require_incident(session, key=_text(form, "incident")[:32])
    spec = drafts.registry_for(state.settings).get(_text(form, "template")[:64])
    try:
        options = parse_options(form)
        chosen = await chosen_destinations(session, form)
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
        raw=form_values(form),
        chosen=chosen,
        options=options,
    )
    return page(request, "drafts/_preview.html", {"preview": result})


@router.get("/drafts/{draft_id}/edit")
@allow(Action.DRAFT_WRITE)
async def draft_edit_form(
    request: Request, session: DbSession, state: Panel, draft: CurrentDraft
) -> HTMLResponse:
    spec = drafts.registry_for(state.settings).get(draft.template)
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
            options=_option_strings(None, draft),
            draft=draft,
        ),
    )


@router.post("/drafts/{draft_id}/edit")
@allow(Action.DRAFT_WRITE)
async def draft_edit(
    request: Request, session: DbSession, state: Panel, user: CurrentUser, draft: CurrentDraft
) -> Response:
    form = await request.form(**FORM_LIMITS)
    spec = drafts.registry_for(state.settings).get(draft.template)
    raw = form_values(form)
    chosen_names = [v for v in form.getlist("destinations") if isinstance(v, str)]
    ctx = await _editor_ctx(
        session,
        state,
        incident=draft.incident,
        spec=spec,
        raw=raw,
        chosen=chosen_names,
        options=_option_strings(form),
        draft=draft,
    )
    try:
        options = parse_options(form)
        chosen = await chosen_destinations(session, form)
        if _text(form, "action") == "preview":
            ctx["preview"] = await build_preview(
                session,
                state,
                spec=spec,
                incident=draft.incident,
                raw=raw,
                chosen=chosen,
                options=options,
            )
            return page(request, "drafts/edit.html", ctx)
        try:
            expected = int(_text(form, "expected_version"))
        except ValueError:
            raise InvalidInput(FieldProblem("version", "missing; reload the page")) from None
        edited = await drafts.edit(
            session,
            draft=draft,
            actor=user,
            settings=state.settings,
            variables=raw,
            replace_variables=True,
            destinations=chosen,
            options=options,
            expected_version=expected,
        )
        if _text(form, "action") == "submit" and edited.status == DraftStatus.DRAFT.value:
            await drafts.submit(session, draft=edited, actor=user, settings=state.settings)
    except CommsError as exc:
        raise form_error(request, "drafts/edit.html", ctx, exc) from exc
    return redirect(f"/drafts/{draft.id}")


# ---------------------------------------------------------------------------- review page


async def review_ctx(
    session: AsyncSession,
    state: PanelState,
    draft: Draft,
    *,
    user: User,
    stepup_fresh: bool,
    **extra: Any,
) -> dict[str, Any]:
    previous = (
        await drafts.get_version(session, draft_id=draft.id, version=draft.version - 1)
        if draft.version > 1
        else None
    )
    quorum = drafts.quorum(draft, settings=state.settings)
    standing = {s.approval.id: s for s in quorum.standings}
    plan = draft.plan
    deliveries = _previews(plan)
    refusal = gate.may_approve(
        draft, user, settings=state.settings, versions=await drafts.versions(session, draft=draft)
    )
    original = (
        await drafts.require_draft(session, draft_id=draft.correction_of_id)
        if draft.correction_of_id
        else None
    )
    return {
        "original": original,
        "original_deliveries": _previews(original.plan) if original else [],
        "draft": draft,
        "quorum": quorum,
        "standing": standing,
        "deliveries": deliveries,
        "plan": plan,
        "links": review.links_in(plan, state.settings.official_domains),
        "diff": review.diff(previous.plan if previous else None, plan),
        "previous": previous,
        "can_decide": refusal is None,
        # Why a Decision Maker sees no approve button (e.g. they edited a version).
        "refusal": refusal if user.has_role(Role.DECISION_MAKER) else None,
        "stepup_fresh": stepup_fresh,
        "stepup_minutes": state.settings.stepup_minutes,
        **extra,
    }


@dataclass(frozen=True)
class Previewed:
    """A planned delivery with its messages as the clients show them (for the templates)."""

    item: PlannedDelivery
    html: list[Markup]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.item, name)


def _previews(plan: AnnouncementPlan) -> list[Previewed]:
    return [
        Previewed(item, [preview.render(item.platform.value, m) for m in item.messages])
        for item in plan.deliveries
    ]


def _fresh(state: PanelState, row: Any) -> bool:
    return is_fresh(state, row)


@router.get("/drafts")
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


@router.get("/drafts/{draft_id}")
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
        await review_ctx(session, state, draft, user=user, stepup_fresh=_fresh(state, session_row)),
    )


@router.post("/drafts/{draft_id}/approve")
@allow(Action.DRAFT_APPROVE)
async def draft_approve(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
    draft: CurrentDraft,
) -> Response:
    form = await request.form(**FORM_LIMITS)
    expected = _text(form, "expected_hash")
    stepped = await step_up(
        request,
        session,
        state,
        user=user,
        row=session_row,
        credential=_text(form, "credential"),
        what="approve",
    )
    if not stepped.ok:
        # Returned, not raised: the failure's records (throttle, audit) commit.
        ctx = await review_ctx(
            session, state, draft, user=user, stepup_fresh=False, stepup_error=stepped.message
        )
        return page(request, "drafts/get.html", ctx, status=stepped.status)
    response: Response
    try:
        if not expected:
            raise InvalidInput(FieldProblem("content_hash", "missing; reload the page"))
        # A savepoint: a refused approval rolls back alone, and the step-up just made (the
        # code it used up, the rotated session) is still committed with the request.
        async with session.begin_nested():
            await drafts.approve(
                session, draft=draft, actor=user, settings=state.settings, expected_hash=expected
            )
    except CommsError as exc:
        current = await drafts.require_draft(session, draft_id=draft.id)
        ctx = await review_ctx(session, state, current, user=user, stepup_fresh=True)
        refused = form_error(request, "drafts/get.html", ctx, exc)
        response = HTMLResponse(refused.body, status_code=refused.status)
    else:
        response = redirect(f"/drafts/{draft.id}")
    return stepped.apply(request, response, state)


@router.post("/drafts/{draft_id}/reject")
@allow(Action.DRAFT_APPROVE)
async def draft_reject(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
    draft: CurrentDraft,
) -> Response:
    form = await request.form(**FORM_LIMITS)
    try:
        await drafts.reject(
            session,
            draft=draft,
            actor=user,
            reason=_text(form, "reason"),
            expected_hash=_text(form, "expected_hash") or None,
        )
    except CommsError as exc:
        current = await drafts.require_draft(session, draft_id=draft.id)
        ctx = await review_ctx(
            session,
            state,
            current,
            user=user,
            stepup_fresh=_fresh(state, session_row),
            reject_reason=_text(form, "reason"),
        )
        raise form_error(request, "drafts/get.html", ctx, exc) from exc
    return redirect(f"/drafts/{draft.id}")


@router.post("/drafts/{draft_id}/submit")
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
        ctx = await review_ctx(
            session, state, draft, user=user, stepup_fresh=_fresh(state, session_row)
        )
        raise form_error(request, "drafts/get.html", ctx, exc) from exc
    return redirect(f"/drafts/{draft.id}")


@router.post("/drafts/{draft_id}/withdraw")
@allow(Action.DRAFT_WRITE)
async def draft_withdraw(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    session_row: CurrentSession,
    draft: CurrentDraft,
) -> Response:
    form = await request.form(**FORM_LIMITS)
    try:
        await drafts.withdraw(session, draft=draft, actor=user, reason=_text(form, "reason"))
    except CommsError as exc:
        ctx = await review_ctx(
            session, state, draft, user=user, stepup_fresh=_fresh(state, session_row)
        )
        raise form_error(request, "drafts/get.html", ctx, exc) from exc
    return redirect(f"/drafts/{draft.id}")


DeliveryId = RowId


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


@router.get("/drafts/{draft_id}/deliveries")
@allow(Action.READ)
async def draft_deliveries(
    request: Request, session: DbSession, state: Panel, draft: CurrentDraft
) -> HTMLResponse:
    """Each destination's state, live (the rows poll), with links and the actions a person has."""
    return page(
        request,
        "deliveries/list.html",
        {
            "draft": draft,
            "rows": await _delivery_rows(session, state, draft),
            "poll_seconds": min(state.settings.panel_poll_seconds, 3),
        },
    )


@router.get("/drafts/{draft_id}/deliveries/rows")
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
    action: str,
) -> Response:
    delivery = await outbox.require_delivery(session, delivery_id=delivery_id)
    form = await request.form(**FORM_LIMITS)
    try:
        if action == "retry":
            await outbox.retry(session, delivery=delivery, actor=user)
        else:
            await outbox.resolve_uncertain(
                session,
                delivery=delivery,
                actor=user,
                resend=action == "resend",
                note=_text(form, "note"),
            )
    except CommsError as exc:
        draft = await drafts.require_draft(session, draft_id=delivery.draft_id)
        ctx = {
            "draft": draft,
            "rows": await _delivery_rows(session, state, draft),
            "poll_seconds": min(state.settings.panel_poll_seconds, 3),
        }
        raise form_error(request, "deliveries/list.html", ctx, exc) from exc
    return redirect(f"/drafts/{delivery.draft_id}/deliveries")


@router.post("/deliveries/{delivery_id}/retry")
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


@router.post("/deliveries/{delivery_id}/resend")
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


@router.post("/deliveries/{delivery_id}/dismiss")
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
