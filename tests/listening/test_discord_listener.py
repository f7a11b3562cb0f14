"""The Discord listener against the sandbox: the real discord.py, a member's messages, DMs and
``/report`` driven through the control API, the detections read from the database.

Every request and answer is checked against Discord's published spec after each test. Negative
checks ("nothing was answered") wait for a later report (a sentinel) to be answered first: the
gateway delivers in order, so by then the earlier message has been handled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from discord.gateway import DiscordWebSocket
from discord.http import Route
from pydantic import SecretStr
from sqlalchemy import text as sql

from bots.discord_listener import DiscordListener, ListenerError
from bots.sandbox import Sandbox
from comms.db import Database
from comms.detections import service
from comms.detections.intake import PROMPT, Intake
from comms.detections.models import Detection, DetectionSource
from comms.settings import Settings
from tests.sandbox import spec_check

T = TypeVar("T")
ACK_COMMAND_ROUTE = "PUT /applications/{application_id}/commands"
CREATE_COMMAND_ROUTE = "POST /applications/{application_id}/commands"
SAFETY = "never send you a direct message first"


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """Every exchange (REST and gateway dispatches) must match Discord's published spec."""
    async with Sandbox(record_exchanges=True, seed=11) as sb:
        saved = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
        try:
            yield sb
        finally:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved
        problems = spec_check.check_exchanges(sb.core.exchanges, requests=True)
        problems += spec_check.check_gateway(sb.core.gateway_frames)
        assert not problems, "exchanges that do not match the published specs:\n" + "\n".join(
            problems
        )


class Control:
    """The sandbox's control API (what members do and see) and the bot's REST API."""

    def __init__(self, sandbox: Sandbox, http: httpx.AsyncClient) -> None:
        self.sb = sandbox
        self.http = http
        self.url = sandbox.control_url
        self.api = sandbox.info["discord_api_base"]
        self.bot_auth = {"Authorization": f"Bot {sandbox.info['discord_token']}"}
        self.general = str(sandbox.info["discord_channels"]["general"])
        self.bot_id = str(sandbox.info["discord_bot_user_id"])
        self.users = sandbox.info["discord_users"]

    async def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        response = await self.http.request(method, self.url + path, json=body)
        assert response.status_code == expect, response.text
        return response.json()

    async def post(self, channel: str, username: str, content: str, **extra: Any) -> Any:
        body = {"username": username, "content": content, **extra}
        return await self.call("POST", f"/discord/channels/{channel}/messages", body, 201)

    async def messages(self, channel: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await self.call(
            "GET", f"/discord/channels/{channel}/messages"
        )
        return found

    async def bot_messages(self, channel: str) -> list[dict[str, Any]]:
        return [m for m in await self.messages(channel) if m["author"]["id"] == self.bot_id]

    async def command(self, username: str, channel: str, text: str) -> str:
        created = await self.call(
            "POST",
            "/discord/interactions",
            {
                "username": username,
                "channel_id": channel,
                "command": "report",
                "options": {"text": text},
            },
            201,
        )
        interaction_id: str = created["interaction_id"]
        return interaction_id

    async def interaction(self, interaction_id: str) -> dict[str, Any]:
        state: dict[str, Any] = await self.call("GET", f"/discord/interactions/{interaction_id}")
        return state

    async def requests(self, route: str) -> list[dict[str, Any]]:
        entries = await self.call("GET", "/requests?platform=discord")
        return [e for e in entries if e.get("route") == route]

    async def rest(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        """The bot's own REST call (as another process of the bot would make it)."""
        response = await self.http.request(
            method, self.api + path, json=body, headers=self.bot_auth
        )
        assert response.status_code == expect, response.text
        return response.json() if response.content else None

    async def open_dm(self, username: str) -> str:
        channel = await self.rest(
            "POST", "/users/@me/channels", {"recipient_id": self.users[username]}
        )
        return str(channel["id"])


@pytest.fixture
async def control(sandbox: Sandbox) -> AsyncIterator[Control]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield Control(sandbox, http)


@pytest.fixture
def listen_settings(settings: Settings, sandbox: Sandbox) -> Settings:
    return settings.model_copy(
        update={
            "discord_api_base": sandbox.info["discord_api_base"],
            "discord_token": SecretStr(sandbox.info["discord_token"]),
        }
    )


@pytest.fixture
def intake(db: Database, listen_settings: Settings) -> Intake:
    return Intake(database=db, settings=listen_settings)


Start = Callable[[], Awaitable[DiscordListener]]


@pytest.fixture
async def start_listener(listen_settings: Settings, intake: Intake) -> AsyncIterator[Start]:
    started: list[DiscordListener] = []

    async def start() -> DiscordListener:
        listener = DiscordListener(
            listen_settings, intake, guild_ready_timeout=0.05, ready_timeout=10
        )
        await listener.start()
        started.append(listener)
        return listener

    yield start
    for listener in started:
        await listener.stop()


@pytest.fixture
async def listener(start_listener: Start) -> DiscordListener:
    return await start_listener()


# --- helpers -----------------------------------------------------------------------------


async def until(probe: Callable[[], Awaitable[T | None]], *, within: float = 8.0) -> T:
    """Poll ``probe`` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(0.05)


async def detections(db: Database) -> list[Detection]:
    async with db.read() as session:
        found = await service.list_detections(session, source=DetectionSource.DISCORD)
    return list(reversed(found))  # oldest first


async def stored(db: Database, count: int) -> list[Detection]:
    async def probe() -> list[Detection] | None:
        found = await detections(db)
        return found if len(found) >= count else None

    return await until(probe)


async def reply_to(control: Control, channel: str, message_id: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        for message in await control.bot_messages(channel):
            if message["reply_to"] == message_id:
                return message
        return None

    return await until(probe)


def mention(control: Control) -> str:
    return f"<@{control.bot_id}>"


def assert_ack(message: dict[str, Any], detection: Detection, reporter_text: str) -> None:
    assert f"R-{detection.id}" in message["text"]
    assert SAFETY in message["text"]
    assert reporter_text not in message["text"]
    assert message["mentions"] == [] and not message["mention_everyone"]
    assert message["mention_roles"] == []


def bot_posts(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The bodies of every message the bot created, as it sent them."""
    return [
        e.request
        for e in sandbox.core.exchanges
        if e.operation == "POST /channels/{channel_id}/messages" and isinstance(e.request, dict)
    ]


# --- messages ----------------------------------------------------------------------------


async def test_a_mention_is_stored_and_acknowledged_without_pinging_anyone(
    listener: DiscordListener, control: Control, db: Database, sandbox: Sandbox
) -> None:
    words = "the bridge at 0x52908400098527886E0F7030069857D2E4169EE7 looks drained"
    posted = await control.post(control.general, "alice", f"{mention(control)} {words}")

    [detection] = await stored(db, 1)
    assert detection.text == words
    assert detection.external_id == posted["id"]
    assert detection.reporter_id == control.users["alice"]
    assert detection.reporter_name == "alice"
    assert detection.reporter_created_at is not None
    guild = str(sandbox.info["discord_guild_id"])
    assert detection.location["guild"] == guild
    assert detection.location["channel"] == control.general
    assert detection.message_url == (
        f"https://discord.com/channels/{guild}/{control.general}/{posted['id']}"
    )
    assert any(e["type"] == "address" for e in detection.entities)

    ack = await reply_to(control, control.general, posted["id"])
    assert_ack(ack, detection, words)
    bodies = bot_posts(sandbox)
    assert bodies and all(b["allowed_mentions"]["parse"] == [] for b in bodies), bodies
    assert all(not b["allowed_mentions"].get("replied_user") for b in bodies)


async def test_everyone_and_role_mentions_are_not_reports(
    listener: DiscordListener, control: Control, db: Database
) -> None:
    await control.call("POST", "/discord/users", {"username": "mod", "roles": ["moderators"]}, 201)
    everyone = await control.post(control.general, "mod", "@everyone the bridge is paused")
    assert everyone["mention_everyone"]  # discord.py's mentioned_in() would say True here
    responders = control.sb.info["discord_roles"]["responders"]
    role = await control.post(control.general, "alice", f"<@&{responders}> help, drained")
    assert role["mention_roles"] == [str(responders)]
    plain = await control.post(control.general, "bob", "is the bridge down?")

    sentinel = await control.post(control.general, "carol", f"{mention(control)} sentinel")
    [detection] = await stored(db, 1)
    assert detection.external_id == sentinel["id"]
    await reply_to(control, control.general, sentinel["id"])
    replied = {m["reply_to"] for m in await control.bot_messages(control.general)}
    assert not replied & {everyone["id"], role["id"], plain["id"]}


async def test_a_reply_to_the_bots_message_is_a_report(
    listener: DiscordListener, control: Control, db: Database
) -> None:
    first = await control.post(control.general, "alice", f"{mention(control)} drained")
    ack = await reply_to(control, control.general, first["id"])
    other = await control.post(control.general, "bob", "replying to alice", reply_to=first["id"])
    reply = await control.post(
        control.general, "bob", "same here, fake site examp1e-claim.org", reply_to=ack["id"]
    )
    assert reply["reply_to"] == ack["id"]

    found = await stored(db, 2)
    assert [d.external_id for d in found] == [first["id"], reply["id"]]
    assert found[1].text == "same here, fake site examp1e-claim.org"
    answer = await reply_to(control, control.general, reply["id"])
    assert_ack(answer, found[1], "examp1e")
    assert other["id"] not in {d.external_id for d in await detections(db)}


async def test_a_direct_message_is_a_report(
    listener: DiscordListener, control: Control, db: Database
) -> None:
    words = "someone from 'support' asked me for my seed phrase"
    posted = await control.call(
        "POST", "/discord/dms", {"username": "carol", "content": words}, 201
    )
    [detection] = await stored(db, 1)
    assert detection.text == words
    assert detection.location["guild"] == "@me"
    channel = detection.location["channel"]
    assert detection.message_url.endswith(f"/@me/{channel}/{posted['id']}")
    ack = await reply_to(control, channel, posted["id"])
    assert_ack(ack, detection, words)


async def test_a_bare_mention_gets_the_prompt_and_nothing_is_stored(
    listener: DiscordListener, control: Control, db: Database
) -> None:
    posted = await control.post(control.general, "alice", f"  {mention(control)}  ")
    prompt = await reply_to(control, control.general, posted["id"])
    assert prompt["text"] == PROMPT
    assert prompt["mentions"] == []
    assert await detections(db) == []


async def test_an_edited_report_updates_its_detection(
    listener: DiscordListener, control: Control, db: Database
) -> None:
    posted = await control.post(control.general, "alice", f"{mention(control)} drained")
    [detection] = await stored(db, 1)
    await reply_to(control, control.general, posted["id"])
    new = "drained by 0x52908400098527886E0F7030069857D2E4169EE7"
    await control.call(
        "PATCH",
        f"/discord/channels/{control.general}/messages/{posted['id']}",
        {"content": f"{mention(control)} {new}"},
    )

    async def updated() -> Detection | None:
        found = await detections(db)
        return found[0] if found and found[0].text == new else None

    edited = await until(updated)
    assert edited.id == detection.id
    assert any(e["type"] == "address" for e in edited.entities)
    sentinel = await control.post(control.general, "bob", f"{mention(control)} sentinel")
    await reply_to(control, control.general, sentinel["id"])
    assert len(await detections(db)) == 2
    replies = [m["reply_to"] for m in await control.bot_messages(control.general)]
    assert replies.count(posted["id"]) == 1  # no second acknowledgement


async def test_messages_from_bots_are_ignored(
    listener: DiscordListener, control: Control, db: Database
) -> None:
    other = await control.post(control.general, "status-bot", f"{mention(control)} status: ok")
    assert other["author"]["bot"]
    own = await control.rest(
        "POST",
        f"/channels/{control.general}/messages",
        {"content": f"{mention(control)} a note from ourselves"},
    )
    sentinel = await control.post(control.general, "dave", f"{mention(control)} sentinel")
    [detection] = await stored(db, 1)
    assert detection.external_id == sentinel["id"]
    await reply_to(control, control.general, sentinel["id"])
    replied = {m["reply_to"] for m in await control.bot_messages(control.general)}
    assert not replied & {other["id"], own["id"]}


async def test_a_second_report_within_the_window_is_stored_but_not_acknowledged(
    listener: DiscordListener, control: Control, db: Database
) -> None:
    first = await control.post(control.general, "alice", f"{mention(control)} drained")
    await reply_to(control, control.general, first["id"])
    second = await control.post(control.general, "alice", f"{mention(control)} still drained")
    found = await stored(db, 2)
    assert [d.external_id for d in found] == [first["id"], second["id"]]
    sentinel = await control.post(control.general, "bob", f"{mention(control)} sentinel")
    await reply_to(control, control.general, sentinel["id"])
    replied = [m["reply_to"] for m in await control.bot_messages(control.general)]
    assert second["id"] not in replied


# --- /report -----------------------------------------------------------------------------


async def test_report_command_answers_ephemerally(
    listener: DiscordListener, control: Control, db: Database
) -> None:
    words = "phishing link examp1e.org in #general"
    interaction_id = await control.command("bob", control.general, words)
    [detection] = await stored(db, 1)
    assert detection.external_id == f"interaction:{interaction_id}"
    assert detection.text == words
    assert detection.reporter_id == control.users["bob"]
    assert detection.location == {"guild": str(control.sb.info["discord_guild_id"]),
                                  "channel": control.general}  # fmt: skip

    async def answered() -> dict[str, Any] | None:
        state = await control.interaction(interaction_id)
        return state if state["responded"] and state["response"] else None

    state = await until(answered)
    assert state["response_type"] == 4 and state["ephemeral"]
    assert state["response"]["visible_to"] == control.users["bob"]
    assert_ack(state["response"], detection, words)
    # Nothing public: the channel's only bot message is the ephemeral answer.
    assert [m["ephemeral"] for m in await control.bot_messages(control.general)] == [True]


async def test_report_command_in_a_dm(
    listener: DiscordListener, control: Control, db: Database
) -> None:
    channel = await control.open_dm("carol")
    interaction_id = await control.command("carol", channel, "drainer at examp1e.org")
    [detection] = await stored(db, 1)
    assert detection.location == {"guild": "@me", "channel": channel}

    async def answered() -> dict[str, Any] | None:
        state = await control.interaction(interaction_id)
        return state if state["responded"] and state["response"] else None

    state = await until(answered)
    assert state["ephemeral"]
    assert_ack(state["response"], detection, "examp1e")


async def test_report_command_defers_when_the_intake_is_slow(
    listener: DiscordListener, control: Control, db: Database
) -> None:
    """The database is busy (another writer holds it) past the 3 s deadline: the listener
    defers in time, stores the report once the database is free, and edits the answer in."""
    async with db.transaction() as session:
        if db.engine.dialect.name == "postgresql":
            await session.execute(sql("LOCK TABLE detections IN EXCLUSIVE MODE"))
        else:
            await session.execute(sql("SELECT 1"))  # BEGIN IMMEDIATE holds the write lock
        interaction_id = await control.command("alice", control.general, "drained")

        async def deferred() -> dict[str, Any] | None:
            state = await control.interaction(interaction_id)
            return state if state["responded"] else None

        state = await until(deferred)
        assert state["response_type"] == 5 and state["ephemeral"]
        assert await detections_after_commit(db) == 0  # still waiting for the database

    [detection] = await stored(db, 1)

    async def edited() -> dict[str, Any] | None:
        state = await control.interaction(interaction_id)
        return state if f"R-{detection.id}" in (state["response"] or {}).get("text", "") else None

    state = await until(edited)
    assert_ack(state["response"], detection, "drained")
    assert state["response"]["ephemeral"]


async def detections_after_commit(db: Database) -> int:
    """Count through a reader (SQLite WAL readers do not wait for the writer)."""
    if db.engine.dialect.name == "postgresql":
        return 0  # a reader would wait for the table lock; nothing to learn
    return len(await detections(db))


# --- command registration ----------------------------------------------------------------


async def test_commands_are_synced_only_when_their_definition_changed(
    start_listener: Start, control: Control
) -> None:
    first = await start_listener()
    assert first.synced
    await first.stop()
    second = await start_listener()
    assert not second.synced
    await second.stop()
    assert len(await control.requests(ACK_COMMAND_ROUTE)) == 1
    assert await control.requests(CREATE_COMMAND_ROUTE) == []

    # An older definition on Discord (another description): the next start registers ours.
    app = control.sb.info["discord_application_id"]
    registered = await control.rest("GET", f"/applications/{app}/commands")
    old = {k: registered[0][k] for k in ("name", "type", "options", "contexts")}
    await control.rest("PUT", f"/applications/{app}/commands", [{**old, "description": "old"}])
    third = await start_listener()
    assert third.synced
    [command] = await control.rest("GET", f"/applications/{app}/commands")
    assert command["description"] != "old"
    assert command["options"][0]["name"] == "text" and command["options"][0]["required"]
    assert sorted(command["contexts"]) == [0, 1]


async def test_start_raises_when_the_token_is_refused(
    listen_settings: Settings, intake: Intake, control: Control
) -> None:
    await control.call("PATCH", "/discord/bot", {"token_revoked": True})
    listener = DiscordListener(listen_settings, intake, ready_timeout=10)
    with pytest.raises(ListenerError, match="refused the bot token"):
        await listener.start()
    assert listener.client.is_closed()


# --- the sandbox extensions this listener needed ------------------------------------------


async def _register(control: Control, contexts: list[int] | None) -> None:
    app = control.sb.info["discord_application_id"]
    command: dict[str, Any] = {
        "name": "report",
        "type": 1,
        "description": "Report a problem",
        "options": [{"type": 3, "name": "text", "description": "What", "required": True}],
    }
    if contexts is not None:
        command["contexts"] = contexts
    await control.rest("PUT", f"/applications/{app}/commands", [command])


async def _callback(control: Control, interaction_id: str, body: dict[str, Any]) -> httpx.Response:
    token = control.sb.discord_world.interactions[int(interaction_id)].token
    return await control.http.post(
        f"{control.api}/interactions/{interaction_id}/{token}/callback", json=body
    )


async def test_sandbox_refuses_a_first_response_after_three_seconds(control: Control) -> None:
    await _register(control, None)
    late = await control.command("alice", control.general, "late")
    deferred = await control.command("bob", control.general, "deferred")
    answer = await _callback(control, deferred, {"type": 5, "data": {"flags": 64}})
    assert answer.status_code == 204
    await asyncio.sleep(3.2)  # the deadline itself is under test

    refused = await _callback(control, late, {"type": 4, "data": {"content": "too late"}})
    assert refused.status_code == 404
    assert refused.json() == {"message": "Unknown interaction", "code": 10062}
    # The deferred one may still be followed up (for 15 minutes).
    token = control.sb.discord_world.interactions[int(deferred)].token
    app = control.sb.info["discord_application_id"]
    followup = await control.http.post(
        f"{control.api}/webhooks/{app}/{token}?wait=true",
        json={"content": "done", "flags": 64},
    )
    assert followup.status_code == 200, followup.text
    state = await control.interaction(deferred)
    assert [m["text"] for m in state["followups"]] == ["done"]


async def test_sandbox_slash_commands_in_dms_follow_their_contexts(control: Control) -> None:
    channel = await control.open_dm("carol")
    await _register(control, None)  # unset: every context, as for new commands
    interaction_id = await control.command("carol", channel, "in a DM")
    answer = await _callback(control, interaction_id, {"type": 4, "data": {"content": "ok"}})
    assert answer.status_code == 204
    state = await control.interaction(interaction_id)
    assert state["guild_id"] is None and state["response"]["text"] == "ok"

    await _register(control, [0])  # servers only: not offered in DMs
    refused = await control.http.post(
        control.url + "/discord/interactions",
        json={"username": "carol", "channel_id": channel, "command": "report",
              "options": {"text": "x"}},
    )  # fmt: skip
    assert refused.status_code == 404
    assert refused.json()["code"] == 10063
    await _register(control, [1])  # DMs only: not offered in servers
    refused = await control.http.post(
        control.url + "/discord/interactions",
        json={"username": "carol", "channel_id": control.general, "command": "report",
              "options": {"text": "x"}},
    )  # fmt: skip
    assert refused.status_code == 404


async def test_the_listener_uses_no_privileged_intent(
    listen_settings: Settings, db: Database
) -> None:
    listener = DiscordListener(listen_settings, Intake(database=db, settings=listen_settings))
    intents = listener.client.intents
    assert intents.guilds and intents.guild_messages and intents.dm_messages
    assert not intents.message_content and not intents.members and not intents.presences
    assert intents.value == (1 << 0) | (1 << 9) | (1 << 12)


async def test_webhook_messages_are_ignored(
    listener: DiscordListener, control: Control, db: Database
) -> None:
    """The sandbox emulates no channel webhooks (only interaction follow-ups, which are the
    bot's own), so this MESSAGE_CREATE is handed to discord.py's own gateway parser: a
    webhook's message mentioning the bot, with an author that is not flagged as a bot."""
    webhook_id = "1577000000000000099"
    listener.client._connection.parse_message_create(
        {
            "id": "1577000000000000100",
            "type": 0,
            "channel_id": control.general,
            "guild_id": str(control.sb.info["discord_guild_id"]),
            "webhook_id": webhook_id,
            "author": {"id": webhook_id, "username": "Announcer", "discriminator": "0000",
                       "avatar": None, "global_name": None},
            "content": f"{mention(control)} relayed from another server",
            "timestamp": "2026-01-01T00:00:00.000000+00:00",
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [{"id": control.bot_id, "username": "sandbox-comms",
                          "discriminator": "0", "avatar": None, "bot": True,
                          "global_name": None}],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
        }
    )  # fmt: skip
    sentinel = await control.post(control.general, "alice", f"{mention(control)} sentinel")
    [detection] = await stored(db, 1)
    assert detection.external_id == sentinel["id"]
    await reply_to(control, control.general, sentinel["id"])
    replied = {m["reply_to"] for m in await control.bot_messages(control.general)}
    assert "1577000000000000100" not in replied
