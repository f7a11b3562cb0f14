"""Failures: transient ones end in exactly one delivery, permanent ones fail at once with the
platform's own words, ambiguous Telegram outcomes wait for a person."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy import select

from bots.discord_publisher import DiscordPublisher
from bots.sandbox import Sandbox
from comms.audit import service as audit
from comms.db import Database
from comms.destinations import service as destinations
from comms.drafts import service as drafts
from comms.enums import Platform
from comms.outbox import service as outbox
from comms.outbox.models import Delivery, Notification
from comms.outbox.ports import Outcome, PublishError, SendJob
from comms.outbox.worker import Worker, WorkerConfig
from comms.settings import Settings
from tests.publishing.conftest import FAST, Control, World, approved_draft

DISCORD_CREATE = "POST /channels/{channel_id}/messages"


async def _states(db: Database, draft_id: int) -> dict[str, Delivery]:
    async with db.transaction() as session:
        return {d.destination.name: d for d in await outbox.for_draft(session, draft_id=draft_id)}


@pytest.mark.parametrize("kind", ["429", "500", "502", "drop"])
async def test_transient_discord_failures_end_in_one_message(
    db: Database,
    pub_settings: Settings,
    world: World,
    worker: Worker,
    control: Control,
    kind: str,
) -> None:
    await control.fault(
        platform="discord",
        endpoint=DISCORD_CREATE,
        kind=kind,
        count=2,
        retry_after=0.2,
        channel_id=str(world.info["discord_channels"]["announcements"]),
    )
    draft = await approved_draft(db, world, pub_settings, to=("dc_news",))
    await worker.run_until_settled(within=60)
    shown = await control.discord_messages(world.info["discord_channels"]["announcements"])
    assert len(shown) == 1
    delivery = (await _states(db, draft.id))["dc-announcements"]
    assert delivery.state == "sent"
    assert delivery.platform_message_ids == [shown[0]["id"]]
    async with db.transaction() as session:
        problems = [
            n.kind
            for n in (await session.scalars(select(Notification))).all()
            if n.kind == "delivery_problem"
        ]
    if kind == "drop":  # a P1 public destination's first failure reaches a person at once
        assert problems == ["delivery_problem"]
    elif kind == "429":  # a rate limit is expected, not a failure
        assert problems == []


async def test_discord_timeout_after_the_message_was_created_is_deduplicated(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    """The worst case: Discord created the message but the answer never came back."""
    await control.fault(
        platform="discord",
        endpoint=DISCORD_CREATE,
        kind="timeout",
        count=1,
        after_effect=True,
        hang_seconds=5,
        channel_id=str(world.info["discord_channels"]["announcements"]),
    )
    draft = await approved_draft(db, world, pub_settings, to=("dc_news",))
    await worker.run_until_settled(within=60)
    shown = await control.discord_messages(world.info["discord_channels"]["announcements"])
    assert len(shown) == 1, "the retry must reuse the nonce"
    delivery = (await _states(db, draft.id))["dc-announcements"]
    assert (delivery.state, delivery.attempts) == ("sent", 2)
    assert delivery.platform_message_ids == [shown[0]["id"]]


@pytest.mark.parametrize("kind", ["429", "500", "502"])
async def test_transient_telegram_failures_end_in_one_message(
    db: Database,
    pub_settings: Settings,
    world: World,
    worker: Worker,
    control: Control,
    kind: str,
) -> None:
    await control.fault(
        platform="telegram", endpoint="sendMessage", kind=kind, count=2, retry_after=1
    )
    draft = await approved_draft(db, world, pub_settings, to=("tg_news",))
    await worker.run_until_settled(within=60)
    shown = await control.telegram_messages(world.info["telegram_chats"]["announcements"])
    assert len(shown) == 1
    delivery = (await _states(db, draft.id))["tg-announcements"]
    assert (delivery.state, delivery.attempts) == ("sent", 3)
    if kind == "429":
        async with db.transaction() as session:
            retries = [
                e
                for e in await audit.recent(session, limit=50)
                if e.action == "delivery.attempt_failed"
            ]
        assert all(e.details["status"] == 429 for e in retries) and len(retries) == 2


@pytest.mark.parametrize("after_effect", [False, True])
async def test_telegram_timeout_is_uncertain_and_a_person_decides(
    db: Database,
    pub_settings: Settings,
    world: World,
    worker: Worker,
    control: Control,
    after_effect: bool,
) -> None:
    """Telegram has no idempotency key: a lost answer is never retried blindly."""
    await control.fault(
        platform="telegram",
        endpoint="sendMessage",
        kind="timeout",
        count=1,
        after_effect=after_effect,
        hang_seconds=5,
    )
    draft = await approved_draft(db, world, pub_settings, to=("tg_news",))
    await worker.run_until_settled(within=60)
    chat = world.info["telegram_chats"]["announcements"]
    assert len(await control.telegram_messages(chat)) == (1 if after_effect else 0)
    delivery = (await _states(db, draft.id))["tg-announcements"]
    assert delivery.state == "uncertain" and delivery.uncertain_count == 1
    assert "may or may not have been posted" in delivery.last_error
    async with db.transaction() as session:
        found = await drafts.require_draft(session, draft_id=draft.id)
        notes = list(
            (
                await session.scalars(
                    select(Notification).where(Notification.kind == "delivery_problem")
                )
            ).all()
        )
    assert found.status == "partially_failed"
    assert len(notes) == 1 and "uncertain" in notes[0].text

    async with db.transaction() as session:
        target = await outbox.require_delivery(session, delivery_id=delivery.id)
        if after_effect:  # the person sees it arrived and dismisses the delivery
            await outbox.resolve_uncertain(
                session,
                delivery=target,
                actor=world.team["cm"],
                resend=False,
                note="checked: it is in the channel",
            )
        else:  # the person sees nothing arrived and resends
            await outbox.resolve_uncertain(
                session, delivery=target, actor=world.team["cm"], resend=True
            )
    await worker.run_until_settled(within=60)
    assert len(await control.telegram_messages(chat)) == 1
    delivery = (await _states(db, draft.id))["tg-announcements"]
    assert delivery.state == ("skipped" if after_effect else "sent")
    async with db.transaction() as session:
        assert (await drafts.require_draft(session, draft_id=draft.id)).status == "published"
        actions = [e.action for e in await audit.recent(session, limit=50)]
    assert ("delivery.dismiss" if after_effect else "delivery.resend") in actions


async def test_resend_policy_retries_uncertain_telegram_deliveries(
    db: Database,
    pub_settings: Settings,
    world: World,
    control: Control,
    publishers: dict[Platform, object],
) -> None:
    resend = pub_settings.model_copy(update={"telegram_uncertain": "resend"})
    worker = Worker(
        database=db,
        settings=resend,
        publishers=publishers,  # type: ignore[arg-type]
        config=WorkerConfig(**FAST),
    )  # type: ignore[arg-type]
    await control.fault(
        platform="telegram",
        endpoint="sendMessage",
        kind="timeout",
        count=1,
        after_effect=True,
        hang_seconds=5,
    )
    draft = await approved_draft(db, world, resend, to=("tg_news",))
    await worker.run_until_settled(within=60)
    chat = world.info["telegram_chats"]["announcements"]
    assert len(await control.telegram_messages(chat)) == 2  # the duplicate resend risks...
    delivery = (await _states(db, draft.id))["tg-announcements"]
    assert delivery.state == "sent" and delivery.uncertain_count == 1  # ...and it is flagged


async def test_missing_permissions_fail_at_once_with_the_platform_message(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    guild = world.info["discord_guild_id"]
    locked = await control.post(
        f"/discord/guilds/{guild}/channels",
        {"name": "locked", "type": 0, "read_only": True, "bot_access": False},
    )
    hidden = await control.post(
        f"/discord/guilds/{guild}/channels",
        {"name": "hidden", "type": 0, "private": True, "bot_access": False},
    )
    async with db.transaction() as session:
        for name, channel in (("dc-locked", locked), ("dc-hidden", hidden)):
            world.dest[name] = await destinations.create(
                session, name=name, platform=Platform.DISCORD, target=str(channel["id"]), actor=None
            )
    draft = await approved_draft(db, world, pub_settings, to=("dc-locked", "dc-hidden", "dc_news"))
    await worker.run_until_settled(within=30)
    rows = await _states(db, draft.id)
    assert (rows["dc-locked"].state, rows["dc-locked"].attempts) == ("failed", 1)
    assert "50013" in rows["dc-locked"].last_error
    assert "Missing Permissions" in rows["dc-locked"].last_error
    assert (rows["dc-hidden"].state, rows["dc-hidden"].attempts) == ("failed", 1)
    assert "Missing Access" in rows["dc-hidden"].last_error
    assert rows["dc-announcements"].state == "sent"
    async with db.transaction() as session:
        found = await drafts.require_draft(session, draft_id=draft.id)
        notes = list(
            (
                await session.scalars(
                    select(Notification).where(Notification.kind == "delivery_problem")
                )
            ).all()
        )
    assert found.status == "partially_failed"
    assert len(notes) == 2 and all(n.destination.name == "dc-responders" for n in notes)


async def test_unknown_telegram_chat_fails_at_once(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    async with db.transaction() as session:
        world.dest["tg-gone"] = await destinations.create(
            session, name="tg-gone", platform=Platform.TELEGRAM, target="-1009999999999", actor=None
        )
    draft = await approved_draft(db, world, pub_settings, to=("tg-gone",))
    await worker.run_until_settled(within=30)
    delivery = (await _states(db, draft.id))["tg-gone"]
    assert (delivery.state, delivery.attempts) == ("failed", 1)
    assert delivery.last_error == "400 Bad Request: Chat not found"


async def test_failed_delivery_can_be_retried_without_new_approval(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    chat = world.info["telegram_chats"]["community"]
    await control.patch(f"/telegram/chats/{chat}", {"bot_member": False})
    draft = await approved_draft(db, world, pub_settings, to=("tg_community",))
    await worker.run_until_settled(within=30)
    delivery = (await _states(db, draft.id))["tg-community"]
    assert (delivery.state, delivery.attempts) == ("failed", 1)
    assert delivery.last_error.startswith("403 Forbidden")
    # Someone adds the bot back to the group, then the Communication Manager retries.
    await control.patch(f"/telegram/chats/{chat}", {"bot_member": True})
    async with db.transaction() as session:
        target = await outbox.require_delivery(session, delivery_id=delivery.id)
        await outbox.retry(session, delivery=target, actor=world.team["cm"])
    await worker.run_until_settled(within=30)
    assert len(await control.telegram_messages(chat)) == 1
    async with db.transaction() as session:
        assert (await drafts.require_draft(session, draft_id=draft.id)).status == "published"
        retried = [e for e in await audit.recent(session, limit=50) if e.action == "delivery.retry"]
    assert len(retried) == 1 and retried[0].actor == "carol"


async def test_workers_never_claim_the_same_delivery(
    db: Database,
    pub_settings: Settings,
    world: World,
    control: Control,
    publishers: dict[Platform, object],
) -> None:
    """Several workers polling one database claim disjoint sets (SKIP LOCKED on PostgreSQL,
    a conditional update on SQLite)."""
    for _ in range(10):
        await approved_draft(
            db, world, pub_settings, to=("dc_news", "dc_general", "tg_news", "tg_community")
        )
    workers = [
        Worker(
            database=db,
            settings=pub_settings,
            publishers=publishers,  # type: ignore[arg-type]
            config=WorkerConfig(worker_id=f"w{i}", **FAST),
        )  # type: ignore[arg-type]
        for i in range(4)
    ]
    claims = await asyncio.gather(*(w.claim(limit=40) for w in workers))
    claimed = [delivery_id for batch in claims for delivery_id in batch]
    assert len(claimed) == len(set(claimed))
    # Only the oldest delivery per destination is claimable at a time (updates keep order).
    assert len(claimed) == 4
    async with db.transaction() as session:
        owners = Counter(
            (
                await session.scalars(
                    select(Delivery.claimed_by).where(Delivery.state == "sending")
                )
            ).all()
        )
    assert sum(owners.values()) == 4


async def test_a_global_rate_limit_outlasting_the_timeout_does_not_stall_discord(
    sandbox: Sandbox, control: Control
) -> None:
    """discord.py sleeps out a global 429 while holding a lock every request waits on; our
    timeout cancelling that sleep must not leave the lock held (every later send would hang)."""
    info = sandbox.info
    publisher = DiscordPublisher(
        token=info["discord_token"], api_base=info["discord_api_base"], request_timeout=0.5
    )
    await publisher.start()
    channel = str(info["discord_channels"]["general"])
    recorded: list[list[str]] = []

    async def progress(ids: list[str], *, last: bool = False) -> None:
        recorded.append(ids)

    def job(delivery_id: int, text: str) -> SendJob:
        return SendJob(
            delivery_id=delivery_id,
            platform=Platform.DISCORD,
            target=channel,
            messages=(text,),
            nonce=f"{delivery_id:022d}",
        )

    try:
        await control.fault(
            platform="discord",
            endpoint=DISCORD_CREATE,
            kind="429",
            scope="global",
            retry_after=1.5,
            count=1,
            channel_id=channel,
        )
        with pytest.raises(PublishError) as timed_out:
            await publisher.send(job(1, "first"), progress)
        assert timed_out.value.outcome is Outcome.AMBIGUOUS
        # The outbox waits this long before trying again (Retry-After is whole seconds: 2).
        assert timed_out.value.retry_after is not None
        assert 1.0 < timed_out.value.retry_after <= 2.0
        await asyncio.sleep(timed_out.value.retry_after)
        result = await publisher.send(job(2, "second"), progress)
    finally:
        await publisher.close()
    shown = await control.discord_messages(channel)
    assert [m["text"] for m in shown] == ["second"]
    assert list(result.message_ids) == [shown[0]["id"]]
