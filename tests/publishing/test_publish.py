"""End to end through the sandbox with the real discord.py and python-telegram-bot: what members
see is exactly the approved text, once, with the right flags."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from bots.sandbox.telegram_markup import parse_html
from comms.audit import service as audit
from comms.clock import FrozenClock
from comms.db import Database
from comms.destinations import service as destinations
from comms.drafts import service as drafts
from comms.drafts.payload import DraftOptions
from comms.drafts.views import draft_document
from comms.enums import Platform, Role
from comms.errors import RuleViolation
from comms.incidents import service as incidents
from comms.outbox import service as outbox
from comms.outbox.models import Notification
from comms.outbox.ports import Publisher
from comms.outbox.worker import Worker, WorkerConfig
from comms.settings import Settings
from comms.users import service as users
from tests.publishing.conftest import EXPLOIT_VARS, FAST, Control, World, approved_draft

UPDATE_VARS = {
    "update": "The bridge is paused.",
    "funds_status": "under_review",
    "next_update": "2026-01-01T14:00Z",
}


def _messages(draft: object, name: str) -> list[str]:
    for item in draft.payload["deliveries"]:  # type: ignore[attr-defined]
        if item["destination"]["name"] == name:
            return list(item["messages"])
    raise AssertionError(name)


def _visible(html_text: str) -> str:
    return parse_html(html_text)[0]


async def test_approved_text_reaches_every_destination_once(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    draft = await approved_draft(
        db, world, pub_settings, to=("dc_news", "dc_general", "tg_news", "tg_community")
    )
    await worker.run_until_settled(within=30)
    channels, chats = world.info["discord_channels"], world.info["telegram_chats"]

    news = await control.discord_messages(channels["announcements"])
    assert [m["text"] for m in news] == _messages(draft, "dc-announcements")
    assert news[0]["text"].startswith("@everyone")  # P1, template asks, destination allows
    assert news[0]["mention_everyone"] is True
    assert news[0]["pinned"] and news[0]["crossposted"] and news[0]["thread"] == news[0]["id"]
    assert news[0]["silent"] is False

    general = await control.discord_messages(channels["general"])
    assert [m["text"] for m in general] == _messages(draft, "dc-general")
    assert general[0]["silent"] is True and not general[0]["pinned"]
    assert general[0]["mention_everyone"] is False  # not allowed there

    tg_news = await control.telegram_messages(chats["announcements"])
    assert [m["text"] for m in tg_news] == [
        _visible(t) for t in _messages(draft, "tg-announcements")
    ]
    assert tg_news[0]["pinned"] and not tg_news[0]["silent"]
    assert tg_news[0]["link_preview_options"] == {"is_disabled": True}
    community = await control.telegram_messages(chats["community"])
    assert len(community) == 1 and community[0]["silent"] is True

    async with db.transaction() as session:
        found = await drafts.require_draft(session, draft_id=draft.id)
        document = await draft_document(session, draft=found, settings=pub_settings)
        log = await incidents.entries(session, incident=found.incident)
        events = await audit.recent(session, limit=200)
        assert (await audit.verify(session)).ok
    assert document["status"] == "published"
    assert {d["state"] for d in document["deliveries"]} == {"sent"}
    sent_log = [e for e in log if e.text.startswith("Communications sent")]
    assert sorted(e.channel for e in sent_log) == [
        "discord dc-announcements",
        "discord dc-general",
        "telegram tg-announcements",
        "telegram tg-community",
    ]
    assert sum(e.action == "delivery.sent" for e in events) == 4
    assert found.incident.last_public_update_at is not None
    # Time to first public announcement, for the Incident Log: the earliest public send.
    first_public = found.incident.first_public_update_at
    assert first_public is not None and first_public <= found.incident.last_public_update_at


async def test_follow_ups_go_into_the_thread_and_resolution_locks_it(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    first = await approved_draft(db, world, pub_settings)
    await worker.run_until_settled(within=30)
    update = await approved_draft(
        db,
        world,
        pub_settings,
        template="active-exploit-update",
        variables=UPDATE_VARS,
    )
    await worker.run_until_settled(within=30)
    resolved = await approved_draft(
        db,
        world,
        pub_settings,
        template="resolved",
        variables={
            "summary": "The exploit is contained.",
            "fix": "The vulnerable function was disabled.",
            "funds_status": "safe",
        },
    )
    await worker.run_until_settled(within=30)
    channel = world.info["discord_channels"]["announcements"]
    in_channel = await control.discord_messages(channel)
    assert [m["text"] for m in in_channel] == _messages(first, "dc-announcements")
    thread_id = in_channel[0]["thread"]
    in_thread = await control.discord_messages(thread_id)
    assert [m["text"] for m in in_thread] == (
        _messages(update, "dc-announcements") + _messages(resolved, "dc-announcements")
    )
    thread = await control.get(f"/discord/channels/{thread_id}")
    assert thread["locked"] is True

    chat = world.info["telegram_chats"]["announcements"]
    shown = await control.telegram_messages(chat)
    assert len(shown) == 3
    assert shown[1]["reply_to"] == shown[0]["id"] and shown[2]["reply_to"] == shown[0]["id"]


async def test_a_long_announcement_posts_as_an_ordered_series(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    paragraphs = [f"Paragraph {i}: " + ("detail " * 75).strip() for i in range(7)]
    draft = await approved_draft(
        db,
        world,
        pub_settings,
        template="custom",
        variables={"message": "\n\n".join(paragraphs)},
        to=("dc_general",),
    )
    expected = _messages(draft, "dc-general")
    assert len(expected) >= 3 and all(len(m) <= 2000 for m in expected)
    await worker.run_until_settled(within=30)
    shown = await control.discord_messages(world.info["discord_channels"]["general"])
    assert [m["text"] for m in shown] == expected


async def test_compromised_destination_gets_nothing(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    async with db.transaction() as session:
        target = await destinations.require_destination(session, name="tg-announcements")
        await destinations.mark_compromised(
            session, destination=target, reason="admin account phished", actor=None
        )
    draft = await approved_draft(db, world, pub_settings)
    await worker.run_until_settled(within=30)
    assert await control.telegram_messages(world.info["telegram_chats"]["announcements"]) == []
    async with db.transaction() as session:
        rows = {d.destination.name: d for d in await outbox.for_draft(session, draft_id=draft.id)}
        found = await drafts.require_draft(session, draft_id=draft.id)
    assert rows["tg-announcements"].state == "skipped"
    assert "admin account phished" in rows["tg-announcements"].last_error
    assert rows["dc-announcements"].state == "sent"
    assert found.status == "published"


async def test_destination_compromised_after_approval_is_skipped_at_send_time(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    draft = await approved_draft(db, world, pub_settings)
    async with db.transaction() as session:
        target = await destinations.require_destination(session, name="dc-announcements")
        await destinations.mark_compromised(
            session, destination=target, reason="token leaked", actor=None
        )
    await worker.run_until_settled(within=30)
    assert await control.discord_messages(world.info["discord_channels"]["announcements"]) == []
    async with db.transaction() as session:
        rows = {
            d.destination.name: d.state for d in await outbox.for_draft(session, draft_id=draft.id)
        }
    assert rows == {"dc-announcements": "skipped", "tg-announcements": "sent"}


async def test_correction_edits_the_original_messages(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    original = await approved_draft(db, world, pub_settings)
    await worker.run_until_settled(within=30)
    correction = await approved_draft(
        db,
        world,
        pub_settings,
        template="correction",
        correction_of=original,
        variables={
            "original_posted_at": "2026-01-01T12:00Z",
            "original_summary": "Initial alert about the bridge",
            "wrong": "We said funds were at risk on all chains.",
            "correct": "Only the mainnet bridge is affected.",
        },
    )
    await worker.run_until_settled(within=30)
    discord = await control.discord_messages(world.info["discord_channels"]["announcements"])
    assert len(discord) == 1 and discord[0]["edited"]
    assert discord[0]["text"] == _messages(correction, "dc-announcements")[0]
    telegram = await control.telegram_messages(world.info["telegram_chats"]["announcements"])
    assert len(telegram) == 1 and telegram[0]["edited"]
    assert telegram[0]["text"] == _visible(_messages(correction, "tg-announcements")[0])


async def test_correction_of_a_follow_up_edits_it_inside_the_thread(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    await approved_draft(db, world, pub_settings, to=("dc_news",))
    await worker.run_until_settled(within=30)
    update = await approved_draft(
        db,
        world,
        pub_settings,
        to=("dc_news",),
        template="active-exploit-update",
        variables=UPDATE_VARS,
    )
    await worker.run_until_settled(within=30)
    correction = await approved_draft(
        db,
        world,
        pub_settings,
        to=("dc_news",),
        template="correction",
        correction_of=update,
        variables={
            "original_posted_at": "2026-01-01T13:00Z",
            "original_summary": "The update about the pause",
            "wrong": "We said the bridge is paused.",
            "correct": "Deposits are paused; withdrawals still work.",
        },
    )
    await worker.run_until_settled(within=30)
    channel = world.info["discord_channels"]["announcements"]
    thread_id = (await control.discord_messages(channel))[0]["thread"]
    in_thread = await control.discord_messages(thread_id)
    assert len(in_thread) == 1 and in_thread[0]["edited"]
    assert in_thread[0]["text"] == _messages(correction, "dc-announcements")[0]
    async with db.transaction() as session:
        (delivery,) = await outbox.for_draft(session, draft_id=correction.id)
    assert delivery.state == "sent"


async def test_a_correction_shorter_than_the_original_is_refused_where_it_would_leave_old_text(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    long_text = "\n\n".join(f"Part {p}: " + "status " * 180 for p in range(2))
    original = await approved_draft(
        db, world, pub_settings, template="custom", variables={"message": long_text}
    )
    await worker.run_until_settled(within=30)
    channel = world.info["discord_channels"]["announcements"]
    before = [m["text"] for m in await control.discord_messages(channel)]
    assert len(before) == 2  # Discord split it; Telegram took it as one message
    correction = await approved_draft(
        db,
        world,
        pub_settings,
        template="custom",
        correction_of=original,
        variables={"message": "Correction: only the mainnet bridge is affected."},
    )
    await worker.run_until_settled(within=30)
    assert [m["text"] for m in await control.discord_messages(channel)] == before
    telegram = await control.telegram_messages(world.info["telegram_chats"]["announcements"])
    assert len(telegram) == 1 and telegram[0]["edited"]
    async with db.transaction() as session:
        rows = {
            d.destination.name: d for d in await outbox.for_draft(session, draft_id=correction.id)
        }
    assert rows["tg-announcements"].state == "sent"
    refused = rows["dc-announcements"]
    assert refused.state == "failed"
    assert "1 message(s) here but the original was 2" in refused.last_error


async def test_scheduled_draft_waits_for_its_time(
    db: Database,
    pub_settings: Settings,
    world: World,
    worker: Worker,
    control: Control,
    clock: FrozenClock,
) -> None:
    when = clock.now().replace(hour=15)
    draft = await approved_draft(db, world, pub_settings, options=DraftOptions(publish_at=when))
    assert await worker.claim(limit=10) == []
    assert await control.discord_messages(world.info["discord_channels"]["announcements"]) == []
    clock.set(when)
    await worker.run_until_settled(within=30)
    assert len(await control.discord_messages(world.info["discord_channels"]["announcements"])) == 1
    async with db.transaction() as session:
        assert (await drafts.require_draft(session, draft_id=draft.id)).status == "published"


async def test_an_approval_ttl_does_not_void_a_scheduled_announcement(
    db: Database,
    pub_settings: Settings,
    world: World,
    control: Control,
    publishers: dict[Platform, Publisher],
    clock: FrozenClock,
) -> None:
    """The TTL bounds how long a quorum takes to gather; the approved content includes its
    publish_at, so the announcement goes out at its time, hours after the approvals."""
    settings = pub_settings.model_copy(update={"approval_ttl_minutes": 30})
    when = clock.now() + timedelta(hours=3)
    await approved_draft(db, world, settings, options=DraftOptions(publish_at=when))
    clock.set(when)
    worker = Worker(
        database=db, settings=settings, publishers=publishers, config=WorkerConfig(**FAST)
    )
    await worker.run_until_settled(within=30)
    assert len(await control.discord_messages(world.info["discord_channels"]["announcements"])) == 1


async def test_unapproved_scheduled_draft_is_marked_overdue(
    db: Database, pub_settings: Settings, world: World, clock: FrozenClock
) -> None:
    async with db.transaction() as session:
        incident = await incidents.require_incident(session, key=world.incident.key)
        target = await destinations.require_destination(session, name="dc-announcements")
        draft = await drafts.create(
            session,
            incident=incident,
            template="active-exploit-initial",
            variables=EXPLOIT_VARS,
            destinations=[target],
            actor=world.team["cm"],
            settings=pub_settings,
            options=DraftOptions(publish_at=clock.now().replace(hour=13)),
        )
        await drafts.submit(session, draft=draft, actor=world.team["cm"], settings=pub_settings)
        assert not (await draft_document(session, draft=draft, settings=pub_settings))["overdue"]
    clock.set(clock.now().replace(hour=14))
    async with db.transaction() as session:
        found = await drafts.require_draft(session, draft_id=draft.id)
        assert (await draft_document(session, draft=found, settings=pub_settings))["overdue"]


async def test_submission_notifies_decision_makers_privately(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    draft = await approved_draft(db, world, pub_settings)
    await worker.run_until_settled(within=30)
    channel = world.info["discord_channels"]["responders"]
    # (The P1 also alerted the Decision Makers, and the cadence reminds of public updates.)
    shown = [m for m in await control.discord_messages(channel) if "Approval needed" in m["text"]]
    assert len(shown) == 1
    assert draft.content_hash[:12] in shown[0]["text"]
    assert shown[0]["mention_everyone"] is False and shown[0]["mentions"] == []
    async with db.transaction() as session:
        notes = list(
            (
                await session.scalars(
                    select(Notification).where(Notification.kind == "approval_request")
                )
            ).all()
        )
    assert [(n.kind, n.state) for n in notes] == [("approval_request", "sent")]


async def test_a_notification_whose_worker_died_is_sent_by_the_next(
    db: Database,
    pub_settings: Settings,
    world: World,
    worker: Worker,
    control: Control,
    publishers: dict[Platform, Publisher],
    clock: FrozenClock,
) -> None:
    """A worker that claimed the "waiting for your approval" ping and died (its lease runs out)
    must not take the ping with it."""
    await approved_draft(db, world, pub_settings)
    dead = Worker(
        database=db,
        settings=pub_settings,
        publishers=publishers,
        config=WorkerConfig(**{**FAST, "lease_seconds": 5.0}),
    )
    assert len(await dead.claim_notifications(limit=10)) == 1  # then it is killed
    assert await worker.claim_notifications(limit=10) == []  # its lease still holds
    clock.set(clock.now() + timedelta(seconds=6))
    await worker.run_until_settled(within=30)
    shown = await control.discord_messages(world.info["discord_channels"]["responders"])
    assert len(shown) == 1
    async with db.transaction() as session:
        notes = list((await session.scalars(select(Notification))).all())
    assert [(n.kind, n.state, n.attempts) for n in notes] == [("approval_request", "sent", 2)]


async def test_gate_refuses_tampered_content(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    """Someone with database access rewrites the approved version's text: nothing is sent."""
    draft = await approved_draft(db, world, pub_settings)
    async with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("ALTER TABLE draft_versions DISABLE TRIGGER USER"))
        else:
            await conn.execute(text("DROP TRIGGER draft_versions_no_update"))
        rows = (await conn.execute(text("SELECT id, payload FROM draft_versions"))).all()
        for row_id, payload in rows:
            forged = payload if isinstance(payload, str) else __import__("json").dumps(payload)
            forged = forged.replace("draining the ETH bridge", "Send your ETH to 0xEVIL")
            await conn.execute(
                text("UPDATE draft_versions SET payload = :p WHERE id = :i"),
                {"p": forged, "i": row_id},
            )
        if conn.dialect.name == "postgresql":
            await conn.execute(text("ALTER TABLE draft_versions ENABLE TRIGGER USER"))
    await worker.run_until_settled(within=30)
    assert await control.discord_messages(world.info["discord_channels"]["announcements"]) == []
    assert await control.telegram_messages(world.info["telegram_chats"]["announcements"]) == []
    async with db.transaction() as session:
        rows = await outbox.for_draft(session, draft_id=draft.id)
        refused = [
            e for e in await audit.recent(session, limit=100) if e.action == "delivery.refused"
        ]
    assert {r.state for r in rows} == {"failed"}
    assert all("no longer hashes to the approved content hash" in r.last_error for r in rows)
    assert len(refused) == 2


async def test_revoked_approver_blocks_sending(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    draft = await approved_draft(db, world, pub_settings)
    async with db.transaction() as session:
        dave = await users.require_user(session, username="dave")
        await users.set_roles(session, user=dave, roles=[Role.RESPONDER])
    await worker.run_until_settled(within=30)
    assert await control.discord_messages(world.info["discord_channels"]["announcements"]) == []
    async with db.transaction() as session:
        rows = await outbox.for_draft(session, draft_id=draft.id)
    assert {r.state for r in rows} == {"failed"}
    assert "quorum is no longer met (0 of 1)" in rows[0].last_error


async def test_edit_before_sending_cancels_and_nothing_unapproved_goes_out(
    db: Database, pub_settings: Settings, world: World, worker: Worker, control: Control
) -> None:
    draft = await approved_draft(db, world, pub_settings)
    async with db.transaction() as session:
        found = await drafts.require_draft(session, draft_id=draft.id)
        await drafts.edit(
            session,
            draft=found,
            actor=world.team["cm"],
            settings=pub_settings,
            variables={"summary": "Edited after approval"},
        )
    await worker.run_until_settled(within=30)
    assert await control.discord_messages(world.info["discord_channels"]["announcements"]) == []
    async with db.transaction() as session:
        rows = await outbox.for_draft(session, draft_id=draft.id)
    assert {r.state for r in rows} == {"cancelled"}


@pytest.mark.parametrize("rounds", [12])
async def test_edit_racing_the_worker_never_sends_unapproved_bytes(
    db: Database,
    pub_settings: Settings,
    world: World,
    worker: Worker,
    control: Control,
    rounds: int,
) -> None:
    """Edits fired while the worker runs: every message out is an approved version's text."""
    import asyncio
    import random

    rng = random.Random(5)
    approved_texts: set[str] = set()
    for round_number in range(rounds):
        draft = await approved_draft(
            db,
            world,
            pub_settings,
            template="custom",
            variables={"message": f"Approved text {round_number}"},
            to=("dc_general",),
        )
        approved_texts.update(_messages(draft, "dc-general"))

        async def edit_soon(draft_id: int = draft.id, n: int = round_number) -> None:
            if n % 4 == 3:
                # Every fourth edit comes once the message is on the platform, while the worker
                # is still recording it, so the worker wins some races however slow the
                # machine (under load the random delays below all went to the edit).
                channel = world.info["discord_channels"]["general"]
                for _ in range(3000):
                    shown = await control.discord_messages(channel)
                    if any(f"Approved text {n}" in m["text"] for m in shown):
                        break
                    await asyncio.sleep(0.01)
            else:
                await asyncio.sleep(rng.uniform(0, 0.03))
            try:
                async with db.transaction() as session:
                    found = await drafts.require_draft(session, draft_id=draft_id)
                    await drafts.edit(
                        session,
                        draft=found,
                        actor=world.team["cm"],
                        settings=pub_settings,
                        variables={"message": f"UNAPPROVED edit {n}"},
                    )
            except RuleViolation as error:  # the worker got there first: the edit is refused
                assert error.rule == "draft.not_editable"

        await asyncio.gather(edit_soon(), worker.run_until_settled(within=30))
        await worker.run_until_settled(within=30)
    shown = await control.discord_messages(world.info["discord_channels"]["general"])
    assert shown, "the worker should win some races"
    assert all(m["text"] in approved_texts for m in shown)
    assert not any("UNAPPROVED" in m["text"] for m in shown)
    assert len({m["text"] for m in shown}) == len(shown)  # and never twice
