"""Fixtures: a sandbox whose every exchange is checked against the specs, and the real
discord.py and python-telegram-bot pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import discord
import httpx
import pytest
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route
from telegram.ext import Application, ApplicationBuilder, BaseHandler, BaseRateLimiter

from bots.sandbox import Sandbox, SandboxLimits

from . import spec_check


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "subprocess: starts the sandbox in a child process (a few seconds)"
    )


async def _checked_sandbox(
    *, requests: bool, limits: SandboxLimits | None
) -> AsyncIterator[Sandbox]:
    async with Sandbox(record_exchanges=True, seed=1234, limits=limits) as sb:
        yield sb
        problems = spec_check.check_exchanges(sb.core.exchanges, requests=requests)
        problems += spec_check.check_gateway(sb.core.gateway_frames)
        assert not problems, "exchanges that do not match the published specs:\n" + "\n".join(
            problems
        )


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """Every request and answer in the test must match the platform specs."""
    async for sb in _checked_sandbox(requests=True, limits=None):
        yield sb


@pytest.fixture
async def raw_sandbox() -> AsyncIterator[Sandbox]:
    """For tests that send bad requests on purpose: only the answers are checked, and rate
    limits are off so that a dozen bad requests in a row are each judged on their own."""
    async for sb in _checked_sandbox(requests=False, limits=SandboxLimits.unlimited()):
        yield sb


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


class Control:
    """Thin helper over the control API."""

    def __init__(self, sb: Sandbox, http: httpx.AsyncClient) -> None:
        self.sb = sb
        self.http = http
        self.url = sb.control_url

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(self.url + path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def post(self, path: str, body: Any = None, expect: int | None = None) -> Any:
        response = await self.http.post(self.url + path, json=body)
        if expect is not None:
            assert response.status_code == expect, response.text
        return response.json()

    async def patch(self, path: str, body: Any) -> Any:
        response = await self.http.patch(self.url + path, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def delete(self, path: str) -> Any:
        response = await self.http.delete(self.url + path)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def control(sandbox: Sandbox, http: httpx.AsyncClient) -> Control:
    return Control(sandbox, http)


@pytest.fixture
def raw_control(raw_sandbox: Sandbox, http: httpx.AsyncClient) -> Control:
    return Control(raw_sandbox, http)


# --------------------------------------------------------------------------------------------
# discord.py


class SandboxClient(discord.Client):
    """A discord.py client that hands events to the test through queues and events."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.tree = app_commands.CommandTree(self)
        self.messages: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.ready_event = asyncio.Event()
        self.resumed_event = asyncio.Event()
        self.connects = 0

    async def on_ready(self) -> None:
        self.ready_event.set()

    async def on_message(self, message: discord.Message) -> None:
        self.messages.put_nowait(message)

    async def on_resumed(self) -> None:
        self.resumed_event.set()

    async def on_connect(self) -> None:
        self.connects += 1

    async def next_message(self, within: float = 5.0) -> discord.Message:
        return await asyncio.wait_for(self.messages.get(), within)


DiscordFactory = Callable[..., Awaitable[SandboxClient]]


@pytest.fixture
async def discord_factory(sandbox: Sandbox) -> AsyncIterator[DiscordFactory]:
    """Start real discord.py clients against the sandbox; class attributes restored after."""
    saved_base, saved_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    Route.BASE = sandbox.info["discord_api_base"]
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sandbox.info["discord_gateway_url"])
    clients: list[tuple[SandboxClient, asyncio.Task[None] | None]] = []

    async def start(
        *,
        intents: discord.Intents | None = None,
        connect: bool = True,
        setup: Callable[[SandboxClient], None] | None = None,
    ) -> SandboxClient:
        if intents is None:
            intents = discord.Intents.default()
            intents.message_content = True
        client = SandboxClient(
            intents=intents,
            guild_ready_timeout=0.05,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        if setup is not None:
            setup(client)
        task: asyncio.Task[None] | None = None
        if connect:
            task = asyncio.create_task(client.start(sandbox.info["discord_token"]))
            clients.append((client, task))
            ready = asyncio.create_task(client.ready_event.wait())
            done, _ = await asyncio.wait({ready, task}, timeout=10, return_when="FIRST_COMPLETED")
            if ready not in done:
                ready.cancel()
                if task.done():
                    task.result()
                raise TimeoutError("discord.py never became ready")
        else:
            await client.login(sandbox.info["discord_token"])
            clients.append((client, None))
        return client

    try:
        yield start
    finally:
        for client, task in clients:
            await client.close()
            if task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(task, 5)
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved_base, saved_gateway


# --------------------------------------------------------------------------------------------
# python-telegram-bot

TelegramFactory = Callable[..., Awaitable[Application[Any, Any, Any, Any, Any, Any]]]


@pytest.fixture
async def telegram_factory(sandbox: Sandbox) -> AsyncIterator[TelegramFactory]:
    apps: list[Application[Any, Any, Any, Any, Any, Any]] = []

    async def start(
        *,
        handlers: Sequence[BaseHandler[Any, Any, Any]] = (),
        rate_limiter: BaseRateLimiter[Any] | None = None,
        poll: bool = True,
    ) -> Application[Any, Any, Any, Any, Any, Any]:
        builder = ApplicationBuilder().token(sandbox.info["telegram_token"])
        builder = builder.base_url(sandbox.info["telegram_api_base"])
        if rate_limiter is not None:
            builder = builder.rate_limiter(rate_limiter)
        app = builder.build()
        for handler in handlers:
            app.add_handler(handler)
        await app.initialize()
        apps.append(app)
        if poll:
            await app.start()
            assert app.updater is not None
            await app.updater.start_polling(poll_interval=0, timeout=dt.timedelta(seconds=1))
        return app

    try:
        yield start
    finally:
        for app in apps:
            if app.updater is not None and app.updater.running:
                await app.updater.stop()
            if app.running:
                await app.stop()
            await app.shutdown()
