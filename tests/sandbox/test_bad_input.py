"""Bad input gets the platform's own error, never a crash or a 500 from our code."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest

from bots.sandbox import Sandbox

from .conftest import Control


def _discord(sb: Sandbox, path: str) -> str:
    return f"{sb.info['discord_api_base']}{path}"


def _auth(sb: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bot {sb.info['discord_token']}"}


def _tg(sb: Sandbox, method: str, token: str | None = None) -> str:
    return f"{sb.info['telegram_api_base']}{token or sb.info['telegram_token']}/{method}"


async def test_discord_auth_routes_and_ids(raw_sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    sb = raw_sandbox
    general = sb.info["discord_channels"]["general"]
    unauthorized = await http.get(_discord(sb, "/users/@me"))
    assert unauthorized.status_code == 401
    assert unauthorized.json() == {"message": "401: Unauthorized", "code": 0}
    wrong = await http.get(_discord(sb, "/users/@me"), headers={"Authorization": "Bot nope"})
    assert wrong.status_code == 401
    missing = await http.get(_discord(sb, "/nothing/here"), headers=_auth(sb))
    assert (missing.status_code, missing.json()["code"]) == (404, 0)
    method = await http.delete(_discord(sb, "/users/@me"), headers=_auth(sb))
    assert method.status_code == 405
    channel = await http.get(_discord(sb, "/channels/123"), headers=_auth(sb))
    assert (channel.status_code, channel.json()) == (
        404,
        {"message": "Unknown Channel", "code": 10003},
    )
    message = await http.get(_discord(sb, f"/channels/{general}/messages/123"), headers=_auth(sb))
    assert (message.status_code, message.json()["code"]) == (404, 10008)
    not_snowflake = await http.get(_discord(sb, "/channels/abc"), headers=_auth(sb))
    assert not_snowflake.status_code == 400
    assert (
        not_snowflake.json()["errors"]["channel_id"]["_errors"][0]["code"] == "NUMBER_TYPE_COERCE"
    )


async def test_discord_bodies(raw_sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    sb = raw_sandbox
    url = _discord(sb, f"/channels/{sb.info['discord_channels']['general']}/messages")
    invalid = await http.post(url, headers=_auth(sb), content=b'{"content": ')
    assert invalid.json() == {"message": "The request body contains invalid JSON.", "code": 50109}
    array = await http.post(url, headers=_auth(sb), json=["content"])
    assert array.json()["code"] == 50035
    empty = await http.post(url, headers=_auth(sb), json={})
    assert empty.json() == {"message": "Cannot send an empty message", "code": 50006}
    wrong_type = await http.post(url, headers=_auth(sb), json={"content": 5, "tts": "yes"})
    errors = wrong_type.json()["errors"]
    assert set(errors) == {"content", "tts"}
    too_long = await http.post(url, headers=_auth(sb), json={"content": "x" * 2001})
    assert too_long.json() == {
        "message": "Invalid Form Body",
        "code": 50035,
        "errors": {
            "content": {
                "_errors": [
                    {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}
                ]
            }
        },
    }
    many = await http.post(url, headers=_auth(sb), json={"embeds": [{"title": "t"}] * 11})
    assert many.json()["errors"]["embeds"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
    big = [{"description": "d" * 4000}, {"description": "d" * 2001}]
    total = await http.post(url, headers=_auth(sb), json={"embeds": big})
    assert total.json()["errors"]["embeds"]["_errors"][0]["code"] == "MAX_EMBED_SIZE_EXCEEDED"
    field = await http.post(url, headers=_auth(sb), json={"embeds": [{"title": "t" * 257}]})
    assert "title" in field.json()["errors"]["embeds"]["0"]
    exclusive = await http.post(
        url,
        headers=_auth(sb),
        json={"content": "x", "allowed_mentions": {"parse": ["users"], "users": ["1"]}},
    )
    assert exclusive.json()["code"] == 50035
    nonce = await http.post(url, headers=_auth(sb), json={"content": "x", "nonce": "n" * 26})
    assert "nonce" in nonce.json()["errors"]
    oversized = await http.post(url, headers=_auth(sb), content=b"x" * (26 * 1024 * 1024))
    assert oversized.status_code == 413
    assert oversized.json() == {"message": "Request entity too large", "code": 40005}


async def test_discord_permissions(
    raw_sandbox: Sandbox, http: httpx.AsyncClient, raw_control: Control
) -> None:
    sb = raw_sandbox
    guild = sb.info["discord_guild_id"]
    hidden = await raw_control.post(
        f"/discord/guilds/{guild}/channels",
        {"name": "mods", "private": True, "bot_access": False},
        expect=201,
    )
    read_only = await raw_control.post(
        f"/discord/guilds/{guild}/channels",
        {"name": "rules", "read_only": True, "bot_access": False},
        expect=201,
    )
    body = {"content": "hello"}
    no_access = await http.post(
        _discord(sb, f"/channels/{hidden['id']}/messages"), headers=_auth(sb), json=body
    )
    assert (no_access.status_code, no_access.json()) == (
        403,
        {"message": "Missing Access", "code": 50001},
    )
    no_perm = await http.post(
        _discord(sb, f"/channels/{read_only['id']}/messages"), headers=_auth(sb), json=body
    )
    assert (no_perm.status_code, no_perm.json()["code"]) == (403, 50013)
    general = sb.info["discord_channels"]["general"]
    sent = (
        await http.post(_discord(sb, f"/channels/{general}/messages"), headers=_auth(sb), json=body)
    ).json()
    crosspost = await http.post(
        _discord(sb, f"/channels/{general}/messages/{sent['id']}/crosspost"), headers=_auth(sb)
    )
    assert crosspost.json()["code"] == 50024  # only in announcement channels
    thread = await http.post(
        _discord(sb, f"/channels/{general}/messages/{sent['id']}/threads"),
        headers=_auth(sb),
        json={"name": "t"},
    )
    assert thread.status_code == 201
    twice = await http.post(
        _discord(sb, f"/channels/{general}/messages/{sent['id']}/threads"),
        headers=_auth(sb),
        json={"name": "t"},
    )
    assert twice.json()["code"] == 160004
    alice_post = await raw_control.post(
        f"/discord/channels/{general}/messages", {"username": "alice", "content": "mine"}
    )
    other = await http.patch(
        _discord(sb, f"/channels/{general}/messages/{alice_post['id']}"),
        headers=_auth(sb),
        json={"content": "not yours"},
    )
    assert other.json()["code"] == 50005


async def test_telegram_errors(raw_sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    sb = raw_sandbox
    community = sb.info["telegram_chats"]["community"]

    async def call(method: str, token: str | None = None, **data: Any) -> tuple[int, Any]:
        response = await http.post(_tg(sb, method, token), data=data)
        return response.status_code, response.json()

    assert await call("getMe", token="123:wrong") == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    assert (await call("sendMessages"))[0] == 404
    assert (await call("sendMessage", chat_id="42", text="x"))[1]["description"] == (
        "Bad Request: chat not found"
    )
    assert (await call("sendMessage", chat_id=str(community)))[1]["description"] == (
        "Bad Request: message text is empty"
    )
    assert (await call("sendMessage", chat_id=str(community), text="x" * 4097))[1][
        "description"
    ] == "Bad Request: message is too long"
    status, body = await call("sendMessage", chat_id=str(community), text="<b>x", parse_mode="HTML")
    assert status == 400
    assert body["description"] == (
        "Bad Request: can't parse entities: Can't find end tag corresponding to start tag b"
    )
    status, body = await call(
        "sendMessage", chat_id=str(community), text="x", reply_parameters="{not json"
    )
    assert body["description"] == "Bad Request: can't parse reply parameters JSON object"
    status, body = await call(
        "sendMessage", chat_id=str(community), text="x", reply_parameters='{"message_id": 999}'
    )
    assert body["description"] == "Bad Request: message to be replied not found"
    status, body = await call("editMessageText", chat_id=str(community), message_id="x", text="y")
    assert status == 400
    status, body = await call("editMessageText", chat_id=str(community), message_id="77", text="y")
    assert body["description"] == "Bad Request: message to edit not found"
    status, body = await call("deleteMessage", chat_id=str(community), message_id="77")
    assert body["description"] == "Bad Request: message to delete not found"
    status, body = await call("pinChatMessage", chat_id=str(community), message_id="1")
    assert status == 400  # not an admin there: no right to pin
    json_body = await http.post(
        _tg(sb, "sendMessage"), content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert json_body.status_code == 400
    assert json_body.json()["ok"] is False
    via_json = await http.post(_tg(sb, "sendMessage"), json={"chat_id": community, "text": "ok"})
    assert via_json.json()["ok"] is True
    too_big = await http.post(_tg(sb, "sendMessage"), content=b"x" * (26 * 1024 * 1024))
    assert too_big.status_code == 413


async def test_telegram_membership_and_rights(
    raw_sandbox: Sandbox, http: httpx.AsyncClient, raw_control: Control
) -> None:
    sb = raw_sandbox
    chat = await raw_control.post(
        "/telegram/chats", {"type": "supergroup", "title": "Elsewhere", "bot_member": False},
        expect=201,
    )  # fmt: skip
    response = await http.post(_tg(sb, "sendMessage"), data={"chat_id": chat["id"], "text": "x"})
    assert response.status_code == 403
    assert response.json()["description"] == "Forbidden: bot is not a member of the supergroup chat"
    channel = await raw_control.post(
        "/telegram/chats", {"type": "channel", "title": "News", "bot_admin": False}, expect=201
    )
    response = await http.post(_tg(sb, "sendMessage"), data={"chat_id": channel["id"], "text": "x"})
    assert (
        response.json()["description"]
        == "Bad Request: need administrator rights in the channel chat"
    )


async def test_concurrent_get_updates_conflict(
    raw_sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    import asyncio

    first = asyncio.create_task(http.post(_tg(raw_sandbox, "getUpdates"), data={"timeout": "5"}))
    queue = raw_sandbox.telegram_world.queue
    async with queue.changed:  # the server notifies when a poll starts
        await asyncio.wait_for(queue.changed.wait_for(lambda: queue.generation > 0), 5)
    second = await http.post(_tg(raw_sandbox, "getUpdates"), data={"timeout": "0"})
    assert second.json() == {"ok": True, "result": []}
    conflict = await asyncio.wait_for(first, 5)
    assert conflict.status_code == 409
    assert conflict.json()["description"].startswith("Conflict: terminated by other getUpdates")


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, 3.5, 10**30])
    if kind == 3:
        return "".join(rng.choice("ab<>&*_[]\\@#/\u200b😀 ") for _ in range(rng.randrange(12)))
    if kind == 4:
        return rng.choice(["", "1", "-100", "true", "{}", "[1]", "x" * 300])
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["content", "embeds", "nonce", "flags", "allowed_mentions", "name", "type",
            "title", "description", "fields", "parse", "users", "message_reference",
            "message_id", "channel_id", "fail_if_not_exists", "options", "data",
            "default_member_permissions", "contexts", "permission_overwrites", "archived",
            "locked", "rate_limit_per_user", "enforce_nonce", "id", "allow"]  # fmt: skip
    return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


@pytest.mark.parametrize("seed", range(4))
async def test_random_bodies_never_cause_a_server_error(
    raw_sandbox: Sandbox, http: httpx.AsyncClient, raw_control: Control, seed: int
) -> None:
    sb = raw_sandbox
    await raw_control.patch("/limits", {"enabled": False})
    rng = random.Random(seed)
    general = sb.info["discord_channels"]["general"]
    sent = (
        await http.post(_discord(sb, f"/channels/{general}/messages"), headers=_auth(sb),
                        json={"content": "target"})
    ).json()  # fmt: skip
    app = sb.info["discord_application_id"]
    discord_targets = [
        ("POST", f"/channels/{general}/messages"),
        ("PATCH", f"/channels/{general}/messages/{sent['id']}"),
        ("PATCH", f"/channels/{general}"),
        ("POST", f"/channels/{general}/messages/{sent['id']}/threads"),
        ("POST", f"/guilds/{sb.info['discord_guild_id']}/channels"),
        ("PUT", f"/applications/{app}/commands"),
    ]
    tg_fields = ["chat_id", "text", "parse_mode", "entities", "reply_parameters",
                 "message_id", "link_preview_options", "permissions", "commands", "offset",
                 "timeout"]  # fmt: skip
    tg_methods = ["sendMessage", "editMessageText", "deleteMessage", "pinChatMessage",
                  "setMyCommands", "getChat", "setChatPermissions", "getUpdates"]  # fmt: skip
    for _ in range(60):
        method, path = rng.choice(discord_targets)
        payload = json.dumps(_random_json(rng)).encode()
        response = await http.request(
            method, _discord(sb, path), headers=_auth(sb), content=payload
        )
        assert response.status_code < 500, (path, payload, response.text)
        assert response.headers.get("Content-Type", "application/json") == "application/json"
        form = {
            rng.choice(tg_fields): json.dumps(_random_json(rng))
            if rng.random() < 0.5
            else str(_random_json(rng))
            for _ in range(rng.randrange(5))
        }
        tg = await http.post(_tg(sb, rng.choice(tg_methods)), data=form)
        assert tg.status_code < 500, (form, tg.text)
        assert tg.json()["ok"] in (True, False)
        community = sb.info["telegram_chats"]["community"]
        control_path = rng.choice(
            ["/discord/interactions", f"/discord/channels/{general}/messages", "/faults",
             "/telegram/chats", f"/telegram/chats/{community}/messages", "/discord/users",
             "/discord/guilds"]
        )  # fmt: skip
        ctl = await http.post(sb.control_url + control_path, content=payload)
        assert ctl.status_code < 500, (control_path, payload, ctl.text)
    assert not [e for e in sb.core.log.since(0) if e.get("sandbox_bug")]


async def test_control_api_rejects_bad_input(raw_control: Control, http: httpx.AsyncClient) -> None:
    response = await http.post(raw_control.url + "/faults", content=b"{nope")
    assert response.status_code == 400
    assert (await raw_control.post("/faults", {"kind": "boom"}))["error"].startswith("kind")
    assert "error" in await raw_control.post("/discord/channels/1/messages", {"content": "x"})
    response = await http.patch(raw_control.url + "/limits", json={"discord_global_per_second": -1})
    assert response.status_code == 400


MALFORMED_MULTIPART = [
    # (content type, body): a boundary that never appears, a part without headers' end, no
    # boundary parameter at all, a truncated body, and bytes that are not UTF-8 in payload_json.
    ("multipart/form-data; boundary=abc", b"--xyz\r\nnot a part\r\n--xyz--\r\n"),
    ("multipart/form-data; boundary=abc", b"--abc\r\nContent-Disposition: form-data"),
    ("multipart/form-data", b"--abc\r\n\r\n--abc--\r\n"),
    (
        "multipart/form-data; boundary=abc",
        b'--abc\r\nContent-Disposition: form-data; name="payload_json"\r\n\r\n{"content"',
    ),
    (
        "multipart/form-data; boundary=abc",
        b'--abc\r\nContent-Disposition: form-data; name="payload_json"\r\n\r\n'
        b'{"content": "\xff\xfe"}\r\n--abc--\r\n',
    ),
]


async def test_malformed_multipart_is_an_invalid_form_body(
    raw_sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    """Discord answers a body it cannot parse with 400 Invalid Form Body (50035), never a 500;
    found by fuzzing the emulator against the official OpenAPI."""
    sb = raw_sandbox
    channel = sb.info["discord_channels"]["general"]
    sent = await http.post(
        _discord(sb, f"/channels/{channel}/messages"), headers=_auth(sb), json={"content": "hi"}
    )
    message_id = sent.json()["id"]
    targets = [
        ("POST", f"/channels/{channel}/messages"),
        ("PATCH", f"/channels/{channel}/messages/{message_id}"),
        ("POST", f"/channels/{channel}/messages/{message_id}/threads"),
    ]
    for method, path in targets:
        for content_type, body in MALFORMED_MULTIPART:
            response = await http.request(
                method,
                _discord(sb, path),
                headers={**_auth(sb), "Content-Type": content_type},
                content=body,
            )
            where = f"{method} {path} with {body[:40]!r}"
            assert response.status_code == 400, where
            assert response.json()["code"] in (50035, 50109), where
