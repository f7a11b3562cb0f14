"""Shared fixtures: a clean, migrated database per test, on SQLite or PostgreSQL.

``COMMS_TEST_DATABASE_URL`` selects PostgreSQL (CI sets it); otherwise each test gets a copy
of a migrated SQLite file. Tests that use the database are marked ``db`` automatically so CI
can run exactly those a second time on PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest

from comms.clock import FrozenClock, use_clock
from comms.db import Database
from comms.migrate import upgrade
from comms.models import Base
from comms.settings import Settings, load_settings

# CI explores the same examples on every run (seeded from each test's source), so that a red CI
# means a change broke something; local runs keep drawing new examples, which is how new bugs are
# found. A failure prints the example to reproduce it either way.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis.settings.load_profile(os.environ.get("COMMS_HYPOTHESIS_PROFILE", "default"))

PG_URL = os.environ.get("COMMS_TEST_DATABASE_URL", "")
DB_FIXTURES = {"db", "database_url", "settings", "cli_env"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DB_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)


def _pg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def _pg_admin(url: str, statement: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(_pg_dsn(url))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def _migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Run the real migrations once per session; tests start from this state.

    On PostgreSQL each session gets its own database (created from the server named by
    COMMS_TEST_DATABASE_URL, dropped at the end), so parallel runs never share tables.
    """
    if PG_URL:
        name = f"comms_test_{os.getpid()}_{secrets.token_hex(3)}"
        _pg_admin(PG_URL, f'CREATE DATABASE "{name}"')
        url = PG_URL.rsplit("/", 1)[0] + "/" + name
        try:
            upgrade(url)
            yield url
        finally:
            _pg_admin(PG_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    template = tmp_path_factory.mktemp("dbtemplate") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{template}")
    yield str(template)


@pytest.fixture
def database_url(_migrated: str, tmp_path: Path) -> Iterator[str]:
    """A clean database for this test (a fresh SQLite copy, or a truncated PostgreSQL)."""
    if PG_URL:
        tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
        # A connection an earlier test leaked mid-transaction would hold this up for ever:
        # fail within a minute, naming the cause, instead.
        _pg_admin(
            _migrated,
            f"SET lock_timeout = '60s'; TRUNCATE TABLE {tables} RESTART IDENTITY CASCADE",
        )
        yield _migrated
        return
    target = tmp_path / "comms.db"
    shutil.copyfile(_migrated, target)
    yield f"sqlite+aiosqlite:///{target}"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return load_settings(
        database_url=database_url,
        protocol_name="Example Protocol",
        official_domains=["example.org"],
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.fixture
def clock() -> Iterator[FrozenClock]:
    with use_clock(FrozenClock()) as frozen:
        assert isinstance(frozen, FrozenClock)
        yield frozen


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for running the ``comms`` CLI against this test's database."""
    for key in list(os.environ):
        if key.startswith("COMMS_") and key != "COMMS_TEST_DATABASE_URL":
            monkeypatch.delenv(key)
    env = {"COMMS_DATABASE_URL": database_url, "COMMS_PASSWORD": "correct horse battery"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Chromium for tests marked ``browser`` (tests/browser.py has the helpers)."""
    from playwright.async_api import async_playwright

    from tests.browser import launch

    async with async_playwright() as playwright:
        launched = await launch(playwright)
        yield launched
        await launched.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave nothing behind that would keep this process from exiting.

    A CI run once printed its summary and then never ended. At exit, multiprocessing joins its
    daemonic children without a timeout and the interpreter joins every non-daemon thread (an
    aiosqlite connection that was never closed keeps one): either waits for ever. Children
    still alive are killed here, and a thread that outlives the run is named with its stack
    and fails the run instead of hanging it.
    """
    import faulthandler
    import gc
    import multiprocessing
    import sys
    import threading
    import traceback

    for child in multiprocessing.active_children():
        print(f"\n[conftest] killing leftover child process {child.name} (pid {child.pid})")
        child.kill()
        child.join(timeout=10)
    gc.collect()  # an unclosed aiosqlite connection stops its thread when collected
    leftovers = [
        thread
        for thread in threading.enumerate()
        if thread is not threading.main_thread() and not thread.daemon
    ]
    for thread in leftovers:
        thread.join(timeout=5)
    frames = sys._current_frames()
    stuck = [thread for thread in leftovers if thread.is_alive()]
    for thread in stuck:
        stack = "".join(traceback.format_stack(frames[thread.ident])) if thread.ident else ""
        print(f"\n[conftest] non-daemon thread {thread.name} outlived the tests:\n{stack}")
    if stuck:
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
    # Whatever else holds the exit up, do not let it hang CI: name it and end.
    faulthandler.dump_traceback_later(120, exit=True)
