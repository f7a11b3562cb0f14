"""Channels: read one, list a guild's, create one, and edit one (a thread's PATCH too, since
Discord serves both on ``PATCH /channels/{id}``), with permission overwrites."""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web

from bots.sandbox import discord_state as ds
from bots.sandbox.common import json_response
from bots.sandbox.discord.errors import (
    MISSING_PERMISSIONS,
    DiscordError,
    field_error,
    invalid_form,
    unknown,
)
from bots.sandbox.discord.forms import Form
from bots.sandbox.discord.resource import Resource
from bots.sandbox.discord.routing import Ctx
from bots.sandbox.discord_state import Channel


class Channels(Resource):
    """``/channels/{id}`` and ``/guilds/{id}/channels``."""

    async def get_channel(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        return json_response(self.world.channel_json(channel))

    async def list_guild_channels(self, ctx: Ctx) -> web.Response:
        guild = self.world.guilds.get(ctx.params["guild_id"])
        if guild is None:
            raise unknown("Guild")
        return json_response(
            [
                self.world.channel_json(self.world.channels[cid])
                for cid in guild.channel_ids
                if self.world.can_see(self.world.channels[cid], ds.BOT_ID)
            ]
        )

    def _overwrites(self, form: Form, value: Any) -> list[ds.Overwrite] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            form.add("permission_overwrites", "LIST_TYPE_CONVERT", "Only iterables may be used")
            return None
        result = []
        for index, item in enumerate(value):
            path = f"permission_overwrites.{index}"
            if not isinstance(item, dict):
                form.add(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                continue
            target = form.snowflake(item, "id", path=f"{path}.id")
            if item.get("id") is None:
                form.add(f"{path}.id", "BASE_TYPE_REQUIRED", "This field is required")
            kind = item.get("type", 0)
            if kind not in (0, 1, "0", "1", "role", "member"):
                form.add(f"{path}.type", "BASE_TYPE_CHOICES", "Value must be one of {0, 1}.")
                continue
            bits = {}
            for key in ("allow", "deny"):
                raw = item.get(key) or 0
                if isinstance(raw, str) and raw.isdigit():
                    raw = int(raw)
                if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
                    form.add(f"{path}.{key}", "NUMBER_TYPE_COERCE", f'Value "{raw}" is not int.')
                    raw = 0
                bits[key] = raw
            if target is not None:
                type_int = 1 if kind in (1, "1", "member") else 0
                result.append(ds.Overwrite(target, type_int, bits["allow"], bits["deny"]))
        return result

    async def create_guild_channel(self, ctx: Ctx) -> web.Response:
        guild = self.world.guilds.get(ctx.params["guild_id"])
        if guild is None:
            raise unknown("Guild")
        if not self.world.base_permissions(guild, ds.BOT_ID) & ds.MANAGE_CHANNELS:
            raise DiscordError(*MISSING_PERMISSIONS)
        data = ctx.json_object()
        form = Form()
        if data.get("name") is None:
            form.add("name", "BASE_TYPE_REQUIRED", "This field is required")
        name = form.string(data, "name", max_len=100, min_len=1)
        kind = form.choice(data, "type", ds.GUILD_CHANNEL_TYPES)
        topic = form.string(data, "topic", max_len=1024)
        slowmode = form.integer(data, "rate_limit_per_user", minimum=0, maximum=21600)
        nsfw = form.boolean(data, "nsfw")
        position = form.integer(data, "position", minimum=0)
        parent = form.snowflake(data, "parent_id")
        overwrites = self._overwrites(form, data.get("permission_overwrites"))
        form.raise_if_any()
        assert name is not None
        kind = ds.GUILD_TEXT if kind is None else kind
        if parent is not None and (
            parent not in self.world.channels
            or self.world.channels[parent].type != ds.GUILD_CATEGORY
        ):
            raise invalid_form(
                {"parent_id": field_error("CHANNEL_PARENT_INVALID", "Invalid parent channel")}
            )
        bot_perms = self.world.base_permissions(guild, ds.BOT_ID)
        for overwrite in overwrites or []:
            if overwrite.allow & ~bot_perms or overwrite.deny & ~bot_perms:
                raise DiscordError(*MISSING_PERMISSIONS)
        if kind in (ds.GUILD_TEXT, ds.GUILD_ANNOUNCEMENT):
            name = re.sub(r"\s+", "-", name.strip().lower())
        channel = self.world.add_channel(
            Channel(
                self.world.ids.next(),
                guild.id,
                kind,
                name,
                position=position if position is not None else len(guild.channel_ids),
                topic=topic,
                nsfw=bool(nsfw),
                rate_limit_per_user=slowmode or 0,
                parent_id=parent,
                overwrites=overwrites or [],
            )
        )
        payload = self.world.channel_json(channel)
        await self.gateway.dispatch("CHANNEL_CREATE", payload, channel=channel)
        return json_response(payload, 201)

    async def patch_channel(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        data = ctx.json_object()
        form = Form()
        perms = self.world.permissions(channel, ds.BOT_ID)
        if channel.is_thread:
            name = form.string(data, "name", max_len=100, min_len=1)
            archived = form.boolean(data, "archived")
            locked = form.boolean(data, "locked")
            form.boolean(data, "invitable")
            duration = form.choice(data, "auto_archive_duration", (60, 1440, 4320, 10080))
            slowmode = form.integer(data, "rate_limit_per_user", minimum=0, maximum=21600)
            form.raise_if_any()
            manage = bool(perms & ds.MANAGE_THREADS)
            if (locked is not None or slowmode is not None) and not manage:
                raise DiscordError(*MISSING_PERMISSIONS)
            if channel.locked and not manage:
                raise DiscordError(400, 50083, "Thread is archived")
            if not manage and channel.owner_id != ds.BOT_ID:
                raise DiscordError(*MISSING_PERMISSIONS)
            if name is not None:
                channel.name = name
            if locked is not None:
                channel.locked = locked
            if archived is not None and archived != channel.archived:
                channel.archived = archived
                channel.archive_timestamp = time.time()
            if duration is not None:
                channel.auto_archive_duration = duration
            if slowmode is not None:
                channel.rate_limit_per_user = slowmode
            payload = self.world.channel_json(channel)
            await self.gateway.dispatch("THREAD_UPDATE", payload, channel=channel)
            return json_response(payload)
        name = form.string(data, "name", max_len=100, min_len=1)
        kind = form.choice(data, "type", (ds.GUILD_TEXT, ds.GUILD_ANNOUNCEMENT))
        topic = form.string(data, "topic", max_len=1024)
        slowmode = form.integer(data, "rate_limit_per_user", minimum=0, maximum=21600)
        nsfw = form.boolean(data, "nsfw")
        position = form.integer(data, "position", minimum=0)
        duration = form.choice(data, "default_auto_archive_duration", (60, 1440, 4320, 10080))
        overwrites = self._overwrites(form, data.get("permission_overwrites"))
        form.raise_if_any()
        if not perms & ds.MANAGE_CHANNELS:
            raise DiscordError(*MISSING_PERMISSIONS)
        if overwrites is not None and not perms & (ds.MANAGE_ROLES | ds.ADMINISTRATOR):
            raise DiscordError(*MISSING_PERMISSIONS)
        if kind is not None and channel.type not in (ds.GUILD_TEXT, ds.GUILD_ANNOUNCEMENT):
            raise invalid_form({"type": field_error("BASE_TYPE_CHOICES", "Cannot convert channel")})
        if name is not None:
            channel.name = re.sub(r"\s+", "-", name.strip().lower())
        if kind is not None:
            channel.type = kind
        if "topic" in data:
            channel.topic = topic
        if slowmode is not None:
            channel.rate_limit_per_user = slowmode
        if nsfw is not None:
            channel.nsfw = nsfw
        if position is not None:
            channel.position = position
        if duration is not None:
            channel.default_auto_archive_duration = duration
        if overwrites is not None:
            channel.overwrites = overwrites
        payload = self.world.channel_json(channel)
        await self.gateway.dispatch("CHANNEL_UPDATE", payload, channel=channel)
        return json_response(payload)
