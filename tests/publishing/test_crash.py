"""Crash safety: a worker process killed with SIGKILL at random moments, again and again, during a
fan-out to 20 Discord channels and 20 Telegram chats, restarted each time.

Every destination ends sent (or uncertain, waiting for a person), no Discord channel holds a
duplicate (the nonce deduplicates), and a Telegram duplicate appears only where a kill hit a
request in flight, every such delivery flagged (``uncertain_count > 0``).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from bots.sandbox import Sandbox
from bots.sandbox.telegram_markup import parse_html
from comms.db import Database
from comms.destinations import service as destinations
from comms.drafts import service as drafts
from comms.enums import Platform, Severity
from comms.incidents import service as incidents
from comms.outbox import service as outbox
from comms.outbox.models import Delivery
from comms.settings import Settings
from comms.users import service as users
from tests.factories import make_team
from tests.publishing.worker_process import spawn

CHANNELS = 20
CHATS = 20
ANNOUNCEMENTS = 4  # approved at the start
RESERVE = 24  # submitted, approved one by one if the fan-out ends before MIN_KILLS kills
MIN_KILLS = 50
SENDS = ("POST /channels/{channel_id}/messages", "sendMessage")


async def _build_world(
    db: Database, sandbox: Sandbox, settings: Settings
) -> tuple[list[int], list[int], int]:
    """40 destinations on fresh sandbox channels and chats, approved announcements, and a
    reserve of submitted ones: (approved ids, reserve ids, the approving Decision Maker's id).

    How far one worker's life gets depends on the machine, so the test approves more from the
    reserve whenever the fan-out has settled before it has killed a worker MIN_KILLS times.
    """
    info = sandbox.info
    async with httpx.AsyncClient(timeout=10) as http:
        channel_ids = []
        for i in range(CHANNELS):
            response = await http.post(
                f"{sandbox.control_url}/discord/guilds/{info['discord_guild_id']}/channels",
                json={"name": f"news-{i}", "type": 0},
            )
            channel_ids.append(response.json()["id"])
        chat_ids = []
        for i in range(CHATS):
            response = await http.post(
                f"{sandbox.control_url}/telegram/chats",
                json={"type": "channel", "title": f"News {i}", "bot_admin": True},
            )
            chat_ids.append(response.json()["id"])
    async with db.transaction() as session:
        team = await make_team(session)
        chosen = [
            await destinations.create(
                session,
                name=f"dc-{i}",
                platform=Platform.DISCORD,
                target=str(cid),
                actor=None,
                pin=(i % 4 == 0),
            )
            for i, cid in enumerate(channel_ids)
        ] + [
            await destinations.create(
                session,
                name=f"tg-{i}",
                platform=Platform.TELEGRAM,
                target=str(cid),
                actor=None,
                pin=(i % 4 == 0),
            )
            for i, cid in enumerate(chat_ids)
        ]
        incident = await incidents.open_incident(
            session, title="Crash drill", severity=Severity.P2, actor=team["lead"]
        )
        ids = []
        for n in range(ANNOUNCEMENTS + RESERVE):
            # Long enough to be a series of two Discord messages.
            text = "\n\n".join(f"Announcement {n}, part {p}: " + "status " * 180 for p in range(2))
            draft = await drafts.create(
                session,
                incident=incident,
                template="custom",
                variables={"message": text},
                destinations=chosen,
                actor=team["cm"],
                settings=settings,
            )
            await drafts.submit(session, draft=draft, actor=team["cm"], settings=settings)
            if n < ANNOUNCEMENTS:
                await drafts.approve(session, draft=draft, actor=team["dm1"], settings=settings)
            ids.append(draft.id)
        approver_id = team["dm1"].id
    return ids[:ANNOUNCEMENTS], ids[ANNOUNCEMENTS:], approver_id


async def _approve(db: Database, settings: Settings, draft_id: int, approver_id: int) -> None:
    async with db.transaction() as session:
        draft = await drafts.require_draft(session, draft_id=draft_id)
        approver = await users.get(session, user_id=approver_id)
        assert approver is not None
        await drafts.approve(session, draft=draft, actor=approver, settings=settings)


async def _sends_since(http: httpx.AsyncClient, control: str, seq: int) -> tuple[int, int]:
    entries = (await http.get(f"{control}/requests", params={"since": seq})).json()
    sends = sum(1 for e in entries if e.get("route") in SENDS)
    last = max((int(e["seq"]) for e in entries), default=seq)
    return sends, last


async def _unsettled(db: Database) -> int:
    """Deliveries a worker still has to do something with: sending, or due and not held back
    behind an older delivery to the same destination that waits for a person (uncertain)."""
    from sqlalchemy import func, select

    from comms.clock import utcnow
    from comms.outbox.deliver import held_back

    async with db.transaction() as session:
        return int(
            await session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(
                    (Delivery.state == "sending")
                    | (Delivery.state.in_(["pending", "retrying"]) & ~held_back(utcnow()))
                )
            )
            or 0
        )


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["resend", "hold"])
async def test_sigkill_during_fan_out(
    db: Database, database_url: str, settings: Settings, policy: str
) -> None:
    rng = random.Random(f"crash-{policy}")
    async with Sandbox(seed=11) as sandbox:
        info = sandbox.info
        draft_ids, reserve, approver_id = await _build_world(db, sandbox, settings)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("COMMS_")},
            "COMMS_DATABASE_URL": database_url,
            "COMMS_DISCORD_TOKEN": info["discord_token"],
            "COMMS_DISCORD_API_BASE": info["discord_api_base"],
            "COMMS_TELEGRAM_TOKEN": info["telegram_token"],
            "COMMS_TELEGRAM_API_BASE": info["telegram_api_base"],
            "COMMS_TELEGRAM_UNCERTAIN": policy,
            "COMMS_WORKER_LEASE_SECONDS": "1",
            "COMMS_WORKER_BACKOFF_CAP_SECONDS": "1",
            "COMMS_WORKER_MAX_ATTEMPTS": "1000",
            "COMMS_PLATFORM_TIMEOUT_SECONDS": "5",
            "COMMS_LOG_LEVEL": "WARNING",
        }
        kills = mid_send_kills = 0
        async with httpx.AsyncClient(timeout=10) as http:
            _, seq = await _sends_since(http, sandbox.control_url, 0)
            while kills < MIN_KILLS:
                if not await _unsettled(db):  # this machine was quick: publish another one
                    assert reserve, f"all announcements were out after {kills} kills"
                    draft_ids.append(reserve.pop(0))
                    await _approve(db, settings, draft_ids[-1], approver_id)
                worker = spawn(env)
                deadline = time.monotonic() + 30
                # Wait until this worker is sending, then kill it at a random moment. (With
                # the hold policy, a restart may have nothing to send: what was left in flight
                # is now uncertain.)
                polls = 0
                while time.monotonic() < deadline and worker.is_alive():
                    sends, seq = await _sends_since(http, sandbox.control_url, seq)
                    if sends:
                        break
                    polls += 1
                    if polls % 10 == 0 and not await _unsettled(db):
                        break
                    await asyncio.sleep(0.02)
                await asyncio.sleep(rng.uniform(0, 0.25))
                sends, seq = await _sends_since(http, sandbox.control_url, seq)
                mid_send_kills += 1 if sends or worker.is_alive() else 0
                worker.kill()  # SIGKILL
                worker.join()
                kills += 1
            # Let a last worker finish the job.
            worker = spawn(env)
            try:
                deadline = time.monotonic() + 180
                while await _unsettled(db) and time.monotonic() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.2)  # another process writes the database
            finally:
                worker.terminate()  # SIGTERM: a clean stop
                worker.join(timeout=30)
            assert await _unsettled(db) == 0

            report = await _check(db, http, sandbox, draft_ids, policy)
    print(
        f"\ncrash test ({policy}): {kills} kills ({mid_send_kills} while sending), "
        f"{len(draft_ids)} announcements, {report}"
    )


async def _check(
    db: Database, http: httpx.AsyncClient, sandbox: Sandbox, draft_ids: list[int], policy: str
) -> dict[str, Any]:
    async with db.transaction() as session:
        deliveries = [
            d for draft_id in draft_ids for d in await outbox.for_draft(session, draft_id=draft_id)
        ]
        payloads = {
            draft_id: (await drafts.require_draft(session, draft_id=draft_id)).payload
            for draft_id in draft_ids
        }
    expected: dict[str, list[tuple[int, str]]] = {}
    for draft_id, payload in payloads.items():
        for item in payload["deliveries"]:
            target = item["destination"]["target"]
            texts = (
                item["messages"]
                if item["destination"]["platform"] == "discord"
                else [parse_html(m)[0] for m in item["messages"]]
            )
            expected.setdefault(target, []).extend((draft_id, t) for t in texts)
    flagged = {(d.destination.target, d.draft_id) for d in deliveries if d.uncertain_count > 0}
    states = Counter(d.state for d in deliveries)
    # Under "hold", a later announcement to a destination waits behind an uncertain one there
    # until a person decides (updates never overtake): pending, and nothing of it was sent.
    allowed_end = {"sent"} if policy == "resend" else {"sent", "uncertain", "pending"}
    assert set(states) <= allowed_end, states
    uncertain = {(d.destination.target, d.draft_id) for d in deliveries if d.state == "uncertain"}
    blocked_targets = {target for target, _ in uncertain}
    waiting = {(d.destination.target, d.draft_id) for d in deliveries if d.state == "pending"}
    assert {target for target, _ in waiting} <= blocked_targets, waiting

    telegram_duplicates = 0
    for d in deliveries:
        target, platform = d.destination.target, d.destination.platform
        path = (
            f"/discord/channels/{target}/messages"
            if platform == "discord"
            else f"/telegram/chats/{target}/messages"
        )
        shown = Counter(m["text"] for m in (await http.get(sandbox.control_url + path)).json())
        for draft_id, text in expected[target]:
            if draft_id != d.draft_id:
                continue
            copies = shown[text]
            if platform == "discord":
                assert copies == 1, f"Discord {target} shows draft {draft_id} {copies} times"
            elif copies > 1:
                telegram_duplicates += 1
                assert (target, draft_id) in flagged, (
                    f"unflagged Telegram duplicate in {target} of draft {draft_id}: "
                    f"{d.state} attempts={d.attempts} ids={d.platform_message_ids} "
                    f"error={d.last_error!r}"
                )
            elif copies == 0:
                assert (target, draft_id) in uncertain | waiting, (
                    f"Telegram {target} lost draft {draft_id} without a flag"
                )
            if (target, draft_id) in waiting:
                assert copies == 0, f"{target}: draft {draft_id} went out while held back"
    return {
        "waiting_behind_uncertain": len(waiting),
        "states": dict(states),
        "flagged": len(flagged),
        "telegram_duplicates": telegram_duplicates,
    }
