"""The next public update on the incident page and the incidents list (issue 12, item 5):
when it is due, a countdown, who is overdue, and the one-click "no new information" draft."""

from __future__ import annotations

from typing import Any

from comms.clock import FrozenClock
from tests.panel.conftest import PanelClient


async def test_the_due_time_counts_down_and_overdue_incidents_stand_out(
    clock: FrozenClock, world: dict[str, Any], client: PanelClient
) -> None:
    key = world["incident"].key  # a P1 opened at 12:00 UTC: due at 12:30
    await client.login("carol")
    page = await client.get(f"/incidents/{key}")
    assert "Next public update due <strong>2026-01-01 12:30 UTC</strong>" in page.text
    assert 'data-countdown="2026-01-01T12:30:00+00:00">in 30 min<' in page.text
    assert "the P1 cadence: every 30 minutes" in page.text
    listed = await client.get("/incidents")
    assert ">in 30 min<" in listed.text and "overdue" not in listed.text
    clock.advance(minutes=26)
    listed = await client.get("/incidents")
    assert ">due soon<" in listed.text
    clock.advance(minutes=20)  # 12:46: overdue since 12:45
    listed = await client.get("/incidents")
    assert ">overdue<" in listed.text and ">overdue by 16 min<" in listed.text
    page = await client.get(f"/incidents/{key}")
    assert "<strong>overdue</strong>" in page.text and "alert-error" in page.text


async def test_no_news_needs_an_announcement_that_went_out(
    clock: FrozenClock, world: dict[str, Any], client: PanelClient
) -> None:
    key = world["incident"].key
    await client.login("carol")
    await client.get(f"/incidents/{key}")
    refused = await client.post(f"/incidents/{key}/no-news")
    assert refused.status_code == 409
    assert f"no announcement about {key} went out yet" in refused.text
    await client.login("sam")  # a scribe may not write drafts
    await client.get(f"/incidents/{key}")
    assert (await client.post(f"/incidents/{key}/no-news")).status_code == 403
