"""Fan-out benchmark: one approved announcement to N Discord channels and M Telegram chats.

Everything is real except the platforms: a fresh migrated database, the team, destinations and
draft made through the services, the outbox Worker, and the discord.py / python-telegram-bot
publishers talking to the sandbox emulators on loopback (by default in a process of their own,
as the real platforms are not in ours) under the platforms' documented rate limits. The clock
runs from the approving transaction to the moment the outbox has settled (the last delivery
recorded as sent). The figure that matters is the ratio to the
*bound*: the least time the rate limits allow for the requests the fan-out needs, so the result
says how much of the wall time is ours rather than the platforms'.

    python bench/fanout.py [--discord 100] [--telegram 100] [--faults none|default|both]
                           [--runs 3] [--database-url URL] [--json-out FILE]
                           [--sandbox process|loop]

Prints one JSON document; docs/BENCHMARKS.md explains the method and records the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import math
import os
import platform as platform_module
import re
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from discord import http as discord_http
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from bots.publishers import build_publishers
from bots.sandbox import Sandbox, SandboxLimits
from comms.db import Database, is_sqlite
from comms.destinations import service as destinations
from comms.drafts import service as drafts
from comms.drafts.payload import content_hash
from comms.enums import Platform, Role, Severity
from comms.heap import freeze_startup_objects
from comms.incidents import service as incidents
from comms.migrate import upgrade_async
from comms.outbox.models import DONE, NEEDS_PERSON, Delivery, DeliveryState, PlatformSender
from comms.outbox.worker import Worker, WorkerConfig
from comms.settings import Settings, TelegramUncertainPolicy, load_settings
from comms.users import service as users

HERE = str(Path(__file__).resolve())

# The platforms' documented limits (docs/SANDBOX.md, "Rate limits, exactly"), spelled out so a
# change of the sandbox's defaults cannot silently change what this benchmark measures.
REALISTIC_LIMITS = SandboxLimits(
    enabled=True,
    discord_global_per_second=50,
    discord_message_create_limit=5,
    discord_message_create_window=5.0,
    discord_route_limit=50,
    discord_route_window=1.0,
    telegram_chat_per_second=1.0,
    telegram_chat_burst=3,
    telegram_group_per_minute=20,
    telegram_global_per_second=30,
)

DISCORD_CREATE = "POST /channels/{channel_id}/messages"
TELEGRAM_CREATE = "sendMessage"
TEMPLATE = "active-exploit-initial"
VARIABLES = {
    "summary": "An attacker is draining the ETH bridge.",
    "affected": "Bridge contracts on mainnet",
    "funds_status": "at_risk",
    "next_update": "2026-01-01T13:00Z",
}


@dataclass(frozen=True)
class FaultShare:
    """One kind of injected failure and the share of message creates it hits."""

    kind: str  # "500", "502" or "timeout"
    share: float
    after_effect: bool = False


# "default": 5% 5xx (half 500, half 502) and 2% timeouts, on every message create of both
# platforms. Half of the timeouts happen after the platform created the message (only the
# answer is lost): Discord must deduplicate the retry by nonce; on Telegram, which has no
# idempotency key, both halves end ``uncertain`` by design and wait for a person.
FAULT_PLANS: dict[str, tuple[FaultShare, ...]] = {
    "none": (),
    "default": (
        FaultShare("timeout", 0.01, after_effect=True),
        FaultShare("timeout", 0.01, after_effect=False),
        FaultShare("500", 0.025),
        FaultShare("502", 0.025),
    ),
}


def fault_specs(plan: Sequence[FaultShare], *, hang_seconds: float) -> list[dict[str, Any]]:
    """Control-API fault bodies whose *marginal* probabilities are the plan's shares.

    The sandbox tries faults in order and the first that fires wins, so each later fault's
    probability is conditional on the earlier ones not having fired.
    """
    specs: list[dict[str, Any]] = []
    for platform, endpoint in (("discord", DISCORD_CREATE), ("telegram", TELEGRAM_CREATE)):
        taken = 0.0
        for share in plan:
            specs.append(
                {
                    "platform": platform,
                    "endpoint": endpoint,
                    "kind": share.kind,
                    "probability": min(1.0, share.share / (1.0 - taken)),
                    "after_effect": share.after_effect,
                    "hang_seconds": hang_seconds,
                }
            )
            taken += share.share
    return specs


# ---------------------------------------------------------------------------------- the bound


def token_bucket_seconds(requests: int, capacity: float, rate: float) -> float:
    """Least time for ``requests`` through a full bucket of ``capacity`` refilled at ``rate``/s.

    Request ``i`` (0-based) cannot start before ``(i - capacity + 1) / rate``; the last one is
    ``i = requests - 1``.
    """
    return max(0.0, (requests - capacity) / rate)


def fixed_window_seconds(requests: int, limit: int, window: float) -> float:
    """Least time for ``requests`` through Discord's per-channel window of ``limit`` per
    ``window`` s: request ``i`` waits for window ``floor(i / limit)``."""
    return math.floor((requests - 1) / limit) * window if requests > 0 else 0.0


def bound_seconds(
    limits: SandboxLimits, *, discord: Sequence[int], telegram: Sequence[tuple[int, int]]
) -> dict[str, float]:
    """The least wall time the limits allow, per platform and overall (they run in parallel).

    ``discord``: message creates per channel. ``telegram``: (chat id, messages) per chat.
    Latency is ignored and every bucket is full at the start (the benchmark lets them refill
    after the publishers log in), so this is a strict lower bound.
    """
    d_total = sum(discord)
    d_bound = max(
        [
            token_bucket_seconds(
                d_total, limits.discord_global_per_second, limits.discord_global_per_second
            )
        ]
        + [
            fixed_window_seconds(
                n, limits.discord_message_create_limit, limits.discord_message_create_window
            )
            for n in discord
        ]
    )
    t_total = sum(n for _, n in telegram)
    t_parts = [
        token_bucket_seconds(
            t_total, limits.telegram_global_per_second, limits.telegram_global_per_second
        )
    ]
    for chat_id, n in telegram:
        t_parts.append(
            token_bucket_seconds(n, limits.telegram_chat_burst, limits.telegram_chat_per_second)
        )
        if chat_id < 0:  # groups, supergroups and channels share the per-group limit
            per_minute = limits.telegram_group_per_minute
            t_parts.append(token_bucket_seconds(n, per_minute, per_minute / 60.0))
    t_bound = max(t_parts)
    return {"discord": d_bound, "telegram": t_bound, "overall": max(d_bound, t_bound)}


# ---------------------------------------------------------------------------------- one run


def calibration_ms() -> float:
    """Milliseconds for a fixed CPU-bound workload like ours (JSON and the canonical content
    hash of a 200-destination payload): a yardstick of the machine's speed at the time of a
    run, because a shared VM's speed drifts and wall times are only comparable with it."""
    payload = {
        "deliveries": [
            {"destination": {"id": i, "name": f"news-{i:03d}"}, "messages": ["status " * 110]}
            for i in range(200)
        ]
    }
    started = time.perf_counter()
    for _ in range(10):
        content_hash(json.loads(json.dumps(payload)))
    return round((time.perf_counter() - started) * 1000, 1)


@contextlib.asynccontextmanager
async def sandbox_endpoint(
    mode: str, *, seed: int, request_log: Path | None
) -> AsyncIterator[dict[str, Any]]:
    """The sandbox's info document, the sandbox running for as long as the block does.

    ``process`` (the default) runs it in a child process, so that the platforms' own work
    (aiohttp, Telegram's HTML parser, the rate-limit books) is neither counted in our CPU time
    nor competing with the outbox for our event loop: on the day, that work happens on Discord's
    and Telegram's servers. ``loop`` runs it in this event loop, the worst case for us.
    """
    if mode == "loop":
        async with Sandbox(limits=REALISTIC_LIMITS, seed=seed, request_log=request_log) as sandbox:
            yield sandbox.info
        return
    command = [
        sys.executable,
        HERE,
        "--serve-sandbox",
        "--seed",
        str(seed),
    ]
    if request_log is not None:
        command += ["--request-log", str(request_log)]
    child = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        first = await asyncio.wait_for(child.stdout.readline(), timeout=60)
        if not first:
            raise RuntimeError(f"the sandbox process ended at start (exit {await child.wait()})")
        yield json.loads(first)
    finally:
        child.stdin.close()  # the child stops when its stdin ends
        try:
            await asyncio.wait_for(child.wait(), timeout=10)
        except TimeoutError:
            child.kill()
            await child.wait()


async def serve_sandbox(seed: int, request_log: Path | None) -> None:
    """The child side of ``sandbox_endpoint``: info on the first line, then serve until stdin
    closes."""
    async with Sandbox(limits=REALISTIC_LIMITS, seed=seed, request_log=request_log) as sandbox:
        print(json.dumps(sandbox.info), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


class Control:
    """The few control-API calls the benchmark needs."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.http = client
        self.url = url

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.http.request(method, self.url + path, json=body)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()


async def _make_targets(
    control: Control, info: dict[str, Any], *, discord: int, telegram: int
) -> tuple[list[str], list[int]]:
    guild = info["discord_guild_id"]
    channels = [
        (
            await control.call(
                "POST", f"/discord/guilds/{guild}/channels", {"name": f"news-{i:03d}", "type": 0}
            )
        )["id"]
        for i in range(discord)
    ]
    chats = [
        (
            await control.call(
                "POST",
                "/telegram/chats",
                {"type": "channel", "title": f"News {i:03d}", "bot_admin": True},
            )
        )["id"]
        for i in range(telegram)
    ]
    return [str(c) for c in channels], [int(c) for c in chats]


def bench_settings(
    database_url: str, info: dict[str, Any], platform_timeout: float, lease_seconds: float = 30.0
) -> Settings:
    """The worker's settings as the recorded figures were measured (the production defaults then;
    since then the defaults retry up to 16 times with a 15-minute cap, which changes nothing
    before a delivery's 7th consecutive failure); every value that shapes the result set explicitly,
    so a ``COMMS_*`` variable in the shell cannot change the benchmark."""
    return load_settings(
        database_url=database_url,
        protocol_name="Example Protocol",
        official_domains=["example.org"],
        approval_quorum={s.value: 1 for s in Severity},
        discord_api_base=info["discord_api_base"],
        discord_token=SecretStr(info["discord_token"]),
        telegram_api_base=info["telegram_api_base"],
        telegram_token=SecretStr(info["telegram_token"]),
        telegram_uncertain=TelegramUncertainPolicy.HOLD,
        platform_timeout_seconds=platform_timeout,
        worker_lease_seconds=lease_seconds,
        worker_poll_seconds=0.2,
        worker_max_attempts=10,
        worker_backoff_cap_seconds=60.0,
    )


async def _seed(
    db: Database, settings: Settings, channels: list[str], chats: list[int]
) -> tuple[int, int]:
    """Team, incident, destinations and a submitted draft, through the real services.

    Returns (draft id, approver id); the approval itself is the timed step.
    """
    password = secrets.token_urlsafe(16)  # nobody signs in; the policy still wants one
    async with db.transaction() as session:
        writer = await users.create(
            session, username="carol", password=password, roles=[Role.COMMS_MANAGER]
        )
        approver = await users.create(
            session, username="dave", password=password, roles=[Role.DECISION_MAKER]
        )
        leader = await users.create(
            session, username="leo", password=password, roles=[Role.INCIDENT_LEADER]
        )
        incident = await incidents.open_incident(
            session, title="Bridge exploit", severity=Severity.P1, actor=leader
        )
        chosen = [
            await destinations.create(
                session,
                name=f"discord-news-{i:03d}",
                platform=Platform.DISCORD,
                target=channel,
                actor=None,
            )
            for i, channel in enumerate(channels)
        ] + [
            await destinations.create(
                session,
                name=f"telegram-news-{i:03d}",
                platform=Platform.TELEGRAM,
                target=str(chat),
                actor=None,
            )
            for i, chat in enumerate(chats)
        ]
        draft = await drafts.create(
            session,
            incident=incident,
            template=TEMPLATE,
            variables=VARIABLES,
            destinations=chosen,
            actor=writer,
            settings=settings,
        )
        await drafts.submit(session, draft=draft, actor=writer, settings=settings)
        return draft.id, approver.id


async def _approve(db: Database, settings: Settings, draft_id: int, approver_id: int) -> None:
    async with db.transaction() as session:
        draft = await drafts.require_draft(session, draft_id=draft_id)
        approver = await users.get(session, user_id=approver_id)
        assert approver is not None
        await drafts.approve(session, draft=draft, actor=approver, settings=settings)


async def _messages(control: Control, platform: Platform, target: str) -> list[dict[str, Any]]:
    path = (
        f"/discord/channels/{target}/messages"
        if platform is Platform.DISCORD
        else f"/telegram/chats/{target}/messages"
    )
    result: list[dict[str, Any]] = await control.call("GET", path)
    return result


async def _audit_outcome(db: Database, control: Control, draft_id: int) -> dict[str, Any]:
    """Compare what the outbox recorded with what members of each channel/chat can see."""
    async with db.transaction() as session:
        deliveries = list(
            (await session.scalars(select(Delivery).where(Delivery.draft_id == draft_id))).all()
        )
        draft = await drafts.require_draft(session, draft_id=draft_id)
        expected_by_id = {
            int(item["destination"]["id"]): len(item["messages"])
            for item in draft.payload["deliveries"]
        }
        rows = [
            (
                d.destination_id,
                Platform(d.destination.platform),
                d.destination.target,
                d.state,
                list(d.platform_message_ids),
                d.attempts,
            )
            for d in deliveries
        ]
        # Why the deliveries that did not end sent ended where they did (first words).
        why = Counter(
            f"{d.state}: {re.sub(r'[0-9]+', 'N', d.last_error)[:90]}"
            for d in deliveries
            if d.state != DeliveryState.SENT.value
        )
    lost: list[dict[str, Any]] = []
    duplicates: Counter[str] = Counter()
    uncertain: dict[str, Counter[str]] = {p.value: Counter() for p in Platform}
    states: Counter[str] = Counter()
    attempts = 0
    expected: dict[tuple[str, str], int] = {}
    for destination_id, platform, target, state, ids, tries in rows:
        states[state] += 1
        attempts += tries
        shown = await _messages(control, platform, target)
        shown_ids = {str(m["id"]) for m in shown}
        expected[(platform.value, target)] = expected_by_id[destination_id]
        extra = len(shown) - expected_by_id[destination_id]
        if extra > 0:
            duplicates[platform.value] += extra
        if state == DeliveryState.SENT.value:
            if not ids or not set(ids) <= shown_ids:
                lost.append(
                    {
                        "target": target,
                        "platform": platform.value,
                        "why": "recorded as sent but not in the channel",
                    }
                )
        elif state == DeliveryState.UNCERTAIN.value:
            uncertain[platform.value]["posted" if shown else "not_posted"] += 1
        else:
            lost.append({"target": target, "platform": platform.value, "why": state})
    return {
        "lost": len(lost),
        "lost_detail": lost,
        "duplicates": sum(duplicates.values()),
        "duplicates_by_platform": {p.value: duplicates[p.value] for p in Platform},
        "uncertain": sum(sum(c.values()) for c in uncertain.values()),
        "uncertain_by_platform": {
            p: {"total": sum(c.values()), "posted": c["posted"], "not_posted": c["not_posted"]}
            for p, c in uncertain.items()
        },
        "states": dict(states),
        "not_sent_why": dict(why.most_common(10)),
        "attempts": attempts,
        "expected_messages": expected,
    }


async def run_once(
    *,
    discord: int,
    telegram: int,
    faults: str | Sequence[FaultShare],
    database_url: str,
    seed: int = 7,
    platform_timeout: float = 15.0,
    settle_within: float = 600.0,
    request_log: Path | None = None,
    sandbox_mode: str = "process",
    workers: int = 0,
    kill_one: bool = False,
    lease_seconds: float = 30.0,
) -> dict[str, Any]:
    """One fan-out on a fresh sandbox; ``database_url`` must name an empty database.

    ``faults`` is a plan's name in ``FAULT_PLANS`` or the shares themselves. ``workers`` 0 runs
    the Worker in this process; N > 0 starts N ``comms worker`` processes (the real command),
    and ``kill_one`` SIGKILLs one of them once half of the deliveries are sent.
    """
    plan = FAULT_PLANS[faults] if isinstance(faults, str) else tuple(faults)
    await upgrade_async(database_url)
    db = Database(database_url)
    try:
        async with (
            sandbox_endpoint(sandbox_mode, seed=seed, request_log=request_log) as info,
            httpx.AsyncClient(timeout=30) as client,
        ):
            control = Control(client, info["control_url"])
            channels, chats = await _make_targets(control, info, discord=discord, telegram=telegram)
            settings = bench_settings(database_url, info, platform_timeout, lease_seconds)
            draft_id, approver_id = await _seed(db, settings, channels, chats)
            run = Timed(db, settings, control, plan, draft_id, approver_id, settle_within)
            if workers == 0:
                measured = await run.in_process()
            else:
                measured = await run.in_processes(info, workers=workers, kill_one=kill_one)
            outcome = await _audit_outcome(db, control, draft_id)
    finally:
        await db.dispose()
    expected: dict[tuple[str, str], int] = outcome.pop("expected_messages")
    bound = bound_seconds(
        REALISTIC_LIMITS,
        discord=[expected[(Platform.DISCORD.value, c)] for c in channels],
        telegram=[(c, expected[(Platform.TELEGRAM.value, str(c))]) for c in chats],
    )
    before, after = measured.stats_before, measured.stats_after
    d_stats, t_stats = _delta(before, after, "discord"), _delta(before, after, "telegram")
    wall, cpu = measured.wall_seconds, measured.cpu_seconds
    return {
        "faults": faults if isinstance(faults, str) else "custom",
        "fault_plan": [dataclasses.asdict(share) for share in plan],
        "destinations": {"discord": discord, "telegram": telegram, "total": discord + telegram},
        "message_creates_needed": {
            "discord": sum(expected[(Platform.DISCORD.value, c)] for c in channels),
            "telegram": sum(expected[(Platform.TELEGRAM.value, str(c))] for c in chats),
        },
        "workers": measured.workers,
        "wall_seconds": round(wall, 3),
        # CPU time of the worker(s) (publishers and SQLite threads included; the sandbox too
        # with --sandbox loop) over the same span: close to wall_seconds × processes means the
        # run is bound by our own CPU.
        "cpu_seconds": round(cpu, 3),
        "cpu_ms_per_delivery": round(1000 * cpu / (discord + telegram), 2),
        "cpu_seconds_per_1000_deliveries": round(1000 * cpu / (discord + telegram), 3),
        "sandbox": sandbox_mode,
        "lease_seconds": lease_seconds,
        "load_average_1m_before": round(measured.load_before, 2),
        "calibration_ms": measured.calibration_ms,
        "bound_seconds": round(bound["overall"], 3),
        "bound_by_platform": {k: round(v, 3) for k, v in bound.items() if k != "overall"},
        "ratio": round(wall / bound["overall"], 3) if bound["overall"] > 0 else None,
        "rate_limited_429s": {
            "discord": d_stats["rate_limited"],
            "telegram": t_stats["rate_limited"],
        },
        "lost": outcome["lost"],
        "duplicates": outcome["duplicates"],
        "uncertain": outcome["uncertain"],
        "uncertain_by_platform": outcome["uncertain_by_platform"],
        "duplicates_by_platform": outcome["duplicates_by_platform"],
        "lost_detail": outcome["lost_detail"],
        "delivery_states": outcome["states"],
        "not_sent_why": outcome["not_sent_why"],
        "delivery_attempts": outcome["attempts"],
        "faults_applied": measured.applied,
        "requests": {"discord": d_stats, "telegram": t_stats},
    }


@dataclass
class Measured:
    """What one timed fan-out measured, however the workers ran."""

    wall_seconds: float
    cpu_seconds: float
    stats_before: dict[str, Any]
    stats_after: dict[str, Any]
    applied: dict[str, dict[str, int]]
    load_before: float
    calibration_ms: float
    workers: dict[str, Any]


@dataclass
class Timed:
    """The timed part of a run: approve, then wait for the outbox to settle."""

    db: Database
    settings: Settings
    control: Control
    plan: Sequence[FaultShare]
    draft_id: int
    approver_id: int
    settle_within: float

    async def _arm(self) -> dict[str, Any]:
        """Let the buckets refill, inject the faults, read the platforms' counters."""
        # Logging in used part of Discord's global bucket: let it refill so the bound's
        # "every bucket full at t = 0" holds.
        await asyncio.sleep(1.0 + 0.1)
        hang = self.settings.platform_timeout_seconds + 5.0
        for spec in fault_specs(self.plan, hang_seconds=hang):
            await self.control.call("POST", "/faults", spec)
        before: dict[str, Any] = await self.control.call("GET", "/stats")
        return before

    async def _finish(self) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
        after = await self.control.call("GET", "/stats")
        # A hung request is logged only when it ends, after the run: count faults from the
        # rules themselves.
        return after, _faults_applied(await self.control.call("GET", "/faults"))

    async def in_process(self) -> Measured:
        """The Worker in this process, with its publishers: CPU is this process's."""
        discord_base = discord_http.Route.BASE  # the publisher repoints it; put it back after
        publishers = build_publishers(self.settings)
        for publisher in publishers.values():
            await publisher.start()
        try:
            before = await self._arm()
            worker = Worker(
                database=self.db,
                settings=self.settings,
                publishers=publishers,
                config=WorkerConfig.from_settings(self.settings),
            )
            freeze_startup_objects()  # as ``comms worker`` does once it has started
            load_before = os.getloadavg()[0]  # other work on the machine skews a run
            yardstick = calibration_ms()
            started, cpu_started = time.perf_counter(), time.process_time()
            await _approve(self.db, self.settings, self.draft_id, self.approver_id)
            await worker.run_until_settled(within=self.settle_within)
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            after, applied = await self._finish()
        finally:
            for publisher in publishers.values():
                await publisher.close()
            discord_http.Route.BASE = discord_base
        return Measured(wall, cpu, before, after, applied, load_before, yardstick, {"processes": 0})

    async def in_processes(self, info: dict[str, Any], *, workers: int, kill_one: bool) -> Measured:
        """``workers`` ``comms worker`` processes; CPU is theirs, read from /proc."""
        env = worker_environment(self.settings, info)
        fleet = [await WorkerProcess.start(env, index) for index in range(workers)]
        killed: dict[str, Any] | None = None
        try:
            await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in fleet)), timeout=120)
            before = await self._arm()
            load_before = os.getloadavg()[0]
            yardstick = calibration_ms()
            for w in fleet:
                w.mark()
            started = time.perf_counter()
            await _approve(self.db, self.settings, self.draft_id, self.approver_id)
            total = await self._count("all")
            deadline = started + self.settle_within
            while True:
                sent = await self._count("sent")
                if kill_one and killed is None and sent * 2 >= total:
                    # The worker sending for Telegram (the longer bound), not a standby.
                    pid = await self._sender_pid(Platform.TELEGRAM)
                    victim = next((w for w in fleet if w.process.pid == pid), fleet[0])
                    victim.kill()
                    killed = {
                        "worker": victim.index,
                        "was_sending_for": await self._roles_of(pid),
                        "at_seconds": round(time.perf_counter() - started, 3),
                        "sent_before_kill": sent,
                    }
                if await self._count("open") == 0:
                    break
                if time.perf_counter() > deadline:
                    raise TimeoutError("the outbox did not settle in time")
                await asyncio.sleep(0.05)
            wall = time.perf_counter() - started
            cpu_each = [w.cpu_since_mark() for w in fleet]
            after, applied = await self._finish()
        finally:
            for w in fleet:
                await w.stop()
        return Measured(
            wall,
            sum(cpu_each),
            before,
            after,
            applied,
            load_before,
            yardstick,
            {
                "processes": workers,
                "cpu_seconds_each": [round(c, 3) for c in cpu_each],
                "killed": killed,
            },
        )

    async def _sender_pid(self, platform: Platform) -> int | None:
        """The process id of the worker sending for ``platform`` (worker ids are
        ``host:pid:random``)."""
        async with self.db.transaction() as session:
            holder = await session.scalar(
                select(PlatformSender.worker_id).where(PlatformSender.platform == platform.value)
            )
        parts = (holder or "").split(":")
        return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None

    async def _roles_of(self, pid: int | None) -> list[str]:
        async with self.db.transaction() as session:
            rows = (
                await session.execute(select(PlatformSender.platform, PlatformSender.worker_id))
            ).all()
        return sorted(p for p, holder in rows if pid is not None and f":{pid}:" in holder)

    async def _count(self, which: str) -> int:
        """Deliveries of the draft: ``all``, ``sent``, or ``open`` (not yet in a final state, or
        sent but not yet written to the Incident Log)."""
        final = [s.value for s in DONE | NEEDS_PERSON]
        query = select(func.count()).select_from(Delivery).where(Delivery.draft_id == self.draft_id)
        if which == "sent":
            query = query.where(Delivery.state == DeliveryState.SENT.value)
        elif which == "open":
            query = query.where(
                (Delivery.state.not_in(final))
                | ((Delivery.state == DeliveryState.SENT.value) & Delivery.recorded_at.is_(None))
            )
        async with self.db.transaction() as session:
            return int(await session.scalar(query) or 0)


def worker_environment(settings: Settings, info: dict[str, Any]) -> dict[str, str]:
    """The environment of a ``comms worker`` process with ``settings``' values (no COMMS_*
    variable of the shell leaks in)."""
    quorum = ",".join(f"{s.value}={n}" for s, n in settings.approval_quorum.items())
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("COMMS_")},
        "COMMS_DATABASE_URL": settings.database_url,
        "COMMS_PROTOCOL_NAME": settings.protocol_name,
        "COMMS_OFFICIAL_DOMAINS": ",".join(settings.official_domains),
        "COMMS_APPROVAL_QUORUM": quorum,
        "COMMS_DISCORD_API_BASE": info["discord_api_base"],
        "COMMS_DISCORD_TOKEN": info["discord_token"],
        "COMMS_TELEGRAM_API_BASE": info["telegram_api_base"],
        "COMMS_TELEGRAM_TOKEN": info["telegram_token"],
        "COMMS_TELEGRAM_UNCERTAIN": settings.telegram_uncertain.value,
        "COMMS_PLATFORM_TIMEOUT_SECONDS": str(settings.platform_timeout_seconds),
        "COMMS_WORKER_LEASE_SECONDS": str(settings.worker_lease_seconds),
        "COMMS_WORKER_POLL_SECONDS": str(settings.worker_poll_seconds),
        "COMMS_WORKER_MAX_ATTEMPTS": str(settings.worker_max_attempts),
        "COMMS_WORKER_BACKOFF_CAP_SECONDS": str(settings.worker_backoff_cap_seconds),
        "COMMS_LOG_LEVEL": "INFO",  # the runner's "starting" line says the worker is ready
    }


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class WorkerProcess:
    """One ``comms worker`` process, ready once its runner logs that it is starting."""

    index: int
    process: asyncio.subprocess.Process
    ready: asyncio.Event
    reader: asyncio.Task[None] | None = None
    cpu_at_mark: float = 0.0
    cpu_at_end: float | None = None
    log: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    async def start(cls, env: dict[str, str], index: int) -> WorkerProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "comms",
            "worker",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        worker = cls(index, process, asyncio.Event())
        worker.reader = asyncio.create_task(worker._read())
        return worker

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.log.append(line.decode(errors="replace").rstrip())
            if b"starting" in line:
                self.ready.set()

    def cpu(self) -> float:
        """User + system CPU seconds of the process so far (/proc/<pid>/stat)."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except FileNotFoundError:
            tail = "\n".join(self.log[-40:])
            raise RuntimeError(f"worker {self.index} ended on its own; its log:\n{tail}") from None
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def mark(self) -> None:
        self.cpu_at_mark = self.cpu()

    def cpu_since_mark(self) -> float:
        end = self.cpu_at_end if self.cpu_at_end is not None else self.cpu()
        return end - self.cpu_at_mark

    def kill(self) -> None:
        self.cpu_at_end = self.cpu()
        self.process.kill()

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.reader is not None:
            await self.reader


# ---------------------------------------------------------------------------------- the baseline


async def run_baseline(
    *,
    discord: int,
    telegram: int,
    faults: str,
    seed: int = 7,
    platform_timeout: float = 15.0,
    sandbox_mode: str = "process",
) -> dict[str, Any]:
    """The loop a team would write by hand with the same two libraries: no database, no
    outbox, sequential sends per platform (the platforms in parallel), python-telegram-bot's
    ``AIORateLimiter``, discord.py's own rate-limit handling, and a failed send logged and
    skipped. Same announcement, same limits, same faults, a sandbox of its own."""
    from discord import AllowedMentions, Client, Intents
    from telegram.constants import ParseMode
    from telegram.ext import AIORateLimiter, ExtBot
    from telegram.request import HTTPXRequest

    from bots.discord_publisher import use_api_base
    from comms.drafts.payload import DraftOptions, build_plan
    from comms.rendering import RenderContext, TemplateRegistry

    plan = FAULT_PLANS[faults]
    spec = TemplateRegistry.default().get(TEMPLATE)
    rendered = build_plan(
        draft_id=1,
        version=1,
        spec=spec,
        values=dict(VARIABLES),
        ctx=RenderContext(
            protocol_name="Example Protocol", incident_key="INC-2026-0001", severity=Severity.P1
        ),
        destinations=[],
        options=DraftOptions(),
        correction_of=None,
    )
    discord_text, telegram_text = rendered.discord[0], rendered.telegram[0]
    discord_base = discord_http.Route.BASE
    async with (
        sandbox_endpoint(sandbox_mode, seed=seed, request_log=None) as info,
        httpx.AsyncClient(timeout=30) as client,
    ):
        control = Control(client, info["control_url"])
        channels, chats = await _make_targets(control, info, discord=discord, telegram=telegram)
        use_api_base(info["discord_api_base"])
        bot = Client(intents=Intents.none(), allowed_mentions=AllowedMentions.none())
        await bot.login(info["discord_token"])
        tg = ExtBot(
            token=info["telegram_token"],
            base_url=info["telegram_api_base"],
            request=HTTPXRequest(
                connection_pool_size=8,
                read_timeout=platform_timeout,
                write_timeout=platform_timeout,
            ),
            rate_limiter=AIORateLimiter(max_retries=0),
        )
        await tg.initialize()
        failed: Counter[str] = Counter()
        try:
            await asyncio.sleep(1.1)  # as for the service: every bucket full at t = 0
            for spec_ in fault_specs(plan, hang_seconds=platform_timeout + 5.0):
                await control.call("POST", "/faults", spec_)

            async def discord_loop() -> None:
                for channel in channels:
                    try:
                        await asyncio.wait_for(
                            bot.get_partial_messageable(int(channel)).send(discord_text),
                            platform_timeout,
                        )
                    except Exception:  # a hand-written loop logs and moves on
                        failed["discord"] += 1

            async def telegram_loop() -> None:
                for chat in chats:
                    try:
                        await tg.send_message(chat, telegram_text, parse_mode=ParseMode.HTML)
                    except Exception:
                        failed["telegram"] += 1

            started, cpu_started = time.perf_counter(), time.process_time()
            await asyncio.gather(discord_loop(), telegram_loop())
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu_started
        finally:
            await bot.close()
            await tg.shutdown()
            discord_http.Route.BASE = discord_base
        lost = duplicates = 0
        for platform, targets in ((Platform.DISCORD, channels), (Platform.TELEGRAM, chats)):
            for target in targets:
                shown = len(await _messages(control, platform, str(target)))
                lost += shown == 0
                duplicates += max(0, shown - 1)
    bound = bound_seconds(
        REALISTIC_LIMITS, discord=[1] * len(channels), telegram=[(c, 1) for c in chats]
    )
    total = discord + telegram
    return {
        "scenario": "baseline (hand-written loop)",
        "faults": faults,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(cpu, 3),
        "cpu_ms_per_delivery": round(1000 * cpu / total, 2),
        "bound_seconds": round(bound["overall"], 3),
        "ratio": round(wall / bound["overall"], 3) if bound["overall"] > 0 else None,
        "lost": lost,
        "lost_share": round(lost / total, 4),
        "duplicates": duplicates,
        "failed_sends": dict(failed),
    }


def _faults_applied(rules: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """How many requests each kind of fault hit, per platform (``timeout+after`` = the
    platform carried the request out and only the answer was lost)."""
    applied: dict[str, dict[str, int]] = {"discord": {}, "telegram": {}}
    for rule in rules:
        kind = rule["kind"] + ("+after" if rule["after_effect"] else "")
        counts = applied.setdefault(rule["platform"], {})
        counts[kind] = counts.get(kind, 0) + int(rule["applied"])
    return applied


def _delta(before: dict[str, Any], after: dict[str, Any], platform: str) -> dict[str, Any]:
    """What one platform saw during the timed part (the stats counters are cumulative)."""

    def diff(key: str) -> dict[str, int]:
        old, new = before.get(key, {}), after.get(key, {})
        return {k: v - old.get(k, 0) for k, v in new.items() if v - old.get(k, 0)}

    statuses = {
        k.split(":", 1)[1]: v for k, v in diff("statuses").items() if k.startswith(platform + ":")
    }
    limited_old = before.get("rate_limited", {}).get(platform, {})
    limited = {
        scope: count - limited_old.get(scope, 0)
        for scope, count in after.get("rate_limited", {}).get(platform, {}).items()
        if count - limited_old.get(scope, 0)
    }
    return {
        "total": after["requests"].get(platform, 0) - before["requests"].get(platform, 0),
        "statuses": statuses,
        "rate_limited": {"total": sum(limited.values()), "by_scope": limited},
    }


# ---------------------------------------------------------------------------------- databases


async def _pg_execute(url: str, statement: str) -> Any:
    """Run one statement on the server of a PostgreSQL URL with plain asyncpg (imported here:
    SQLite runs do not need it)."""
    import asyncpg  # type: ignore[import-untyped]

    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(statement)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def fresh_database(base_url: str | None, label: str) -> AsyncIterator[str]:
    """An empty database for one run, never an existing one.

    None: a SQLite file in a temporary directory. A SQLite URL: a new file beside the named
    one (``<stem>-<label>.db``; refused if it exists, kept afterwards for inspection). A
    PostgreSQL URL: a new database on that server, dropped afterwards.
    """
    if base_url is None:
        with tempfile.TemporaryDirectory(prefix="fanout-") as tmp:
            yield f"sqlite+aiosqlite:///{Path(tmp) / 'comms.db'}"
        return
    url = make_url(base_url)
    if is_sqlite(base_url):
        path = Path(url.database or "comms.db")
        target = path.with_name(f"{path.stem}-{label}{path.suffix or '.db'}")
        if target.exists():
            raise SystemExit(f"{target} exists; the benchmark only writes to a new database")
        yield url.set(database=str(target)).render_as_string(hide_password=False)
        return
    name = f"fanout_{label.replace('-', '_')}_{secrets.token_hex(3)}"
    await _pg_execute(base_url, f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        await _pg_execute(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _database_version(base_url: str | None) -> str:
    if base_url is None or is_sqlite(base_url):
        return f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL)"
    return str(await _pg_execute(base_url, "SELECT version()"))


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform_module.processor() or "unknown"


def _versions(*names: str) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


async def context(base_url: str | None, sandbox_mode: str) -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "machine": {
            "cpu": _cpu_model(),
            "cores": usable,
            "os": platform_module.platform(),
        },
        "python": sys.version.split()[0],
        "database": await _database_version(base_url),
        "libraries": _versions(
            "discord.py",
            "python-telegram-bot",
            "aiohttp",
            "httpx",
            "SQLAlchemy",
            "aiosqlite",
            "aiolimiter",
        ),
        "sandbox": (
            "in a child process, on 127.0.0.1"
            if sandbox_mode == "process"
            else "in this process and event loop, on 127.0.0.1"
        ),
    }


# ---------------------------------------------------------------------------------- the CLI


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": len(runs),
        "wall_seconds": _median(runs, "wall_seconds"),
        "cpu_seconds": _median(runs, "cpu_seconds"),
        "cpu_ms_per_delivery": _median(runs, "cpu_ms_per_delivery"),
        "bound_seconds": _median(runs, "bound_seconds"),
        "ratio": _median(runs, "ratio"),
        "ratio_max": max((r["ratio"] for r in runs if r["ratio"] is not None), default=None),
        "lost_total": sum(r["lost"] for r in runs),
        "duplicates_total": sum(r["duplicates"] for r in runs),
        "uncertain_total": sum(r["uncertain"] for r in runs),
        "rate_limited_429s_total": {
            p: sum(r["rate_limited_429s"][p]["total"] for r in runs)
            for p in ("discord", "telegram")
        },
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    scenarios = ["none", "default"] if args.faults == "both" else [args.faults]
    document: dict[str, Any] = {
        "benchmark": "fanout",
        "context": await context(args.database_url, args.sandbox),
        "limits": REALISTIC_LIMITS.to_dict(),
        "platform_timeout_seconds": args.platform_timeout,
        "scenarios": {},
    }
    for scenario in scenarios:
        runs = []
        for index in range(args.runs):
            label = f"{scenario}-{index + 1}"
            async with fresh_database(args.database_url, label) as url:
                result = await run_once(
                    discord=args.discord,
                    telegram=args.telegram,
                    faults=scenario,
                    database_url=url,
                    seed=args.seed + index,
                    platform_timeout=args.platform_timeout,
                    sandbox_mode=args.sandbox,
                    workers=args.workers,
                    kill_one=args.kill_one,
                    lease_seconds=args.lease_seconds,
                )
            result["run"] = index + 1
            runs.append(result)
            print(
                f"[fanout] {label}: wall {result['wall_seconds']:.3f} s, bound "
                f"{result['bound_seconds']:.3f} s, ratio {result['ratio']}, lost "
                f"{result['lost']}, duplicates {result['duplicates']}, uncertain "
                f"{result['uncertain']}, cpu {result['cpu_seconds']:.3f} s, workers "
                f"{result['workers']}",
                file=sys.stderr,
                flush=True,
            )
        entry: dict[str, Any] = {"median": summarise(runs), "runs": runs}
        if args.baseline:
            baselines = []
            for index in range(args.runs):
                baseline = await run_baseline(
                    discord=args.discord,
                    telegram=args.telegram,
                    faults=scenario,
                    seed=args.seed + index,
                    platform_timeout=args.platform_timeout,
                    sandbox_mode=args.sandbox,
                )
                baselines.append(baseline)
                print(
                    f"[fanout] baseline {scenario}-{index + 1}: "
                    f"wall {baseline['wall_seconds']:.3f} "
                    f"s, cpu {baseline['cpu_seconds']:.3f} s, lost {baseline['lost']}",
                    file=sys.stderr,
                    flush=True,
                )
            entry["baseline"] = {
                "median": {
                    "wall_seconds": _median(baselines, "wall_seconds"),
                    "cpu_seconds": _median(baselines, "cpu_seconds"),
                    "cpu_ms_per_delivery": _median(baselines, "cpu_ms_per_delivery"),
                    "ratio": _median(baselines, "ratio"),
                    "lost_total": sum(b["lost"] for b in baselines),
                    "duplicates_total": sum(b["duplicates"] for b in baselines),
                },
                "runs": baselines,
            }
            service, hand = entry["median"], entry["baseline"]["median"]
            entry["side_by_side"] = {
                "service": {k: service[k] for k in ("wall_seconds", "cpu_ms_per_delivery")}
                | {"lost": service["lost_total"], "duplicates": service["duplicates_total"]},
                "baseline": {k: hand[k] for k in ("wall_seconds", "cpu_ms_per_delivery")}
                | {"lost": hand["lost_total"], "duplicates": hand["duplicates_total"]},
            }
            print(f"[fanout] {scenario} side by side: {entry['side_by_side']}", file=sys.stderr)
        document["scenarios"][scenario] = entry
    return document


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--discord", type=int, default=100, help="Discord channels (100)")
    parser.add_argument("--telegram", type=int, default=100, help="Telegram chats (100)")
    parser.add_argument(
        "--faults",
        choices=["none", "default", "both"],
        default="both",
        help="none: no faults; default: 5%% 5xx and 2%% timeouts; both (the default): each",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (3)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLite or PostgreSQL URL; each run gets a new database beside/on it "
        "(default: a temporary SQLite file)",
    )
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--seed", type=int, default=7, help="fault RNG seed of run 1 (7)")
    parser.add_argument(
        "--platform-timeout",
        type=float,
        default=15.0,
        help="seconds before a platform request counts as timed out (15, the service default)",
    )
    parser.add_argument(
        "--sandbox",
        choices=["process", "loop"],
        default="process",
        help="process (the default): the emulators in a child process, like real platforms "
        "elsewhere; loop: in this process's event loop",
    )
    parser.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the hand-written loop (same libraries, no database) on a fresh sandbox, "
        "and print both side by side (default: on)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="0 (the default): the Worker in this process; N: N `comms worker` processes, "
        "their CPU read from /proc",
    )
    parser.add_argument(
        "--kill-one",
        action="store_true",
        help="with --workers: SIGKILL one worker process once half of the deliveries are sent",
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=30.0,
        help="COMMS_WORKER_LEASE_SECONDS: how soon a dead worker's claims are taken over (30)",
    )
    parser.add_argument("--serve-sandbox", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--request-log", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.discord < 0 or args.telegram < 0 or args.discord + args.telegram == 0:
        parser.error("need at least one destination")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    if args.kill_one and args.workers < 2:
        parser.error("--kill-one needs --workers 2 or more (someone must take over)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_sandbox:
        asyncio.run(serve_sandbox(args.seed, args.request_log))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    document = asyncio.run(main_async(args))
    text = json.dumps(document, indent=2)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
