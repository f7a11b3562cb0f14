"""Prometheus Alertmanager's webhook (payload version 4), taken as Alertmanager sends it.

Alertmanager resends the whole group on every notification (``group_interval``,
``repeat_interval``) and retries when we answer 5xx, so one alert arrives many times. An alert
is one detection, identified by the group key, its fingerprint and its start time: a repeat
changes nothing, a ``resolved`` status marks the detection resolved, and a new start of the same
alert (it fired again after resolving) is a new detection. What Alertmanager could not fit
(``truncatedAlerts``) is recorded on every detection of that notification.

Alertmanager does not change its payload for us, so nothing in it is refused for being long:
text is cut at the detection's limits instead (a 422 would be retried for ever).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from comms.clock import utcnow
from comms.detections import service
from comms.detections.models import TEXT_LIMIT, DetectionSeverity, DetectionSource, DetectionStatus
from comms.settings import Settings
from comms.text import one_line_inert
from comms.users.models import User

SEVERITIES = {
    "critical": DetectionSeverity.CRITICAL,
    "page": DetectionSeverity.CRITICAL,
    "high": DetectionSeverity.HIGH,
    "error": DetectionSeverity.HIGH,
    "warning": DetectionSeverity.WARNING,
    "warn": DetectionSeverity.WARNING,
    "info": DetectionSeverity.INFO,
    "none": DetectionSeverity.INFO,
}


@dataclass(frozen=True)
class Alert:
    status: str  # firing or resolved
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str
    generator_url: str
    fingerprint: str


@dataclass(frozen=True)
class Notification:
    group_key: str
    status: str
    receiver: str
    truncated_alerts: int
    external_url: str
    alerts: list[Alert]


@dataclass(frozen=True)
class Outcome:
    created: list[int]
    unchanged: list[int]
    resolved: list[int]


def external_id(group_key: str, alert: Alert) -> str:
    """What makes two deliveries the same alert (hashed: group keys can be long)."""
    key = "\x1f".join((group_key, alert.fingerprint, alert.starts_at))
    return "am:" + hashlib.sha256(key.encode()).hexdigest()


async def receive(
    session: AsyncSession, notification: Notification, *, settings: Settings, actor: User | None
) -> Outcome:
    created: list[int] = []
    unchanged: list[int] = []
    resolved: list[int] = []
    for alert in notification.alerts:
        labels, annotations = alert.labels, alert.annotations
        name = labels.get("alertname", "alert")
        title = one_line_inert(annotations.get("summary") or name, limit=200)
        text = "\n\n".join(
            part for part in (annotations.get("description", ""), _labels_line(labels)) if part
        )
        url = alert.generator_url if alert.generator_url.startswith(("http://", "https://")) else ""
        report = service.Report(
            source=DetectionSource.ALERTMANAGER,
            external_id=external_id(notification.group_key, alert),
            origin=one_line_inert(notification.receiver, limit=64),
            title=title,
            text=text.replace("\x00", "\ufffd")[:TEXT_LIMIT],
            severity=SEVERITIES.get(labels.get("severity", "").lower(), DetectionSeverity.WARNING),
            url=url[:2000],
            details={
                "group_key": notification.group_key,
                "receiver": notification.receiver,
                "fingerprint": alert.fingerprint,
                "starts_at": alert.starts_at,
                "ends_at": alert.ends_at,
                "labels": labels,
                "annotations": annotations,
                "truncated_alerts": notification.truncated_alerts,
                "external_url": notification.external_url,
            },
        )
        detection, new = await service.record(session, report, settings=settings, actor=actor)
        (created if new else unchanged).append(detection.id)
        if alert.status == "resolved":
            changed = False
            if detection.status is DetectionStatus.NEW:  # a person's decision stays
                detection.status = DetectionStatus.RESOLVED
                changed = True
            if detection.details.get("ends_at") != alert.ends_at:
                detection.details = {**detection.details, "ends_at": alert.ends_at}
                changed = True
            if changed:
                detection.updated_at = utcnow()
                resolved.append(detection.id)
    await session.flush()
    return Outcome(created=created, unchanged=unchanged, resolved=resolved)


def _labels_line(labels: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))
