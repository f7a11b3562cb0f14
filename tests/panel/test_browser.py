"""The main journeys in real headless Chromium (Debian's package, driven by Playwright's async
API), against the panel served by uvicorn on 127.0.0.1. Screenshots: see tests/browser.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from comms.settings import Settings
from tests.browser import person, serve_panel, shot

pytestmark = pytest.mark.browser

HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(2)> @everyone"


@pytest.fixture
async def live(
    panel_settings: Settings, database_url: str, world: dict[str, Any]
) -> AsyncIterator[str]:
    """The panel on a free loopback port, in this test's event loop."""
    settings = panel_settings.model_copy(update={"panel_poll_seconds": 2})
    async with serve_panel(settings, database_url) as base:
        yield base


async def test_draft_preview_submit_and_two_approvals(live: str, browser: Any) -> None:
    dm1 = await person(browser, live, "dave")  # watching the dashboard before anything exists
    assert "Nothing waiting for you" in await dm1.inner_text("#pending")

    cm = await person(browser, live, "carol")
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
    await shot(cm, "editor-live-preview", full=True)
    await cm.click("button:has-text('Save and submit for approval')")
    await cm.wait_for_selector(".st-in_review")
    draft_url = cm.url

    # The Decision Maker's dashboard shows it without a reload.
    link = await dm1.wait_for_selector("#pending a.big-link", timeout=15000)
    await shot(dm1, "dashboard-new-draft")
    await link.click()
    await dm1.wait_for_selector("#quorum")
    assert "0 of 2 approvals" in await dm1.inner_text("#quorum")
    assert "status.example.org" in await dm1.inner_text("body")
    await shot(dm1, "approval-view", full=True)
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
    await shot(dm1, "approval-voided-by-edit", full=True)

    await dm1.click("button:has-text('Approve version 2')")
    await dm1.wait_for_selector("#quorum:has-text('1 of 2 approvals')")
    dm2 = await person(browser, live, "erin")
    await dm2.goto(draft_url)
    await dm2.click("button:has-text('Approve version 2')")
    await dm2.wait_for_selector("#quorum:has-text('2 of 2 approvals')")
    assert "approved" in await dm2.inner_text("h1")
    await shot(dm2, "approved")
    for page in (cm, dm1, dm2):
        assert page.dialogs == []  # type: ignore[attr-defined]


async def test_hostile_text_displays_inert(live: str, browser: Any) -> None:
    cm = await person(browser, live, "carol")
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
    dm = await person(browser, live, "dave")
    await dm.goto(cm.url)
    body = await dm.inner_text("body")
    assert "<script>alert(1)</script>" in body and "<img src=x onerror=alert(2)>" in body
    assert await dm.locator("main img").count() == 0
    assert await dm.locator("main script").count() == 0
    mentions = await dm.locator(".msg-discord .mention").all_inner_texts()
    assert all(m.startswith(("@", "#")) for m in mentions)
    await shot(dm, "hostile-text-inert", full=True)
    assert cm.dialogs == [] and dm.dialogs == []  # type: ignore[attr-defined]


async def test_granting_decision_maker_needs_the_decision_makers(live: str, browser: Any) -> None:
    """An admin asks for leo to become a Decision Maker; dave sees it on his dashboard and
    approves; the role counts only after erin's approval too (quorum 2)."""
    admin = await person(browser, live, "ada")
    await admin.click("text=Users")
    await admin.click("a:has-text('leo')")
    await admin.check("input[name=roles][value=decision_maker]")
    await admin.click("button:has-text('Save roles')")
    await admin.wait_for_selector("text=awaiting approval by the Decision Makers")
    dave = await person(browser, live, "dave")
    await dave.wait_for_selector("#h-grants")
    await dave.click("#h-grants + ul a")
    await dave.wait_for_selector("text=0 of 2")
    await dave.click("button:has-text('Approve')")
    await dave.wait_for_selector("text=1 of 2")
    await shot(dave, "role-grants", full=True)
    erin = await person(browser, live, "erin")
    await erin.goto(f"{live}/role-grants")
    await erin.click("button:has-text('Approve')")
    await erin.wait_for_selector("text=No role grant is waiting")
    leo = await person(browser, live, "leo")
    assert "decision_maker" in await leo.inner_text(".roles")
