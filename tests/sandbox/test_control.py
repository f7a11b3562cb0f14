"""The control API: the default world, building more of it, reading, logs, reset, viewer."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from bots.sandbox import Sandbox, SandboxLimits

from .conftest import Control, DiscordFactory


async def test_info_and_default_world(sandbox: Sandbox, control: Control) -> None:
    info = await control.get("/info")
    assert info == sandbox.info
    assert info["discord_api_base"].endswith("/api/v10")
    assert set(info["discord_channels"]) == {"announcements", "general", "responders"}
    assert set(info["telegram_chats"]) == {"announcements", "community", "responders"}
    assert len(info["telegram_token"].split(":", 1)[1]) == 35
    assert len(info["discord_token"].split(".")) == 3
    world = await control.get("/world")
    guild = world["discord"]["guilds"][0]
    kinds = {c["name"]: (c["type"], c["private"]) for c in guild["channels"]}
    assert kinds == {
        "announcements": (5, False),
        "general": (0, False),
        "responders": (0, True),
    }
    chats = {c["id"]: c["type"] for c in world["telegram"]["chats"]}
    assert sorted(chats.values()) == ["channel", "group", "supergroup"]
    # The ids are fixed, so the docs and the demo can name them.
    assert info["discord_channels"]["general"] == "1323802873036800011"
    assert info["telegram_chats"]["community"] == -1001000000002


async def test_members_post_and_read_and_reset(sandbox: Sandbox, control: Control) -> None:
    general = sandbox.info["discord_channels"]["general"]
    posted = await control.post(
        f"/discord/channels/{general}/messages",
        {"username": "alice", "content": "@everyone look"},
        expect=201,
    )
    assert posted["mention_everyone"] is False  # members lack MENTION_EVERYONE by default
    responders = sandbox.info["discord_channels"]["responders"]
    refused = await control.post(
        f"/discord/channels/{responders}/messages", {"username": "bob", "content": "let me in"}
    )
    assert refused["code"] == 50001
    dave = await control.post(
        f"/discord/channels/{responders}/messages",
        {"username": "dave", "content": "on it"},
        expect=201,
    )
    assert dave["author"]["username"] == "dave"

    guild = await control.post("/discord/guilds", {"name": "Second Guild"}, expect=201)
    channel = await control.post(
        f"/discord/guilds/{guild['id']}/channels", {"name": "news", "type": 5}, expect=201
    )
    user = await control.post(
        "/discord/users", {"username": "erin", "guild_ids": [guild["id"]]}, expect=201
    )
    await control.post(
        f"/discord/channels/{channel['id']}/messages",
        {"user_id": user["id"], "content": "hello"},
        expect=201,
    )
    chat = await control.post("/telegram/chats", {"type": "group", "title": "Ops"}, expect=201)
    tg_user = await control.post(
        "/telegram/users", {"first_name": "Frank", "username": "frank_ops"}, expect=201
    )
    sent = await control.post(
        f"/telegram/chats/{chat['id']}/messages",
        {"user": tg_user["id"], "text": "hi #ops https://example.com"},
        expect=201,
    )
    assert [e["type"] for e in sent["entities"]] == ["hashtag", "url"]
    assert (await control.get(f"/telegram/chats/{chat['id']}"))["message_count"] == 1

    await control.post("/reset")
    assert await control.get(f"/discord/channels/{general}/messages") == []
    world = await control.get("/world")
    assert len(world["discord"]["guilds"]) == 1
    assert await control.get("/stats") == {**await control.get("/stats")}
    assert (await control.get("/stats"))["requests_total"] == 0


async def test_request_log_file_and_since(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    async with (
        Sandbox(request_log=log, limits=SandboxLimits.unlimited()) as sb,
        httpx.AsyncClient() as http,
    ):
        headers = {"Authorization": f"Bot {sb.info['discord_token']}"}
        channel = sb.info["discord_channels"]["general"]
        await http.post(
            f"{sb.info['discord_api_base']}/channels/{channel}/messages",
            headers=headers,
            json={"content": "x", "nonce": "abc", "enforce_nonce": True},
        )
        await http.post(
            f"{sb.info['telegram_api_base']}{sb.info['telegram_token']}/getMe",
        )
        first = (await http.get(f"{sb.control_url}/requests")).json()
        later = (await http.get(f"{sb.control_url}/requests", params={"since": 1})).json()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["seq"] for e in lines] == [1, 2]
    create = lines[0]
    assert create["platform"] == "discord"
    assert create["route"] == "POST /channels/{channel_id}/messages"
    assert create["channel_id"] == channel
    assert create["nonce"] == "abc"
    assert create["status"] == 200
    assert create["duration_ms"] >= 0
    assert lines[1]["route"] == "getMe"
    assert first == lines
    assert later == lines[1:]


async def test_viewer_page(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    page = await http.get(sandbox.info["viewer_url"])
    assert page.status_code == 200
    assert "text/html" in page.headers["Content-Type"]
    assert "Comms sandbox" in page.text
    assert "control/world" in page.text


async def test_two_sandboxes_use_different_free_ports() -> None:
    async with Sandbox() as first, Sandbox() as second:
        assert first.port != second.port
        assert first.port > 0


async def test_reset_keeps_a_connected_bot_working(
    sandbox: Sandbox, control: Control, discord_factory: DiscordFactory
) -> None:
    client = await discord_factory()
    general = sandbox.info["discord_channels"]["general"]
    await control.patch("/limits", {"discord_route_limit": 10})  # changing limits keeps state
    await control.post("/reset")
    await control.post(
        f"/discord/channels/{general}/messages", {"username": "bob", "content": "after reset"},
        expect=201,
    )  # fmt: skip
    message = await client.next_message()
    assert message.content == "after reset"
    index = await control.get("")
    assert "POST /control/reset" in index["endpoints"]


async def test_unknown_bot_api_paths_answer_like_telegram(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    for path in ("", "/", "/getMe/extra"):
        response = await http.get(
            f"{sandbox.info['telegram_api_base']}{sandbox.info['telegram_token']}{path}"
        )
        assert response.status_code == 404
        assert response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
