"""Threads started from a message (``POST /channels/{id}/messages/{id}/threads``); editing and
archiving a thread is ``PATCH /channels/{id}`` in channels.py."""

from __future__ import annotations

import time

from aiohttp import web

from bots.sandbox import discord_state as ds
from bots.sandbox.common import iso, json_response
from bots.sandbox.discord.errors import DiscordError
from bots.sandbox.discord.forms import Form
from bots.sandbox.discord.resource import Resource
from bots.sandbox.discord.routing import Ctx
from bots.sandbox.discord_state import Channel, Message


class Threads(Resource):
    """Starting a thread from a message."""

    async def start_thread(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        message = self.message_in(channel, ctx.params["message_id"])
        data = ctx.json_object()
        form = Form()
        if data.get("name") is None:
            form.add("name", "BASE_TYPE_REQUIRED", "This field is required")
        name = form.string(data, "name", max_len=100, min_len=1)
        duration = form.choice(data, "auto_archive_duration", (60, 1440, 4320, 10080))
        slowmode = form.integer(data, "rate_limit_per_user", minimum=0, maximum=21600)
        form.raise_if_any()
        assert name is not None
        if channel.type not in (ds.GUILD_TEXT, ds.GUILD_ANNOUNCEMENT):
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        self.require(channel, ds.CREATE_PUBLIC_THREADS)
        if message.thread_id is not None:
            raise DiscordError(400, 160004, "A thread has already been created for this message")
        thread = self.create_thread(
            channel, message, name, duration or channel.default_auto_archive_duration, slowmode or 0
        )
        payload = self.world.channel_json(thread)
        payload["member"] = {
            "id": str(thread.id),
            "user_id": str(ds.BOT_ID),
            "join_timestamp": iso(thread.create_timestamp or time.time()),
            "flags": 0,
        }
        await self.gateway.dispatch(
            "THREAD_CREATE", {**payload, "newly_created": True}, channel=thread
        )
        await self.gateway.dispatch(
            "MESSAGE_UPDATE",
            self.gateway.message_payload(message),
            channel=channel,
            message=message,
        )
        return json_response(payload, 201)

    def create_thread(
        self, channel: Channel, message: Message, name: str, duration: int, slowmode: int
    ) -> Channel:
        now = time.time()
        thread = Channel(
            id=message.id,  # a thread started from a message shares the message's id
            guild_id=channel.guild_id,
            type=ds.ANNOUNCEMENT_THREAD
            if channel.type == ds.GUILD_ANNOUNCEMENT
            else ds.PUBLIC_THREAD,
            name=name,
            parent_id=channel.id,
            owner_id=ds.BOT_ID,
            auto_archive_duration=duration,
            rate_limit_per_user=slowmode,
            archive_timestamp=now,
            create_timestamp=now,
            member_ids={ds.BOT_ID},
        )
        self.world.add_channel(thread)
        message.thread_id = thread.id
        message.flags |= ds.HAS_THREAD
        return thread
