"""Headless Chromium for the browser tests (Debian's package, driven by Playwright's async API)
and the panel served by uvicorn on a free loopback port, in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from approvals.app import create_app
from comms.db import Database
from comms.settings import Settings
from tests.factories import PASSWORD

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or ""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Screenshots land in test-artifacts/ (ignored by git); to refresh the ones in the docs run
# COMMS_SCREENSHOTS=docs/screenshots python3 tests/run.py -m browser
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / os.environ.get("COMMS_SCREENSHOTS", "test-artifacts/screenshots")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_panel(settings: Settings, database_url: str) -> AsyncIterator[str]:
    """The panel on a free loopback port; yields its base URL."""
    database = Database(database_url)
    app = create_app(settings=settings, database=database)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):  # wait for the socket to listen (bounded)
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        await database.dispose()


async def launch(playwright: Any) -> Any:
    """Debian's Chromium, or a skip (a failure when COMMS_REQUIRE_BROWSER=1, as in CI)."""
    if not CHROMIUM:
        if os.environ.get("COMMS_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed and COMMS_REQUIRE_BROWSER=1")
        pytest.skip("chromium is not installed (apt-get install chromium) - browser tests skipped")
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


async def person(browser: Any, base: str, username: str) -> Any:
    """A signed-in page of its own (a browser context per person: separate cookies)."""
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    page.dialogs = dialogs
    await page.goto(f"{base}/login")
    await page.fill("#f-username", username)
    await page.fill("#f-password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/")
    return page


async def shot(page: Any, name: str, full: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full)
