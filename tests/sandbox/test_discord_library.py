"""The real discord.py against the Discord emulator: REST, gateway, interactions, 429s, faults."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import discord
import pytest
from discord import app_commands

from bots.sandbox import Sandbox

from .conftest import Control, DiscordFactory, SandboxClient


def _channel_id(sandbox: Sandbox, name: str) -> int:
    return int(sandbox.info["discord_channels"][name])


async def test_login_reads_the_bot_user_and_application(
    sandbox: Sandbox, discord_factory: DiscordFactory
) -> None:
    client = await discord_factory(connect=False)
    assert client.user is not None
    assert client.user.id == int(sandbox.info["discord_bot_user_id"])
    assert client.user.bot
    info = await client.application_info()
    assert info.id == int(sandbox.info["discord_application_id"])


async def test_send_edit_pin_crosspost_thread_delete(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    client = await discord_factory(connect=False)
    channel = await client.fetch_channel(_channel_id(sandbox, "announcements"))
    assert isinstance(channel, discord.TextChannel)
    assert channel.is_news()

    message = await channel.send("**Bridge paused** while we investigate", silent=True)
    assert message.flags.suppress_notifications
    edited = await message.edit(content="**Bridge paused**: funds are safe")
    assert edited.edited_at is not None
    await message.pin()
    await message.publish()
    thread = await message.create_thread(name="Incident updates")
    assert thread.id == message.id
    update = await thread.send("Update 1: root cause found")
    await thread.edit(locked=True, archived=True)

    shown = await control.get(f"/discord/channels/{channel.id}/messages")
    assert [m["text"] for m in shown] == ["**Bridge paused**: funds are safe"]
    first = shown[0]
    assert first["author"]["bot"] is True
    assert first["silent"]
    assert first["pinned"]
    assert first["edited"]
    assert first["crossposted"]
    assert first["thread"] == str(thread.id)
    in_thread = await control.get(f"/discord/channels/{thread.id}/messages")
    assert [m["id"] for m in in_thread] == [str(update.id)]
    state = await control.get(f"/discord/channels/{thread.id}")
    assert state["locked"]
    assert state["archived"]

    with_system = await control.get(
        f"/discord/channels/{channel.id}/messages", include_system="true"
    )
    assert [m["type"] for m in with_system] == [0, 6]  # the "pinned a message" notice

    pins = [pinned async for pinned in channel.pins()]
    assert [p.id for p in pins] == [message.id]
    await message.unpin()
    await message.delete()
    assert await control.get(f"/discord/channels/{channel.id}/messages") == []


async def test_nonce_returns_the_earlier_message(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    client = await discord_factory(connect=False)
    channel = client.get_partial_messageable(_channel_id(sandbox, "general"))
    first = await channel.send("Incident #12 resolved", nonce="inc12-general")
    again = await channel.send("Incident #12 resolved", nonce="inc12-general")
    assert again.id == first.id
    other = await channel.send("Incident #12 resolved", nonce="inc12-other")
    assert other.id != first.id
    shown = await control.get(f"/discord/channels/{channel.id}/messages")
    assert len(shown) == 2


async def test_mentions_follow_allowed_mentions_and_permissions(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    client = await discord_factory(connect=False)
    channel = client.get_partial_messageable(_channel_id(sandbox, "general"))
    alice = sandbox.info["discord_users"]["alice"]
    responders = sandbox.info["discord_roles"]["responders"]
    text = f"@everyone <@{alice}> <@&{responders}> please read"

    quiet = await channel.send(text)  # the client's default is AllowedMentions.none()
    assert quiet.mentions == []
    assert not quiet.mention_everyone
    loud = await channel.send(text, allowed_mentions=discord.AllowedMentions.all())
    assert [u.id for u in loud.mentions] == [int(alice)]
    assert loud.mention_everyone
    shown = {m["id"]: m for m in await control.get(f"/discord/channels/{channel.id}/messages")}
    assert shown[str(quiet.id)]["mention_roles"] == []
    assert shown[str(loud.id)]["mention_roles"] == [responders]
    only_alice = await channel.send(
        text, allowed_mentions=discord.AllowedMentions(everyone=False, users=True, roles=False)
    )
    assert [u.id for u in only_alice.mentions] == [int(alice)]
    assert not only_alice.mention_everyone

    # Without MENTION_EVERYONE nobody is pinged by @everyone, whatever allowed_mentions says.
    bot_role = sandbox.info["discord_roles"]["bot"]
    guild = sandbox.info["discord_guild_id"]
    role = await control.get("/world")
    perms = next(
        int(r["permissions"]) for r in role["discord"]["guilds"][0]["roles"] if r["id"] == bot_role
    )
    await control.patch(
        f"/discord/guilds/{guild}/roles/{bot_role}", {"permissions": perms & ~(1 << 17)}
    )
    denied = await channel.send(text, allowed_mentions=discord.AllowedMentions.all())
    assert not denied.mention_everyone


async def test_gateway_delivers_mentions_and_honours_the_content_intent(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    intents = discord.Intents.default()
    intents.message_content = False
    client = await discord_factory(intents=intents)
    assert client.user is not None
    guild = client.get_guild(int(sandbox.info["discord_guild_id"]))
    assert guild is not None
    assert {c.name for c in guild.text_channels} >= {"announcements", "general", "responders"}

    general = _channel_id(sandbox, "general")
    await control.post(
        f"/discord/channels/{general}/messages",
        {"username": "alice", "content": "anyone else seeing failed withdrawals?"},
        expect=201,
    )
    plain = await client.next_message()
    assert plain.content == ""  # no MESSAGE_CONTENT intent
    assert plain.author.name == "alice"

    await control.post(
        f"/discord/channels/{general}/messages",
        {"username": "bob", "content": f"<@{client.user.id}> the bridge looks drained"},
        expect=201,
    )
    mention = await client.next_message()
    assert client.user in mention.mentions
    assert client.user.mentioned_in(mention)
    assert mention.content.endswith("the bridge looks drained")
    assert isinstance(mention.channel, discord.TextChannel)

    reply = await mention.channel.send("Thanks, we are looking into it")
    own = await client.next_message()
    assert own.id == reply.id
    assert own.content == "Thanks, we are looking into it"


async def test_slash_command_interaction_and_ephemeral_reply(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()

    def setup(client: SandboxClient) -> None:
        @client.tree.command(name="report", description="Report a problem to the responders")
        @app_commands.describe(what="What is wrong")
        async def report(interaction: discord.Interaction, what: str) -> None:
            received.put_nowait(what)
            await interaction.response.send_message(
                "Thanks, the responders have it.", ephemeral=True
            )

    client = await discord_factory(setup=setup)
    synced = await client.tree.sync()
    assert [c.name for c in synced] == ["report"]

    created = await control.post(
        "/discord/interactions",
        {
            "username": "carol",
            "channel_id": sandbox.info["discord_channels"]["general"],
            "command": "report",
            "options": {"what": "phishing link in #general"},
        },
        expect=201,
    )
    assert await asyncio.wait_for(received.get(), 5) == "phishing link in #general"
    state = await _wait_for_response(control, created["interaction_id"])
    assert state["response"]["text"] == "Thanks, the responders have it."
    assert state["response"]["ephemeral"]
    assert state["ephemeral"]
    visible = await control.get(
        f"/discord/channels/{sandbox.info['discord_channels']['general']}/messages"
    )
    assert all(not m["ephemeral"] or m["visible_to"] for m in visible)


async def _wait_for_response(control: Control, interaction_id: str) -> dict[str, Any]:
    # The callback's HTTP answer reaches discord.py before our control read; the handler
    # awaited it, so one read after the queue fired is enough.
    state: dict[str, Any] = await control.get(f"/discord/interactions/{interaction_id}")
    assert state["responded"], state
    return state


async def test_discord_py_retries_a_429_and_respects_bucket_headers(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    client = await discord_factory(connect=False)
    channel = client.get_partial_messageable(_channel_id(sandbox, "general"))
    await control.post(
        "/faults",
        {
            "platform": "discord",
            "endpoint": "POST /channels/{channel_id}/messages",
            "kind": "429",
            "retry_after": 0.2,
            "count": 1,
        },
        expect=201,
    )
    started = time.monotonic()
    await channel.send("first")
    assert time.monotonic() - started >= 0.2
    log = await control.get("/requests", platform="discord")
    posts = [e for e in log if e["route"] == "POST /channels/{channel_id}/messages"]
    assert [e["status"] for e in posts] == [429, 200]

    # With the real per-channel bucket (2 per 0.5 s here) discord.py waits on the headers
    # and never hits a 429 itself.
    await control.patch(
        "/limits", {"discord_message_create_limit": 2, "discord_message_create_window": 0.5}
    )
    started = time.monotonic()
    for index in range(5):
        await channel.send(f"burst {index}")
    assert time.monotonic() - started >= 1.0  # windows 2 + 2 + 1 need two waits
    stats = await control.get("/stats")
    assert stats["rate_limited"]["discord"] == {"fault-user": 1}


async def test_discord_py_recovers_from_a_server_error(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    client = await discord_factory(connect=False)
    channel = client.get_partial_messageable(_channel_id(sandbox, "general"))
    await control.post(
        "/faults",
        {"platform": "discord", "endpoint": "/channels/{channel_id}/messages", "kind": "502",
         "count": 1},
        expect=201,
    )  # fmt: skip
    message = await channel.send("after the outage")
    shown = await control.get(f"/discord/channels/{channel.id}/messages")
    assert [m["id"] for m in shown] == [str(message.id)]
    assert (await control.get("/stats"))["faults"] == {"discord:502": 1}


async def test_gateway_reconnect_resumes_the_session(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    client = await discord_factory()
    assert (await control.post("/discord/gateway/reconnect"))["sessions"] == 1
    await asyncio.wait_for(client.resumed_event.wait(), 10)
    general = _channel_id(sandbox, "general")
    await control.post(
        f"/discord/channels/{general}/messages",
        {"username": "dave", "content": "still there?"},
        expect=201,
    )
    message = await client.next_message()
    assert message.content == "still there?"
    connects = [e for e in await control.get("/requests") if e["route"] == "GATEWAY connect"]
    assert len(connects) == 2


async def test_create_private_channel_with_overwrites(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    client = await discord_factory()
    guild = client.get_guild(int(sandbox.info["discord_guild_id"]))
    assert guild is not None
    assert guild.me is not None
    channel = await guild.create_text_channel(
        "war room",
        overwrites={
            guild.default_role: discord.PermissionOverwrite(view_channel=False),
            guild.me: discord.PermissionOverwrite(view_channel=True, send_messages=True),
        },
        slowmode_delay=30,
    )
    assert channel.name == "war-room"
    state = await control.get(f"/discord/channels/{channel.id}")
    assert state["private"]
    assert state["rate_limit_per_user"] == 30
    refused = await control.post(
        f"/discord/channels/{channel.id}/messages", {"username": "alice", "content": "hi"}
    )
    assert refused["code"] == 50001
    await channel.edit(slowmode_delay=0)
    assert (await control.get(f"/discord/channels/{channel.id}"))["rate_limit_per_user"] == 0


async def test_deferred_answer_and_followup(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    done: asyncio.Queue[int] = asyncio.Queue()
    guild = discord.Object(int(sandbox.info["discord_guild_id"]))

    def setup(client: SandboxClient) -> None:
        @client.tree.command(name="status", description="Current incident status", guild=guild)
        async def status(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content="All systems operational")
            followup = await interaction.followup.send("Details in #announcements", wait=True)
            done.put_nowait(followup.id)

    client = await discord_factory(setup=setup)
    assert [c.name for c in await client.tree.sync(guild=guild)] == ["status"]
    general = sandbox.info["discord_channels"]["general"]
    created = await control.post(
        "/discord/interactions",
        {"username": "bob", "channel_id": general, "command": "status"},
        expect=201,
    )
    followup_id = await asyncio.wait_for(done.get(), 5)
    state = await control.get(f"/discord/interactions/{created['interaction_id']}")
    assert state["response_type"] == 5
    assert state["response"]["text"] == "All systems operational"
    assert state["followups"][0]["id"] == str(followup_id)
    shown = [m["text"] for m in await control.get(f"/discord/channels/{general}/messages")]
    assert shown == ["All systems operational", "Details in #announcements"]


async def test_all_intents_with_member_chunking(
    sandbox: Sandbox, discord_factory: DiscordFactory
) -> None:
    client = await discord_factory(intents=discord.Intents.all())
    guild = client.get_guild(int(sandbox.info["discord_guild_id"]))
    assert guild is not None
    assert guild.chunked
    names = {m.name for m in guild.members}
    assert {"alice", "bob", "carol", "dave", "sandbox-comms"} <= names


async def test_message_content_intent_not_granted(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    await control.patch("/discord/bot", {"message_content_intent": False})
    with pytest.raises(discord.PrivilegedIntentsRequired):
        await discord_factory()


async def test_direct_messages_both_ways(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    intents = discord.Intents.default()
    intents.message_content = False  # DMs keep their content anyway
    client = await discord_factory(intents=intents)
    posted = await control.post("/discord/dms", {"username": "carol", "content": "help me"}, 201)
    message = await client.next_message()
    assert isinstance(message.channel, discord.DMChannel)
    assert message.content == "help me"
    answer = await message.channel.send("A responder will contact you")
    carol = await client.fetch_user(int(sandbox.info["discord_users"]["carol"]))
    direct = await carol.send("Incident resolved")
    assert direct.channel.id == answer.channel.id
    texts = [
        m["text"] for m in await control.get(f"/discord/channels/{answer.channel.id}/messages")
    ]
    assert texts == ["help me", "A responder will contact you", "Incident resolved"]
    assert posted["author"]["username"] == "carol"


async def test_reply_history_and_fetch(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    client = await discord_factory(connect=False)
    channel = await client.fetch_channel(_channel_id(sandbox, "general"))
    assert isinstance(channel, discord.TextChannel)
    question = await control.post(
        f"/discord/channels/{channel.id}/messages",
        {"username": "alice", "content": "is it safe to bridge?"},
        expect=201,
    )
    original = await channel.fetch_message(int(question["id"]))
    answer = await original.reply("Not yet, please wait", mention_author=True)
    assert answer.type == discord.MessageType.reply
    assert answer.reference is not None
    assert answer.reference.message_id == original.id
    assert [u.id for u in answer.mentions] == [original.author.id]
    history = [m.id async for m in channel.history(limit=10)]
    assert history == [answer.id, original.id]
    older = [m.id async for m in channel.history(limit=10, before=answer)]
    assert older == [original.id]
    shown = await control.get(f"/discord/channels/{channel.id}/messages")
    assert shown[-1]["reply_to"] == question["id"]


async def test_member_edit_and_delete_reach_the_bot(
    sandbox: Sandbox, discord_factory: DiscordFactory, control: Control
) -> None:
    client = await discord_factory()
    edits: asyncio.Queue[discord.RawMessageUpdateEvent] = asyncio.Queue()
    deletes: asyncio.Queue[discord.RawMessageDeleteEvent] = asyncio.Queue()
    client.on_raw_message_edit = edits.put  # type: ignore[attr-defined]
    client.on_raw_message_delete = deletes.put  # type: ignore[attr-defined]
    general = sandbox.info["discord_channels"]["general"]
    posted = await control.post(
        f"/discord/channels/{general}/messages", {"username": "bob", "content": "typo"}, 201
    )
    await client.next_message()
    path = f"/discord/channels/{general}/messages/{posted['id']}"
    assert (await control.patch(path, {"content": "fixed"}))["edited"]
    edit = await asyncio.wait_for(edits.get(), 5)
    assert edit.message_id == int(posted["id"])
    assert edit.data["content"] == "fixed"
    await control.delete(path)
    deleted = await asyncio.wait_for(deletes.get(), 5)
    assert deleted.message_id == int(posted["id"])
    assert await control.get(f"/discord/channels/{general}/messages") == []
