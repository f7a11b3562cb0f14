"""Fault injection: errors, hangs and dropped connections, with and without the side effect."""

from __future__ import annotations

import httpx
import pytest

from bots.sandbox import Sandbox

from .conftest import Control

DISCORD_CREATE = "POST /channels/{channel_id}/messages"


def _create_url(sb: Sandbox) -> str:
    return (
        f"{sb.info['discord_api_base']}/channels/{sb.info['discord_channels']['general']}/messages"
    )


def _auth(sb: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bot {sb.info['discord_token']}"}


async def _messages(control: Control, sb: Sandbox) -> list[dict[str, object]]:
    result: list[dict[str, object]] = await control.get(
        f"/discord/channels/{sb.info['discord_channels']['general']}/messages"
    )
    return result


@pytest.mark.parametrize("kind", ["500", "502", "429"])
async def test_error_faults_have_the_platform_shape(
    sandbox: Sandbox, http: httpx.AsyncClient, control: Control, kind: str
) -> None:
    await control.post(
        "/faults",
        {"platform": "discord", "endpoint": DISCORD_CREATE, "kind": kind, "count": 1,
         "retry_after": 2.5},
        expect=201,
    )  # fmt: skip
    failed = await http.post(_create_url(sandbox), headers=_auth(sandbox), json={"content": "x"})
    assert failed.status_code == int(kind)
    if kind == "429":
        assert failed.json() == {
            "message": "You are being rate limited.",
            "retry_after": 2.5,
            "global": False,
        }
        assert failed.headers["Retry-After"] == "3"
        assert "Via" in failed.headers
    assert await _messages(control, sandbox) == []
    ok = await http.post(_create_url(sandbox), headers=_auth(sandbox), json={"content": "x"})
    assert ok.status_code == 200  # count=1: the fault is gone
    assert await control.get("/faults") == []

    await control.post(
        "/faults", {"platform": "telegram", "endpoint": "sendMessage", "kind": kind}, expect=201
    )
    tg = await http.post(
        f"{sandbox.info['telegram_api_base']}{sandbox.info['telegram_token']}/sendMessage",
        data={"chat_id": sandbox.info["telegram_chats"]["community"], "text": "x"},
    )
    assert tg.status_code == int(kind)
    if kind != "502":
        assert tg.json()["ok"] is False
        assert tg.json()["error_code"] == int(kind)
    await control.delete("/faults")


@pytest.mark.parametrize("after_effect", [False, True])
async def test_timeout_fault_leaves_an_ambiguous_outcome(
    sandbox: Sandbox, http: httpx.AsyncClient, control: Control, after_effect: bool
) -> None:
    await control.post(
        "/faults",
        {"platform": "discord", "endpoint": DISCORD_CREATE, "kind": "timeout", "count": 1,
         "after_effect": after_effect, "hang_seconds": 30},
        expect=201,
    )  # fmt: skip
    with pytest.raises(httpx.ReadTimeout):
        await http.post(
            _create_url(sandbox), headers=_auth(sandbox), json={"content": "maybe"}, timeout=0.3
        )
    created = [m["text"] for m in await _messages(control, sandbox)]
    assert created == (["maybe"] if after_effect else [])


@pytest.mark.parametrize("after_effect", [False, True])
async def test_drop_fault_closes_the_connection(
    sandbox: Sandbox, http: httpx.AsyncClient, control: Control, after_effect: bool
) -> None:
    await control.post(
        "/faults",
        {"platform": "telegram", "endpoint": "sendMessage", "kind": "drop", "count": 1,
         "after_effect": after_effect},
        expect=201,
    )  # fmt: skip
    chat = sandbox.info["telegram_chats"]["community"]
    with pytest.raises(httpx.TransportError):
        await http.post(
            f"{sandbox.info['telegram_api_base']}{sandbox.info['telegram_token']}/sendMessage",
            data={"chat_id": chat, "text": "maybe"},
        )
    shown = [m["text"] for m in await control.get(f"/telegram/chats/{chat}/messages")]
    assert shown == (["maybe"] if after_effect else [])
    log = await control.get("/requests", platform="telegram")
    assert log[-1]["fault"] == "drop"
    assert log[-1]["status"] == "drop"


async def test_probability_is_reproducible_with_a_seed() -> None:
    from bots.sandbox.faults import Faults

    def pattern() -> list[bool]:
        faults = Faults(seed=7)
        faults.add({"platform": "discord", "endpoint": "*", "kind": "500", "probability": 0.3})
        return [faults.pick("discord", DISCORD_CREATE) is not None for _ in range(50)]

    first = pattern()
    assert first == pattern()
    assert 5 <= sum(first) <= 25


async def test_fault_matching(sandbox: Sandbox, http: httpx.AsyncClient, control: Control) -> None:
    fault = await control.post(
        "/faults", {"platform": "discord", "endpoint": "GET /users/@me", "kind": "500"}, expect=201
    )
    me = f"{sandbox.info['discord_api_base']}/users/@me"
    assert (await http.get(me, headers=_auth(sandbox))).status_code == 500
    sent = await http.post(_create_url(sandbox), headers=_auth(sandbox), json={"content": "x"})
    assert sent.status_code == 200  # other routes are untouched
    await control.delete(f"/faults/{fault['id']}")
    assert (await http.get(me, headers=_auth(sandbox))).status_code == 200


async def test_fault_for_one_destination(
    sandbox: Sandbox, http: httpx.AsyncClient, control: Control
) -> None:
    announcements = sandbox.info["discord_channels"]["announcements"]
    await control.post(
        "/faults",
        {"platform": "discord", "endpoint": DISCORD_CREATE, "kind": "500",
         "channel_id": announcements},
        expect=201,
    )  # fmt: skip
    other = await http.post(_create_url(sandbox), headers=_auth(sandbox), json={"content": "x"})
    assert other.status_code == 200
    hit = await http.post(
        f"{sandbox.info['discord_api_base']}/channels/{announcements}/messages",
        headers=_auth(sandbox),
        json={"content": "x"},
    )
    assert hit.status_code == 500
    community = sandbox.info["telegram_chats"]["community"]
    await control.post(
        "/faults",
        {"platform": "telegram", "endpoint": "sendMessage", "kind": "502", "chat_id": community},
        expect=201,
    )
    url = f"{sandbox.info['telegram_api_base']}{sandbox.info['telegram_token']}/sendMessage"
    by_name = await http.post(url, data={"chat_id": "@sandbox_community", "text": "x"})
    assert by_name.status_code == 502  # the same chat, named by its username
    elsewhere = await http.post(
        url, data={"chat_id": sandbox.info["telegram_chats"]["responders"], "text": "x"}
    )
    assert elsewhere.status_code == 200
