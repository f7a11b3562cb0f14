"""Incidents: list, open, detail with the Incident Log, severity/status/roles, export."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from approvals.deps import CurrentUser, DbSession, Panel, panel
from approvals.rules import allow
from approvals.web import RowId, form_error, page, redirect_to
from comms import flows
from comms.clock import utcnow
from comms.drafts import service as drafts
from comms.enums import Role, Severity
from comms.errors import CommsError, NotFound
from comms.incidents import cadence, export, resolution, tasks
from comms.incidents import service as incidents
from comms.incidents.models import (
    Incident,
    IncidentRole,
    IncidentStatus,
    IncidentTask,
    LogKind,
    TaskStatus,
)
from comms.permissions import Action
from comms.users import service as users

router = APIRouter(include_in_schema=False)

Short = Annotated[str, Form(max_length=300)]
Long = Annotated[str, Form(max_length=6000)]


async def current_incident(session: DbSession, key: str) -> Incident:
    """The incident named in the path, or a 404 naming it."""
    return await incidents.require_incident(session, key=key[:32])


CurrentIncident = Annotated[Incident, Depends(current_incident)]


@router.get("/incidents")
@allow(Action.READ)
async def incident_list(request: Request, session: DbSession, state: Panel) -> HTMLResponse:
    """Every incident; those that owe a public update say when, and who is overdue."""
    rows = await incidents.list_incidents(session)
    now = utcnow()
    dues: dict[int, tuple[cadence.Due, cadence.Stage | None]] = {}
    for row in rows:
        due = await cadence.next_update(session, row, state.settings)
        if due is not None:
            dues[row.id] = (due, due.stage(now))
    return page(request, "incidents/list.html", {"incidents": rows, "dues": dues})


def _new_ctx(**extra: Any) -> dict[str, Any]:
    return {
        "severities": [(s.value, f"{s.value} ({s.label})") for s in Severity],
        "form": {"title": "", "severity": "P1", "summary": ""},
        **extra,
    }


@router.get("/incidents/new")
@allow(Action.INCIDENT_OPEN)
async def incident_new(request: Request) -> HTMLResponse:
    return page(request, "incidents/new.html", _new_ctx())


@router.post("/incidents")
@allow(Action.INCIDENT_OPEN)
async def incident_create(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    title: Short = "",
    severity: Short = "",
    summary: Long = "",
) -> Response:
    form = {"title": title, "severity": severity, "summary": summary}
    try:
        created = await incidents.open_incident(
            session,
            title=title,
            severity=incidents.parse_severity(severity),
            summary=summary,
            actor=user,
        )
    except CommsError as exc:
        raise form_error(request, "incidents/new.html", _new_ctx(form=form), exc) from exc
    return redirect_to(request, "incidents:get", key=created.key)


async def _detail_ctx(
    request: Request, session: AsyncSession, incident: Incident, **extra: Any
) -> dict[str, Any]:
    people = await users.list_users(session)
    incident_tasks = await tasks.list_tasks(session, incident=incident)
    busy = await tasks.busy_owners(session)
    owners = {t.owner_id: t.owner for t in incident_tasks if t.status.is_open}
    due = await cadence.next_update(session, incident, panel(request).settings)
    return {
        "checklist": await resolution.items(session, incident),
        "min_monitoring_days": panel(request).settings.monitoring_min_days,
        "due": due,
        "due_stage": due.stage(utcnow()) if due else None,
        "tasks": incident_tasks,
        "task_statuses": [(s.value, s.value.replace("_", " ")) for s in TaskStatus],
        # The policy's "one task per person at a time": who on this incident holds more.
        "overloaded": [(u, busy[i]) for i, u in owners.items() if busy.get(i, 0) > 1],
        "task_people": [
            (
                u.username,
                f"{u.display_name} ({u.username})"
                + (f" — {busy[u.id]} open task(s)" if busy.get(u.id) else ""),
            )
            for u in people
            if u.active
        ],
        "incident": incident,
        "entries": list(reversed(await incidents.entries(session, incident=incident))),
        "drafts": await drafts.list_drafts(session, incident=incident),
        "severities": [(s.value, f"{s.value} ({s.label})") for s in Severity],
        "next_statuses": [
            s.value
            for s in sorted(
                incidents.TRANSITIONS[IncidentStatus(incident.status)], key=incidents.ORDER.index
            )
        ],
        "incident_roles": [
            (r.value, r.label) for r in IncidentRole if r is not IncidentRole.DETECTOR
        ],
        "people": [(u.username, f"{u.display_name} ({u.username})") for u in people if u.active],
        "current_roles": [a for a in incident.assignments if a.ended_at is None],
        "Role": Role,
        **extra,
    }


@router.get("/incidents/{key}", name="incidents:get")
@allow(Action.READ)
async def incident_get(
    request: Request, session: DbSession, incident: CurrentIncident
) -> HTMLResponse:
    return page(request, "incidents/get.html", await _detail_ctx(request, session, incident))


@router.post("/incidents/{key}/severity")
@allow(Action.INCIDENT_MANAGE)
async def incident_severity(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    incident: CurrentIncident,
    severity: Short = "",
    rationale: Long = "",
) -> Response:
    ctx = await _detail_ctx(request, session, incident)
    try:
        await flows.change_severity(
            session,
            incident=incident,
            severity=incidents.parse_severity(severity),
            actor=user,
            rationale=rationale,
            settings=state.settings,
        )
    except CommsError as exc:
        raise form_error(request, "incidents/get.html", ctx, exc) from exc
    return redirect_to(request, "incidents:get", key=incident.key)


@router.post("/incidents/{key}/status")
@allow(Action.INCIDENT_MANAGE)
async def incident_status(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    incident: CurrentIncident,
    status: Short = "",
    rationale: Long = "",
) -> Response:
    ctx = await _detail_ctx(request, session, incident)
    try:
        await incidents.change_status(
            session,
            incident=incident,
            status=incidents.parse_status(status),
            actor=user,
            rationale=rationale,
            min_monitoring=panel(request).settings.min_monitoring,
        )
    except CommsError as exc:
        raise form_error(request, "incidents/get.html", ctx, exc) from exc
    return redirect_to(request, "incidents:get", key=incident.key)


@router.post("/incidents/{key}/assign")
@allow(Action.INCIDENT_MANAGE)
async def incident_assign(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    incident: CurrentIncident,
    role: Short = "",
    username: Short = "",
) -> Response:
    ctx = await _detail_ctx(request, session, incident)
    try:
        assignee = await users.require_user(session, username=username, field="username")
        await incidents.assign(
            session,
            incident=incident,
            role=incidents.parse_incident_role(role),
            user=assignee,
            actor=user,
        )
    except CommsError as exc:
        raise form_error(request, "incidents/get.html", ctx, exc) from exc
    return redirect_to(request, "incidents:get", key=incident.key)


@router.post("/incidents/{key}/ack")
@allow(Action.READ)  # the service checks that you are the offered leader and hold the role
async def incident_ack(
    request: Request, session: DbSession, user: CurrentUser, incident: CurrentIncident
) -> Response:
    await incidents.acknowledge_leadership(session, incident=incident, actor=user)
    return redirect_to(request, "incidents:get", key=incident.key)


@router.post("/incidents/{key}/log")
@allow(Action.INCIDENT_LOG)
async def incident_log(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    incident: CurrentIncident,
    kind: Short = "note",
    text: Long = "",
    rationale: Long = "",
    owner: Short = "",
) -> Response:
    ctx = await _detail_ctx(
        request,
        session,
        incident,
        log_form={"kind": kind, "text": text, "rationale": rationale, "owner": owner},
    )
    try:
        try:
            log_kind = LogKind(kind)
        except ValueError:
            log_kind = LogKind.STATUS  # refused by the service with a field message
        owner_user = (
            await users.require_user(session, username=owner, field="owner")
            if owner.strip()
            else None
        )
        await incidents.add_entry(
            session,
            incident=incident,
            kind=log_kind,
            text=text,
            actor=user,
            rationale=rationale,
            owner=owner_user,
        )
    except CommsError as exc:
        raise form_error(request, "incidents/get.html", ctx, exc) from exc
    return redirect_to(request, "incidents:get", key=incident.key, fragment="log")


@router.get("/incidents/{key}/export.md")
@allow(Action.READ)
async def incident_export(session: DbSession, incident: CurrentIncident) -> Response:
    text = export.render_markdown(incident, await incidents.entries(session, incident=incident))
    name = export.filename(incident)
    return PlainTextResponse(
        text,
        media_type="text/markdown; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def incident_task(
    session: DbSession, incident: CurrentIncident, task_id: RowId
) -> IncidentTask:
    """The task named in the path, if it is this incident's (else a 404 naming it)."""
    found = await tasks.get_task(session, task_id=task_id)
    if found.incident_id != incident.id:
        raise NotFound(f"no task #{task_id} on {incident.key}", field="task")
    return found


CurrentTask = Annotated[IncidentTask, Depends(incident_task)]


@router.post("/incidents/{key}/tasks")
@allow(Action.INCIDENT_MANAGE)
async def task_add(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    incident: CurrentIncident,
    title: Short = "",
    assignee: Short = "",
) -> Response:
    ctx = await _detail_ctx(
        request, session, incident, task_form={"title": title, "assignee": assignee}
    )
    try:
        owner_user = await users.require_user(session, username=assignee, field="assignee")
        await tasks.assign_task(
            session, incident=incident, title=title, owner=owner_user, actor=user
        )
    except CommsError as exc:
        raise form_error(request, "incidents/get.html", ctx, exc) from exc
    return redirect_to(request, "incidents:get", key=incident.key, fragment="tasks")


@router.post("/incidents/{key}/tasks/{task_id}/status")
@allow(Action.READ)  # the service checks that you own the task or lead incidents
async def task_status(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    incident: CurrentIncident,
    task: CurrentTask,
    status: Short = "",
) -> Response:
    ctx = await _detail_ctx(request, session, incident)
    try:
        await tasks.set_status(
            session, task=task, status=tasks.parse_task_status(status), actor=user
        )
    except CommsError as exc:
        raise form_error(request, "incidents/get.html", ctx, exc) from exc
    return redirect_to(request, "incidents:get", key=incident.key, fragment="tasks")


@router.post("/incidents/{key}/tasks/{task_id}/owner")
@allow(Action.INCIDENT_MANAGE)
async def task_reassign(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    incident: CurrentIncident,
    task: CurrentTask,
    owner: Short = "",
) -> Response:
    ctx = await _detail_ctx(request, session, incident)
    try:
        owner_user = await users.require_user(session, username=owner, field="owner")
        await tasks.reassign(session, task=task, owner=owner_user, actor=user)
    except CommsError as exc:
        raise form_error(request, "incidents/get.html", ctx, exc) from exc
    return redirect_to(request, "incidents:get", key=incident.key, fragment="tasks")


@router.post("/incidents/{key}/no-news")
@allow(Action.DRAFT_WRITE)
async def incident_no_news(
    request: Request,
    session: DbSession,
    state: Panel,
    user: CurrentUser,
    incident: CurrentIncident,
) -> Response:
    """One click when an update is due and nothing changed: the draft still needs approval."""
    ctx = await _detail_ctx(request, session, incident)
    try:
        draft = await flows.no_news_draft(
            session, incident=incident, actor=user, settings=state.settings
        )
    except CommsError as exc:
        raise form_error(request, "incidents/get.html", ctx, exc) from exc
    return redirect_to(request, "drafts:get", draft_id=draft.id)


@router.post("/incidents/{key}/checklist")
@allow(Action.INCIDENT_LOG)
async def incident_tick(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    incident: CurrentIncident,
    item: Short = "",
    note: Long = "",
) -> Response:
    ctx = await _detail_ctx(request, session, incident, checklist_form={"item": item, "note": note})
    try:
        await incidents.tick_checklist(session, incident=incident, item=item, actor=user, note=note)
    except CommsError as exc:
        raise form_error(request, "incidents/get.html", ctx, exc) from exc
    return redirect_to(request, "incidents:get", key=incident.key, fragment="checklist")
