"""The deliveries page in real headless Chromium: it follows the outbox without a reload, links
to the sent messages, shows the platform's own words for a failure, and its Retry button sends
the same approved text."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect
from pydantic import SecretStr

from comms.db import Database
from comms.destinations.models import Destination
from comms.outbox.worker import Worker
from comms.settings import Settings
from tests.browser import person, serve_panel, shot
from tests.publishing.conftest import Control, World, approved_draft

pytestmark = pytest.mark.browser


async def test_deliveries_page_follows_the_outbox_and_retries(
    db: Database,
    database_url: str,
    pub_settings: Settings,
    world: World,
    worker: Worker,
    control: Control,
    browser: Any,
) -> None:
    settings = pub_settings.model_copy(
        update={
            "secret_key": SecretStr("browser-deliveries-secret-0123456789abcdef"),
            "require_2fa_for": [],
            "panel_poll_seconds": 1,
            "discord_message_url": "https://discord.test/{guild_id}/{channel_id}/{message_id}",
        }
    )
    async with db.transaction() as session:  # a server id makes Discord message links
        news_destination = await session.get(Destination, world.dest["dc_news"].id)
        assert news_destination is not None
        news_destination.guild_id = world.info["discord_guild_id"]
    community = world.info["telegram_chats"]["community"]
    await control.patch(f"/telegram/chats/{community}", {"bot_member": False})
    draft = await approved_draft(
        db, world, settings, to=("dc_news", "dc_general", "tg_news", "tg_community")
    )
    async with serve_panel(settings, database_url) as base:
        cm = await person(browser, base, "carol")
        await cm.goto(f"{base}/drafts/{draft.id}/deliveries")
        rows = cm.locator("#delivery-rows tbody tr")
        await expect(rows).to_have_count(4)
        await expect(cm.locator(".dl-row-pending")).to_have_count(4)
        await expect(cm.locator(".dl-summary")).to_contain_text("approved")

        # The worker runs while the page is open: the rows change without a reload.
        await worker.run_until_settled(within=30)
        await cm.wait_for_selector(".dl-row-failed", timeout=10_000)
        await expect(cm.locator(".dl-row-sent")).to_have_count(3, timeout=10_000)
        summary = cm.locator(".dl-summary")
        await expect(summary).to_contain_text("partially failed")
        await expect(summary).to_contain_text("3 of 4 sent · 1 failed")
        failed = cm.locator(".dl-row-failed")
        assert "tg-community" in await failed.inner_text()
        assert "403" in await failed.inner_text()  # Telegram's own words, not ours
        channel = world.info["discord_channels"]["announcements"]
        (message,) = await control.discord_messages(channel)
        link = cm.locator(".dl-row-sent", has_text="dc-announcements").locator("a")
        assert await link.get_attribute("href") == (
            f"https://discord.test/{world.info['discord_guild_id']}/{channel}/{message['id']}"
        )
        chat = world.info["telegram_chats"]["announcements"]
        (post,) = await control.telegram_messages(chat)
        link = cm.locator(".dl-row-sent", has_text="tg-announcements").locator("a")
        assert await link.get_attribute("href") == f"https://t.me/c/{str(chat)[4:]}/{post['id']}"
        await shot(cm, "deliveries", full=True)

        # The platform lets the bot in again; Retry sends the same approved text.
        await control.patch(f"/telegram/chats/{community}", {"bot_member": True})
        await failed.locator("button:has-text('Retry')").click()
        await cm.wait_for_load_state()
        await worker.run_until_settled(within=30)
        await expect(cm.locator(".dl-row-sent")).to_have_count(4, timeout=10_000)
        await expect(cm.locator(".dl-summary")).to_contain_text("published")
        await expect(cm.locator(".dl-summary")).to_contain_text("4 of 4 sent")
    shown = await control.telegram_messages(community)
    assert len(shown) == 1
    approved_text = next(
        item["messages"]
        for item in draft.payload["deliveries"]
        if item["destination"]["name"] == "tg-community"
    )
    assert len(approved_text) == 1
    assert "draining the ETH bridge" in shown[0]["text"]
