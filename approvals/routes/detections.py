"""The detections inbox and a cluster's page: what the community and the monitors report, and
the responders' triage (dismiss, merge, attach, escalate), each checked and audited by
``comms.detections.triage``.

Everything a reporter wrote (text, name, links, the entities found in them) is untrusted: it is
rendered by Jinja's autoescape only, control and format characters (bidi overrides, zero-width)
are written out as ``\\uXXXX`` so they can neither reorder nor hide anything, and the only links
are to the original message when its URL is http(s).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from approvals.deps import CurrentUser, DbSession
from approvals.rules import allow
from approvals.web import FormInvalid, RowId, form_error, page, redirect_to
from comms.db import ROW_ID_MAX
from comms.detections import triage
from comms.detections.models import Cluster, ClusterStatus
from comms.enums import Severity
from comms.errors import CommsError, FieldProblem, InvalidInput, NotFound
from comms.incidents import service as incidents
from comms.permissions import Action
from comms.text import one_line_inert

router = APIRouter(include_in_schema=False)

Short = Annotated[str, Form(max_length=300)]
Long = Annotated[str, Form(max_length=2000)]

INBOX_ENTITIES = 3  # per row: enough to recognise the event at a glance
PAGE_ENTITIES = 200  # a flood can name hundreds of URLs; the page stays readable
# Flags a responder must not miss: shown as warnings, and their entities listed first.
DANGER_FLAGS = ("lookalike", "checksum_invalid", "mixed_script", "invalid_idna", "punycode")
FLAG_LABELS = {
    "lookalike": "look-alike domain",
    "checksum_invalid": "checksum invalid",
    "mixed_script": "mixed scripts",
    "invalid_idna": "invalid IDN",
    "punycode": "punycode",
    "official": "official",
    "known_contract": "known contract",
    "checksum_valid": "checksum ok",
    "no_checksum": "no checksum",
}
UNDECIDED = (ClusterStatus.OPEN, ClusterStatus.ALERTED)
ATTACHABLE = (ClusterStatus.OPEN, ClusterStatus.ALERTED, ClusterStatus.ESCALATED)


def inert(value: str) -> str:
    """Reporter text with control and format characters written as ``\\uXXXX``: a bidi override
    or a zero-width space becomes visible instead of reordering or splitting what is shown.
    Newlines and tabs are kept; the result is still plain text, escaped by the template."""
    return "".join(
        f"\\u{ord(char):04x}"
        if char not in "\n\t" and unicodedata.category(char) in ("Cc", "Cf", "Cs")
        else char
        for char in value
    )


def web_link(url: str) -> str | None:
    """``url`` if a browser may follow it: http(s) with a host, and no whitespace or control
    characters (browsers drop some of those, which could turn a refused scheme into another)."""
    if not url or any(char.isspace() or unicodedata.category(char)[0] == "C" for char in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return url


def host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _danger_first(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entities, key=lambda e: not any(f in DANGER_FLAGS for f in e["flags"]))


def _rows(found: list[Cluster], documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each cluster (its datetimes) with its document (entities, incident key)."""
    rows = []
    for cluster, doc in zip(found, documents, strict=True):
        entities = _danger_first(doc["entities"])
        rows.append(
            {
                "c": cluster,
                "doc": doc,
                "entities": entities[:INBOX_ENTITIES],
                "more": max(0, len(entities) - INBOX_ENTITIES),
            }
        )
    return rows


async def _inbox_ctx(session: AsyncSession) -> dict[str, Any]:
    found = await triage.list_clusters(session)
    rows = _rows(found, await triage.documents(session, found))
    return {
        "rows": rows,
        "live": sum(1 for r in rows if r["c"].status in UNDECIDED),
        **_helpers(),
    }


def _helpers() -> dict[str, Any]:
    return {
        "inert": inert,
        "one_line": one_line_inert,
        "web_link": web_link,
        "host_of": host_of,
        "flag_labels": FLAG_LABELS,
        "danger_flags": DANGER_FLAGS,
    }


@router.get("/reports", name="detections:list")
@allow(Action.READ)
async def reports_inbox(request: Request, session: DbSession) -> HTMLResponse:
    """Live clusters first, newest and largest first; the rows refresh by themselves."""
    return page(request, "detections/list.html", await _inbox_ctx(session))


@router.get("/reports/rows", name="detections:rows")
@allow(Action.READ)
async def reports_rows(request: Request, session: DbSession) -> HTMLResponse:
    """The inbox's rows alone: ``panel.js`` polls this (``data-poll``) to show new reports."""
    return page(request, "detections/_rows.html", await _inbox_ctx(session))


async def current_cluster(session: DbSession, cluster_id: RowId) -> Cluster:
    """The cluster named in the path, or a 404 naming it."""
    return await triage.require_cluster(session, cluster_id, field="cluster_id")


CurrentCluster = Annotated[Cluster, Depends(current_cluster)]


async def _cluster_ctx(session: AsyncSession, cluster: Cluster, **extra: Any) -> dict[str, Any]:
    """Everything the cluster page shows, read before any action so a refused one renders the
    page as it was (nothing is read from a half-changed session)."""
    doc = (await triage.documents(session, [cluster]))[0]
    entities = _danger_first(doc["entities"])
    open_incidents = await incidents.list_incidents(session, open_only=True)
    return {
        "c": cluster,
        "doc": doc,
        "status": cluster.status,
        "entities": entities[:PAGE_ENTITIES],
        "more": max(0, len(entities) - PAGE_ENTITIES),
        "detections": await triage.detections_of(session, cluster, limit=50),
        "suggested_title": await triage.suggested_title(session, cluster),
        "severities": [(s.value, f"{s.value} ({s.label})") for s in Severity],
        "incident_choices": [(i.key, f"{i.key}: {i.title}") for i in open_incidents],
        "undecided": cluster.status in UNDECIDED,
        "attachable": cluster.status in ATTACHABLE,
        "forms": {"reason": "", "other": "", "incident": "", "severity": "", "title": ""},
        "failed": "",
        **_helpers(),
        **extra,
    }


@router.get("/reports/clusters/{cluster_id}", name="detections:cluster")
@allow(Action.READ)
async def cluster_get(
    request: Request, session: DbSession, cluster: CurrentCluster
) -> HTMLResponse:
    return page(request, "detections/get.html", await _cluster_ctx(session, cluster))


def _refused(
    request: Request, ctx: dict[str, Any], action: str, form: dict[str, str], exc: CommsError
) -> FormInvalid:
    """The page again with the error next to the field (or on the action's form), status of
    the error (422 bad input, 409 a decided cluster); the transaction rolls back."""
    ctx["forms"] = {**ctx["forms"], **form}
    ctx["failed"] = action
    return form_error(request, "detections/get.html", ctx, exc)


def _cluster_number(value: str, *, field: str) -> int:
    """``C-12`` or ``12``, as people copy it from the inbox."""
    text = value.strip()
    digits = text[2:] if text[:2].upper() == "C-" else text
    if not digits.isdecimal() or not 1 <= int(digits) <= ROW_ID_MAX:
        raise InvalidInput(FieldProblem(field, "give a cluster such as C-12"))
    return int(digits)


@router.post("/reports/clusters/{cluster_id}/dismiss", name="detections:dismiss")
@allow(Action.DETECTION_TRIAGE)
async def cluster_dismiss(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    cluster: CurrentCluster,
    reason: Long = "",
) -> Response:
    """Not an event (noise, a scam already handled); the reason is required and kept."""
    ctx = await _cluster_ctx(session, cluster)
    try:
        await triage.dismiss(session, cluster, reason=reason, actor=user)
    except CommsError as exc:
        raise _refused(request, ctx, "dismiss", {"reason": reason}, exc) from exc
    return redirect_to(request, "detections:cluster", cluster_id=cluster.id)


@router.post("/reports/clusters/{cluster_id}/merge", name="detections:merge")
@allow(Action.DETECTION_TRIAGE)
async def cluster_merge(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    cluster: CurrentCluster,
    other: Short = "",
) -> Response:
    """Two clusters are one event: this one's reports move into ``other``, shown next."""
    ctx = await _cluster_ctx(session, cluster)
    try:
        number = _cluster_number(other, field="other")
        try:
            into = await triage.require_cluster(session, number, field="other")
        except NotFound as exc:
            raise InvalidInput(FieldProblem("other", f"no cluster C-{number}")) from exc
        await triage.merge(session, cluster, into, actor=user)
    except CommsError as exc:
        raise _refused(request, ctx, "merge", {"other": other}, exc) from exc
    return redirect_to(request, "detections:cluster", cluster_id=into.id)


@router.post("/reports/clusters/{cluster_id}/attach", name="detections:attach")
@allow(Action.DETECTION_TRIAGE)
async def cluster_attach(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    cluster: CurrentCluster,
    incident: Short = "",
) -> Response:
    """The reports belong to an incident already open; its Incident Log says so."""
    ctx = await _cluster_ctx(session, cluster)
    try:
        key = incident.strip()
        if not key:
            raise InvalidInput(FieldProblem("incident", "choose an incident"))
        try:
            target = await incidents.require_incident(session, key=key[:32], field="incident")
        except NotFound as exc:
            raise InvalidInput(FieldProblem("incident", "there is no such incident")) from exc
        await triage.attach(session, cluster, target, actor=user)
    except CommsError as exc:
        raise _refused(request, ctx, "attach", {"incident": incident}, exc) from exc
    return redirect_to(request, "detections:cluster", cluster_id=cluster.id)


@router.post("/reports/clusters/{cluster_id}/escalate", name="detections:escalate")
@allow(Action.DETECTION_TRIAGE)
async def cluster_escalate(
    request: Request,
    session: DbSession,
    user: CurrentUser,
    cluster: CurrentCluster,
    severity: Short = "",
    title: Short = "",
) -> Response:
    """Open an incident from the cluster (detected at its first report) and go to it."""
    ctx = await _cluster_ctx(session, cluster)
    try:
        opened = await triage.escalate(
            session,
            cluster,
            severity=incidents.parse_severity(severity),
            actor=user,
            title=title.strip() or None,
        )
    except CommsError as exc:
        form = {"severity": severity, "title": title}
        raise _refused(request, ctx, "escalate", form, exc) from exc
    return redirect_to(request, "incidents:get", key=opened.key)
