"""Clustering: reports of one real event become one cluster, so the responders hear of it once.

A new detection joins a live cluster (open, alerted or escalated, and whose last report is
within ``cluster_window_minutes``) that shares a value with it: an EVM address, a transaction
hash, or a domain that is not ours. Failing that, it joins the live cluster of the most similar
recent report, when both texts have enough content words. Otherwise it opens a new cluster.

Guards against one giant cluster that would swallow every report of a busy day:

- official domains never count (every honest report links them), nor the addresses in
  ``COMMS_COMMON_CONTRACTS`` (the protocol's token, a router);
- a value already shared by ``cluster_value_max_clusters`` live clusters stops joining them;
- text similarity is rapidfuzz's ``token_set_ratio`` over content words, which scores 100
  whenever one text's words are a subset of the other's: so it applies only when both texts
  have at least ``cluster_text_min_words`` content words ("hacked!" alone joins nothing). The
  threshold is measured on a corpus in ``tests/detections/test_clusters.py``.

A report naming a look-alike domain belongs to a phishing cluster (its own kind, labelled so in
the alert), formed around that domain.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from rapidfuzz import fuzz, process
from sqlalchemy import String, and_, case, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from comms.detections.entities import LOOKALIKE, OFFICIAL
from comms.detections.models import (
    Cluster,
    ClusterKind,
    ClusterStatus,
    Detection,
    DetectionEntity,
)
from comms.settings import Settings

LIVE = (ClusterStatus.OPEN, ClusterStatus.ALERTED, ClusterStatus.ESCALATED)
RECENT_TEXTS = 500  # reports compared for text similarity (the newest in live clusters)

# Words that say nothing about which event a report is about.
_STOPWORDS = """the and for are was were has have had been being this that these those with from
    into onto over under about after before just now what when where which who why how you your
    yours our ours they them their there here its it's not but all any can could would should
    will shall may might must does did doing done get got also very really please help someone
    anyone guys everyone team admin admins mods bot report reporting hey hello sir pls plz
    thanks thank urgent asap"""
STOPWORDS = frozenset(_STOPWORDS.split())
_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)


def content_words(text: str) -> list[str]:
    """The words of ``text`` that can tell two events apart: letters only, three or more,
    lower case, without stop words (hex, numbers and links are the entities' business)."""
    without_links = re.sub(r"\S*[/.@]\S*|0x[0-9a-fA-F]+", " ", text)
    return [
        w for w in (m.group().lower() for m in _WORD.finditer(without_links)) if w not in STOPWORDS
    ]


def _keys(
    entities: Iterable[dict[str, Any]], settings: Settings
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(values that join clusters, look-alike domains) of one detection."""
    common = set(settings.common_contracts)
    keys: set[tuple[str, str]] = set()
    lookalikes: set[tuple[str, str]] = set()
    for entity in entities:
        kind, value, flags = entity["type"], entity["value"], entity.get("flags", [])
        if (kind == "address" and value.lower() not in common) or kind == "tx":
            keys.add((kind, value))
        elif kind == "domain" and OFFICIAL not in flags:
            keys.add((kind, value))
            if LOOKALIKE in flags:
                lookalikes.add((kind, value))
    return keys, lookalikes


async def assign(
    session: AsyncSession, detection: Detection, *, settings: Settings, now: datetime
) -> Cluster:
    """Put ``detection`` (flushed, with its entity rows) into a cluster; the cluster."""
    since = now - timedelta(minutes=settings.cluster_window_minutes)
    keys, lookalikes = _keys(detection.entities, settings)
    kind = ClusterKind.PHISHING if lookalikes else ClusterKind.REPORTS
    cluster = await _by_values(session, lookalikes or keys, kind, since, settings, detection.id)
    if cluster is None and not lookalikes:
        cluster = await _by_text(session, detection, since, settings)
    if cluster is None:
        cluster = Cluster(kind=kind, first_seen=now, last_seen=now, reports=0, reporters=0)
        session.add(cluster)
        await session.flush()
    detection.cluster_id = cluster.id
    await session.flush()
    await refresh_counts(session, cluster)
    cluster.last_seen = max(cluster.last_seen, now)
    return cluster


async def _by_values(
    session: AsyncSession,
    keys: set[tuple[str, str]],
    kind: ClusterKind,
    since: datetime,
    settings: Settings,
    own_id: int,
) -> Cluster | None:
    if not keys:
        return None
    matches = or_(
        *(and_(DetectionEntity.type == t, DetectionEntity.value == v) for t, v in sorted(keys))
    )
    rows = (
        await session.execute(
            select(DetectionEntity.type, DetectionEntity.value, Cluster.id, Cluster.last_seen)
            .join(Detection, Detection.id == DetectionEntity.detection_id)
            .join(Cluster, Cluster.id == Detection.cluster_id)
            .where(
                matches,
                DetectionEntity.detection_id != own_id,
                Cluster.status.in_(LIVE),
                Cluster.kind == kind,
                Cluster.last_seen >= since,
            )
            .distinct()
        )
    ).all()
    clusters_of: dict[tuple[str, str], set[int]] = defaultdict(set)
    last_seen: dict[int, datetime] = {}
    for entity_type, value, cluster_id, seen in rows:
        clusters_of[(entity_type, value)].add(cluster_id)
        last_seen[cluster_id] = seen
    shared: dict[int, int] = defaultdict(int)
    for ids in clusters_of.values():
        if len(ids) >= settings.cluster_value_max_clusters:
            continue  # ubiquitous: it no longer tells events apart
        for cluster_id in ids:
            shared[cluster_id] += 1
    if not shared:
        return None
    best = max(shared, key=lambda cid: (shared[cid], last_seen[cid], cid))
    return await session.get(Cluster, best)


async def _by_text(
    session: AsyncSession, detection: Detection, since: datetime, settings: Settings
) -> Cluster | None:
    words = content_words(f"{detection.title}\n{detection.text}")
    if len(words) < settings.cluster_text_min_words:
        return None
    recent = (
        await session.execute(
            select(Detection.title, Detection.text, Detection.cluster_id)
            .join(Cluster, Cluster.id == Detection.cluster_id)
            .where(
                Detection.id != detection.id,
                Cluster.status.in_(LIVE),
                Cluster.kind == ClusterKind.REPORTS,
                Cluster.last_seen >= since,
            )
            .order_by(Detection.id.desc())
            .limit(RECENT_TEXTS)
        )
    ).all()
    choices: list[str] = []
    owners: list[int] = []
    for title, text, cluster_id in recent:
        theirs = content_words(f"{title}\n{text}")
        if len(theirs) >= settings.cluster_text_min_words and cluster_id is not None:
            choices.append(" ".join(theirs))
            owners.append(cluster_id)
    if not choices:
        return None
    found = process.extractOne(
        " ".join(words),
        choices,
        scorer=fuzz.token_set_ratio,
        score_cutoff=settings.cluster_text_similarity,
    )
    if found is None:
        return None
    return await session.get(Cluster, owners[found[2]])


def distinct_reporters() -> ColumnElement[int]:
    """How many distinct members reported (one per platform account; monitors, which have no
    reporter id, count as none)."""
    member = case(
        (
            Detection.reporter_id != "",
            cast(Detection.source, String) + ":" + Detection.reporter_id,
        )
    )
    return func.count(func.distinct(member))


async def refresh_counts(session: AsyncSession, cluster: Cluster) -> None:
    """Reports and distinct reporters (a member per platform; a monitor counts as none)."""
    reports, reporters, first, last = (
        await session.execute(
            select(
                func.count(Detection.id),
                distinct_reporters(),
                func.min(Detection.received_at),
                func.max(Detection.received_at),
            ).where(Detection.cluster_id == cluster.id)
        )
    ).one()
    cluster.reports = int(reports)
    cluster.reporters = int(reporters)
    if first is not None:
        cluster.first_seen = min(cluster.first_seen, first)
        cluster.last_seen = max(cluster.last_seen, last)


async def entities_of(
    session: AsyncSession, cluster_ids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """Each cluster's distinct entities ``{type, value, flags}``, in order of first report."""
    rows = (
        await session.execute(
            select(
                Detection.cluster_id,
                DetectionEntity.type,
                DetectionEntity.value,
                DetectionEntity.flags,
            )
            .join(Detection, Detection.id == DetectionEntity.detection_id)
            .where(Detection.cluster_id.in_(cluster_ids))
            .order_by(DetectionEntity.id)
        )
    ).all()
    found: dict[int, list[dict[str, Any]]] = {cid: [] for cid in cluster_ids}
    seen: set[tuple[int, str, str]] = set()
    for cluster_id, kind, value, flags in rows:
        if cluster_id is not None and (cluster_id, kind, value) not in seen:
            seen.add((cluster_id, kind, value))
            found[cluster_id].append({"type": kind, "value": value, "flags": list(flags)})
    return found
