"""Detections from monitoring systems, under ``/api/v1`` (scope ``detections:write``).

Monitoring retries on errors and timeouts, so a POST that carries an ``id`` is idempotent: the
first one creates the detection (201), a repeat returns it unchanged (200).

Single detections are written by the app's shared writer: during a flood, monitors POST one
alert at a time from many connections, and the requests that arrive together share one
transaction (and one read of the live clusters) instead of queueing for the write lock.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Security
from fastapi.responses import JSONResponse

from approvals.deps import CurrentUser, DbSession, Panel, bearer_scheme
from approvals.rules import allow, writes_apart
from approvals.schemas import (
    ERRORS,
    AlertmanagerIn,
    AlertmanagerOut,
    DetectionBatchIn,
    DetectionBatchOut,
    DetectionIn,
    DetectionOut,
)
from comms.detections import alertmanager
from comms.detections import service as detections
from comms.detections.models import DetectionSeverity, DetectionSource
from comms.permissions import Action
from comms.settings import Settings

router = APIRouter(
    prefix="/api/v1", tags=["detections"], responses=ERRORS, dependencies=[Security(bearer_scheme)]
)


@router.post(
    "/detections",
    response_model=DetectionOut,
    status_code=201,
    responses={200: {"model": DetectionOut, "description": "Already received (same id)"}},
)
@allow(Action.DETECTION_WRITE)
@writes_apart
async def post_detection(state: Panel, user: CurrentUser, body: DetectionIn) -> Any:
    report = _report(body, state.settings, submitted_by_id=user.id)
    document, created = await state.detection_writer.submit(report)
    if created:
        return document
    return JSONResponse(DetectionOut.model_validate(document).model_dump(mode="json"))


@router.post("/detections/batch", response_model=DetectionBatchOut)
@allow(Action.DETECTION_WRITE)
async def post_detections(
    session: DbSession, state: Panel, user: CurrentUser, body: DetectionBatchIn
) -> dict[str, Any]:
    """Up to 500 detections in one POST, stored in one transaction and clustered together:
    for a monitor that forwards many alerts at once. Each ``id`` is idempotent as above."""
    reports = []
    for index, item in enumerate(body.detections):
        reports.append(_report(item, state.settings, field_name=f"detections.{index}.entities"))
    stored = await detections.record_many(
        session, reports, settings=state.settings, actor=user, index=state.report_texts
    )
    return {
        "detections": [
            {"created": created, "detection": detections.detection_document(detection)}
            for detection, created in stored
        ]
    }


def _report(
    body: DetectionIn,
    settings: Settings,
    *,
    field_name: str = "entities",
    submitted_by_id: int | None = None,
) -> detections.Report:
    given = [
        detections.entity_named(
            item.type, item.value, settings=settings, field_name=f"{field_name}.{index}"
        )
        for index, item in enumerate(body.entities)
    ]
    return detections.Report(
        source=DetectionSource.WEBHOOK,
        external_id=body.id,
        origin=body.source.strip(),
        title=body.title.strip(),
        text=body.text.strip(),
        severity=DetectionSeverity(body.severity),
        url=body.url or "",
        given_entities=given,
        submitted_by_id=submitted_by_id,
    )


@router.post("/detections/alertmanager", response_model=AlertmanagerOut)
@allow(Action.DETECTION_WRITE)
async def post_alertmanager(
    session: DbSession, state: Panel, user: CurrentUser, body: AlertmanagerIn
) -> dict[str, Any]:
    """Point an Alertmanager ``webhook_configs`` receiver here (with ``http_config``'s
    ``authorization: {credentials: <token>}``). One detection per alert; repeats change
    nothing."""
    outcome = await alertmanager.receive(
        session,
        alertmanager.Notification(
            group_key=body.group_key,
            status=body.status,
            receiver=body.receiver,
            truncated_alerts=body.truncated_alerts,
            external_url=body.external_url,
            alerts=[
                alertmanager.Alert(
                    status=a.status,
                    labels=a.labels,
                    annotations=a.annotations,
                    starts_at=a.starts_at,
                    ends_at=a.ends_at,
                    generator_url=a.generator_url,
                    fingerprint=a.fingerprint,
                )
                for a in body.alerts
            ],
        ),
        settings=state.settings,
        actor=user,
    )
    return {
        "created": outcome.created,
        "unchanged": outcome.unchanged,
        "resolved": outcome.resolved,
    }


@router.get("/detections", response_model=list[DetectionOut])
@allow(Action.READ)
async def list_detections(
    session: DbSession, limit: int = Query(default=100, ge=1, le=1000)
) -> list[dict[str, Any]]:
    """Newest first."""
    return [
        detections.detection_document(d)
        for d in await detections.list_detections(session, limit=limit)
    ]
