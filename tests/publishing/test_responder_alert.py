"""A cluster of community reports alerts the responders once, then keeps that one message up to
date by editing it (issue 11, item 4): through the worker, the sandbox and the real libraries."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from comms.clock import FrozenClock
from comms.db import Database
from comms.destinations import service as destinations
from comms.destinations.models import InternalUse, Visibility
from comms.detections import service
from comms.detections.models import Cluster, ClusterStatus, DetectionSource
from comms.enums import Platform
from comms.outbox.models import Notification
from comms.outbox.worker import Worker
from comms.settings import Settings
from tests.publishing.conftest import Control, World

DRAINER = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
BRIDGE = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


async def _responders(db: Database, world: World) -> tuple[str, int]:
    """A Discord channel and a Telegram group that receive responder alerts."""
    channel = world.info["discord_channels"]["responders"]
    chat = world.info["telegram_chats"]["responders"]
    async with db.transaction() as session:
        await destinations.create(
            session,
            name="tg-responders",
            platform=Platform.TELEGRAM,
            target=str(chat),
            actor=None,
            visibility=Visibility.PRIVATE,
            internal_uses=[InternalUse.RESPONDERS],
        )
        discord = await destinations.get_by_name(session, name="dc-responders")
        assert discord is not None
        discord.internal_uses = [*discord.internal_uses, InternalUse.RESPONDERS.value]
    return channel, chat


async def _report(
    db: Database, settings: Settings, n: int, text: str, *, member: str, name: str = ""
) -> None:
    async with db.transaction() as session:
        await service.record(
            session,
            service.Report(
                source=DetectionSource.TELEGRAM,
                text=text,
                external_id=f"chat:{n}",
                reporter_id=member,
                reporter_name=name or member,
            ),
            settings=settings,
        )


def _alerts(messages: list[dict[str, Any]], field: str = "text") -> list[dict[str, Any]]:
    return [m for m in messages if "need triage" in (m.get(field) or "")]


async def test_one_alert_at_three_reporters_then_edited_in_place(
    db: Database,
    pub_settings: Settings,
    world: World,
    control: Control,
    worker: Worker,
    clock: FrozenClock,
) -> None:
    channel, chat = await _responders(db, world)
    await _report(db, pub_settings, 1, f"drainer {DRAINER} emptying the pool", member="m1")
    await _report(db, pub_settings, 2, f"{DRAINER} again", member="m2")
    await worker.run_until_settled(within=20)
    assert _alerts(await control.discord_messages(channel), "text") == []  # two: not yet
    hostile = "@everyone <b>x</b> [claim](https://evil.example) \u202egnp.exe"
    await _report(db, pub_settings, 3, f"{DRAINER} {hostile}", member="m3", name="<@&1> mallory")
    await worker.run_until_settled(within=20)
    (discord_alert,) = _alerts(await control.discord_messages(channel), "text")
    (telegram_alert,) = _alerts(await control.telegram_messages(chat), "text")
    for text in (discord_alert["text"], telegram_alert["text"]):
        assert "3 reports from 3 reporters" in text and DRAINER in text
    content = discord_alert["text"]
    assert "@everyone" not in content.replace("@\u200beveryone", "")  # escaped, pings nobody
    assert "](https://evil.example)" not in content and "<@&1>" not in content
    async with db.transaction() as session:
        (cluster,) = (await session.scalars(select(Cluster))).all()
    assert cluster.status is ClusterStatus.ALERTED

    # More reports: the same messages are edited, at most once per 30 s, never reposted.
    await _report(db, pub_settings, 4, f"{DRAINER} still", member="m4")
    await _report(db, pub_settings, 5, f"{DRAINER} and more", member="m5")
    async with db.transaction() as session:  # one edit per destination, due 30 s after the post
        due = (
            await session.scalars(
                select(Notification.next_attempt_at).where(
                    Notification.kind == "responder_alert_edit"
                )
            )
        ).all()
    assert len(due) == 2 and all(d >= clock.now() + timedelta(seconds=29) for d in due)
    clock.advance(seconds=31)
    await worker.run_until_settled(within=20)
    (discord_alert,) = _alerts(await control.discord_messages(channel), "text")
    (telegram_alert,) = _alerts(await control.telegram_messages(chat), "text")
    assert "5 reports from 5 reporters" in discord_alert["text"]
    assert "5 reports from 5 reporters" in telegram_alert["text"]
    async with db.transaction() as session:
        edits = (
            await session.scalars(
                select(Notification).where(Notification.kind == "responder_alert_edit")
            )
        ).all()
    assert sorted(e.state.value for e in edits) == ["sent", "sent"]  # one per destination


async def test_a_known_contract_alerts_at_once(
    db: Database,
    pub_settings: Settings,
    world: World,
    control: Control,
    worker: Worker,
    clock: FrozenClock,
) -> None:
    channel, _chat = await _responders(db, world)
    settings = pub_settings.model_copy(update={"known_contracts": {BRIDGE.lower(): "ETH bridge"}})
    await _report(db, settings, 1, f"is {BRIDGE} being drained?", member="m1")
    await worker.run_until_settled(within=20)
    (alert,) = _alerts(await control.discord_messages(channel), "text")
    assert "1 reports from 1 reporters" in alert["text"]
