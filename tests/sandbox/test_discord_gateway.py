"""The gateway protocol itself, spoken by hand: opcodes, close codes, resume."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bots.sandbox import Sandbox

from .conftest import Control


@pytest.fixture
async def ws_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    payload: dict[str, Any] = json.loads(message.data)
    return payload


async def _closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    message = await ws.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), message
    return ws.close_code


def _identify(sb: Sandbox, intents: int = 513) -> dict[str, Any]:
    return {
        "op": 2,
        "d": {"token": sb.info["discord_token"], "intents": intents, "properties": {}},
    }


async def test_hello_identify_ready_heartbeat_and_dispatch(
    sandbox: Sandbox, ws_session: aiohttp.ClientSession, control: Control
) -> None:
    async with ws_session.ws_connect(sandbox.info["discord_gateway_url"] + "?v=10") as ws:
        hello = await _receive(ws)
        assert hello["op"] == 10
        assert hello["d"]["heartbeat_interval"] == 41250
        await ws.send_json({"op": 1, "d": None})
        assert (await _receive(ws))["op"] == 11
        await ws.send_json(_identify(sandbox, intents=(1 << 0) | (1 << 9)))
        ready = await _receive(ws)
        assert (ready["t"], ready["s"]) == ("READY", 1)
        assert ready["d"]["resume_gateway_url"] == sandbox.info["discord_gateway_url"]
        assert ready["d"]["user"]["id"] == sandbox.info["discord_bot_user_id"]
        guild = await _receive(ws)
        assert guild["t"] == "GUILD_CREATE"
        assert {c["name"] for c in guild["d"]["channels"]} == {
            "announcements",
            "general",
            "responders",
        }
        await ws.send_json({"op": 8, "d": {"guild_id": "nonsense", "query": ""}})
        await ws.send_json({"op": 8, "d": {"guild_id": sandbox.info["discord_guild_id"]}})
        chunk = await _receive(ws)
        assert chunk["t"] == "GUILD_MEMBERS_CHUNK"
        general = sandbox.info["discord_channels"]["general"]
        await control.post(
            f"/discord/channels/{general}/messages", {"username": "bob", "content": "plain"}, 201
        )
        event = await _receive(ws)
        assert event["t"] == "MESSAGE_CREATE"
        assert event["d"]["content"] == ""  # no MESSAGE_CONTENT intent
        assert event["d"]["guild_id"] == sandbox.info["discord_guild_id"]
        session_id, last_seq = ready["d"]["session_id"], event["s"]

    # Events while disconnected are replayed on RESUME.
    await control.post(
        f"/discord/channels/{general}/messages", {"username": "bob", "content": "missed"}, 201
    )
    async with ws_session.ws_connect(sandbox.info["discord_gateway_url"]) as ws:
        await _receive(ws)
        await ws.send_json(
            {
                "op": 6,
                "d": {
                    "token": sandbox.info["discord_token"],
                    "session_id": session_id,
                    "seq": last_seq,
                },
            }
        )
        replayed = await _receive(ws)
        assert (replayed["t"], replayed["s"]) == ("MESSAGE_CREATE", last_seq + 1)
        assert (await _receive(ws))["t"] == "RESUMED"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"op": 2, "d": {"token": "nope", "intents": 0}}, 4004),
        ({"op": 2, "d": {"token": "TOKEN", "intents": "all"}}, 4013),
        ({"op": 8, "d": {}}, 4003),
        ({"op": 99, "d": None}, 4001),
        ("not json", 4002),
        (b"\x00binary", 4002),
    ],
)
async def test_close_codes(
    sandbox: Sandbox, ws_session: aiohttp.ClientSession, frame: Any, code: int
) -> None:
    async with ws_session.ws_connect(sandbox.info["discord_gateway_url"]) as ws:
        await _receive(ws)
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        elif isinstance(frame, str):
            await ws.send_str(frame)
        else:
            text = json.dumps(frame).replace("TOKEN", sandbox.info["discord_token"])
            await ws.send_str(text)
        assert await _closed_with(ws) == code


async def test_identify_twice_and_unknown_resume(
    sandbox: Sandbox, ws_session: aiohttp.ClientSession
) -> None:
    async with ws_session.ws_connect(sandbox.info["discord_gateway_url"]) as ws:
        await _receive(ws)
        await ws.send_json({"op": 6, "d": {"token": sandbox.info["discord_token"],
                                           "session_id": "gone", "seq": 3}})  # fmt: skip
        invalid = await _receive(ws)
        assert (invalid["op"], invalid["d"]) == (9, False)
        await ws.send_json(_identify(sandbox))
        assert (await _receive(ws))["t"] == "READY"
        await _receive(ws)  # GUILD_CREATE
        await ws.send_json(_identify(sandbox))
        assert await _closed_with(ws) == 4005
