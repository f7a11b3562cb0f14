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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rapidfuzz import fuzz, process
from sqlalchemy import String, and_, case, cast, func, select
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


@dataclass
class _Live:
    """What one batch knows of the live clusters, read once and kept up to date while the
    batch's reports are placed (a flood arrives in batches: one read per batch, not per report)."""

    settings: Settings
    since: datetime
    clusters_of: dict[tuple[str, str], set[Cluster]] = field(default_factory=dict)
    # Text candidates: a cluster this batch has loaded or opened, or the id of a live one not
    # loaded (a flood's recent texts name hundreds of clusters; one of them is chosen).
    keys_of: dict[Cluster | int, set[tuple[str, str]]] = field(default_factory=dict)
    texts: dict[str, Cluster | int] = field(default_factory=dict)  # content words, oldest first
    live_ids: set[int] = field(default_factory=set)  # live report clusters among those ids
    opened: list[Cluster] = field(default_factory=list)  # by this batch

    def by_values(self, keys: set[tuple[str, str]], kind: ClusterKind) -> Cluster | None:
        shared: dict[Cluster, int] = defaultdict(int)
        for key in keys:
            owners = [c for c in self.clusters_of.get(key, ()) if self._live(c, kind)]
            if len(owners) >= self.settings.cluster_value_max_clusters:
                continue  # ubiquitous: it no longer tells events apart
            for cluster in owners:
                shared[cluster] += 1
        if not shared:
            return None
        return max(shared, key=lambda c: (shared[c], c.last_seen, self._rank(c)))

    def _rank(self, cluster: Cluster) -> int:
        """Newer clusters rank higher, also those this batch opened (no id yet)."""
        if cluster.id is not None:
            return cluster.id
        return 2**62 + self.opened.index(cluster)

    def by_text(self, words: list[str], keys: set[tuple[str, str]]) -> Cluster | int | None:
        """The cluster of the most similar recent text; never one that names values when this
        report names others (two drainer addresses, or a drainer and an unrelated transaction,
        are two events however alike the wording: the responders can merge two clusters, but
        a report pulled into the wrong event drags its value and every later report with it)."""
        if len(words) < self.settings.cluster_text_min_words:
            return None
        choices = [
            (text, cluster)
            for text, cluster in reversed(self.texts.items())  # newest first
            if self._live(cluster, ClusterKind.REPORTS) and not self._conflicts(cluster, keys)
        ]
        if not choices:
            return None
        found = process.extractOne(
            " ".join(words),
            [text for text, _ in choices],
            scorer=fuzz.token_set_ratio,
            score_cutoff=self.settings.cluster_text_similarity,
        )
        return None if found is None else choices[found[2]][1]

    def _conflicts(self, cluster: Cluster | int, keys: set[tuple[str, str]]) -> bool:
        theirs = self.keys_of.get(cluster, set())
        return bool(keys) and bool(theirs) and not keys & theirs

    def _live(self, cluster: Cluster | int, kind: ClusterKind) -> bool:
        if isinstance(cluster, int):
            return kind is ClusterKind.REPORTS and cluster in self.live_ids
        return cluster.kind is kind and cluster.status in LIVE and cluster.last_seen >= self.since

    def adopt(self, cluster: Cluster) -> None:
        """``cluster`` was chosen by its id and is now loaded: it stands for that id."""
        for text, owner in self.texts.items():
            if owner == cluster.id and isinstance(owner, int):
                self.texts[text] = cluster
        self.keys_of.setdefault(cluster, set()).update(self.keys_of.pop(cluster.id, set()))
        self.live_ids.discard(cluster.id)

    def placed(
        self, cluster: Cluster, keys: set[tuple[str, str]], words: list[str], now: datetime
    ) -> None:
        for key in keys:
            self.clusters_of.setdefault(key, set()).add(cluster)
        self.keys_of.setdefault(cluster, set()).update(keys)
        cluster.last_seen = max(cluster.last_seen, now)
        if (
            len(words) >= self.settings.cluster_text_min_words
            and cluster.kind is ClusterKind.REPORTS
        ):
            text = " ".join(words)
            self.texts.pop(text, None)
            self.texts[text] = cluster


async def assign(
    session: AsyncSession, detection: Detection, *, settings: Settings, now: datetime
) -> Cluster:
    """Put ``detection`` (not yet flushed, or flushed without a cluster) into a cluster."""
    return (await assign_batch(session, [detection], settings=settings, now=now))[0]


async def assign_batch(
    session: AsyncSession,
    detections: Sequence[Detection],
    *,
    settings: Settings,
    now: datetime,
    index: TextIndex | None = None,
) -> list[Cluster]:
    """Each detection's cluster (in order), new clusters flushed and every cluster's counts
    brought up to date; sets ``cluster_id`` on the detections."""
    live = await _read_live(session, detections, settings=settings, now=now, index=index)
    placed: list[Cluster] = []
    for detection in detections:
        keys, lookalikes = _keys(detection.entities, settings)
        kind = ClusterKind.PHISHING if lookalikes else ClusterKind.REPORTS
        words = content_words(f"{detection.title}\n{detection.text}")
        cluster = live.by_values(lookalikes or keys, kind)
        if cluster is None and not lookalikes:
            chosen = live.by_text(words, keys)
            if isinstance(chosen, int):
                cluster = await session.get(Cluster, chosen)
                if cluster is not None:
                    live.adopt(cluster)
            else:
                cluster = chosen
        if cluster is None:
            cluster = Cluster(
                kind=kind,
                status=ClusterStatus.OPEN,
                first_seen=now,
                last_seen=now,
                reports=0,
                reporters=0,
            )
            session.add(cluster)
            live.opened.append(cluster)
        live.placed(cluster, keys, words, now)
        placed.append(cluster)
    await session.flush()  # the new clusters get their ids
    for detection, cluster in zip(detections, placed, strict=True):
        detection.cluster_id = cluster.id
    session.add_all(detections)  # new ones are inserted with their cluster
    await session.flush()
    await refresh_counts_of(session, list(dict.fromkeys(placed)))
    return placed


async def _read_live(
    session: AsyncSession,
    detections: Sequence[Detection],
    *,
    settings: Settings,
    now: datetime,
    index: TextIndex | None,
) -> _Live:
    live = _Live(settings=settings, since=now - timedelta(minutes=settings.cluster_window_minutes))
    values = {value for d in detections for _, value in _keys(d.entities, settings)[0]}
    own = [d.id for d in detections if d.id is not None]
    live_clusters = and_(Cluster.status.in_(LIVE), Cluster.last_seen >= live.since)
    rows: list[tuple[str, str, Cluster]] = []
    if values:
        found = await session.execute(
            select(DetectionEntity.type, DetectionEntity.value, Cluster)
            .join(Detection, Detection.id == DetectionEntity.detection_id)
            .join(Cluster, Cluster.id == Detection.cluster_id)
            .where(
                DetectionEntity.value.in_(sorted(values)), Detection.id.not_in(own), live_clusters
            )
            .distinct()
        )
        rows = [(t, v, c) for t, v, c in found.all()]
    for entity_type, value, cluster in rows:
        live.clusters_of.setdefault((entity_type, value), set()).add(cluster)
    if not any(
        len(content_words(f"{d.title}\n{d.text}")) >= settings.cluster_text_min_words
        for d in detections
    ):
        return live
    index = index if index is not None else TextIndex()
    await index.refresh(session, settings=settings, since=live.since)
    live.live_ids = set(
        (
            await session.scalars(
                select(Cluster.id).where(
                    Cluster.id.in_(set(index.texts.values())),
                    Cluster.kind == ClusterKind.REPORTS,
                    live_clusters,
                )
            )
        ).all()
    )
    for text, cluster_id in index.texts.items():  # oldest first
        if cluster_id in live.live_ids:
            live.texts[text] = cluster_id
    for cluster_id in live.live_ids:
        live.keys_of[cluster_id] = set(index.keys_of.get(cluster_id, ()))
    return live


class TextIndex:
    """The recent texts of reports in live clusters (content words → cluster id) and the
    values those clusters name, kept from one batch to the next by a long-lived writer (the
    listeners' intake): each batch reads only the reports stored since the last one, instead
    of the last ``RECENT_TEXTS`` reports again. Only committed reports enter it (read back
    from the database), so a batch that rolls back leaves nothing behind. Cluster states
    (dismissed, merged, out of the window) are read fresh for every batch."""

    def __init__(self, limit: int = RECENT_TEXTS) -> None:
        self.limit = limit
        self.texts: dict[str, int] = {}  # oldest first
        self.keys_of: dict[int, set[tuple[str, str]]] = {}
        self.seen = 0  # the newest detection read

    async def refresh(self, session: AsyncSession, *, settings: Settings, since: datetime) -> None:
        rows = (
            await session.execute(
                select(
                    Detection.id,
                    Detection.title,
                    Detection.text,
                    Detection.entities,
                    Detection.cluster_id,
                )
                .join(Cluster, Cluster.id == Detection.cluster_id)
                .where(
                    Detection.id > self.seen,
                    Cluster.kind == ClusterKind.REPORTS,
                    Cluster.status.in_(LIVE),
                    Cluster.last_seen >= since,
                )
                .order_by(Detection.id.desc())
                .limit(self.limit)
            )
        ).all()
        for detection_id, title, text, entities, cluster_id in reversed(rows):
            self.seen = max(self.seen, detection_id)
            if cluster_id is None:
                continue
            self.keys_of.setdefault(cluster_id, set()).update(_keys(entities, settings)[0])
            words = content_words(f"{title}\n{text}")
            if len(words) >= settings.cluster_text_min_words:
                key = " ".join(words)
                self.texts.pop(key, None)
                self.texts[key] = cluster_id
        while len(self.texts) > self.limit:
            del self.texts[next(iter(self.texts))]
        kept = set(self.texts.values())
        for cluster_id in [c for c in self.keys_of if c not in kept]:
            del self.keys_of[cluster_id]


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
    await refresh_counts_of(session, [cluster])


async def refresh_counts_of(session: AsyncSession, clusters: Sequence[Cluster]) -> None:
    """``refresh_counts`` for several clusters in one query."""
    by_id = {cluster.id: cluster for cluster in clusters}
    rows = await session.execute(
        select(
            Detection.cluster_id,
            func.count(Detection.id),
            distinct_reporters(),
            func.min(Detection.received_at),
            func.max(Detection.received_at),
        )
        .where(Detection.cluster_id.in_(list(by_id)))
        .group_by(Detection.cluster_id)
    )
    counted: dict[int, tuple[int, int, datetime, datetime]] = {
        cid: (reports, reporters, first, last)
        for cid, reports, reporters, first, last in rows.all()
        if cid is not None
    }
    for cluster_id, cluster in by_id.items():
        if cluster_id not in counted:
            cluster.reports = cluster.reporters = 0
            continue
        reports, reporters, first, last = counted[cluster_id]
        cluster.reports = int(reports)
        cluster.reporters = int(reporters)
        if first is not None:
            cluster.first_seen = min(cluster.first_seen, first)
            cluster.last_seen = max(cluster.last_seen, last)


async def entities_of(
    session: AsyncSession, cluster_ids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """Each cluster's distinct entities ``{type, value, flags}``, in order of first report
    (the flags as first found). Made distinct by the database: a flood's clusters hold
    thousands of entity rows and only a handful of distinct values."""
    first = (
        select(
            Detection.cluster_id.label("cluster_id"),
            func.min(DetectionEntity.id).label("first_id"),
        )
        .join(Detection, Detection.id == DetectionEntity.detection_id)
        .where(Detection.cluster_id.in_(cluster_ids))
        .group_by(Detection.cluster_id, DetectionEntity.type, DetectionEntity.value)
        .subquery()
    )
    rows = (
        await session.execute(
            select(
                first.c.cluster_id,
                DetectionEntity.type,
                DetectionEntity.value,
                DetectionEntity.flags,
            )
            .join(DetectionEntity, DetectionEntity.id == first.c.first_id)
            .order_by(first.c.first_id)
        )
    ).all()
    found: dict[int, list[dict[str, Any]]] = {cid: [] for cid in cluster_ids}
    for cluster_id, kind, value, flags in rows:
        if cluster_id is not None:
            found[cluster_id].append({"type": kind, "value": value, "flags": list(flags)})
    return found
