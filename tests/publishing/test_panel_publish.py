"""Approve in the panel, then find exactly the approved text in each channel and chat; a failed
delivery shows in the panel with its platform message and a retry button that works."""

from __future__ import annotations

import re

from pydantic import SecretStr

from approvals.app import create_app
from comms.db import Database
from comms.outbox.worker import Worker
from comms.settings import Settings
from tests.panel.conftest import PanelClient
from tests.publishing.conftest import EXPLOIT_VARS, Control, World


def _form(world: World, *destinations: str) -> list[tuple[str, str]]:
    items = [("template", "active-exploit-initial"), ("incident", world.incident.key)]
    items += [(f"var.{k}", v) for k, v in EXPLOIT_VARS.items()]
    items += [("destinations", world.dest[d].name) for d in destinations]
    return items


async def test_approved_in_the_panel_published_everywhere_with_a_working_retry(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    settings = pub_settings.model_copy(
        update={
            "secret_key": SecretStr("panel-publish-test-secret-0123456789abcdef"),
            "require_2fa_for": [],
            "discord_message_url": "https://discord.test/{guild_id}/{channel_id}/{message_id}",
        }
    )
    app = create_app(settings=settings, database=db)
    cm, dm = PanelClient(app), PanelClient(app)
    try:
        chat = world.info["telegram_chats"]["community"]
        await control.patch(f"/telegram/chats/{chat}", {"bot_member": False})
        assert (await cm.login("carol")).status_code == 303
        created = await cm.post(
            f"/incidents/{world.incident.key}/drafts",
            [*_form(world, "dc_news", "tg_news", "tg_community"), ("action", "submit")],
        )
        assert created.status_code == 303, created.text
        location = created.headers["location"]
        assert (await dm.login("dave")).status_code == 303
        view = await dm.get(location)
        shown_hash = re.search(r'name="expected_hash" value="([0-9a-f]{64})"', view.text)
        assert shown_hash
        approved = await dm.post(f"{location}/approve", {"expected_hash": shown_hash.group(1)})
        assert approved.status_code == 303, approved.text

        await worker.run_until_settled(within=30)
        draft_id = int(location.rsplit("/", 1)[1])
        from comms.drafts import service as drafts

        async with db.transaction() as session:
            draft = await drafts.require_draft(session, draft_id=draft_id)
        expected = {
            item["destination"]["name"]: item["messages"] for item in draft.payload["deliveries"]
        }
        news = await control.discord_messages(world.info["discord_channels"]["announcements"])
        assert [m["text"] for m in news] == expected["dc-announcements"]
        assert (
            len(await control.telegram_messages(world.info["telegram_chats"]["announcements"])) == 1
        )

        page = await cm.get(f"{location}/deliveries")
        assert page.status_code == 200
        assert "403 Forbidden" in page.text  # the platform's own words for tg-community
        assert 'action="/deliveries/' in page.text and ">Retry<" in page.text
        dashboard = await cm.get("/")
        assert "Deliveries that need a person" in dashboard.text
        assert dashboard.text.index("Deliveries that need a person") < dashboard.text.index(
            "Waiting for my approval"
        )

        await control.patch(f"/telegram/chats/{chat}", {"bot_member": True})
        retry_action = re.search(r'action="(/deliveries/\d+/retry)"', page.text)
        assert retry_action
        # A Decision Maker may not retry; the Communication Manager may.
        assert (await dm.post(retry_action.group(1))).status_code == 403
        assert (await cm.post(retry_action.group(1))).status_code == 303
        await worker.run_until_settled(within=30)
        assert len(await control.telegram_messages(chat)) == 1
        rows = await cm.get(f"{location}/deliveries/rows")
        assert "failed" not in rows.text and rows.text.count(">sent<") == 3
    finally:
        await cm.aclose()
        await dm.aclose()
