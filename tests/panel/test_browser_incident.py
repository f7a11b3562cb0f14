"""The incident page in real headless Chromium: the next public update counts down, and the
Incident Leader gives tasks with the one-task-per-person warning (issue 12)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from comms.settings import Settings
from tests.browser import person, serve_panel, shot

pytestmark = pytest.mark.browser


@pytest.fixture
async def live(
    panel_settings: Settings, database_url: str, world: dict[str, Any]
) -> AsyncIterator[str]:
    async with serve_panel(panel_settings, database_url) as base:
        yield base


async def test_countdown_and_tasks_on_the_incident_page(
    live: str, browser: Any, world: dict[str, Any]
) -> None:
    key = world["incident"].key  # a P1 opened just now: the next update is due in 30 minutes
    lead = await person(browser, live, "leo")
    await lead.goto(f"{live}/incidents/{key}")
    countdown = lead.locator("#next-update [data-countdown]")
    first = await countdown.inner_text()
    assert re.fullmatch(r"in (29 min \d{1,2}|30 min 0) s", first), first  # panel.js, to the second
    ticking = "(was) => document.querySelector('#next-update [data-countdown]').textContent != was"
    await lead.wait_for_function(
        ticking,
        arg=first,
        timeout=5000,
    )  # it keeps counting

    await lead.fill("#f-title", "Pause the bridge contracts")
    await lead.select_option("#f-assignee", "rita")
    await lead.click("button:has-text('Assign task')")
    await lead.wait_for_selector("#tasks td:has-text('Pause the bridge contracts')")
    owner_option = await lead.inner_text("#f-assignee option[value=rita]")
    assert "1 open task(s)" in owner_option
    await lead.fill("#f-title", "Revoke the compromised approvals")
    await lead.select_option("#f-assignee", "rita")
    await lead.click("button:has-text('Assign task')")
    warning = await lead.wait_for_selector("#tasks .alert-warn")
    assert "has 2 open tasks" in await warning.inner_text()
    await shot(lead, "incident-tasks-and-next-update", full=True)

    rita = await person(browser, live, "rita")
    await rita.goto(f"{live}/incidents/{key}")
    await rita.select_option("#tasks select[name=status] >> nth=0", "done")
    await rita.click("#tasks button:has-text('Set') >> nth=0")
    await rita.wait_for_selector("#log li:has-text('open → done')")
    assert await rita.locator("#tasks .alert-warn").count() == 0
