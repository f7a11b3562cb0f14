"""Page views read without locks and write nothing (issue 10, item 4, "the panel under load").

Measured before: on SQLite every transaction began with BEGIN IMMEDIATE, page views included,
and a page view refreshed its session's ``last_seen_at`` on the request path, so readers queued
for the write lock behind each other and behind every edit (p99 1.4 s at 50 people).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from comms.auth.models import WebSession
from comms.clock import FrozenClock
from comms.db import Database
from comms.incidents.models import Incident
from tests.panel.conftest import SECRET, PanelClient


async def test_a_read_transaction_cannot_write(db: Database, world: dict[str, Any]) -> None:
    with pytest.raises(DBAPIError):
        async with db.read() as session:
            incident = await session.get(Incident, world["incident"].id)
            assert incident is not None
            incident.title = "changed by a page view"
            await session.flush()
    async with db.read() as session:
        incident = await session.get(Incident, world["incident"].id)
        assert incident is not None and incident.title != "changed by a page view"


async def test_a_read_does_not_wait_for_a_writer(db: Database, world: dict[str, Any]) -> None:
    """A write transaction is open (a slow edit, a fan-out's batch): a page view still reads."""
    writing, done = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with db.transaction() as session:
            incident = await session.get(Incident, world["incident"].id)
            assert incident is not None
            incident.summary = "being edited"
            await session.flush()
            writing.set()
            await done.wait()

    task = asyncio.create_task(writer())
    await writing.wait()
    try:
        async with db.read() as session:  # before: waited for the writer's lock (30 s)
            read = await asyncio.wait_for(
                session.scalar(select(Incident.summary).where(Incident.id == world["incident"].id)),
                timeout=10,
            )
        assert read != "being edited"  # the last committed state
    finally:
        done.set()
        await task


async def test_a_page_view_writes_nothing_and_the_visit_is_written_later(
    app: FastAPI, client: PanelClient, world: dict[str, Any], db: Database, clock: FrozenClock
) -> None:
    assert (await client.login("carol")).status_code in (200, 303)

    async def last_seen() -> Any:
        async with db.read() as session:
            return await session.scalar(select(WebSession.last_seen_at))

    signed_in = await last_seen()
    clock.advance(minutes=5)
    assert (await client.get("/")).status_code == 200
    assert await last_seen() == signed_in  # noted in memory, not written on the request path
    clock.advance(minutes=26)  # 31 minutes after signing in, 26 after the last page view
    assert (await client.get("/incidents")).status_code == 200  # not idle: the visit counts
    touches = app.state.panel.touches
    assert touches.pending
    async with db.transaction() as session:
        await touches.flush(session)
    assert await last_seen() > signed_in


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process trees from /proc")
async def test_serve_runs_several_panel_processes(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COMMS_")},
        "COMMS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'c.db'}",
        "COMMS_SECRET_KEY": SECRET,
        "COMMS_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "comms", "serve", "--no-worker", "--no-bots", "--workers", "2"]
    child = await asyncio.create_subprocess_exec(*command, "--port", str(port), env=env)
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert child.returncode is None, "comms serve --workers 2 ended"
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the panel did not answer within 30 s")
            for _ in range(300):  # both processes up (each answers once it has started)
                if len(_children(child.pid)) >= 2:
                    break
                await asyncio.sleep(0.1)
            assert len(_children(child.pid)) >= 2
            assert (await http.get(f"http://127.0.0.1:{port}/login")).status_code == 200
    finally:
        child.terminate()
        await asyncio.wait_for(child.wait(), timeout=30)
