"""``Sandbox``: both emulators, the control API and the viewer on one aiohttp server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from . import discord_state as ds
from . import telegram_state as ts
from .control import ControlAPI
from .core import MAX_BODY_BYTES, SandboxCore
from .discord import API_PREFIX, GATEWAY_PATH, DiscordAPI, DiscordError
from .discord_state import DiscordWorld
from .limits import SandboxLimits
from .telegram_api import TelegramAPI
from .telegram_state import TelegramWorld
from .viewer import viewer


class Sandbox:
    """Local Discord and Telegram emulators, started with ``async with Sandbox() as sb``.

    ``port=0`` picks a free port. ``record_exchanges=True`` keeps every request and answer in
    ``sb.core.exchanges`` so tests can check them against the platforms' schemas.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limits: SandboxLimits | None = None,
        request_log: Path | None = None,
        seed: int | None = None,
        record_exchanges: bool = False,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.core = SandboxCore(
            limits=limits or SandboxLimits(),
            request_log=request_log,
            seed=seed,
            record_exchanges=record_exchanges,
        )
        self.discord_world = DiscordWorld()
        self.telegram_world = TelegramWorld()
        self.discord = DiscordAPI(self.core, self.discord_world)
        self.telegram = TelegramAPI(self.core, self.telegram_world)
        self.control = ControlAPI(self)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.info: dict[str, Any] = {}

    # --- lifecycle -----------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES + 1024 * 1024)
        app.router.add_route("*", API_PREFIX + "{tail:(/.*)?}", self.discord.router.handle)
        app.router.add_get(GATEWAY_PATH, self.discord.gateway.websocket)
        app.router.add_route("*", "/bot{token}/{method}", self.telegram.handle)
        app.router.add_route("*", "/bot{tail:.*}", self.telegram.not_found)
        app.router.add_routes(self.control.routes())
        app.router.add_get("/", viewer)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        self.core.stopping.set()
        async with self.telegram_world.queue.changed:
            self.telegram_world.queue.changed.notify_all()
        await self.discord.gateway.close_all()

    async def start(self) -> Sandbox:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        sock.listen(512)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.core.base_http = f"http://{host}:{self.port}"
        self.core.base_ws = f"ws://{host}:{self.port}"
        self.info = self._build_info()
        return self

    async def stop(self) -> None:
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        self.core.stopping.set()
        await runner.cleanup()
        self.core.log.close()

    async def __aenter__(self) -> Sandbox:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def control_url(self) -> str:
        return f"{self.core.base_http}/control"

    def _build_info(self) -> dict[str, Any]:
        d = self.discord_world
        t = self.telegram_world
        base = self.core.base_http
        return {
            "discord_api_base": f"{base}{API_PREFIX}",
            "discord_gateway_url": f"{self.core.base_ws}{GATEWAY_PATH}",
            "discord_token": ds.BOT_TOKEN,
            "discord_application_id": str(d.application_id),
            "discord_bot_user_id": str(d.bot.id),
            "discord_bot_username": d.bot.username,
            "discord_guild_id": str(d.default_guild_id),
            "discord_channels": {k: str(v) for k, v in d.default_channels.items()},
            "discord_roles": {k: str(v) for k, v in d.default_roles.items()},
            "discord_users": {k: str(v) for k, v in d.default_users.items()},
            "telegram_api_base": f"{base}/bot",
            "telegram_token": ts.BOT_TOKEN,
            "telegram_bot_id": t.bot.id,
            "telegram_bot_username": t.bot.username,
            "telegram_chats": dict(t.default_chats),
            "telegram_users": dict(t.default_users),
            "control_url": f"{base}/control",
            "viewer_url": f"{base}/",
            "host": self.host,
            "port": self.port,
        }

    # --- used by the control API ---------------------------------------------------------

    def reset(self) -> None:
        """Back to the default world: messages, faults, counters and limits cleared."""
        self.discord_world.reset()
        self.telegram_world.reset()
        self.core.faults.reset()
        self.core.log.clear()
        self.core.exchanges.clear()
        self.core.gateway_frames.clear()
        self.core.limits = self.core.initial_limits
        self.discord.reset()
        self.telegram.reset()

    def set_limits(self, limits: SandboxLimits) -> None:
        self.core.limits = limits
        self.discord.reset_limits()
        self.telegram.reset()


async def serve(host: str, port: int, **kwargs: Any) -> None:
    sandbox = Sandbox(host, port, **kwargs)
    await sandbox.start()
    sys.stdout.write(json.dumps(sandbox.info) + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sandbox.stop()


def run(host: str = "127.0.0.1", port: int = 8765, **kwargs: Any) -> None:
    """Serve until SIGINT/SIGTERM; the first line on stdout is the info JSON."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, port, **kwargs))


__all__ = ["DiscordError", "Sandbox", "run", "serve"]
