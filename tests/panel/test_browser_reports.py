"""Community reports in real headless Chromium: the inbox updates while reports arrive, hostile
reporter text stays inert, and escalating a cluster opens the incident (issue 11, item 7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from comms.db import Database
from comms.detections import service
from comms.detections.models import DetectionSource
from comms.settings import Settings
from tests.browser import person, serve_panel, shot

pytestmark = pytest.mark.browser

DRAINER = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
HOSTILE = "<img src=x onerror=alert(1)> @everyone [claim](https://evil.example) \u202egnp.exe"


@pytest.fixture
async def live(
    panel_settings: Settings, database_url: str, world: dict[str, Any]
) -> AsyncIterator[str]:
    settings = panel_settings.model_copy(update={"panel_poll_seconds": 2})
    async with serve_panel(settings, database_url) as base:
        yield base


async def _report(db: Database, settings: Settings, n: int, text: str, member: str) -> None:
    async with db.transaction() as session:
        await service.record(
            session,
            service.Report(
                source=DetectionSource.TELEGRAM,
                text=text,
                external_id=f"chat:{n}",
                reporter_id=member,
                reporter_name=member,
                message_url=f"https://t.me/c/1000000002/{n}",
            ),
            settings=settings,
        )


async def test_inbox_updates_live_and_a_cluster_is_escalated(
    live: str, browser: Any, db: Database, panel_settings: Settings
) -> None:
    leo = await person(browser, live, "leo")
    await leo.goto(f"{live}/reports")
    await leo.wait_for_selector("text=No reports yet.")
    await _report(db, panel_settings, 1, f"bridge drained by {DRAINER}", "alice")
    await _report(db, panel_settings, 2, f"{DRAINER} {HOSTILE}", "bob")
    await _report(db, panel_settings, 3, "swap page frontend not loading, 502 error", "carol")
    # Without a reload, the poll brings both clusters in.
    row = await leo.wait_for_selector("tr.cluster-row:has-text('checksum')", timeout=15000)
    assert await leo.locator("tr.cluster-row").count() == 2
    await shot(leo, "reports-inbox")
    await (await row.query_selector("a")).click()
    await leo.wait_for_selector("#form-escalate")
    body = await leo.content()
    assert "<img src=x" not in body and 'href="https://evil.example' not in body
    assert "\\u202e" in await leo.inner_text("body")
    assert await leo.evaluate("() => document.querySelectorAll('img[src=x]').length") == 0
    await shot(leo, "reports-cluster", full=True)
    await leo.select_option("#f-severity", "P1")
    await leo.click("#form-escalate button[type=submit]")
    await leo.wait_for_url(f"{live}/incidents/INC-*")
    assert "Escalated from community reports" in await leo.inner_text("body")
