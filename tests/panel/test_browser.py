"""The main journeys in real headless Chromium (Debian's package, driven by Playwright's async
API), against the panel served by uvicorn on 127.0.0.1. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import asyncio
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

pytestmark = pytest.mark.browser

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
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / os.environ.get("COMMS_SCREENSHOTS", "test-artifacts/screenshots")
HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(2)> @everyone"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def live(
    panel_settings: Settings, database_url: str, world: dict[str, Any]
) -> AsyncIterator[str]:
    """The panel on a free loopback port, in this test's event loop."""
    settings = panel_settings.model_copy(update={"panel_poll_seconds": 2})
    database = Database(database_url)
    app = create_app(settings=settings, database=database)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # wait for the socket to listen (bounded)
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
    await database.dispose()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM:
        if os.environ.get("COMMS_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed and COMMS_REQUIRE_BROWSER=1")
        pytest.skip("chromium is not installed (apt-get install chromium) - browser tests skipped")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


async def _person(browser: Any, base: str, username: str) -> Any:
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    await page.goto(f"{base}/login")
    await page.fill("#f-username", username)
    await page.fill("#f-password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/")
    return page


async def _shot(page: Any, name: str, full: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full)


async def test_draft_preview_submit_and_two_approvals(live: str, browser: Any) -> None:
    dm1 = await _person(browser, live, "dave")  # watching the dashboard before anything exists
    assert "Nothing waiting for you" in await dm1.inner_text("#pending")

    cm = await _person(browser, live, "carol")
    await cm.click("text=Open an incident")
    await cm.fill("#f-title", "Bridge contract drained")
    await cm.select_option("#f-severity", "P1")
    await cm.fill("#f-summary", "Funds are leaving the ETH bridge pool.")
    await cm.click("button:has-text('Open incident')")
    await cm.wait_for_selector("h1:has-text('Bridge contract drained')")
    await cm.click("text=Draft an announcement")
    await cm.click("text=Active exploit: first alert")
    await cm.fill("#f-var-summary", "An attacker is draining the ETH bridge pool.")
    await cm.fill("#f-var-affected", "The ETH bridge")
    await cm.select_option("#f-var-funds_status", "at_risk")
    await cm.fill("#f-var-user_action", "Do not interact with the bridge contracts.")
    await cm.fill("#f-var-status_url", "https://status.example.org/incident")
    await cm.fill("#f-var-next_update", "2030-01-01T13:00Z")
    # The live preview follows the typing (no button pressed).
    await cm.wait_for_selector("#preview .msg-discord")
    assert "draining the ETH bridge pool" in await cm.inner_text("#preview .msg-discord")
    assert "draining the ETH bridge pool" in await cm.inner_text("#preview .msg-telegram")
    await _shot(cm, "editor-live-preview", full=True)
    await cm.click("button:has-text('Save and submit for approval')")
    await cm.wait_for_selector(".st-in_review")
    draft_url = cm.url

    # The Decision Maker's dashboard shows it without a reload.
    link = await dm1.wait_for_selector("#pending a.big-link", timeout=15000)
    await _shot(dm1, "dashboard-new-draft")
    await link.click()
    await dm1.wait_for_selector("#quorum")
    assert "0 of 2 approvals" in await dm1.inner_text("#quorum")
    assert "status.example.org" in await dm1.inner_text("body")
    await _shot(dm1, "approval-view", full=True)
    await dm1.click("button:has-text('Approve version 1')")
    await dm1.wait_for_selector("#quorum:has-text('1 of 2 approvals')")

    # An edit after one approval voids it, and the panel shows it.
    await cm.goto(f"{draft_url}/edit")
    await cm.fill("#f-var-affected", "The ETH and BSC bridges")
    await cm.click("button:has-text('Save draft')")
    await cm.wait_for_selector("text=Version 2")
    await dm1.reload()
    assert "0 of 2 approvals" in await dm1.inner_text("#quorum")
    assert "does not count" in await dm1.inner_text("body")
    assert "ETH and BSC" in await dm1.inner_text(".diff")
    await _shot(dm1, "approval-voided-by-edit", full=True)

    await dm1.click("button:has-text('Approve version 2')")
    await dm1.wait_for_selector("#quorum:has-text('1 of 2 approvals')")
    dm2 = await _person(browser, live, "erin")
    await dm2.goto(draft_url)
    await dm2.click("button:has-text('Approve version 2')")
    await dm2.wait_for_selector("#quorum:has-text('2 of 2 approvals')")
    assert "approved" in await dm2.inner_text("h1")
    await _shot(dm2, "approved")
    for page in (cm, dm1, dm2):
        assert page.dialogs == []  # type: ignore[attr-defined]


async def test_hostile_text_displays_inert(live: str, browser: Any) -> None:
    cm = await _person(browser, live, "carol")
    await cm.click("text=Open an incident")
    await cm.fill("#f-title", HOSTILE)
    await cm.click("button:has-text('Open incident')")
    await cm.wait_for_selector("text=Draft an announcement")
    assert HOSTILE in await cm.inner_text("h1")
    await cm.click("text=Draft an announcement")
    await cm.click("text=Custom message")
    await cm.fill("#f-var-message", f"Heads up {HOSTILE} **bold** <b>tag</b>")
    await cm.wait_for_selector("#preview .msg-discord")
    await cm.click("button:has-text('Save and submit for approval')")
    await cm.wait_for_selector(".st-in_review")
    dm = await _person(browser, live, "dave")
    await dm.goto(cm.url)
    body = await dm.inner_text("body")
    assert "<script>alert(1)</script>" in body and "<img src=x onerror=alert(2)>" in body
    assert await dm.locator("main img").count() == 0
    assert await dm.locator("main script").count() == 0
    mentions = await dm.locator(".msg-discord .mention").all_inner_texts()
    assert all(m.startswith(("@", "#")) for m in mentions)
    await _shot(dm, "hostile-text-inert", full=True)
    assert cm.dialogs == [] and dm.dialogs == []  # type: ignore[attr-defined]
