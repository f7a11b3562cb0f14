"""Clustering (comms/detections/clusters.py): shared values join, guards stop a giant cluster,
text similarity joins paraphrases and nothing else (measured on a corpus)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from sqlalchemy import select

from comms.clock import FrozenClock
from comms.db import Database
from comms.detections import service
from comms.detections.clusters import TextIndex, content_words
from comms.detections.models import Cluster, ClusterKind, Detection, DetectionSource
from comms.settings import Settings

A = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
B = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
C = "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB"
TX = "0x" + "cd" * 32

# Reports of four events in different words, and unrelated chatter (a flood's background).
EVENTS = {
    "bridge": [
        "The ETH bridge is being drained right now, withdrawals are failing",
        "bridge drained!!! withdrawals failing on the ETH bridge",
        "Withdrawals from the ETH bridge failing, looks like the bridge is drained",
        "is the eth bridge being drained? my withdrawal keeps failing",
        "ETH bridge exploit, funds draining out, withdrawals failing everywhere",
    ],
    "oracle": [
        "Oracle price for stETH is wrong, liquidations happening at bad prices",
        "stETH oracle price broken and people are getting liquidated at bad prices",
        "bad stETH price from the oracle is liquidating positions",
    ],
    "frontend": [
        "Website frontend is down, getting 502 errors on the swap page",
        "swap page frontend not loading, 502 error",
        "the frontend is down? swap page gives 502 errors",
    ],
    "impersonation": [
        "Someone DMed me claiming to be support asking for my seed phrase",
        "fake support account sent me a DM asking for my seed phrase",
    ],
}
NOISE = [
    "Staking rewards not showing in the dashboard since yesterday",
    "Governance proposal vote page shows wrong quorum numbers",
    "When is the next token unlock scheduled",
    "My transaction is pending for an hour, gas price too low",
    "Can someone explain how the liquidity mining rewards work",
    "hacked",
    "help hacked funds gone",
    "is this a scam or real airdrop announcement",
]


class Reports:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db, self.settings, self.n = db, settings, 0

    async def send(self, text: str, *, member: str | None = None) -> Detection:
        self.n += 1
        async with self.db.transaction() as session:
            detection, _ = await service.record(
                session,
                service.Report(
                    source=DetectionSource.TELEGRAM,
                    text=text,
                    external_id=f"chat:{self.n}",
                    reporter_id=member or f"member{self.n}",
                ),
                settings=self.settings,
            )
        return detection


async def _clusters(db: Database) -> list[Cluster]:
    async with db.transaction() as session:
        return list((await session.scalars(select(Cluster).order_by(Cluster.id))).all())


async def test_reports_sharing_an_address_or_a_tx_are_one_cluster(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    reports = Reports(db, settings)
    first = await reports.send(f"drainer {A}")
    second = await reports.send(f"same thief {A.lower()} again", member="member1")
    third = await reports.send(f"tx {TX} from {A}")
    fourth = await reports.send(f"look at {TX}")
    assert len({d.cluster_id for d in (first, second, third, fourth)}) == 1
    (cluster,) = await _clusters(db)
    assert (cluster.kind, cluster.reports, cluster.reporters) == (ClusterKind.REPORTS, 4, 3)
    other = await reports.send(f"unrelated contract {B}")
    assert other.cluster_id != first.cluster_id


async def test_official_domains_and_common_contracts_join_nothing(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    loose = settings.model_copy(update={"common_contracts": [B.lower()]})
    reports = Reports(db, loose)
    one = await reports.send("see https://example.org/status")
    two = await reports.send("see https://app.example.org/status")
    three = await reports.send(f"token {B}")
    four = await reports.send(f"token {B} too")
    assert len({d.cluster_id for d in (one, two, three, four)}) == 4


async def test_a_cluster_stops_taking_reports_after_its_window(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    reports = Reports(db, settings)
    first = await reports.send(f"drainer {A}")
    clock.advance(minutes=29)
    assert (await reports.send(f"still {A}")).cluster_id == first.cluster_id
    clock.advance(minutes=31)  # 31 minutes after the cluster's last report
    assert (await reports.send(f"again {A}")).cluster_id != first.cluster_id


async def test_a_value_in_too_many_clusters_stops_joining_them(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    reports = Reports(db, settings.model_copy(update={"cluster_value_max_clusters": 2}))
    one = await reports.send(f"first {A}")
    two = await reports.send(f"second {B} via https://evil-thing.io")
    three = await reports.send(f"both {A} and https://evil-thing.io")  # one of the two
    assert three.cluster_id in (one.cluster_id, two.cluster_id)
    # The value three shares with the cluster it did not join is now in both live clusters:
    # it no longer tells events apart.
    both = "https://evil-thing.io/claim" if three.cluster_id == one.cluster_id else A
    alone = await reports.send(f"went to {both}")
    assert alone.cluster_id not in (one.cluster_id, two.cluster_id)
    # (Now in three clusters.) With a higher limit it joins one of them again.
    roomy = Reports(db, settings.model_copy(update={"cluster_value_max_clusters": 4}))
    roomy.n = reports.n
    assert (await roomy.send(f"went to {both}")).cluster_id in (
        one.cluster_id,
        two.cluster_id,
        alone.cluster_id,
    )


async def test_a_lookalike_domain_forms_a_phishing_cluster(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    reports = Reports(db, settings)
    one = await reports.send("claim page at https://examp1e.org/claim is it real?")
    two = await reports.send("examp1e.org asks to connect my wallet")
    plain = await reports.send(f"drainer {A}")
    assert one.cluster_id == two.cluster_id != plain.cluster_id
    clusters = {c.id: c for c in await _clusters(db)}
    assert one.cluster_id is not None and plain.cluster_id is not None
    assert clusters[one.cluster_id].kind is ClusterKind.PHISHING
    assert clusters[plain.cluster_id].kind is ClusterKind.REPORTS


def test_short_texts_have_too_few_content_words() -> None:
    assert content_words("hacked!!") == ["hacked"]
    assert len(content_words("help hacked funds gone")) < 4
    assert content_words("Bridge drained 0xabc https://x.io/y") == ["bridge", "drained"]


def _pairs(labels: Sequence[str], clusters: Sequence[int | None]) -> tuple[float, float]:
    """Pairwise precision and recall of a clustering against the true events."""
    true_pos = false_pos = false_neg = 0
    for (la, ca), (lb, cb) in itertools.combinations(zip(labels, clusters, strict=True), 2):
        same_event = la == lb and not la.startswith("noise")
        same_cluster = ca == cb
        true_pos += same_event and same_cluster
        false_pos += same_cluster and not same_event
        false_neg += same_event and not same_cluster
    precision = true_pos / (true_pos + false_pos) if true_pos + false_pos else 1.0
    recall = true_pos / (true_pos + false_neg) if true_pos + false_neg else 1.0
    return precision, recall


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_text_similarity_joins_paraphrases_and_nothing_else(
    db: Database, settings: Settings, clock: FrozenClock, seed: int
) -> None:
    """The threshold's measurement (docs/DETECTIONS.md): on this corpus, in three orders, at
    the default threshold every paraphrase joins its event and no two events or noise meet."""
    items = [(event, text) for event, texts in EVENTS.items() for text in texts]
    items += [(f"noise{i}", text) for i, text in enumerate(NOISE)]
    random.Random(seed).shuffle(items)
    reports = Reports(db, settings)
    clusters = []
    for _event, text in items:
        clusters.append((await reports.send(text)).cluster_id)
        clock.advance(seconds=20)
    precision, recall = _pairs([event for event, _ in items], clusters)
    assert (precision, recall) == (1.0, 1.0)


async def test_alike_wording_with_another_drainer_address_is_another_event(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    """Two exploits told in the same words are two events when they name different
    addresses: the second must not join the first by its wording (and pull its address in)."""
    reports = Reports(db, settings)
    first = await reports.send(f"the bridge is being drained right now, funds leaving to {A}")
    second = await reports.send(f"the bridge is being drained right now, funds leaving to {B}")
    assert second.cluster_id != first.cluster_id
    # A report that names no address still joins by its wording, and one that names the
    # first cluster's address joins it.
    third = await reports.send("the bridge is being drained right now, funds leaving fast")
    fourth = await reports.send(f"funds leaving to {A}, bridge drained")
    assert third.cluster_id in (first.cluster_id, second.cluster_id)
    assert fourth.cluster_id == first.cluster_id
    # A transaction no cluster names is another event too, however alike the words.
    fifth = await reports.send(f"the bridge is being drained right now, funds leaving in {TX}")
    assert fifth.cluster_id not in (first.cluster_id, second.cluster_id, third.cluster_id)


@pytest.mark.parametrize("seed", [4, 5])
async def test_a_batch_clusters_as_one_report_at_a_time_does(
    db: Database, settings: Settings, clock: FrozenClock, seed: int
) -> None:
    """A flood is written in batches (one read of the live clusters per batch): the clusters
    must be those of the same reports written one at a time."""
    items = [(event, text) for event, texts in EVENTS.items() for text in texts]
    items += [(f"noise{i}", text) for i, text in enumerate(NOISE)]
    items += [("a", f"drainer {A}"), ("a", f"{A} again"), ("tx", f"see {TX}")]
    items += [("tx", f"{TX} again, look"), ("c", f"{C} is the thief")]
    random.Random(seed).shuffle(items)
    batch = [
        service.Report(
            source=DetectionSource.TELEGRAM, text=text, external_id=f"b:{n}", reporter_id=f"m{n}"
        )
        for n, (_, text) in enumerate(items)
    ]
    one_at_a_time = []
    for n, (_, text) in enumerate(items):
        async with db.transaction() as session:
            detection, _ = await service.record(
                session,
                service.Report(
                    source=DetectionSource.DISCORD,
                    text=text,
                    external_id=f"o:{n}",
                    reporter_id=f"m{n}",
                ),
                settings=settings,
            )
        one_at_a_time.append(detection.cluster_id)
    clock.advance(minutes=settings.cluster_window_minutes + 1)  # those clusters are closed

    texts = TextIndex()  # kept from one batch to the next, as the intake keeps it
    third = len(batch) // 3
    stored = []
    for part in (batch[:third], batch[third : 2 * third], batch[2 * third :]):
        async with db.transaction() as session:
            stored += await service.record_many(session, part, settings=settings, index=texts)
    batched = [detection.cluster_id for detection, created in stored if created]
    assert len(batched) == len(items)
    assert not set(batched) & set(one_at_a_time)
    assert _partition(batched) == _partition(one_at_a_time)
    assert _pairs([event for event, _ in items], batched) == (1.0, 1.0)
    # A batch sent again (a retry) stores nothing and answers with the stored detections.
    async with db.transaction() as session:
        again = await service.record_many(session, batch, settings=settings)
    assert [(d.id, created) for d, created in again] == [(d.id, False) for d, _ in stored]


def _partition(labels: Sequence[int | None]) -> set[frozenset[int]]:
    groups: dict[int | None, set[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, set()).add(index)
    return {frozenset(group) for group in groups.values()}
