"""Panel load benchmark: signed-in people reading pages while the team writes.

Everything is real: a fresh migrated database seeded through the services (a team, three
incidents, drafts in every state with their approvals and Incident Log entries), and the panel
started with the real command (``comms serve --no-worker``, ``--workers N`` processes). The
people are already signed in (their sessions are made through ``comms.auth.sessions``: signing
in is deliberately slow, argon2, and not what this measures). Each one loads a page, thinks for
an exponentially distributed time (mean ``--think`` seconds), loads the next one: an *open*
loop, so a slow answer does not slow the arrivals down the way a closed loop would hide it.
Meanwhile ``--writes-per-second`` edits go through the JSON API (new draft versions), the
writes an incident brings.

    python bench/panel.py [--users 50] [--think 2] [--duration 60] [--processes 1]
                          [--writes-per-second 1] [--database-url URL] [--json-out FILE]

Prints one JSON document: latency percentiles per page and overall, errors, the server's CPU
per request; docs/BENCHMARKS.md records the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import secrets
import socket
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.fanout import context, fresh_database
from comms.auth import sessions, tokens
from comms.auth.sessions import Stage
from comms.db import Database
from comms.destinations import service as destinations
from comms.drafts import service as drafts
from comms.enums import Platform, Role, Severity
from comms.incidents import service as incidents
from comms.incidents.models import LogKind
from comms.migrate import upgrade_async
from comms.settings import Settings, load_settings
from comms.users import service as users

ROOT = Path(__file__).resolve().parent.parent

# What people open during an incident, and how often (weights).
PAGES: dict[str, float] = {
    "dashboard": 0.35,
    "draft": 0.25,
    "incident": 0.20,
    "drafts": 0.10,
    "deliveries": 0.10,
}
VARIABLES = {
    "summary": "An attacker is draining the ETH bridge.",
    "affected": "Bridge contracts on mainnet",
    "funds_status": "at_risk",
    "next_update": "2026-01-01T13:00Z",
}
UPDATE = {
    "update": "The bridge is paused; we are tracing the funds.",
    "funds_status": "under_review",
    "next_update": "2026-01-01T14:00Z",
}


@dataclass
class World:
    """What the seeded database holds that the load needs to know."""

    cookies: list[str]
    incident_keys: list[str]
    draft_ids: list[int]
    scratch: list[tuple[int, int]]  # (draft id, version): drafts the writers edit
    api_token: str


@dataclass
class Sample:
    page: str
    at: float
    seconds: float
    status: int


def bench_settings(database_url: str) -> Settings:
    return load_settings(
        database_url=database_url,
        protocol_name="Example Protocol",
        official_domains=["example.org"],
        approval_quorum={s.value: 2 for s in Severity},
    )


async def seed(db: Database, settings: Settings, *, people: int) -> World:
    """The team, three incidents with drafts in every state, sessions for ``people``."""
    password = secrets.token_urlsafe(16)
    roles = [
        [Role.DECISION_MAKER],
        [Role.COMMS_MANAGER],
        [Role.INCIDENT_LEADER],
        [Role.RESPONDER],
        [Role.SCRIBE],
    ]
    async with db.transaction() as session:
        team = [
            await users.create(
                session,
                username=f"person{i:03d}",
                password=password,
                roles=roles[i % len(roles)],
            )
            for i in range(max(people, 5))
        ]
        writer, leader = team[1], team[2]
        approvers = [u for u in team if Role.DECISION_MAKER in u.role_set][:2]
        chosen = [
            await destinations.create(
                session,
                name=f"{platform.value}-news-{i}",
                platform=platform,
                target=str(10**17 + i)
                if platform is Platform.DISCORD
                else str(-1_001_000_000_100 - i),
                actor=None,
            )
            for i in range(5)
            for platform in Platform
        ]
        keys, draft_ids, scratch = [], [], []
        for n, title in enumerate(("Bridge exploit", "Oracle manipulation", "Frontend hijack")):
            incident = await incidents.open_incident(
                session, title=title, severity=Severity.P1, actor=leader
            )
            keys.append(incident.key)
            for state in range(8):
                draft = await drafts.create(
                    session,
                    incident=incident,
                    template="active-exploit-initial",
                    variables=dict(VARIABLES, summary=f"{title}: finding {state}."),
                    destinations=chosen,
                    actor=writer,
                    settings=settings,
                )
                draft_ids.append(draft.id)
                if state == 0:
                    scratch.append((draft.id, draft.version))
                    continue  # a draft being written
                await drafts.submit(session, draft=draft, actor=writer, settings=settings)
                for approver in approvers[: min(state - 1, 2)]:  # 1: in review; 2: one of two
                    await drafts.approve(session, draft=draft, actor=approver, settings=settings)
            for k in range(5):
                await incidents.add_entry(
                    session,
                    incident=incident,
                    kind=LogKind.NOTE,
                    text=f"Finding {k} on {title.lower()}: the attacker's next step (seed {n}).",
                    actor=leader,
                )
        cookies = []
        for person in team[:people]:
            raw, _ = await sessions.create(session, user=person, stage=Stage.FULL)
            cookies.append(raw)
        raw_token, _ = await tokens.create(
            session, user=writer, name="bench", scopes=[tokens.Scope.DRAFT], actor=None
        )
    return World(cookies, keys, draft_ids, scratch, raw_token)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def panel_process(
    database_url: str, *, processes: int, secret: str
) -> AsyncIterator[tuple[str, list[int]]]:
    """``comms serve --no-worker`` on a free port; (base URL, the server's process ids)."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COMMS_")},
        "COMMS_DATABASE_URL": database_url,
        "COMMS_SECRET_KEY": secret,
        "COMMS_PROTOCOL_NAME": "Example Protocol",
        "COMMS_OFFICIAL_DOMAINS": "example.org",
        "COMMS_APPROVAL_QUORUM": ",".join(f"{s.value}=2" for s in Severity),
        "COMMS_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "comms", "serve", "--no-worker", "--port", str(port)]
    if processes > 1:
        command += ["--workers", str(processes)]
    child = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(base + "/healthz")).status_code == 200:
                        break
                if child.returncode is not None:
                    raise RuntimeError(f"the panel ended at start (exit {child.returncode})")
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the panel did not answer /healthz within a minute")
        yield base, [child.pid, *_children(child.pid)]
    finally:
        if child.returncode is None:
            child.terminate()
            try:
                await asyncio.wait_for(child.wait(), timeout=20)
            except TimeoutError:
                child.kill()
                await child.wait()


def _children(pid: int) -> list[int]:
    """Child processes of ``pid`` (uvicorn's worker processes), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(stat[11]) + int(stat[12])) / _TICKS
    return total


def page_url(page: str, world: World, rng: random.Random) -> str:
    if page == "dashboard":
        return "/"
    if page == "drafts":
        return "/drafts"
    if page == "incident":
        return f"/incidents/{rng.choice(world.incident_keys)}"
    draft = rng.choice(world.draft_ids)
    return f"/drafts/{draft}/deliveries" if page == "deliveries" else f"/drafts/{draft}"


@dataclass
class Load:
    base: str
    world: World
    think: float
    until: float
    samples: list[Sample] = field(default_factory=list)
    writes: list[Sample] = field(default_factory=list)
    pending: set[asyncio.Task[None]] = field(default_factory=set)

    async def person(self, index: int, client: httpx.AsyncClient, rng: random.Random) -> None:
        """Arrivals on a Poisson schedule: each request starts at its time, answered or not."""
        cookie = {"comms_session": self.world.cookies[index]}
        names, weights = zip(*PAGES.items(), strict=True)
        loop = asyncio.get_running_loop()
        at = loop.time() + rng.expovariate(1 / self.think)
        while at < self.until:
            await asyncio.sleep(max(0.0, at - loop.time()))
            page = rng.choices(names, weights)[0]
            task = asyncio.create_task(
                self._get(client, page, page_url(page, self.world, rng), cookie)
            )
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
            at += rng.expovariate(1 / self.think)

    async def _get(
        self, client: httpx.AsyncClient, page: str, url: str, cookies: dict[str, str]
    ) -> None:
        started = time.perf_counter()
        try:
            response = await client.get(self.base + url, cookies=cookies)
            await response.aread()
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        self.samples.append(Sample(page, started, time.perf_counter() - started, status))

    async def writer(self, client: httpx.AsyncClient, rate: float, rng: random.Random) -> None:
        """New versions of the drafts being written, through the JSON API."""
        headers = {"Authorization": f"Bearer {self.world.api_token}"}
        versions = dict(self.world.scratch)
        loop = asyncio.get_running_loop()
        at = loop.time() + rng.expovariate(rate)
        n = 0
        while at < self.until:
            await asyncio.sleep(max(0.0, at - loop.time()))
            draft = rng.choice(list(versions))
            n += 1
            started = time.perf_counter()
            try:
                response = await client.patch(
                    f"{self.base}/api/v1/drafts/{draft}",
                    headers=headers,
                    json={
                        "expected_version": versions[draft],
                        "variables": dict(VARIABLES, summary=f"Revised finding {n}."),
                    },
                )
                status = response.status_code
                if status == 200:
                    versions[draft] = int(response.json()["version"])
                elif len(self.writes) < 3:
                    print(f"[panel] write refused: {status} {response.text[:300]}", file=sys.stderr)
            except httpx.HTTPError:
                status = 0
            self.writes.append(Sample("write", started, time.perf_counter() - started, status))
            at += rng.expovariate(rate)


async def warm_writes(client: httpx.AsyncClient, base: str, world: World, count: int) -> None:
    """``count`` new versions of the scratch drafts (``world.scratch`` follows them)."""
    headers = {"Authorization": f"Bearer {world.api_token}"}
    for n in range(count):
        index = n % len(world.scratch)
        draft, version = world.scratch[index]
        response = await client.patch(
            f"{base}/api/v1/drafts/{draft}",
            headers=headers,
            json={
                "expected_version": version,
                "variables": dict(VARIABLES, summary=f"Warm-up finding {n}."),
            },
        )
        if response.status_code != 200:
            raise RuntimeError(f"PATCH /api/v1/drafts/{draft}: {response.status_code} at warm-up")
        world.scratch[index] = (draft, int(response.json()["version"]))


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {
        "count": len(ordered),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "max_ms": round(1000 * ordered[-1], 1),
        "mean_ms": round(1000 * statistics.fmean(ordered), 1),
    }


async def run_once(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    await upgrade_async(database_url)
    settings = bench_settings(database_url)
    db = Database(database_url)
    try:
        world = await seed(db, settings, people=args.users)
    finally:
        await db.dispose()
    secret = secrets.token_urlsafe(48)
    async with panel_process(database_url, processes=args.processes, secret=secret) as (
        base,
        pids,
    ):
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            # Warm up: every page once per person (templates compiled, caches filled).
            for i in range(min(args.users, 10)):
                for page in PAGES:
                    url = page_url(page, world, random.Random(i))
                    response = await client.get(
                        base + url, cookies={"comms_session": world.cookies[i]}
                    )
                    if response.status_code != 200:
                        raise RuntimeError(f"GET {url}: {response.status_code} at warm-up")
            # And the writing path (its first use compiles templates and statements; a cold
            # first write held its process for 300-500 ms): a few writes per process.
            await warm_writes(client, base, world, 4 * args.processes)
            await asyncio.sleep(args.warmup)
            # The load generator's own full collections (its heap holds the seeded world) paused
            # it for over 100 ms every few seconds, and every request in flight looked that
            # much slower: measure the server, not our collector.
            gc.collect()
            gc.freeze()
            loop = asyncio.get_running_loop()
            load = Load(base, world, args.think, loop.time() + args.duration)
            rng = random.Random(args.seed)
            cpu_before, started = cpu_seconds(pids), time.perf_counter()
            client_before = time.process_time()
            people = [
                asyncio.create_task(load.person(i, client, random.Random(rng.random())))
                for i in range(args.users)
            ]
            if args.writes_per_second > 0:
                people.append(
                    asyncio.create_task(
                        load.writer(client, args.writes_per_second, random.Random(rng.random()))
                    )
                )
            await asyncio.gather(*people)
            while load.pending:
                await asyncio.wait(set(load.pending))
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(pids) - cpu_before
            client_cpu = time.process_time() - client_before
    by_page: dict[str, list[float]] = defaultdict(list)
    for sample in load.samples:
        by_page[sample.page].append(sample.seconds)
    errors = [s for s in load.samples + load.writes if s.status not in (200,)]
    requests = len(load.samples) + len(load.writes)
    return {
        "users": args.users,
        "think_seconds": args.think,
        "duration_seconds": round(elapsed, 1),
        "processes": args.processes,
        "pages": {"all": percentiles([s.seconds for s in load.samples])}
        | {page: percentiles(values) for page, values in sorted(by_page.items())},
        "page_requests_per_second": round(len(load.samples) / elapsed, 1),
        "writes": percentiles([s.seconds for s in load.writes]),
        "errors": len(errors),
        "error_statuses": sorted({s.status for s in errors}),
        "server_cpu_seconds": round(cpu, 2),
        "server_cpu_ms_per_request": round(1000 * cpu / requests, 2) if requests else None,
        # The load generator shares the machine: its CPU competes with the server's.
        "client_cpu_seconds": round(client_cpu, 2),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    document: dict[str, Any] = {
        "benchmark": "panel",
        "context": await context(args.database_url, "process"),
        "runs": [],
    }
    for index in range(args.runs):
        async with fresh_database(args.database_url, f"panel-{index + 1}") as url:
            result = await run_once(args, url)
        result["run"] = index + 1
        document["runs"].append(result)
        overall = result["pages"]["all"]
        print(
            f"[panel] run {index + 1}: {result['page_requests_per_second']} pages/s, p50 "
            f"{overall['p50_ms']} ms, p99 {overall['p99_ms']} ms, max {overall['max_ms']} ms, "
            f"errors {result['errors']}, server CPU {result['server_cpu_ms_per_request']} "
            "ms/request",
            file=sys.stderr,
            flush=True,
        )
    return document


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=50, help="signed-in people (50)")
    parser.add_argument("--think", type=float, default=2.0, help="mean seconds between pages (2)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured (60)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring (2)")
    parser.add_argument("--processes", type=int, default=1, help="panel processes (1)")
    parser.add_argument(
        "--writes-per-second",
        type=float,
        default=1.0,
        help="draft edits per second through the JSON API during the run (1; 0: none)",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs (1)")
    parser.add_argument("--seed", type=int, default=7, help="RNG seed (7)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="SQLite or PostgreSQL URL; each run gets a new database beside/on it "
        "(default: a temporary SQLite file)",
    )
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.users < 1 or args.think <= 0 or args.duration <= 0 or args.processes < 1:
        parser.error("--users, --think, --duration and --processes must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    document = asyncio.run(main_async(args))
    text = json.dumps(document, indent=2)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
