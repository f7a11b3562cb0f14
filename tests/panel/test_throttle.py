"""Brute-force protection: slow down, lock, at most 100 evaluated attempts per account per
hour whatever the settings or source addresses, an audit event for each failure, and the
same response time for unknown users as for wrong passwords."""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from approvals.app import create_app
from comms.audit.models import AuditEvent
from comms.auth.models import LoginAttempt
from comms.clock import FrozenClock
from comms.db import Database
from comms.settings import Settings
from tests.factories import PASSWORD
from tests.panel.conftest import PanelClient


def client_from(app: FastAPI, ip: str) -> PanelClient:
    browser = PanelClient(app)
    browser.http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(ip, 40000)), base_url="http://testserver"
    )
    return browser


async def _figures(db: Database, account: str) -> tuple[int, int]:
    async with db.transaction() as session:
        evaluated = await session.scalar(
            select(func.count())
            .select_from(LoginAttempt)
            .where(LoginAttempt.account == account, LoginAttempt.evaluated.is_(True))
        )
        audited = await session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action.in_(["auth.login_failed", "auth.login_refused"]))
        )
    return int(evaluated or 0), int(audited or 0)


async def test_150_wrong_passwords_in_an_hour_slow_down_then_lock(
    world: dict[str, Any], client: PanelClient, db: Database, clock: FrozenClock
) -> None:
    await client.get("/login")
    statuses = []
    for _ in range(150):
        clock.advance(seconds=24)  # 150 tries spread over one hour
        response = await client.post("/login", {"username": "dave", "password": "guess"})
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
    evaluated, audited = await _figures(db, "dave")
    assert set(statuses) == {401, 429}
    assert evaluated <= 100
    assert evaluated == statuses.count(401)
    assert audited == 150  # every failure and every refusal is in the audit log
    # The right password is refused while locked, accepted after the lock ends.
    locked = await client.post("/login", {"username": "dave", "password": PASSWORD})
    assert locked.status_code == 429 and "locked" in locked.text
    clock.advance(minutes=16)
    assert (
        await client.post("/login", {"username": "dave", "password": PASSWORD})
    ).status_code == 303
    print(
        f"\nFIGURE lockout: 150 tries/h -> {evaluated} evaluated, "
        f"{statuses.count(429)} refused (429), {audited} audit events"
    )


async def test_hourly_cap_holds_from_50_addresses_even_without_lockout(
    world: dict[str, Any], panel_settings: Settings, db: Database, clock: FrozenClock
) -> None:
    loose = panel_settings.model_copy(
        update={"lockout_after_failures": 100_000, "login_slowdown_after": 100_000}
    )
    app = create_app(settings=loose, database=db)
    clients = [client_from(app, f"198.51.100.{i}") for i in range(50)]
    statuses = []
    for round_number in range(3):
        for browser in clients:
            clock.advance(seconds=20)
            if round_number == 0:
                await browser.get("/login")
            statuses.append(
                (
                    await browser.post("/login", {"username": "dave", "password": "guess"})
                ).status_code
            )
    evaluated, audited = await _figures(db, "dave")
    assert evaluated == 100 and statuses.count(401) == 100 and statuses.count(429) == 50
    assert audited == 150
    for browser in clients:
        await browser.aclose()
    print(f"\nFIGURE cap: 150 tries from 50 addresses/h -> {evaluated} evaluated")


async def test_unknown_user_costs_the_same_time_as_a_wrong_password(
    world: dict[str, Any], panel_settings: Settings, db: Database
) -> None:
    loose = panel_settings.model_copy(
        update={
            "lockout_after_failures": 100_000,
            "login_slowdown_after": 100_000,
            "login_source_slowdown_after": 100_000,
        }
    )
    app = create_app(settings=loose, database=db)
    browser = PanelClient(app)
    await browser.get("/login")
    known: list[float] = []
    unknown: list[float] = []
    for i in range(90):  # interleaved, so drift affects both alike; under the hourly cap
        for name, bucket in (("dave", known), (f"ghost{i}", unknown)):
            start = time.perf_counter()
            response = await browser.post("/login", {"username": name, "password": "guess"})
            bucket.append(time.perf_counter() - start)
            assert response.status_code == 401
    ratio = statistics.median(unknown) / statistics.median(known)
    print(
        f"\nFIGURE login timing: median known-wrong {statistics.median(known) * 1000:.1f} ms, "
        f"unknown {statistics.median(unknown) * 1000:.1f} ms, ratio {ratio:.3f}"
    )
    assert 0.9 <= ratio <= 1.1
    await browser.aclose()
