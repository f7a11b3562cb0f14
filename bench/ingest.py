"""Ingest benchmark (issue 11, first version): a flood of community reports with planted events.

A seeded corpus of ``--reports`` reports from ``--members`` members: ``--events`` planted events
(each with its own address, transaction hash or look-alike domain, told in several wordings)
among noise (questions, chatter, unrelated one-off reports, links to official domains). Every
report knows its true event. The corpus goes through each path asked for, each on a fresh
migrated database:

- ``webhook-batch``: as ``webhook`` below, but ``--batch`` reports per ``POST
  /api/v1/detections/batch``, 4 requests in flight (a monitor forwarding alerts in bulk).
- ``webhook``: ``POST /api/v1/detections`` (a ``detections:write`` token) on the panel started
  with the real command (``comms serve --no-worker``, a child process), 16 requests in flight;
  the detection is stored when the POST returns. Meanwhile a signed-in responder loads the
  Reports inbox (``/reports``) and a new draft's page in turn, every 0.125 s: their latency
  during the flood.
- ``telegram``: the sandbox in a child process (as ``bench/fanout.py`` runs it), the real
  ``TelegramListener`` (long polling) and ``Intake`` in this process, members posting
  ``/report@<bot> …`` into the community supergroup and a few more groups through the sandbox's
  control API, 16 posts in flight; latency from the post to the detection's ``received_at``.

Per path: reports/s, latency p50/p99 to stored, pairwise cluster precision (over the pairs with
at least one planted report; ``precision_all_pairs`` also counts two noise reports in one
cluster as a false pair) and recall against the planted events, alerted clusters
per planted event, acknowledgements sent and 429s received (Telegram).

    python -m bench.ingest [--reports 10000] [--members 2000] [--events 20]
                           [--paths webhook-batch,telegram,webhook] [--batch 100]
                           [--json-out FILE]

Not measured yet: the Discord Gateway path, and the draft page's latency during the flood.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import secrets
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import select

from bench.fanout import Control, calibration_ms, context, fresh_database, sandbox_endpoint
from bench.panel import panel_process, percentiles
from comms.auth import sessions, tokens
from comms.auth.sessions import Stage
from comms.db import Database
from comms.detections.intake import Intake
from comms.detections.models import Cluster, Detection
from comms.enums import Role, Severity
from comms.incidents import service as incidents
from comms.migrate import upgrade_async
from comms.settings import Settings, load_settings
from comms.users import service as users

CONCURRENCY = 16
EXTRA_GROUPS = 3  # groups besides the sandbox's community supergroup
# The members' client: as many connections as posts in flight. httpcore checks every pooled
# connection on every request, and the members share this process with the listener measured.
MEMBERS_POOL = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)

# ---------------------------------------------------------------------------------- the corpus

ADDRESS_WORDINGS = [
    "the bridge is being drained right now, funds leaving through {v}",
    "URGENT: exploit in progress, attacker contract {v} is pulling liquidity",
    "is anyone else seeing {v} emptying the pools?? looks like a hack",
    "my position got wiped, the drainer is {v}",
    "hacker address {v} just took a lot of ETH from the vault",
    "please pause the protocol, {v} is exploiting the lending market",
    "seeing huge outflows to {v}, this is not normal",
    "{v} drained my wallet after I approved the router, help",
]
TX_WORDINGS = [
    "suspicious transaction {v} moved millions out of the treasury",
    "look at this tx {v}, the oracle price was manipulated",
    "flash loan attack in {v}, check it",
    "this transaction {v} minted tokens out of nowhere",
    "hey team, tx {v} looks like an exploit of the staking contract",
    "big liquidation cascade started with {v}",
]
PHISHING_WORDINGS = [
    "scam alert: {v} is pretending to be the official site, do not connect your wallet",
    "someone is DMing people a link to https://{v}/claim asking for signatures",
    "fake airdrop on {v}, it asks for your seed phrase",
    "is {v} legit? it looks exactly like the app",
    "phishing site https://{v} is in the google ads for the protocol",
    "beware of {v}, a fake support account sent it to me",
]
LOOKALIKE_WORDS = [
    "claim", "airdrop", "rewards", "bridge", "migrate", "support", "stake", "wallet",
    "connect", "refund", "portal", "verify", "bonus", "unlock", "app", "gov", "vault", "dapp",
    "drop", "secure", "sync", "restore", "mint", "swap",
]  # fmt: skip
TLDS = ["com", "net", "io", "xyz", "app", "co", "site", "org.ru"]
NOISE_TEMPLATES = [
    "when is the next governance vote on the {w} proposal?",
    "gm everyone, how is the {w} going",
    "what is the APY on {w} pools this week",
    "how do I bridge to {w}? the docs at https://example.org/docs are confusing",
    "lol {w}",
    "can someone explain the new {w} tokenomics",
    "my transaction is stuck pending, sent from {a}, what should I do",
    "I think I lost my keys, can support help recover wallet {a}",
    "is app.example.org down? getting a {w} error",
    "thanks team, great {w} update",
    "wen {w}",
    "the UI shows a wrong balance for {a} after the {w} migration",
]
NOISE_WORDS = [
    "arbitrum", "optimism", "base", "staking", "v3", "emissions", "liquidity", "treasury",
    "grants", "roadmap", "audit", "listing", "frontend", "dashboard", "rewards", "mobile",
]  # fmt: skip


@dataclass(frozen=True)
class Item:
    index: int
    event: int | None  # None: noise
    member: int
    text: str


def _hex(rng: random.Random, digits: int) -> str:
    return "0x" + "".join(rng.choice("0123456789abcdef") for _ in range(digits))


def _mixed_case(rng: random.Random, address: str) -> str:
    """Some members paste lower case, some upper: the entity is the same address."""
    return address if rng.random() < 0.7 else "0x" + address[2:].upper()


def corpus(
    *, reports: int, members: int, events: int, planted_share: float, seed: int
) -> tuple[list[Item], list[dict[str, str]]]:
    """The seeded corpus and the planted events' values. Members are dealt reports evenly
    (at most ceil(reports / members) each, 5 at the defaults: the intake's per-member limit)."""
    rng = random.Random(seed)
    planted: list[dict[str, str]] = []
    used_domains: set[str] = set()
    for e in range(events):
        kind = ("address", "tx", "phishing")[e % 3]
        if kind == "phishing":
            while True:
                domain = f"example-{rng.choice(LOOKALIKE_WORDS)}.{rng.choice(TLDS)}"
                if domain not in used_domains:
                    used_domains.add(domain)
                    break
            planted.append({"kind": kind, "value": domain})
        else:
            planted.append({"kind": kind, "value": _hex(rng, 40 if kind == "address" else 64)})
    n_planted = round(reports * planted_share) if events else 0
    labels: list[int | None] = [i % events for i in range(n_planted)] + [None] * (
        reports - n_planted
    )
    rng.shuffle(labels)
    per_member = -(-reports // members)
    dealt = [m for m in range(members) for _ in range(per_member)][:reports]
    rng.shuffle(dealt)
    wordings = {"address": ADDRESS_WORDINGS, "tx": TX_WORDINGS, "phishing": PHISHING_WORDINGS}
    items = []
    for index, (event, member) in enumerate(zip(labels, dealt, strict=True)):
        if event is None:
            template = rng.choice(NOISE_TEMPLATES)
            text = template.format(w=rng.choice(NOISE_WORDS), a=_hex(rng, 40))
        else:
            spec = planted[event]
            value = spec["value"]
            if spec["kind"] == "address":
                value = _mixed_case(rng, value)
            text = rng.choice(wordings[spec["kind"]]).format(v=value)
        items.append(Item(index, event, member, text))
    return items, planted


# ---------------------------------------------------------------------------------- scoring


def _c2(n: int) -> int:
    return n * (n - 1) // 2


def pairwise(labels: Sequence[int | None], clusters: Sequence[int | None]) -> dict[str, Any]:
    """Pairwise precision and recall from counts rather than all pairs (every noise report is
    its own event, as ``_pairs`` in tests/detections/test_clusters.py); ``precision`` leaves
    out the pairs of two noise reports, ``precision_all_pairs`` keeps them."""
    cells: Counter[tuple[int, int | None]] = Counter()
    by_cluster: Counter[int | None] = Counter()
    by_event: Counter[int] = Counter()
    for label, cluster in zip(labels, clusters, strict=True):
        by_cluster[cluster] += 1
        if label is not None:
            by_event[label] += 1
            cells[(label, cluster)] += 1
    true_pos = sum(_c2(n) for n in cells.values())
    same_cluster = sum(_c2(n) for n in by_cluster.values())
    same_event = sum(_c2(n) for n in by_event.values())
    false_pos, false_neg = same_cluster - true_pos, same_event - true_pos
    planted_in: Counter[int | None] = Counter()
    for (_label, cluster), n in cells.items():
        planted_in[cluster] += n
    noise_noise = sum(_c2(by_cluster[c] - planted_in[c]) for c in by_cluster)
    planted_noise = sum(planted_in[c] * (by_cluster[c] - planted_in[c]) for c in by_cluster)
    involving_planted = false_pos - noise_noise  # pairs with at least one planted report
    return {
        # Against the planted events: every pair with at least one planted report (two noise
        # reports in one cluster, e.g. the same question asked twice, are no planted event's).
        "precision": round(true_pos / (true_pos + involving_planted), 4)
        if true_pos + involving_planted
        else 1.0,
        "precision_all_pairs": round(true_pos / (true_pos + false_pos), 4)
        if true_pos + false_pos
        else 1.0,
        "recall": round(true_pos / (true_pos + false_neg), 4) if true_pos + false_neg else 1.0,
        "true_pairs": true_pos,
        "false_pairs": false_pos,
        "missed_pairs": false_neg,
        # The false pairs split: two planted events together, an event with noise, noise with
        # noise (repeated chatter clustered by its wording).
        "false_pairs_event_event": false_pos - noise_noise - planted_noise,
        "false_pairs_event_noise": planted_noise,
        "false_pairs_noise_noise": noise_noise,
        "precision_planted_only": round(
            true_pos / (true_pos + false_pos - noise_noise - planted_noise), 4
        )
        if true_pos
        else 1.0,
    }


async def evaluate(
    url: str, items: list[Item], external: dict[str, int], events: int, posted_at: dict[int, float]
) -> dict[str, Any]:
    """Clusters and latencies from the database: ``external`` maps a detection's external id to
    its corpus index; ``posted_at`` is each report's post time (epoch seconds)."""
    db = Database(url)
    try:
        async with db.transaction() as session:
            rows = (
                await session.execute(
                    select(Detection.external_id, Detection.cluster_id, Detection.received_at)
                )
            ).all()
            clusters = {
                c.id: c.alerted_at is not None
                for c in (await session.scalars(select(Cluster))).all()
            }
    finally:
        await db.dispose()
    labels, assigned, latencies = [], [], []
    for external_id, cluster_id, received_at in rows:
        index = external.get(external_id or "")
        if index is None:
            continue
        labels.append(items[index].event)
        assigned.append(cluster_id)
        if index in posted_at:
            stored = received_at.replace(tzinfo=UTC).timestamp()
            latencies.append(max(0.0, stored - posted_at[index]))
    # Each cluster belongs to the event most of its reports are about (or to noise).
    votes: dict[int | None, Counter[int | None]] = defaultdict(Counter)
    for label, cluster in zip(labels, assigned, strict=True):
        votes[cluster][label] += 1
    owner = {c: v.most_common(1)[0][0] for c, v in votes.items()}
    alerts = Counter(owner[c] for c, alerted in clusters.items() if alerted and c in owner)
    clusters_per_event = Counter(owner[c] for c in votes if c is not None)
    per_event = [alerts.get(e, 0) for e in range(events)]
    return {
        "stored": len(labels),
        "latency_to_stored": percentiles(latencies),
        "clusters": len(clusters),
        "clusters_per_planted_event": [clusters_per_event.get(e, 0) for e in range(events)],
        "pairwise": pairwise(labels, assigned),
        "alerts_per_planted_event": per_event,
        "events_with_exactly_one_alert": sum(1 for n in per_event if n == 1),
        "alerted_noise_clusters": alerts.get(None, 0),
    }


# ---------------------------------------------------------------------------------- the paths


def bench_settings(database_url: str, **extra: Any) -> Settings:
    return load_settings(
        database_url=database_url,
        protocol_name="Example Protocol",
        official_domains=["example.org"],
        **extra,
    )


async def _pump(count: int, job: Any, concurrency: int = CONCURRENCY) -> None:
    """``job(i)`` for every i in range(count), ``concurrency`` at a time."""
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            await job(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


@dataclass(frozen=True)
class PanelUsers:
    cookie: str  # a signed-in Incident Leader and Communication Manager
    draft_page: str  # a P1 incident's new-draft page
    token: str  # a monitor's detections:write token


async def panel_users(url: str) -> PanelUsers:
    db = Database(url)
    try:
        async with db.transaction() as session:
            password = secrets.token_urlsafe(16)
            monitor = await users.create(
                session, username="monitor", password=password, roles=[Role.RESPONDER]
            )
            reader = await users.create(
                session,
                username="rita",
                password=password,
                roles=[Role.RESPONDER, Role.INCIDENT_LEADER, Role.COMMS_MANAGER],
            )
            incident = await incidents.open_incident(
                session, title="Bridge exploit", severity=Severity.P1, actor=reader
            )
            raw_token, _ = await tokens.create(
                session,
                user=monitor,
                name="bench",
                scopes=[tokens.Scope.DETECTIONS_WRITE],
                actor=None,
            )
            cookie, _ = await sessions.create(session, user=reader, stage=Stage.FULL)
    finally:
        await db.dispose()
    return PanelUsers(cookie, f"/incidents/{incident.key}/drafts/new", raw_token)


@contextlib.asynccontextmanager
async def watched_panel(url: str, people: PanelUsers) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The panel (``comms serve --no-worker``, a child process) loaded by a responder while
    the flood runs: the Reports inbox and the new-draft page in turn, one every 0.125 s.
    Yields the base URL and a dict that holds their latencies once the block ends."""
    figures: dict[str, Any] = {}
    times: dict[str, list[float]] = {"inbox": [], "draft": []}
    counted: dict[str, Counter[int | str]] = {"inbox": Counter(), "draft": Counter()}
    pages = [("inbox", "/reports"), ("draft", people.draft_page)]
    cookies = {"comms_session": people.cookie}
    async with (
        panel_process(url, processes=1, secret=secrets.token_urlsafe(48)) as (base, _),
        httpx.AsyncClient(timeout=60) as client,
    ):
        for _, path in pages:  # warm-up
            await client.get(base + path, cookies=cookies)
        done = asyncio.Event()

        async def reader_loop() -> None:
            turn = 0
            while not done.is_set():
                name, path = pages[turn % 2]
                turn += 1
                began = time.perf_counter()
                try:
                    response = await client.get(base + path, cookies=cookies)
                except httpx.HTTPError as error:
                    counted[name][type(error).__name__] += 1
                else:
                    counted[name][response.status_code] += 1
                times[name].append(time.perf_counter() - began)
                await asyncio.sleep(0.125)

        reading = asyncio.create_task(reader_loop())
        try:
            yield base, figures
        finally:
            done.set()
            await reading
    for name, key in (
        ("inbox", "panel_inbox_during_flood"),
        ("draft", "panel_draft_page_during_flood"),
    ):
        figures[key] = percentiles(times[name]) | {
            "statuses": {str(k): v for k, v in counted[name].items()}
        }


async def run_webhook(
    url: str, items: list[Item], events: int, *, batch: int = 1
) -> dict[str, Any]:
    await upgrade_async(url)
    watchers = await panel_users(url)
    posted_at: dict[int, float] = {}
    request_seconds: list[float] = []
    statuses: Counter[int | str] = Counter()
    async with watched_panel(url, watchers) as (base, panel):
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        headers = {"Authorization": f"Bearer {watchers.token}"}
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            for i in range(3):  # warm-up: first statements compiled (not in the corpus)
                await client.post(
                    base + "/api/v1/detections",
                    json={"id": f"warm-{i}", "title": "warm-up", "text": "warm-up report"},
                    headers=headers,
                )

            def body_of(i: int) -> dict[str, Any]:
                return {
                    "id": f"bench-{i}",
                    # A monitor's title says what it saw: here the report's first words
                    # (a fixed title would add the same words to every report's text).
                    "title": " ".join(items[i].text.split()[:6])[:200],
                    "source": "bench",
                    "text": items[i].text,
                    # A monitor calls what it sees: an exploit critical, chatter info.
                    "severity": "info" if items[i].event is None else "critical",
                }

            async def post(chunk: int) -> None:
                indexes = range(chunk * batch, min(len(items), (chunk + 1) * batch))
                if batch == 1:
                    path, body = "/api/v1/detections", body_of(indexes[0])
                else:
                    path = "/api/v1/detections/batch"
                    body = {"detections": [body_of(i) for i in indexes]}
                now = time.time()
                for i in indexes:
                    posted_at[i] = now
                began = time.perf_counter()
                try:
                    response = await client.post(base + path, json=body, headers=headers)
                except httpx.HTTPError as error:  # counted, not retried: reports lost
                    statuses[type(error).__name__] += len(indexes)
                else:
                    if batch == 1:
                        statuses[response.status_code] += 1
                    elif response.status_code == 200:
                        created = sum(d["created"] for d in response.json()["detections"])
                        statuses[201] += created
                        statuses[200] += len(indexes) - created
                    else:
                        statuses[response.status_code] += len(indexes)
                request_seconds.append(time.perf_counter() - began)

            started = time.perf_counter()
            await _pump(-(-len(items) // batch), post, concurrency=CONCURRENCY if batch == 1 else 4)
            wall = time.perf_counter() - started
    external = {f"bench-{i}": i for i in range(len(items))}
    result = {
        "path": "webhook" if batch == 1 else "webhook-batch",
        "reports_per_request": batch,
        "reports": len(items),
        "wall_seconds": round(wall, 3),
        # Reports stored (201) per second of the flood; failed requests do not count.
        "reports_per_second": round(statuses.get(201, 0) / wall, 1),
        "request_latency": percentiles(request_seconds),
        "statuses": {str(k): v for k, v in statuses.items()},
        **panel,
    }
    result |= await evaluate(url, items, external, events, posted_at)
    return result


async def _until_stored(db: Database, intake: Intake, expected: int) -> int:
    """Wait (at most 5 minutes) until the listener has stored or dropped ``expected`` reports;
    how many it stored."""
    stored = 0
    deadline = time.perf_counter() + 300
    while time.perf_counter() < deadline:
        async with db.transaction() as session:
            stored = len((await session.scalars(select(Detection.id))).all())
        if stored + sum(intake.dropped.values()) >= expected:
            break
        await asyncio.sleep(0.05)
    return stored


def _rate_limited(before: dict[str, Any], after: dict[str, Any], platform: str) -> dict[str, int]:
    """The sandbox's 429s per scope between two ``/stats`` readings."""
    was = before.get("rate_limited", {}).get(platform, {})
    now = after.get("rate_limited", {}).get(platform, {})
    return {scope: n - was.get(scope, 0) for scope, n in now.items() if n - was.get(scope, 0)}


async def run_telegram(url: str, items: list[Item], members: int, events: int) -> dict[str, Any]:
    from bots.telegram_listener import TelegramListener

    await upgrade_async(url)
    watchers = await panel_users(url)
    async with (
        sandbox_endpoint("process", seed=7, request_log=None) as info,
        httpx.AsyncClient(timeout=60, limits=MEMBERS_POOL) as client,
    ):
        control = Control(client, info["control_url"])
        bot = info["telegram_bot_username"]
        chats = [int(info["telegram_chats"]["community"])]
        for g in range(EXTRA_GROUPS):
            chat = await control.call(
                "POST",
                "/telegram/chats",
                {"type": "supergroup", "title": f"Community {g}", "bot_member": True},
            )
            chats.append(int(chat["id"]))
        people: list[int] = [0] * members

        async def make_user(m: int) -> None:
            user = await control.call(
                "POST",
                "/telegram/users",
                {"first_name": f"Member {m}", "username": f"member{m:05d}"},
            )
            people[m] = int(user["id"])

        await _pump(members, make_user)
        settings = bench_settings(
            url,
            telegram_api_base=info["telegram_api_base"],
            telegram_token=SecretStr(info["telegram_token"]),
        )
        db = Database(url)
        intake = Intake(db, settings)
        listener = TelegramListener(settings, intake, poll_timeout=1, combined_interval=1.0)
        async with watched_panel(url, watchers) as (_, panel):
            before = await control.call("GET", "/stats")
            await listener.start()
            posted_at: dict[int, float] = {}
            external: dict[str, int] = {}
            post_errors: Counter[str] = Counter()
            undelivered = 0
            try:

                async def post(i: int) -> None:
                    nonlocal undelivered
                    item = items[i]
                    chat = chats[item.member % len(chats)]
                    body = {"user": people[item.member], "text": f"/report@{bot} {item.text}"}
                    posted_at[i] = time.time()
                    try:
                        view = await control.call("POST", f"/telegram/chats/{chat}/messages", body)
                    except RuntimeError as error:
                        post_errors[str(error)[:80]] += 1
                        return
                    undelivered += not view["delivered_to_bot"]
                    external[f"{chat}:{view['id']}"] = i

                started = time.perf_counter()
                await _pump(len(items), post)
                posting = time.perf_counter() - started
                stored = await _until_stored(db, intake, len(external) - undelivered)
                wall = time.perf_counter() - started
                await asyncio.sleep(2.5)  # the combined answers of the last minute's flood, if due
            finally:
                await listener.stop()
                await db.dispose()
        after = await control.call("GET", "/stats")
        acks = combined = 0
        for chat in chats:
            for message in await control.call("GET", f"/telegram/chats/{chat}/messages"):
                author = message.get("author") or {}
                if author.get("bot"):
                    combined += message["text"].startswith("We have received")
                    acks += not message["text"].startswith("We have received")
    limited = _rate_limited(before, after, "telegram")
    result = {
        "path": "telegram",
        "reports": len(items),
        "chats": len(chats),
        "posting_seconds": round(posting, 3),
        "wall_seconds": round(wall, 3),
        "reports_per_second": round(stored / wall, 1) if wall else None,
        "post_errors": dict(post_errors),
        "not_delivered_to_bot": undelivered,
        "dropped_by_intake": sum(intake.dropped.values()),
        "acks_sent": acks,
        "combined_answers_sent": combined,
        "rate_limited_429s": {"total": sum(limited.values()), "by_scope": limited},
    }
    result |= panel
    result |= await evaluate(url, items, external, events, posted_at)
    return result


async def run_discord(url: str, items: list[Item], members: int, events: int) -> dict[str, Any]:
    from bots.discord_listener import DiscordListener

    await upgrade_async(url)
    watchers = await panel_users(url)
    async with (
        sandbox_endpoint("process", seed=7, request_log=None) as info,
        httpx.AsyncClient(timeout=60, limits=MEMBERS_POOL) as client,
    ):
        control = Control(client, info["control_url"])
        bot_id = str(info["discord_bot_user_id"])
        channel = str(info["discord_channels"]["general"])
        people: list[str] = [""] * members

        async def make_user(m: int) -> None:
            username = f"member{m:05d}"
            await control.call("POST", "/discord/users", {"username": username})
            people[m] = username

        await _pump(members, make_user)
        settings = bench_settings(
            url,
            discord_api_base=info["discord_api_base"],
            discord_token=SecretStr(info["discord_token"]),
        )
        db = Database(url)
        intake = Intake(db, settings)
        listener = DiscordListener(settings, intake, guild_ready_timeout=0.05, ready_timeout=30)
        async with watched_panel(url, watchers) as (_, panel):
            before = await control.call("GET", "/stats")
            await listener.start()
            posted_at: dict[int, float] = {}
            external: dict[str, int] = {}
            post_errors: Counter[str] = Counter()
            try:

                async def post(i: int) -> None:
                    item = items[i]
                    body = {"username": people[item.member], "content": f"<@{bot_id}> {item.text}"}
                    posted_at[i] = time.time()
                    try:
                        view = await control.call(
                            "POST", f"/discord/channels/{channel}/messages", body
                        )
                    except RuntimeError as error:
                        post_errors[str(error)[:80]] += 1
                        return
                    external[str(view["id"])] = i

                started = time.perf_counter()
                await _pump(len(items), post)
                posting = time.perf_counter() - started
                stored = await _until_stored(db, intake, len(external))
                wall = time.perf_counter() - started
            finally:
                await listener.stop()
                await db.dispose()
        after = await control.call("GET", "/stats")
        acks = sum(
            1
            for message in await control.call("GET", f"/discord/channels/{channel}/messages")
            if str((message.get("author") or {}).get("id")) == bot_id
        )
    limited = _rate_limited(before, after, "discord")
    result = {
        "path": "discord",
        "reports": len(items),
        "posting_seconds": round(posting, 3),
        "wall_seconds": round(wall, 3),
        "reports_per_second": round(stored / wall, 1) if wall else None,
        "post_errors": dict(post_errors),
        "dropped_by_intake": sum(intake.dropped.values()),
        "acks_sent": acks,
        "rate_limited_429s": {"total": sum(limited.values()), "by_scope": limited},
    }
    result |= panel
    result |= await evaluate(url, items, external, events, posted_at)
    return result


# ---------------------------------------------------------------------------------- the CLI


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    items, planted = corpus(
        reports=args.reports,
        members=args.members,
        events=args.events,
        planted_share=args.planted_share,
        seed=args.seed,
    )
    document: dict[str, Any] = {
        "benchmark": "ingest",
        "context": await context(args.database_url, "process"),
        "corpus": {
            "reports": len(items),
            "members": args.members,
            "events": args.events,
            "planted_reports": sum(1 for i in items if i.event is not None),
            "noise_reports": sum(1 for i in items if i.event is None),
            "event_kinds": dict(Counter(p["kind"] for p in planted)),
            "seed": args.seed,
        },
        "paths": {},
    }
    for path in args.paths:
        yardstick = calibration_ms()
        async with fresh_database(args.database_url, f"ingest-{path}") as url:
            if path == "webhook":
                result = await run_webhook(url, items, args.events)
            elif path == "webhook-batch":
                result = await run_webhook(url, items, args.events, batch=args.batch)
            elif path == "discord":
                result = await run_discord(url, items, args.members, args.events)
            else:
                result = await run_telegram(url, items, args.members, args.events)
        result["calibration_ms"] = yardstick
        result["calibration_ms_after"] = calibration_ms()
        document["paths"][path] = result
        print(
            f"[ingest] {path}: {result['reports_per_second']} reports/s, p99 to stored "
            f"{result['latency_to_stored']['p99_ms']} ms, precision "
            f"{result['pairwise']['precision']}, recall {result['pairwise']['recall']}",
            file=sys.stderr,
            flush=True,
        )
    return document


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reports", type=int, default=10_000, help="reports (10,000)")
    parser.add_argument("--members", type=int, default=2_000, help="members (2,000)")
    parser.add_argument("--events", type=int, default=20, help="planted events (20)")
    parser.add_argument(
        "--planted-share", type=float, default=0.5, help="share of reports about an event (0.5)"
    )
    parser.add_argument(
        "--paths",
        default="webhook,webhook-batch,telegram,discord",
        help="comma-separated: webhook (one report per POST), webhook-batch, telegram, discord",
    )
    parser.add_argument(
        "--batch", type=int, default=100, help="reports per POST on webhook-batch (100)"
    )
    parser.add_argument("--seed", type=int, default=11, help="corpus seed (11)")
    parser.add_argument("--database-url", default=None, help="as bench/fanout.py (SQLite temp)")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = set(args.paths) - {"webhook", "webhook-batch", "telegram", "discord"}
    if unknown:
        parser.error(f"paths not built yet: {', '.join(sorted(unknown))} (discord is not)")
    if args.reports < 1 or args.members < 1 or args.events < 0:
        parser.error("need reports and members")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    document = asyncio.run(main_async(args))
    text = json.dumps(document, indent=2)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
