"""Destination settings made stricter after approval (issue 9, finding 8).

The attack: an admin turns off @everyone (or pinning) on a destination after an @everyone
announcement was approved for a later time; it still went out as approved. Now a delivery whose
destination is stricter than what was approved for it is held with the reason, and the draft
needs a new approval (re-rendered for the destination as it is now). A looser setting never
widens what was approved.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import SecretStr

from approvals.app import create_app
from comms.clock import FrozenClock
from comms.db import Database
from comms.destinations import service as destinations
from comms.drafts import service as drafts
from comms.drafts.payload import DraftOptions
from comms.outbox import service as outbox
from comms.outbox.worker import Worker
from comms.settings import Settings
from tests.panel.conftest import PanelClient
from tests.publishing.conftest import Control, World, approved_draft


async def _state(db: Database, draft_id: int) -> tuple[str, int, dict[str, str]]:
    async with db.transaction() as session:
        draft = await drafts.require_draft(session, draft_id=draft_id)
        rows = await outbox.for_draft(session, draft_id=draft_id)
        return draft.status, draft.version, {d.destination.name: d.state for d in rows}


async def test_everyone_turned_off_in_the_panel_holds_the_scheduled_announcement(
    db: Database,
    pub_settings: Settings,
    world: World,
    worker: Worker,
    control: Control,
    clock: FrozenClock,
) -> None:
    when = clock.now() + timedelta(hours=2)
    draft = await approved_draft(
        db, world, pub_settings, to=("dc_news",), options=DraftOptions(publish_at=when)
    )
    assert draft.payload["deliveries"][0]["mentions"] == ["everyone"]
    panel = pub_settings.model_copy(
        update={
            "secret_key": SecretStr("stricter-destination-test-0123456789abcdef"),
            "require_2fa_for": [],
        }
    )
    admin = PanelClient(create_app(settings=panel, database=db))
    try:
        assert (await admin.login(world.team["admin"].username)).status_code == 303
        await admin.get("/admin/destinations")
        dest = world.dest["dc_news"]
        changed = await admin.post(
            f"/admin/destinations/{dest.id}/update",
            {"enabled": "on", "pin": "on", "crosspost": "on", "thread_updates": "on"},
        )
        assert changed.status_code == 303, changed.text
        assert changed.headers["location"] == "/admin/destinations"
    finally:
        await admin.aclose()
    status, version, states = await _state(db, draft.id)
    assert (status, version) == ("in_review", 2), states
    assert set(states.values()) == {"cancelled"}
    async with db.transaction() as session:
        current = await drafts.require_draft(session, draft_id=draft.id)
        assert current.payload["deliveries"][0]["mentions"] == []  # re-rendered as it is now
        assert drafts.quorum(current, settings=pub_settings).have == 0
    clock.set(when + timedelta(minutes=1))
    await worker.run_until_settled(within=30)
    assert await control.discord_messages(world.info["discord_channels"]["announcements"]) == []


async def test_the_worker_holds_a_delivery_whose_destination_became_stricter(
    db: Database,
    pub_settings: Settings,
    world: World,
    worker: Worker,
    control: Control,
    clock: FrozenClock,
) -> None:
    """The final check at send time, whatever changed the destination (here the service
    directly, as a migration or another tool might): pinning turned off, the delivery is held
    with the reason, the draft goes back to review, nothing is posted."""
    when = clock.now() + timedelta(hours=1)
    draft = await approved_draft(
        db, world, pub_settings, to=("tg_news",), options=DraftOptions(publish_at=when)
    )
    assert draft.payload["deliveries"][0]["pin"] is True
    async with db.transaction() as session:
        dest = await destinations.require_destination(session, name="tg-announcements")
        dest.pin = False  # not through the service: only the worker's check can catch it
    clock.set(when)
    await worker.run_until_settled(within=30)
    status, version, _states = await _state(db, draft.id)
    assert status == "in_review" and version == 2
    async with db.transaction() as session:
        rows = await outbox.for_draft(session, draft_id=draft.id)
    held = [d for d in rows if d.draft_version == 1]
    assert "pinning" in held[0].last_error and "new approval" in held[0].last_error
    assert await control.telegram_messages(world.info["telegram_chats"]["announcements"]) == []


async def test_a_looser_setting_never_widens_what_was_approved(
    db: Database,
    pub_settings: Settings,
    world: World,
    worker: Worker,
    control: Control,
) -> None:
    """@everyone allowed on a channel after approval: the approved text (without it) is sent."""
    draft = await approved_draft(db, world, pub_settings, to=("dc_general",))
    assert draft.payload["deliveries"][0]["mentions"] == []
    async with db.transaction() as session:
        dest = await destinations.require_destination(session, name=world.dest["dc_general"].name)
        await destinations.update(session, destination=dest, actor=None, allow_everyone=True)
    await worker.run_until_settled(within=30)
    shown = await control.discord_messages(world.info["discord_channels"]["general"])
    assert len(shown) == 1 and shown[0]["mention_everyone"] is False
    assert not shown[0]["text"].startswith("@everyone")
