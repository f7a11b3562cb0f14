"""The Telegram listener with the real python-telegram-bot against the sandbox.

Members write through the sandbox (its control API, or its Python API for what the control API
cannot express: photos with captions, a channel's discussion group, other bots); the listener
long-polls ``getUpdates`` as it would on Telegram, and the tests read the detections from the
database and the bot's answers from the sandbox. Updates are handled one at a time in order, so
a report sent after some ignored messages is a barrier: once it is stored, the messages before
it have been handled (and ignored).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr
from telegram import Bot, MessageEntity

from bots.sandbox import Sandbox
from bots.telegram_listener import TelegramListener
from comms.clock import FrozenClock
from comms.db import Database
from comms.detections.intake import PROMPT, Intake
from comms.detections.models import DetectionSource
from comms.detections.service import detection_document, list_detections
from comms.settings import Settings
from tests.sandbox import spec_check

T = TypeVar("T")

BOT = "sandbox_comms_bot"
SAFETY = "never send you a direct message first"


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """Every request the listener makes, and every answer, must match the Bot API spec."""
    async with Sandbox(record_exchanges=True, seed=7) as sb:
        yield sb
        problems = spec_check.check_exchanges(sb.core.exchanges, requests=True)
        assert not problems, "exchanges that do not match the published specs:\n" + "\n".join(
            problems
        )


@pytest.fixture
def tg_settings(settings: Settings, sandbox: Sandbox) -> Settings:
    return settings.model_copy(
        update={
            "telegram_api_base": sandbox.info["telegram_api_base"],
            "telegram_token": SecretStr(sandbox.info["telegram_token"]),
        }
    )


@pytest.fixture
def intake(db: Database, tg_settings: Settings) -> Intake:
    return Intake(database=db, settings=tg_settings)


@pytest.fixture
async def listener(tg_settings: Settings, intake: Intake) -> AsyncIterator[TelegramListener]:
    listening = TelegramListener(tg_settings, intake, poll_timeout=5, combined_interval=0.1)
    await listening.start()
    yield listening
    await listening.stop()


class Members:
    """What community members do, through the sandbox's control API, and what they see."""

    def __init__(self, sandbox: Sandbox, client: httpx.AsyncClient) -> None:
        self.sandbox = sandbox
        self.http = client
        self.url = sandbox.control_url
        self.chats: dict[str, int] = sandbox.info["telegram_chats"]
        self.users: dict[str, int] = sandbox.info["telegram_users"]

    async def post(self, chat: str | int, user: str, text: str, **extra: Any) -> dict[str, Any]:
        chat_id = self.chats.get(chat, chat) if isinstance(chat, str) else chat
        response = await self.http.post(
            f"{self.url}/telegram/chats/{chat_id}/messages",
            json={"user": user, "text": text, **extra},
        )
        assert response.status_code == 201, response.text
        view: dict[str, Any] = response.json()
        return view

    async def edit(self, chat: str, message_id: int, text: str) -> dict[str, Any]:
        response = await self.http.patch(
            f"{self.url}/telegram/chats/{self.chats[chat]}/messages/{message_id}",
            json={"text": text},
        )
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    async def privacy(self, on: bool) -> None:
        response = await self.http.patch(f"{self.url}/telegram/bot", json={"privacy_mode": on})
        assert response.status_code == 200, response.text

    async def from_bot(self, chat: str | int) -> list[dict[str, Any]]:
        """The bot's messages in ``chat``, oldest first."""
        chat_id = self.chats.get(chat, chat) if isinstance(chat, str) else chat
        response = await self.http.get(f"{self.url}/telegram/chats/{chat_id}/messages")
        assert response.status_code == 200, response.text
        bot_id = self.sandbox.info["telegram_bot_id"]
        return [m for m in response.json() if m["author"] and m["author"]["id"] == bot_id]


@pytest.fixture
async def members(sandbox: Sandbox) -> AsyncIterator[Members]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield Members(sandbox, client)


async def eventually(probe: Callable[[], Awaitable[T | None]], *, within: float = 10.0) -> T:
    """Poll ``probe`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.02)


async def stored(db: Database) -> list[dict[str, Any]]:
    """Telegram detections, oldest first."""
    async with db.read() as session:
        found = await list_detections(session, source=DetectionSource.TELEGRAM)
        return [detection_document(d) for d in reversed(found)]


async def stored_count(db: Database, count: int) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        found = await stored(db)
        assert len(found) <= count, found
        return found if len(found) == count else None

    return await eventually(probe)


async def bot_count(members: Members, chat: str | int, count: int) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        found = await members.from_bot(chat)
        return found if len(found) >= count else None

    found = await eventually(probe)
    assert len(found) == count, found
    return found


# --- reports ------------------------------------------------------------------------------


async def test_report_command_addressed_to_the_bot(
    listener: TelegramListener, members: Members, db: Database
) -> None:
    text = "the bridge UI asks to approve 0x1111111111111111111111111111111111111111"
    sent = await members.post("community", "alice", f"/report@{BOT} {text}")
    assert sent["delivered_to_bot"]  # privacy mode on: a command with the bot's name arrives
    (detection,) = await stored_count(db, 1)
    community = members.chats["community"]
    assert detection["text"] == text
    assert detection["external_id"] == f"{community}:{sent['id']}"
    assert detection["reporter"]["id"] == str(members.users["alice"])
    assert detection["reporter"]["name"] == "Alice"
    assert detection["location"] == {
        "chat": str(community),
        "chat_title": "Sandbox Protocol Community",
    }
    assert detection["message_url"] == f"https://t.me/c/1000000002/{sent['id']}"
    assert "address" in [e["type"] for e in detection["entities"]]

    (ack,) = await bot_count(members, "community", 1)
    assert ack["reply_to"] == sent["id"]
    assert f"R-{detection['id']}" in ack["text"]
    assert SAFETY in ack["text"]
    assert "seed phrase" in ack["text"]
    assert "0x1111" not in ack["text"] and "approve" not in ack["text"]
    assert ack["link_preview_options"] == {"is_disabled": True}


async def test_bare_report_command_in_a_group_that_shows_the_bot_everything(
    listener: TelegramListener, members: Members, db: Database
) -> None:
    # The bot is an administrator of the responders group: it gets every message there.
    sent = await members.post("responders", "dave_responder", "/report phishing site clone-app.io")
    (detection,) = await stored_count(db, 1)
    assert detection["text"] == "phishing site clone-app.io"
    assert detection["location"]["chat"] == str(members.chats["responders"])
    assert detection["external_id"] == f"{members.chats['responders']}:{sent['id']}"
    await bot_count(members, "responders", 1)


async def test_mention_with_emoji_before_it(
    listener: TelegramListener, members: Members, db: Database
) -> None:
    sent = await members.post("community", "bob", f"🚨 @{BOT.upper()} drainer on the bridge")
    assert sent["delivered_to_bot"]
    (detection,) = await stored_count(db, 1)
    # The mention's offset counts the emoji as two UTF-16 units; the text around it is kept.
    assert detection["text"] == "🚨 drainer on the bridge"
    await bot_count(members, "community", 1)


async def test_text_mention_of_the_bot(
    listener: TelegramListener, members: Members, db: Database
) -> None:
    bot_id = members.sandbox.info["telegram_bot_id"]
    sent = await members.post(
        "community",
        "carol",
        f'<a href="tg://user?id={bot_id}">comms team</a>, someone impersonates support',
        parse_mode="HTML",
    )
    assert sent["delivered_to_bot"]
    (detection,) = await stored_count(db, 1)
    assert detection["text"] == "someone impersonates support"
    assert detection["reporter"]["name"] == "Carol"  # no username: the name is what we have
    await bot_count(members, "community", 1)


async def test_reply_to_the_bots_message(
    listener: TelegramListener, members: Members, db: Database
) -> None:
    await members.post("community", "alice", f"/report@{BOT} fake airdrop")
    await stored_count(db, 1)
    (ack,) = await bot_count(members, "community", 1)
    reply = await members.post(
        "community", "bob", "same here, they took funds from my wallet", reply_to=ack["id"]
    )
    assert reply["delivered_to_bot"]
    _, second = await stored_count(db, 2)
    assert second["text"] == "same here, they took funds from my wallet"
    assert second["reporter"]["id"] == str(members.users["bob"])
    acks = await bot_count(members, "community", 2)
    assert acks[1]["reply_to"] == reply["id"]


async def test_private_chat_report_and_start(
    listener: TelegramListener, members: Members, db: Database
) -> None:
    alice = members.users["alice"]
    await members.post(alice, "alice", "/start")
    (welcome,) = await bot_count(members, alice, 1)
    assert f"/report@{BOT}" in welcome["text"]
    assert SAFETY in welcome["text"] and "seed phrase" in welcome["text"]

    sent = await members.post(alice, "alice", "someone DMed me as 'support' asking for my seed")
    (detection,) = await stored_count(db, 1)
    assert detection["text"] == "someone DMed me as 'support' asking for my seed"
    assert detection["location"] == {"chat": str(alice), "chat_title": ""}
    acks = await bot_count(members, alice, 2)
    assert acks[1]["reply_to"] == sent["id"]
    assert f"R-{detection['id']}" in acks[1]["text"]


async def test_help_in_a_group(listener: TelegramListener, members: Members, db: Database) -> None:
    sent = await members.post("community", "bob", f"/help@{BOT}")
    (answer,) = await bot_count(members, "community", 1)
    assert answer["reply_to"] == sent["id"]
    assert f"/report@{BOT} what happened" in answer["text"]
    assert f"@{BOT}" in answer["text"] and "private keys" in answer["text"]
    assert await stored(db) == []


async def test_caption_with_a_hidden_link(
    listener: TelegramListener, sandbox: Sandbox, db: Database
) -> None:
    world = sandbox.telegram_world
    chat = world.chats[sandbox.info["telegram_chats"]["community"]]
    alice = world.find_user("alice")
    assert alice is not None
    message, delivered = await sandbox.telegram.post_as_member(
        chat,
        alice,
        f'@{BOT} this "official" post says '
        '<a href="https://claim-airdrop.example/x">claim here</a>',
        parse_mode="HTML",
        photo=True,
    )
    assert delivered
    (detection,) = await stored_count(db, 1)
    assert detection["text"] == 'this "official" post says claim here'
    urls = [e["value"] for e in detection["entities"] if e["type"] == "url"]
    assert any("claim-airdrop.example" in url for url in urls), detection["entities"]
    assert detection["external_id"] == f"{chat.id}:{message.message_id}"


async def test_empty_report_gets_a_prompt_and_stores_nothing(
    listener: TelegramListener, members: Members, db: Database
) -> None:
    first = await members.post("community", "alice", f"/report@{BOT}")
    second = await members.post("community", "bob", f"@{BOT}")
    prompts = await bot_count(members, "community", 2)
    assert [p["text"] for p in prompts] == [PROMPT, PROMPT]
    assert [p["reply_to"] for p in prompts] == [first["id"], second["id"]]
    assert await stored(db) == []


async def test_edit_updates_the_same_detection(
    listener: TelegramListener, members: Members, db: Database
) -> None:
    sent = await members.post("community", "alice", f"@{BOT} drainer at bad-site.io")
    (before,) = await stored_count(db, 1)
    await bot_count(members, "community", 1)
    address = "0x2222222222222222222222222222222222222222"
    edited = await members.edit("community", sent["id"], f"@{BOT} drainer contract {address}")
    assert edited["delivered_to_bot"]

    async def updated() -> dict[str, Any] | None:
        found = await stored(db)
        return found[0] if found[0]["text"] != before["text"] else None

    after = await eventually(updated)
    assert after["id"] == before["id"]
    assert after["text"] == f"drainer contract {address}"
    assert [e["type"] for e in after["entities"]] == ["address"]
    # A barrier report: once it is answered, the edit has been handled too (without an answer).
    await members.post("community", "bob", f"/report@{BOT} barrier")
    await stored_count(db, 2)
    await bot_count(members, "community", 2)


async def test_an_edit_right_after_its_report_is_never_lost(
    listener: TelegramListener, members: Members, db: Database
) -> None:
    """Updates are handled concurrently (a flood shares the intake's batches), but an edit
    that arrives together with its report waits for it: it must find the detection."""
    sent = [
        await members.post(
            "community", ("alice", "bob", "carol")[n % 3], f"/report@{BOT} first {n}"
        )
        for n in range(6)
    ]
    for n, message in enumerate(sent):
        await members.edit("community", message["id"], f"/report@{BOT} edited words {n}")

    async def all_edited() -> list[dict[str, Any]] | None:
        found = await stored(db)
        done = len(found) == 6 and all(d["text"].startswith("edited") for d in found)
        return found if done else None

    found = await eventually(all_edited)
    assert sorted(d["text"] for d in found) == [f"edited words {n}" for n in range(6)]


async def test_ignored_messages(
    listener: TelegramListener, sandbox: Sandbox, members: Members, db: Database
) -> None:
    world = sandbox.telegram_world
    community = world.chats[members.chats["community"]]
    await members.privacy(False)  # the bot sees every group message: it must choose

    unaddressed = await members.post("community", "alice", "is the bridge down for anyone?")
    assert unaddressed["delivered_to_bot"]
    other_command = await members.post("community", "bob", "/report@other_bot spam")
    assert other_command["delivered_to_bot"]

    # Another bot's message: Telegram never shows it to a bot (nor does the sandbox), so it is
    # put in the update queue by hand: the listener must not rely on the platform for this.
    other = world.add_user("Alerts", "alerts_feed_bot", is_bot=True)
    by_bot = await members.post("community", other.username or "", f"/report@{BOT} alert 1")
    assert not by_bot["delivered_to_bot"]
    await world.queue.push(
        "message", world.message_json(community, community.messages[by_bot["id"]])
    )

    # A channel post forwarded automatically into its discussion group; announcements tell
    # members how to report, so it names the bot's command.
    channel = world.chats[members.chats["announcements"]]
    world.link_discussion(channel, community)
    await listener.application.bot.send_message(
        channel.id, f"Report anything suspicious with /report@{BOT} or mention @{BOT}."
    )
    forwards = [m for m in community.messages.values() if m.forwarded_from is not None]
    assert len(forwards) == 1

    # The bot's own message, offered back to it.
    await members.post("community", "carol", f"/report@{BOT} barrier one")
    await stored_count(db, 1)
    (own,) = await bot_count(members, "community", 1)
    await world.queue.push("message", world.message_json(community, community.messages[own["id"]]))

    await members.post("community", "dave_responder", f"/report@{BOT} barrier two")
    found = await stored_count(db, 2)
    assert [d["text"] for d in found] == ["barrier one", "barrier two"]
    await bot_count(members, "community", 2)


async def test_second_report_within_the_window_is_stored_but_not_acknowledged(
    listener: TelegramListener, members: Members, db: Database
) -> None:
    first = await members.post("community", "alice", f"/report@{BOT} scam link one")
    await members.post("community", "alice", f"/report@{BOT} scam link two")
    barrier = await members.post("community", "bob", f"/report@{BOT} barrier")
    found = await stored_count(db, 3)
    assert [d["text"] for d in found] == ["scam link one", "scam link two", "barrier"]
    acks = await bot_count(members, "community", 2)
    assert [a["reply_to"] for a in acks] == [first["id"], barrier["id"]]


async def test_flood_gets_one_combined_answer(
    tg_settings: Settings, db: Database, members: Members, clock: FrozenClock
) -> None:
    intake = Intake(database=db, settings=tg_settings, chat_acks_per_minute=1, chat_burst=1)
    listening = TelegramListener(tg_settings, intake, poll_timeout=5, combined_interval=0.05)
    await listening.start()
    try:
        await members.post("community", "alice", f"/report@{BOT} one")
        await members.post("community", "bob", f"/report@{BOT} two")
        await members.post("community", "carol", f"/report@{BOT} three")
        await stored_count(db, 3)
        await bot_count(members, "community", 1)  # the chat's one acknowledgement this minute
        clock.advance(seconds=61)
        answers = await bot_count(members, "community", 2)
        assert answers[1]["text"].startswith("We have received 2 reports")
        assert answers[1]["reply_to"] is None
    finally:
        await listening.stop()


async def test_a_failed_answer_keeps_the_report_and_the_listener(
    listener: TelegramListener, members: Members, db: Database
) -> None:
    response = await members.http.post(
        f"{members.url}/faults",
        json={"platform": "telegram", "endpoint": "sendMessage", "kind": "500", "count": 1},
    )
    assert response.status_code == 201, response.text
    await members.post("community", "alice", f"/report@{BOT} first")
    await members.post("community", "bob", f"/report@{BOT} second")
    await stored_count(db, 2)
    (ack,) = await bot_count(members, "community", 1)  # the first answer was lost
    assert "R-2" in ack["text"]


async def test_stop_is_clean_and_idempotent(tg_settings: Settings, intake: Intake) -> None:
    listening = TelegramListener(tg_settings, intake, poll_timeout=5)
    await listening.start()
    started = time.monotonic()
    await listening.stop()
    await listening.stop()
    assert time.monotonic() - started < 3


# --- the sandbox's extensions -------------------------------------------------------------


async def test_sandbox_photos_discussion_groups_and_other_bots(
    sandbox: Sandbox, members: Members
) -> None:
    """Captions with entities, automatic forwards into a linked discussion group, and bots
    never seeing other bots' messages, read with the real library."""
    world = sandbox.telegram_world
    community = world.chats[members.chats["community"]]
    channel = world.chats[members.chats["announcements"]]
    world.link_discussion(channel, community)
    alice = world.find_user("alice")
    assert alice is not None
    bot = Bot(sandbox.info["telegram_token"], base_url=sandbox.info["telegram_api_base"])
    async with bot:
        assert (await bot.get_chat(channel.id)).linked_chat_id == community.id
        assert (await bot.get_chat(community.id)).linked_chat_id == channel.id

        await sandbox.telegram.post_as_member(
            community,
            alice,
            f'@{BOT} see <a href="https://claim.example/a">this</a>',
            parse_mode="HTML",
            photo=True,
        )
        await sandbox.telegram.post_as_member(
            alice_chat := world.private_chat(alice), alice, "", photo=True
        )
        post = await bot.send_message(channel.id, f"Use /report@{BOT} to report")
        await members.privacy(False)
        other = world.add_user("Alerts", "alerts_feed_bot", is_bot=True)
        by_bot = await members.post("community", other.username or "", f"@{BOT} hello")
        assert not by_bot["delivered_to_bot"]

        updates = await bot.get_updates(timeout=0)
        captioned, uncaptioned, forward = (u.message for u in updates)
        assert captioned is not None and uncaptioned is not None and forward is not None
        assert captioned.text is None and captioned.photo
        assert captioned.caption == "@sandbox_comms_bot see this"
        kinds = [(e.type, e.url) for e in captioned.caption_entities]
        assert kinds == [
            (MessageEntity.MENTION, None),
            (MessageEntity.TEXT_LINK, "https://claim.example/a"),
        ]
        assert captioned.photo[-1].width == 800
        assert uncaptioned.chat.id == alice_chat.id
        assert uncaptioned.caption is None and uncaptioned.photo

        assert forward.is_automatic_forward
        assert forward.chat.id == community.id
        assert forward.sender_chat is not None and forward.sender_chat.id == channel.id
        assert forward.from_user is not None and forward.from_user.id == 777000
        assert forward.forward_origin is not None
        assert forward.forward_origin.chat.id == channel.id  # type: ignore[attr-defined]
        assert forward.forward_origin.message_id == post.message_id  # type: ignore[attr-defined]
        assert forward.text == f"Use /report@{BOT} to report"
