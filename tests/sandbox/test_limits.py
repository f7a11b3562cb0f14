"""Rate limits: exact limiter arithmetic, and the 429s both emulators answer."""

from __future__ import annotations

import httpx
import pytest

from bots.sandbox import Sandbox, SandboxLimits
from bots.sandbox.limits import FixedWindow, TokenBucket, telegram_retry_seconds

from .conftest import Control


def test_fixed_window_is_exact() -> None:
    bucket = FixedWindow(limit=5, window=5.0)
    for _ in range(5):
        assert bucket.retry_after(10.0) == 0.0
        bucket.consume(10.0)
    assert bucket.retry_after(12.5) == pytest.approx(2.5)
    assert bucket.retry_after(15.0) == 0.0  # a new window opens at the first request after


def test_token_bucket_matches_a_paced_client() -> None:
    # 20 per minute: a burst of 20, then one every 3 s, exactly what aiolimiter allows.
    group = TokenBucket(rate=20 / 60, burst=20)
    for _ in range(20):
        group.consume(0.0)
    assert group.retry_after(0.0) == pytest.approx(3.0)
    for second in (3.0, 6.0, 9.0):
        assert group.retry_after(second) == pytest.approx(0.0, abs=1e-9)
        group.consume(second)
    assert group.retry_after(10.0) == pytest.approx(2.0)


def test_token_bucket_bursts_then_refills() -> None:
    bucket = TokenBucket(rate=1.0, burst=3)
    for _ in range(3):
        assert bucket.retry_after(0.0) == 0.0
        bucket.consume(0.0)
    assert bucket.retry_after(0.0) == pytest.approx(1.0)
    assert bucket.retry_after(0.5) == pytest.approx(0.5)
    assert bucket.retry_after(1.0) == 0.0
    assert telegram_retry_seconds(0.2) == 1
    assert telegram_retry_seconds(1.01) == 2


def test_limits_update_validates() -> None:
    limits = SandboxLimits().updated({"discord_global_per_second": 10, "enabled": False})
    assert limits.discord_global_per_second == 10
    assert not limits.enabled
    for bad in ({"nope": 1}, {"telegram_chat_burst": 0}, {"enabled": "yes"}):
        with pytest.raises(ValueError, match=r"."):
            SandboxLimits().updated(bad)


async def _post(http: httpx.AsyncClient, sb: Sandbox, channel: str) -> httpx.Response:
    return await http.post(
        f"{sb.info['discord_api_base']}/channels/{channel}/messages",
        headers={"Authorization": f"Bot {sb.info['discord_token']}"},
        json={"content": "status update"},
    )


async def test_discord_channel_bucket(
    sandbox: Sandbox, http: httpx.AsyncClient, control: Control
) -> None:
    await control.patch("/limits", {"discord_message_create_window": 2.0})
    general = sandbox.info["discord_channels"]["general"]
    for expected in (4, 3, 2, 1, 0):
        ok = await _post(http, sandbox, general)
        assert ok.status_code == 200
        assert ok.headers["X-RateLimit-Limit"] == "5"
        assert ok.headers["X-RateLimit-Remaining"] == str(expected)
        assert 0 < float(ok.headers["X-RateLimit-Reset-After"]) <= 2.0
    limited = await _post(http, sandbox, general)
    assert limited.status_code == 429
    assert limited.headers["Content-Type"] == "application/json"
    assert limited.headers["X-RateLimit-Scope"] == "user"
    assert "Via" in limited.headers
    assert "Retry-After" in limited.headers
    body = limited.json()
    assert body["global"] is False
    assert 0 < body["retry_after"] <= 2.0
    # Another channel has its own bucket.
    assert (
        await _post(http, sandbox, sandbox.info["discord_channels"]["announcements"])
    ).is_success
    stats = await control.get("/stats")
    assert stats["rate_limited"]["discord"] == {"user": 1}
    assert stats["discord_invalid_requests"]["last_10_minutes"] == 1
    assert stats["messages_created"]["discord"] == {
        general: 5,
        sandbox.info["discord_channels"]["announcements"]: 1,
    }


async def test_discord_global_limit(
    sandbox: Sandbox, http: httpx.AsyncClient, control: Control
) -> None:
    await control.patch("/limits", {"discord_global_per_second": 3})
    url = f"{sandbox.info['discord_api_base']}/users/@me"
    headers = {"Authorization": f"Bot {sandbox.info['discord_token']}"}
    statuses = [(await http.get(url, headers=headers)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    limited = await http.get(url, headers=headers)
    assert limited.status_code == 429
    assert limited.headers["X-RateLimit-Global"] == "true"
    assert limited.headers["X-RateLimit-Scope"] == "global"
    assert limited.json()["global"] is True
    # Interaction callbacks are exempt from the global limit (they answer 404 here: unknown).
    exempt = await http.post(
        f"{sandbox.info['discord_api_base']}/interactions/1/x/callback", json={"type": 4}
    )
    assert exempt.status_code == 404


async def test_discord_limits_can_be_disabled(
    sandbox: Sandbox, http: httpx.AsyncClient, control: Control
) -> None:
    await control.patch("/limits", {"enabled": False})
    general = sandbox.info["discord_channels"]["general"]
    responses = [await _post(http, sandbox, general) for _ in range(8)]
    assert all(r.status_code == 200 for r in responses)
    assert "X-RateLimit-Remaining" not in responses[0].headers


async def _send(http: httpx.AsyncClient, sb: Sandbox, chat: int) -> httpx.Response:
    return await http.post(
        f"{sb.info['telegram_api_base']}{sb.info['telegram_token']}/sendMessage",
        data={"chat_id": str(chat), "text": "update"},
    )


async def test_telegram_per_chat_burst(
    sandbox: Sandbox, http: httpx.AsyncClient, control: Control
) -> None:
    chat = sandbox.info["telegram_chats"]["community"]
    assert [(await _send(http, sandbox, chat)).status_code for _ in range(3)] == [200] * 3
    limited = await _send(http, sandbox, chat)
    assert limited.status_code == 429
    assert limited.json() == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }
    other = sandbox.info["telegram_chats"]["announcements"]
    assert (await _send(http, sandbox, other)).status_code == 200
    assert (await control.get("/stats"))["rate_limited"]["telegram"] == {"chat": 1}


async def test_telegram_group_and_global_limits(
    sandbox: Sandbox, http: httpx.AsyncClient, control: Control
) -> None:
    await control.patch("/limits", {"telegram_chat_burst": 100, "telegram_group_per_minute": 2})
    chat = sandbox.info["telegram_chats"]["responders"]
    assert [(await _send(http, sandbox, chat)).status_code for _ in range(2)] == [200, 200]
    limited = await _send(http, sandbox, chat)
    assert limited.status_code == 429
    assert limited.json()["parameters"]["retry_after"] == 30  # one message per 30 s refills
    await control.patch(
        "/limits", {"telegram_group_per_minute": 100, "telegram_global_per_second": 1}
    )
    other = sandbox.info["telegram_chats"]["community"]
    first = await _send(http, sandbox, other)
    second = await _send(http, sandbox, other)
    assert (first.status_code, second.status_code) == (200, 429)
    stats = await control.get("/stats")
    assert stats["rate_limited"]["telegram"] == {"group": 1, "global": 1}


async def test_nonce_window_expires(
    sandbox: Sandbox, http: httpx.AsyncClient, control: Control
) -> None:
    general = sandbox.info["discord_channels"]["general"]
    url = f"{sandbox.info['discord_api_base']}/channels/{general}/messages"
    headers = {"Authorization": f"Bot {sandbox.info['discord_token']}"}
    body = {"content": "x", "nonce": "n-1", "enforce_nonce": True}
    first = (await http.post(url, headers=headers, json=body)).json()
    again = (await http.post(url, headers=headers, json=body)).json()
    assert again["id"] == first["id"]
    loose = (await http.post(url, headers=headers, json={**body, "enforce_nonce": False})).json()
    assert loose["id"] != first["id"]  # without enforce_nonce a message is always created
    log = await control.get("/requests")
    assert [e.get("deduplicated", False) for e in log[-3:]] == [False, True, False]
    await control.patch("/limits", {"discord_nonce_window": 1e-6})
    late = (await http.post(url, headers=headers, json=body)).json()
    assert late["id"] not in (first["id"], loose["id"])


async def test_clients_pacing_below_the_limits_are_never_refused(
    sandbox: Sandbox, http: httpx.AsyncClient, control: Control
) -> None:
    """Clients paced by aiolimiter (the publisher) and PTB's AIORateLimiter at 80% of the
    limits: the 20% margin absorbs latency jitter, which at exactly the limit can compress
    requests into a refused burst (as it could on the real platforms)."""
    import time

    from aiolimiter import AsyncLimiter
    from telegram.ext import AIORateLimiter, ExtBot

    await control.patch("/limits", {"discord_route_limit": 1000})
    limiter = AsyncLimiter(40, 1)
    url = f"{sandbox.info['discord_api_base']}/gateway/bot"
    headers = {"Authorization": f"Bot {sandbox.info['discord_token']}"}
    started = time.monotonic()
    for _ in range(70):
        async with limiter:
            assert (await http.get(url, headers=headers)).status_code == 200
    assert time.monotonic() - started >= (70 - 40) / 40 - 0.05

    chats = [
        (await control.post("/telegram/chats", {"type": "channel", "title": f"c{i}"}, 201))["id"]
        for i in range(40)
    ]
    bot = ExtBot(
        sandbox.info["telegram_token"],
        base_url=sandbox.info["telegram_api_base"],
        rate_limiter=AIORateLimiter(overall_max_rate=24, max_retries=0),
    )
    async with bot:
        for chat in chats:
            await bot.send_message(chat, "status")
    stats = await control.get("/stats")
    assert stats["rate_limited"] == {}
    assert stats["messages_created_total"]["telegram"] == 40
