"""Telegram's webhook mode with the real python-telegram-bot, the real panel and real HTTP.

The panel (uvicorn on a loopback socket) serves ``POST /telegram/webhook``; the listener, in
webhook mode, calls ``setWebhook`` on the sandbox, which then pushes every update to the panel
with the secret header; the panel hands it to the listener registered in this process. Members
write through the sandbox's control API, as in ``test_telegram_listener.py``; every Bot API
exchange and every pushed update is checked against the published spec.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from telegram import Bot
from telegram.error import Conflict

from approvals.app import create_app
from approvals.routes.telegram_webhook import RECEIVERS, SECRET_HEADER
from bots.sandbox import Sandbox
from bots.telegram_listener import TelegramListener
from comms.db import Database
from comms.detections.intake import Intake
from comms.settings import TELEGRAM_WEBHOOK_PATH, ConfigError, Settings, load_settings
from tests.listening.test_telegram_listener import (
    BOT,
    Members,
    bot_count,
    eventually,
    stored,
    stored_count,
)
from tests.sandbox import spec_check

SECRET_KEY = "webhook-test-secret-key-0123456789-abcdefghijklmnop"
CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to "
    "delete the webhook first"
)


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """Every Bot API exchange and every pushed update must match the Bot API spec."""
    async with Sandbox(record_exchanges=True, seed=7) as sb:
        # Telegram retries a failed push after a while; here within a fraction of a second.
        sb.telegram.webhook_retry_first = 0.05
        sb.telegram.webhook_retry_max = 0.2
        yield sb
        problems = spec_check.check_exchanges(sb.core.exchanges, requests=True)
        for push in sb.telegram.webhook_pushes:
            problems += spec_check._type_errors(push["update"], ["Update"], "webhook push")
        assert not problems, "exchanges that do not match the published specs:\n" + "\n".join(
            problems
        )


@pytest.fixture
def panel_socket() -> socket.socket:
    """Bound before the settings are made, so the webhook URL names the panel's real port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def wh_settings(database_url: str, sandbox: Sandbox, panel_socket: socket.socket) -> Settings:
    port = panel_socket.getsockname()[1]
    return load_settings(
        database_url=database_url,
        protocol_name="Example Protocol",
        official_domains=["example.org"],
        secret_key=SECRET_KEY,
        telegram_api_base=sandbox.info["telegram_api_base"],
        telegram_token=sandbox.info["telegram_token"],
        telegram_webhook_url=f"http://127.0.0.1:{port}{TELEGRAM_WEBHOOK_PATH}",
    )


@pytest.fixture
async def panel(
    wh_settings: Settings, database_url: str, panel_socket: socket.socket
) -> AsyncIterator[str]:
    """The panel on its loopback socket, in this test's event loop; yields its base URL."""
    database = Database(database_url)
    app = create_app(settings=wh_settings, database=database)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[panel_socket]))
    try:
        for _ in range(500):  # bounded wait for the server to accept connections
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        yield f"http://127.0.0.1:{panel_socket.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        await database.dispose()
        panel_socket.close()


@pytest.fixture
def intake(db: Database, wh_settings: Settings) -> Intake:
    return Intake(database=db, settings=wh_settings)


def make_listener(settings: Settings, intake: Intake) -> TelegramListener:
    return TelegramListener(settings, intake, combined_interval=0.1, webhook=RECEIVERS)


@pytest.fixture
async def listener(
    panel: str, wh_settings: Settings, intake: Intake
) -> AsyncIterator[TelegramListener]:
    listening = make_listener(wh_settings, intake)
    await listening.start()
    yield listening
    await listening.stop()
    assert RECEIVERS.current() is None


@pytest.fixture
async def members(sandbox: Sandbox) -> AsyncIterator[Members]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield Members(sandbox, client)


async def bot_api(sandbox: Sandbox, method: str, **params: Any) -> httpx.Response:
    """A raw Bot API call, as any client would make it."""
    url = f"{sandbox.info['telegram_api_base']}{sandbox.info['telegram_token']}/{method}"
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, json=params)


async def webhook_info(sandbox: Sandbox) -> dict[str, Any]:
    response = await bot_api(sandbox, "getWebhookInfo")
    assert response.status_code == 200, response.text
    info: dict[str, Any] = response.json()["result"]
    return info


def listener_calls(sandbox: Sandbox) -> list[str]:
    return [e.operation for e in sandbox.core.exchanges]


# --- the webhook in use ---------------------------------------------------------------------


async def test_report_and_edit_arrive_by_webhook(
    listener: TelegramListener,
    sandbox: Sandbox,
    members: Members,
    db: Database,
    panel: str,
    wh_settings: Settings,
) -> None:
    info = await webhook_info(sandbox)
    assert info["url"] == f"{panel}{TELEGRAM_WEBHOOK_PATH}"
    assert info["pending_update_count"] == 0
    assert info["allowed_updates"] == ["edited_message", "message"]
    (set_call,) = [e for e in sandbox.core.exchanges if e.operation == "setWebhook"]
    assert set_call.status == 200
    assert set_call.request["secret_token"] == wh_settings.telegram_webhook_token()
    assert set_call.request["drop_pending_updates"] in (False, "false", "False")
    assert "getUpdates" not in listener_calls(sandbox)  # no polling in webhook mode

    text = "the bridge UI asks to approve 0x1111111111111111111111111111111111111111"
    sent = await members.post("community", "alice", f"/report@{BOT} {text}")
    assert sent["delivered_to_bot"]
    (detection,) = await stored_count(db, 1)
    assert detection["text"] == text
    assert detection["external_id"] == f"{members.chats['community']}:{sent['id']}"
    (ack,) = await bot_count(members, "community", 1)
    assert ack["reply_to"] == sent["id"] and f"R-{detection['id']}" in ack["text"]

    address = "0x2222222222222222222222222222222222222222"
    edited = await members.edit("community", sent["id"], f"/report@{BOT} drainer {address}")
    assert edited["delivered_to_bot"]

    async def updated() -> dict[str, Any] | None:
        (found,) = await stored(db)
        return found if found["text"] == f"drainer {address}" else None

    after = await eventually(updated)
    assert after["id"] == detection["id"]

    async def answered() -> list[dict[str, Any]] | None:
        # The edit is stored before the panel's answer reaches the sandbox: wait for it.
        pushes = list(sandbox.telegram.webhook_pushes)
        return pushes if all(p["status"] is not None for p in pushes) else None

    pushes = await eventually(answered)
    assert [p["status"] for p in pushes] == [200, 200]
    assert all(p["secret_sent"] for p in pushes)
    assert [next(k for k in p["update"] if k != "update_id") for p in pushes] == [
        "message",
        "edited_message",
    ]
    assert "getUpdates" not in listener_calls(sandbox)
    await bot_count(members, "community", 1)  # the edit is not answered again


async def test_wrong_or_missing_secret_is_refused_and_stores_nothing(
    listener: TelegramListener,
    sandbox: Sandbox,
    members: Members,
    db: Database,
    panel: str,
    wh_settings: Settings,
) -> None:
    world = sandbox.telegram_world
    community = world.chats[members.chats["community"]]
    message, _ = await sandbox.telegram.post_as_member(
        community, world.users[members.users["bob"]], f"/report@{BOT} forged drainer report"
    )
    # The update the sandbox queued for the webhook, replayed by someone without the secret.
    forged = {"update_id": 1, "message": world.message_json(community, message)}
    url = f"{panel}{TELEGRAM_WEBHOOK_PATH}"
    right = wh_settings.telegram_webhook_token()
    assert right is not None
    async with httpx.AsyncClient(timeout=10) as http:
        for headers in ({}, {SECRET_HEADER: "not-the-secret"}, {SECRET_HEADER: right[:-1]}):
            response = await http.post(url, json=forged, headers=headers)
            assert response.status_code == 403, (headers, response.text)
        not_json = await http.post(url, content=b"{nope", headers={SECRET_HEADER: right})
        assert not_json.status_code == 400
        big = json.dumps({"update_id": 2, "pad": "x" * 300_000})
        too_big = await http.post(
            url, content=big, headers={SECRET_HEADER: right, "Content-Type": "application/json"}
        )
        assert too_big.status_code == 413
        assert (await http.get(url)).status_code == 405
    # The genuine push of the same message (update 100000001) is the one stored, once.
    (detection,) = await stored_count(db, 1)
    assert detection["text"] == "forged drainer report"
    await bot_count(members, "community", 1)
    barrier = await members.post("community", "alice", f"/report@{BOT} barrier")
    _, last = await stored_count(db, 2)
    assert last["external_id"].endswith(f":{barrier['id']}")


async def test_polling_is_refused_while_the_webhook_is_set(
    listener: TelegramListener, sandbox: Sandbox, members: Members, db: Database
) -> None:
    refused = await bot_api(sandbox, "getUpdates", timeout=0)
    assert refused.status_code == 409
    assert refused.json() == {"ok": False, "error_code": 409, "description": CONFLICT}
    bot = Bot(sandbox.info["telegram_token"], base_url=sandbox.info["telegram_api_base"])
    async with bot:
        with pytest.raises(Conflict, match="webhook is active"):
            await bot.get_updates(timeout=0)
        # A report still arrives by webhook meanwhile.
        await members.post("community", "carol", f"/report@{BOT} fake airdrop site")
        await stored_count(db, 1)
        # deleteWebhook returns to polling, pending updates kept.
        assert await bot.delete_webhook()
        assert (await webhook_info(sandbox))["url"] == ""
        assert await bot.get_updates(timeout=0) == ()


async def test_restart_loses_no_update(
    panel: str, wh_settings: Settings, intake: Intake, sandbox: Sandbox, members: Members,
    db: Database,
) -> None:  # fmt: skip
    first = make_listener(wh_settings, intake)
    await first.start()
    await members.post("community", "alice", f"/report@{BOT} first report")
    await stored_count(db, 1)
    await first.stop()
    assert (await webhook_info(sandbox))["url"] == f"{panel}{TELEGRAM_WEBHOOK_PATH}"

    # Nobody listens: the panel answers 503, the sandbox keeps the update and retries.
    sent = await members.post("community", "bob", f"/report@{BOT} sent during the restart")

    async def refused() -> dict[str, Any] | None:
        info = await webhook_info(sandbox)
        return info if info.get("last_error_message") else None

    info = await eventually(refused)
    assert info["last_error_message"] == "Wrong response from the webhook: 503 Service Unavailable"
    assert info["pending_update_count"] == 1
    assert isinstance(info["last_error_date"], int)
    assert len(await stored(db)) == 1

    second = make_listener(wh_settings, intake)
    await second.start()
    try:
        _, during = await stored_count(db, 2)
        assert during["external_id"].endswith(f":{sent['id']}")
        await bot_count(members, "community", 2)
        statuses = [p["status"] for p in sandbox.telegram.webhook_pushes]
        assert statuses[0] == 200 and statuses[-1] == 200 and 503 in statuses
        assert (await webhook_info(sandbox))["pending_update_count"] == 0
    finally:
        await second.stop()


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://comms.example.org/telegram/webhook", "https"),
        ("https://comms.example.org/hook", "/telegram/webhook"),
        ("https://comms.example.org/telegram/webhook/", "/telegram/webhook"),
        ("ftp://comms.example.org/telegram/webhook", "https"),
        ("https://user:pw@comms.example.org/telegram/webhook", "credentials"),
    ],
)
def test_webhook_url_is_checked_at_start(url: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="COMMS_TELEGRAM_WEBHOOK_URL") as raised:
        load_settings(telegram_webhook_url=url)
    assert problem in str(raised.value)


def test_webhook_urls_that_are_accepted() -> None:
    for url in (
        "https://comms.example.org/telegram/webhook",
        "https://comms.example.org:8443/telegram/webhook",
        "http://127.0.0.1:8000/telegram/webhook",
        "http://localhost/telegram/webhook",
        "http://[::1]:9000/telegram/webhook",
    ):
        assert load_settings(telegram_webhook_url=url).telegram_webhook_url == url


def test_webhook_secret_rule_and_derivation() -> None:
    with pytest.raises(ConfigError, match="COMMS_TELEGRAM_WEBHOOK_SECRET") as raised:
        load_settings(telegram_webhook_secret="has spaces and $ign")
    assert "$ign" not in str(raised.value)  # the value is never repeated
    explicit = load_settings(telegram_webhook_secret="abc-DEF_123", secret_key=SECRET_KEY)
    assert explicit.telegram_webhook_token() == "abc-DEF_123"
    derived = load_settings(secret_key=SECRET_KEY).telegram_webhook_token()
    again = load_settings(secret_key=SECRET_KEY).telegram_webhook_token()
    assert derived is not None and derived == again  # every panel process agrees
    assert SECRET_KEY not in derived
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,256}", derived)  # Telegram's rule
    other = load_settings(secret_key=SECRET_KEY[::-1]).telegram_webhook_token()
    assert other != derived
    assert load_settings().telegram_webhook_token() is None


async def test_listener_refuses_webhook_mode_outside_the_panels_process(
    wh_settings: Settings, intake: Intake, sandbox: Sandbox
) -> None:
    alone = TelegramListener(wh_settings, intake)  # `comms bots`: no registry
    with pytest.raises(ConfigError, match="panel's process"):
        await alone.start()
    wrong_path = wh_settings.model_copy(
        update={"telegram_webhook_url": "https://comms.example.org/elsewhere"}
    )
    with pytest.raises(ConfigError, match="COMMS_TELEGRAM_WEBHOOK_URL: the path"):
        await TelegramListener(wrong_path, intake, webhook=RECEIVERS).start()
    no_secret = wh_settings.model_copy(update={"secret_key": None})
    with pytest.raises(ConfigError, match="COMMS_TELEGRAM_WEBHOOK_SECRET"):
        await TelegramListener(no_secret, intake, webhook=RECEIVERS).start()
    assert "setWebhook" not in listener_calls(sandbox)  # refused before any request
    assert RECEIVERS.current() is None


async def test_route_without_a_listener_answers_503_and_is_absent_without_the_setting(
    wh_settings: Settings, db: Database
) -> None:
    assert RECEIVERS.current() is None
    secret = wh_settings.telegram_webhook_token()
    assert secret is not None
    chat = {"id": 1, "type": "private"}
    update = {"update_id": 5, "message": {"message_id": 1, "date": 0, "chat": chat}}
    with_hook = create_app(settings=wh_settings, database=db)
    without = create_app(
        settings=wh_settings.model_copy(update={"telegram_webhook_url": None}), database=db
    )
    for app, expected in ((with_hook, 503), (without, 404)):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http:
            response = await http.post(
                TELEGRAM_WEBHOOK_PATH, json=update, headers={SECRET_HEADER: secret}
            )
        assert response.status_code == expected, response.text
        assert response.headers.get("x-content-type-options") == "nosniff"
