"""Recording detections: text in, entities out, and a repeated submission changes nothing.

Every source (the bots, the monitoring webhooks, the panel) hands in a ``Report``; ``record``
extracts the entities and stores one ``Detection``. Monitoring systems retry and resend, so a
report with an ``external_id`` already stored for its source returns the stored detection
untouched, also when two copies race (the unique constraint decides, inside a savepoint).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from comms.clock import utcnow
from comms.detections import alerts, clusters
from comms.detections.entities import Entity, EntityType, extract
from comms.detections.models import (
    Cluster,
    Detection,
    DetectionEntity,
    DetectionSeverity,
    DetectionSource,
    DetectionStatus,
)
from comms.errors import FieldProblem, InvalidInput
from comms.settings import Settings
from comms.users.models import User

log = logging.getLogger("comms.detections")

ENTITY_INDEX_LIMIT = 500  # DetectionEntity.value's length: longer values are cut for lookups


@dataclass(frozen=True)
class Report:
    """What a source knows about one report, already checked for size and control characters."""

    source: DetectionSource
    text: str
    title: str = ""
    origin: str = ""
    severity: DetectionSeverity | None = None
    external_id: str | None = None
    url: str = ""
    reporter_id: str = ""
    reporter_name: str = ""
    reporter_created_at: datetime | None = None
    location: Mapping[str, str] = field(default_factory=dict)
    message_url: str = ""
    hidden_urls: Sequence[str] = ()  # links the platform carried outside the text
    given_entities: Sequence[Entity] = ()  # named by a monitoring system
    details: Mapping[str, Any] = field(default_factory=dict)
    submitted_by_id: int | None = None  # the API token's user (``actor`` overrides it)


def entity_named(kind: str, value: str, *, settings: Settings, field_name: str) -> Entity:
    """A monitoring system's ``{type, value}``, checked and normalised the way extraction
    would have found it, or InvalidInput naming ``field_name``."""
    try:
        wanted = EntityType(kind)
    except ValueError:
        choices = ", ".join(t.value for t in EntityType)
        raise InvalidInput(
            FieldProblem(
                f"{field_name}.type", f"unknown entity type {kind!r} (choose from {choices})"
            )
        ) from None
    hidden = [value] if wanted is EntityType.URL else []
    for entity in extract(
        "" if hidden else value,
        official_domains=settings.official_domains,
        known_contracts=settings.known_contracts,
        hidden_urls=hidden,
    ):
        if entity.type is wanted:
            return entity
    raise InvalidInput(FieldProblem(f"{field_name}.value", f"is not a valid {wanted.value}"))


async def record(
    session: AsyncSession, report: Report, *, settings: Settings, actor: User | None = None
) -> tuple[Detection, bool]:
    """Store ``report`` as a detection; ``(detection, created)``. Not created: the source had
    already sent this ``external_id``, and the stored detection is returned unchanged."""
    return (await record_many(session, [report], settings=settings, actor=actor))[0]


async def record_many(
    session: AsyncSession,
    reports: Sequence[Report],
    *,
    settings: Settings,
    actor: User | None = None,
    index: clusters.TextIndex | None = None,
) -> list[tuple[Detection, bool]]:
    """``record`` for a batch, in order: one read of the live clusters, one insert per table
    and one alert check per touched cluster, however many reports a flood brings at once."""
    results: list[tuple[Detection, bool] | None] = [None] * len(reports)
    known = await _existing_many(session, reports)
    fresh: list[tuple[int, Detection, list[Entity]]] = []
    seen: dict[tuple[DetectionSource, str], Detection] = {}
    now = utcnow()
    for i, report in enumerate(reports):
        key = (report.source, report.external_id) if report.external_id is not None else None
        if key is not None and (stored := known.get(key) or seen.get(key)) is not None:
            results[i] = (stored, False)
            continue
        detection, entities = _detection(report, settings=settings, actor=actor, now=now)
        if key is not None:
            seen[key] = detection
        fresh.append((i, detection, entities))
    if fresh:
        try:
            async with session.begin_nested():
                await _store(session, fresh, settings=settings, now=now, index=index)
        except IntegrityError:
            if len(reports) == 1 and reports[0].external_id is None:
                raise
            # A concurrent request stored one of these external ids between our read and
            # write: place them one by one, each deciding for itself.
            return [
                await _record_alone(session, report, settings=settings, actor=actor)
                for report in reports
            ]
        for i, detection, _ in fresh:
            results[i] = (detection, True)
    return [result for result in results if result is not None]


async def record_documents(
    session: AsyncSession,
    reports: Sequence[Report],
    *,
    settings: Settings,
    index: clusters.TextIndex | None = None,
) -> list[tuple[dict[str, Any], bool]]:
    """``record_many``, answered as ``detection_document``s made inside the transaction: a
    shared writer's callers resume after its session has closed, when a detection can no
    longer load its submitter."""
    stored = await record_many(session, reports, settings=settings, index=index)
    wanted = {d.submitted_by_id for d, _ in stored if d.submitted_by_id is not None}
    users = {u.id: u for u in await session.scalars(select(User).where(User.id.in_(wanted)))}
    for detection, _ in stored:
        if detection.submitted_by_id is not None:
            set_committed_value(detection, "submitted_by", users[detection.submitted_by_id])
    return [(detection_document(detection), created) for detection, created in stored]


async def _record_alone(
    session: AsyncSession, report: Report, *, settings: Settings, actor: User | None
) -> tuple[Detection, bool]:
    if report.external_id is not None:
        stored = await existing(session, report.source, report.external_id)
        if stored is not None:
            return stored, False
    now = utcnow()
    detection, entities = _detection(report, settings=settings, actor=actor, now=now)
    try:
        async with session.begin_nested():
            await _store(session, [(0, detection, entities)], settings=settings, now=now)
    except IntegrityError:
        if report.external_id is None:
            raise
        stored = await existing(session, report.source, report.external_id)
        if stored is None:
            raise
        return stored, False
    return detection, True


def _detection(
    report: Report, *, settings: Settings, actor: User | None, now: datetime
) -> tuple[Detection, list[Entity]]:
    found = extract(
        "\n".join(part for part in (report.title, report.text, report.url) if part),
        official_domains=settings.official_domains,
        known_contracts=settings.known_contracts,
        hidden_urls=report.hidden_urls,
    )
    entities = _merged(found, report.given_entities)
    detection = Detection(
        source=report.source,
        external_id=report.external_id,
        origin=report.origin,
        title=report.title,
        text=report.text,
        severity=report.severity,
        url=report.url,
        reporter_id=report.reporter_id,
        reporter_name=report.reporter_name,
        reporter_created_at=report.reporter_created_at,
        location=dict(report.location),
        message_url=report.message_url,
        entities=[entity.as_json() for entity in entities],
        details=dict(report.details),
        submitted_by_id=actor.id if actor is not None else report.submitted_by_id,
        status=DetectionStatus.NEW,
        received_at=now,
        updated_at=now,
    )
    return detection, entities


async def _store(
    session: AsyncSession,
    fresh: Sequence[tuple[int, Detection, list[Entity]]],
    *,
    settings: Settings,
    now: datetime,
    index: clusters.TextIndex | None = None,
) -> None:
    detections = [detection for _, detection, _ in fresh]
    placed = await clusters.assign_batch(
        session, detections, settings=settings, now=now, index=index
    )
    rows = [
        {
            "detection_id": detection.id,
            "type": entity.type.value,
            "value": entity.value[:ENTITY_INDEX_LIMIT],
            "flags": list(entity.flags),
        }
        for _, detection, entities in fresh
        for entity in entities
    ]
    if rows:  # one executemany: their ids are never needed
        await session.execute(insert(DetectionEntity), rows)
    by_cluster: dict[Cluster, list[Detection]] = {}
    for detection, cluster in zip(detections, placed, strict=True):
        by_cluster.setdefault(cluster, []).append(detection)
    await alerts.after_reports(session, by_cluster, settings=settings, now=now)


def _merged(found: Sequence[Entity], given: Sequence[Entity]) -> list[Entity]:
    seen = {(entity.type, entity.value) for entity in found}
    merged = list(found)
    for entity in given:
        if (entity.type, entity.value) not in seen:
            seen.add((entity.type, entity.value))
            merged.append(entity)
    return merged


async def _existing_many(
    session: AsyncSession, reports: Sequence[Report]
) -> dict[tuple[DetectionSource, str], Detection]:
    wanted: dict[DetectionSource, set[str]] = {}
    for report in reports:
        if report.external_id is not None:
            wanted.setdefault(report.source, set()).add(report.external_id)
    found: dict[tuple[DetectionSource, str], Detection] = {}
    for source, ids in wanted.items():
        for detection in await session.scalars(
            select(Detection).where(
                Detection.source == source, Detection.external_id.in_(sorted(ids))
            )
        ):
            found[(source, detection.external_id or "")] = detection
    return found


async def existing(
    session: AsyncSession, source: DetectionSource, external_id: str
) -> Detection | None:
    found: Detection | None = await session.scalar(
        select(Detection).where(Detection.source == source, Detection.external_id == external_id)
    )
    return found


async def list_detections(
    session: AsyncSession, *, limit: int = 100, source: DetectionSource | None = None
) -> list[Detection]:
    """Newest first."""
    query = select(Detection).order_by(Detection.id.desc()).limit(limit)
    if source is not None:
        query = query.where(Detection.source == source)
    return list((await session.scalars(query)).all())


def detection_document(detection: Detection) -> dict[str, Any]:
    """The JSON form shared by the API and ``comms detection list --json``."""
    return {
        "id": detection.id,
        "reference": detection.reference,
        "source": detection.source.value,
        "origin": detection.origin,
        "external_id": detection.external_id,
        "title": detection.title,
        "text": detection.text,
        "severity": detection.severity.value if detection.severity else None,
        "status": detection.status.value,
        "url": detection.url,
        "reporter": {
            "id": detection.reporter_id,
            "name": detection.reporter_name,
            "created_at": detection.reporter_created_at.isoformat()
            if detection.reporter_created_at
            else None,
        },
        "location": detection.location,
        "message_url": detection.message_url,
        "entities": detection.entities,
        "details": detection.details,
        "submitted_by": detection.submitted_by.username if detection.submitted_by else None,
        "received_at": detection.received_at.isoformat(),
    }
