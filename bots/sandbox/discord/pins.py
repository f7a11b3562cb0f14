"""Pins: list them (the current ``/messages/pins`` shape and the legacy ``/pins`` list), pin and
unpin, with the system message and the CHANNEL_PINS_UPDATE event Discord sends."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from bots.sandbox import discord_state as ds
from bots.sandbox.common import iso, json_response
from bots.sandbox.core import SandboxCore
from bots.sandbox.discord.errors import MISSING_PERMISSIONS, DiscordError
from bots.sandbox.discord.forms import Form
from bots.sandbox.discord.gateway import Gateway
from bots.sandbox.discord.messages import Messages
from bots.sandbox.discord.resource import Resource
from bots.sandbox.discord.routing import Ctx
from bots.sandbox.discord_state import Channel, DiscordWorld, Message, User

MAX_PINS = 250


class Pins(Resource):
    """``/channels/{id}/messages/pins`` and ``/channels/{id}/pins``."""

    def __init__(
        self, core: SandboxCore, world: DiscordWorld, gateway: Gateway, messages: Messages
    ) -> None:
        super().__init__(core, world, gateway)
        self.messages = messages

    def _pins(self, channel: Channel) -> list[Message]:
        pinned = [m for m in channel.messages.values() if m.pinned]
        pinned.sort(key=lambda m: m.pinned_at or 0, reverse=True)
        return pinned

    async def list_pins(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        query = dict(ctx.request.query)
        form = Form()
        limit = form.integer(query, "limit", minimum=1, maximum=50) or 50
        before = form.string(query, "before", max_len=64)
        form.raise_if_any()
        pins = self._pins(channel)
        if before:
            pins = [m for m in pins if iso(m.pinned_at or 0) < before]
        return json_response(
            {
                "items": [
                    {"pinned_at": iso(m.pinned_at or 0), "message": self.world.message_json(m)}
                    for m in pins[:limit]
                ],
                "has_more": len(pins) > limit,
            }
        )

    async def list_pins_legacy(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        return json_response([self.world.message_json(m) for m in self._pins(channel)])

    def _require_pin(self, channel: Channel) -> None:
        if not self.world.permissions(channel, ds.BOT_ID) & (ds.PIN_MESSAGES | ds.MANAGE_MESSAGES):
            raise DiscordError(*MISSING_PERMISSIONS)

    async def pin(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        message = self.message_in(channel, ctx.params["message_id"])
        self._require_pin(channel)
        self.ensure_thread_open(channel)
        if not message.pinned:
            if len(self._pins(channel)) >= MAX_PINS:
                raise DiscordError(400, 30003, f"Maximum number of pins reached ({MAX_PINS})")
            await self.set_pinned(message, channel, True, self.world.bot)
        return web.Response(status=204)

    async def unpin(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        message = self.message_in(channel, ctx.params["message_id"])
        self._require_pin(channel)
        self.ensure_thread_open(channel)
        if message.pinned:
            await self.set_pinned(message, channel, False, self.world.bot)
        return web.Response(status=204)

    async def set_pinned(self, message: Message, channel: Channel, pinned: bool, by: User) -> None:
        message.pinned = pinned
        message.pinned_at = time.time() if pinned else None
        pins = self._pins(channel)
        channel.last_pin_timestamp = pins[0].pinned_at if pins else None
        await self.gateway.dispatch(
            "MESSAGE_UPDATE",
            self.gateway.message_payload(message),
            channel=channel,
            message=message,
        )
        if pinned:
            reference = {
                "type": 0,
                "channel_id": str(channel.id),
                "message_id": str(message.id),
            }
            if channel.guild_id:
                reference["guild_id"] = str(channel.guild_id)
            notice = self.messages.new_message(channel, by, "", type=6, reference=reference)
            await self.gateway.announce(notice)
        payload: dict[str, Any] = {
            "channel_id": str(channel.id),
            "last_pin_timestamp": iso(channel.last_pin_timestamp)
            if channel.last_pin_timestamp
            else None,
        }
        if channel.guild_id:
            payload["guild_id"] = str(channel.guild_id)
        await self.gateway.dispatch("CHANNEL_PINS_UPDATE", payload, channel=channel)
