"""What responders do with a cluster: look at it, dismiss it, merge it, attach it to an incident,
or escalate it into a new one. Every action checks the actor's role and is audited; attaching
and escalating also write the Incident Log, so the incident's record says where it came from.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.clock import utcnow
from comms.detections import clusters as clustering
from comms.detections.models import (
    Cluster,
    ClusterStatus,
    Detection,
    DetectionStatus,
)
from comms.enums import Severity
from comms.errors import FieldProblem, InvalidInput, NotFound, RuleViolation
from comms.incidents import service as incidents
from comms.incidents.models import Incident, LogKind
from comms.permissions import Action, require
from comms.settings import Settings
from comms.text import clean_text, one_line_inert
from comms.users.models import User

DECIDED = (ClusterStatus.DISMISSED, ClusterStatus.ESCALATED, ClusterStatus.MERGED)


async def list_clusters(session: AsyncSession, *, limit: int = 100) -> list[Cluster]:
    """Live clusters first, then the newest and largest."""
    live = Cluster.status.in_(clustering.LIVE)
    query = (
        select(Cluster)
        .order_by(live.desc(), Cluster.last_seen.desc(), Cluster.reports.desc(), Cluster.id.desc())
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


async def require_cluster(session: AsyncSession, cluster_id: int, *, field: str = "id") -> Cluster:
    cluster = await session.get(Cluster, cluster_id)
    if cluster is None:
        raise NotFound(f"no cluster {cluster_id}", field=field)
    return cluster


async def documents(session: AsyncSession, found: list[Cluster]) -> list[dict[str, Any]]:
    """The JSON form of ``comms cluster list --json`` (and the panel's, later)."""
    entities = await clustering.entities_of(session, [c.id for c in found])
    keys = await _incident_keys(session, [c.incident_id for c in found if c.incident_id])
    return [
        {
            "id": c.id,
            "reference": c.reference,
            "status": c.status.value,
            "kind": c.kind.value,
            "reports": c.reports,
            "reporters": c.reporters,
            "first_seen": c.first_seen.isoformat(),
            "last_seen": c.last_seen.isoformat(),
            "entities": entities.get(c.id, []),
            "incident": keys.get(c.incident_id) if c.incident_id else None,
            "merged_into": c.merged_into_id,
            "reason": c.reason,
        }
        for c in found
    ]


async def detections_of(
    session: AsyncSession, cluster: Cluster, *, limit: int = 50
) -> list[Detection]:
    """The cluster's newest reports."""
    query = (
        select(Detection)
        .where(Detection.cluster_id == cluster.id)
        .order_by(Detection.id.desc())
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


async def _incident_keys(session: AsyncSession, ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await session.execute(select(Incident.id, Incident.key).where(Incident.id.in_(ids)))
    return {int(incident_id): str(key) for incident_id, key in rows.all()}


def _undecided(cluster: Cluster) -> None:
    if cluster.status in DECIDED:
        raise RuleViolation(
            "cluster.decided",
            f"{cluster.reference} is already {cluster.status.value}",
        )


async def dismiss(session: AsyncSession, cluster: Cluster, *, reason: str, actor: User) -> None:
    """Not an event (noise, a known issue, a scam already handled); the reason is kept."""
    require(actor, Action.DETECTION_TRIAGE)
    _undecided(cluster)
    why = clean_text("reason", reason, required=True, limit=1000)
    cluster.status = ClusterStatus.DISMISSED
    cluster.reason = why
    await _mark_detections(session, cluster, DetectionStatus.DISMISSED)
    await audit.record(
        session,
        actor=actor.username,
        action="cluster.dismiss",
        target=f"cluster:{cluster.id}",
        details={"reason": why, "reports": cluster.reports},
    )


async def merge(session: AsyncSession, cluster: Cluster, into: Cluster, *, actor: User) -> None:
    """Two clusters are one event: ``cluster``'s reports move to ``into``."""
    require(actor, Action.DETECTION_TRIAGE)
    if cluster.id == into.id:
        raise InvalidInput(FieldProblem("other", "a cluster cannot be merged into itself"))
    _undecided(cluster)
    if into.status in (ClusterStatus.DISMISSED, ClusterStatus.MERGED):
        raise RuleViolation("cluster.decided", f"{into.reference} is {into.status.value}")
    await session.execute(
        update(Detection).where(Detection.cluster_id == cluster.id).values(cluster_id=into.id)
    )
    cluster.status = ClusterStatus.MERGED
    cluster.merged_into_id = into.id
    await session.flush()
    await clustering.refresh_counts(session, into)
    cluster.reports = cluster.reporters = 0
    await audit.record(
        session,
        actor=actor.username,
        action="cluster.merge",
        target=f"cluster:{cluster.id}",
        details={"into": into.id},
    )


async def attach(
    session: AsyncSession, cluster: Cluster, incident: Incident, *, actor: User
) -> None:
    """The reports belong to an incident already open; its log says so."""
    require(actor, Action.DETECTION_TRIAGE)
    if cluster.status in (ClusterStatus.DISMISSED, ClusterStatus.MERGED):
        raise RuleViolation("cluster.decided", f"{cluster.reference} is {cluster.status.value}")
    await _hand_over(
        session,
        cluster,
        incident,
        actor=actor,
        said="Community reports attached",
        action="cluster.attach",
        details={"incident": incident.key},
    )


async def escalate(
    session: AsyncSession,
    cluster: Cluster,
    *,
    severity: Severity,
    actor: User,
    title: str | None = None,
) -> Incident:
    """Open an incident from the cluster. Its detection time is the first report's, so the
    Incident Log measures time to detect from when the community first saw it."""
    require(actor, Action.DETECTION_TRIAGE)
    _undecided(cluster)
    incident = await incidents.open_incident(
        session,
        title=title or await suggested_title(session, cluster),
        severity=severity,
        actor=actor,
        summary=f"Opened from community reports: {_summary(cluster)}",
    )
    incident.detected_at = cluster.first_seen
    await _hand_over(
        session,
        cluster,
        incident,
        actor=actor,
        said="Escalated from community reports",
        action="cluster.escalate",
        details={"incident": incident.key, "severity": severity.value},
    )
    return incident


async def _hand_over(
    session: AsyncSession,
    cluster: Cluster,
    incident: Incident,
    *,
    actor: User,
    said: str,
    action: str,
    details: dict[str, Any],
) -> None:
    """The cluster and its reports now belong to ``incident``; its log and the audit say so."""
    cluster.status = ClusterStatus.ESCALATED
    cluster.incident_id = incident.id
    await _mark_detections(session, cluster, DetectionStatus.ESCALATED)
    await incidents.log(
        session,
        incident=incident,
        kind=LogKind.NOTE,
        actor=actor,
        text=f"{said}: {_summary(cluster)}",
    )
    await audit.record(
        session,
        actor=actor.username,
        action=action,
        target=f"cluster:{cluster.id}",
        details=details,
    )


async def suggested_title(session: AsyncSession, cluster: Cluster) -> str:
    """A neutral title from what the cluster knows (never a reporter's words verbatim)."""
    entities = (await clustering.entities_of(session, [cluster.id])).get(cluster.id, [])
    known = [e for e in entities if "known_contract" in e["flags"]]
    if cluster.kind.value == "phishing":
        domains = [e["value"] for e in entities if e["type"] == "domain"]
        return f"Phishing site reported: {domains[0]}" if domains else "Phishing reported"
    if known:
        return f"Community reports about {known[0]['value']}"
    return f"Community reports ({cluster.reports} reports, {cluster.reporters} members)"


async def draft_values(
    session: AsyncSession, cluster: Cluster, *, settings: Settings
) -> dict[str, str]:
    """What ``active-exploit-initial`` can start from: the affected contract (a known one
    first) and when reports began. Never the reporters' words: the Communication Manager
    writes the rest, and the Decision Makers approve it."""
    entities = (await clustering.entities_of(session, [cluster.id])).get(cluster.id, [])
    addresses = [e["value"] for e in entities if e["type"] == "address"]
    known = [
        e["value"]
        for e in entities
        if e["type"] == "address"
        and ("known_contract" in e["flags"] or settings.contract_label(e["value"]))
    ]
    contract = (known or addresses or [""])[0]
    label = settings.contract_label(contract) if contract else None
    values = {
        "summary": (
            f"Since {cluster.first_seen:%H:%M} UTC on {cluster.first_seen:%d %B %Y}, community "
            f"members have reported a problem"
            + (f" with the {label}" if label else "")
            + ". The team is investigating."
        ),
    }
    if contract:
        values["contract"] = contract
    if label:
        values["affected"] = label
    return values


def _summary(cluster: Cluster) -> str:
    return (
        f"{cluster.reference}, {cluster.reports} reports from {cluster.reporters} members, "
        f"first at {cluster.first_seen:%Y-%m-%d %H:%M} UTC"
    )


async def _mark_detections(
    session: AsyncSession, cluster: Cluster, status: DetectionStatus
) -> None:
    await session.execute(
        update(Detection)
        .where(Detection.cluster_id == cluster.id)
        .values(status=status, updated_at=utcnow())
    )


def sample_line(detection: Detection) -> str:
    """One report on one terminal line, inert."""
    who = detection.reporter_name or detection.origin or "-"
    return (
        f"{detection.reference:<8} {detection.received_at:%H:%M:%S}  {detection.source.value:<9} "
        f"{one_line_inert(who, limit=20):<20} {one_line_inert(detection.title or detection.text)}"
    )
