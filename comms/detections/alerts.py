"""When a cluster alerts the responders, and what the alert says.

A cluster alerts once: when ``cluster_alert_reporters`` distinct members reported within
``cluster_alert_minutes``, or at once when a report names a known contract or a monitor calls
it critical. From then on every new report brings the same message up to date (an edit, at most
one per 30 s: ``comms.outbox.notify.responder_alert``), never a new post. Everything in the
alert that reporters wrote goes through the fixed template's escaping: no mention, no live link.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from comms.detections import clusters as clustering
from comms.detections.entities import KNOWN_CONTRACT
from comms.detections.models import (
    Cluster,
    ClusterStatus,
    Detection,
    DetectionEntity,
    DetectionSeverity,
)
from comms.enums import Platform
from comms.errors import CommsError
from comms.outbox import notify
from comms.outbox.models import Notification
from comms.outbox.notifications import Refresher
from comms.settings import Settings
from comms.text import one_line_inert

log = logging.getLogger("comms.detections")

SOURCES = {"discord": "Discord", "telegram": "Telegram", "webhook": "monitoring"}


async def after_reports(
    session: AsyncSession,
    reported: Mapping[Cluster, Sequence[Detection]],
    *,
    settings: Settings,
    now: datetime,
) -> None:
    """Alert the responders about every cluster the newly ``reported`` detections (per
    cluster, oldest first) made cross the line, and see that the alerts already raised are
    brought up to date. An alert that cannot be written is logged: it never loses a report."""
    updates: list[Cluster] = []
    for cluster, detections in reported.items():
        if cluster.alerted_at is not None:
            if cluster.status not in (ClusterStatus.DISMISSED, ClusterStatus.MERGED):
                updates.append(cluster)
            continue
        if cluster.status is not ClusterStatus.OPEN:
            continue  # decided by a person before it ever alerted
        if not await crosses(session, cluster, detections, settings=settings, now=now):
            continue
        try:
            async with session.begin_nested():
                cluster.status = ClusterStatus.ALERTED
                cluster.alerted_at = now
                await notify.responder_alert(
                    session,
                    settings=settings,
                    cluster_id=cluster.id,
                    values=await alert_values(session, cluster, detections[-1]),
                    now=now,
                )
        except CommsError:
            log.exception("could not alert the responders about %s", cluster.reference)
    if not updates:
        return
    try:
        async with session.begin_nested():
            # The messages are brought up to date when their edits are sent.
            await notify.responder_alerts_due(session, cluster_ids=[c.id for c in updates], now=now)
    except CommsError:
        log.exception("could not update the responders' alerts")


def refresher(settings: Settings) -> Refresher:
    """For the worker: a responders' alert (or its edit) as it should read when sent."""

    async def refresh(session: AsyncSession, note: Notification) -> str | None:
        cluster_id = notify.alert_cluster_id(note)
        cluster = await session.get(Cluster, cluster_id) if cluster_id is not None else None
        if cluster is None:
            return None
        latest = await session.scalar(
            select(Detection)
            .where(Detection.cluster_id == cluster.id)
            .order_by(Detection.id.desc())
            .limit(1)
        )
        if latest is None:
            return None
        values = await alert_values(session, cluster, latest)
        return notify.alert_text(settings, values, Platform(note.destination.platform))

    return refresh


async def crosses(
    session: AsyncSession,
    cluster: Cluster,
    reported: Sequence[Detection],
    *,
    settings: Settings,
    now: datetime,
) -> bool:
    for detection in reported:
        if detection.severity is DetectionSeverity.CRITICAL:
            return True
        if any(KNOWN_CONTRACT in entity.get("flags", []) for entity in detection.entities):
            return True
    if cluster.reporters < settings.cluster_alert_reporters:
        return False  # not even counting older reports: no need to count recent ones
    since = now - timedelta(minutes=settings.cluster_alert_minutes)
    recent = await session.scalar(
        select(clustering.distinct_reporters()).where(
            Detection.cluster_id == cluster.id, Detection.received_at >= since
        )
    )
    return int(recent or 0) >= settings.cluster_alert_reporters


async def alert_values(
    session: AsyncSession, cluster: Cluster, latest: Detection
) -> dict[str, str]:
    """The template's variables; the untrusted ones are cut to the template's limits."""
    # The first distinct values of each kind, counted by the database: a cluster in a flood
    # has thousands of entity rows, and this runs for every batch of reports it takes.
    first_of = func.min(DetectionEntity.id)
    ranked = (
        select(DetectionEntity.type, DetectionEntity.value, first_of.label("first"))
        .join(Detection, Detection.id == DetectionEntity.detection_id)
        .where(Detection.cluster_id == cluster.id)
        .group_by(DetectionEntity.type, DetectionEntity.value)
        .subquery()
    )
    numbered = select(
        ranked.c.type,
        ranked.c.value,
        func.row_number().over(partition_by=ranked.c.type, order_by=ranked.c.first).label("n"),
        ranked.c.first,
    ).subquery()
    entities = (
        await session.execute(
            select(numbered.c.type, numbered.c.value)
            .where(numbered.c.n <= 10)
            .order_by(numbered.c.first)
        )
    ).all()

    def joined(kind: str, limit: int) -> str:
        values = [value for type_, value in entities if type_ == kind]
        return _cut(", ".join(values[:10]), limit)

    reporters = (
        await session.scalars(
            select(Detection.reporter_name)
            .where(Detection.cluster_id == cluster.id, Detection.reporter_name != "")
            .distinct()
            .limit(20)
        )
    ).all()
    sources = (
        await session.scalars(
            select(Detection.source).where(Detection.cluster_id == cluster.id).distinct()
        )
    ).all()
    phishing = cluster.kind.value == "phishing"
    return {
        "cluster": f"{cluster.reference} (phishing)" if phishing else cluster.reference,
        "report_count": str(cluster.reports),
        "reporter_count": str(cluster.reporters),
        "first_seen": f"{cluster.first_seen:%Y-%m-%dT%H:%MZ}",
        "last_seen": f"{cluster.last_seen:%Y-%m-%dT%H:%MZ}",
        "sources": ", ".join(sorted(SOURCES.get(s.value, s.value) for s in sources)),
        "reporters": _cut(", ".join(one_line_inert(r, limit=40) for r in reporters), 800),
        "addresses": joined("address", 1200),
        "tx_hashes": joined("tx", 1400),
        "domains": joined("domain", 800),
        "sample": one_line_inert(latest.title or latest.text, limit=1000),
    }


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
