"""Messages: list, read, create (with nonce deduplication and replies), edit, delete and
crosspost, and how a new message's mentions are computed; the control API and interactions create
and edit messages through here too."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from bots.sandbox import discord_state as ds
from bots.sandbox.common import json_response
from bots.sandbox.discord.errors import (
    MISSING_ACCESS,
    MISSING_PERMISSIONS,
    DiscordError,
    field_error,
    invalid_form,
)
from bots.sandbox.discord.forms import Form, validate_embeds
from bots.sandbox.discord.resource import Resource
from bots.sandbox.discord.routing import Ctx
from bots.sandbox.discord_mentions import compute_mentions, validate_allowed_mentions
from bots.sandbox.discord_state import Channel, Message, User


class Messages(Resource):
    """``/channels/{id}/messages`` and the message operations other resources reuse."""

    async def list_messages(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        query = dict(ctx.request.query)
        form = Form()
        limit = form.integer(query, "limit", minimum=1, maximum=100)
        before = form.snowflake(query, "before")
        after = form.snowflake(query, "after")
        around = form.snowflake(query, "around")
        form.raise_if_any()
        if not self.world.permissions(channel, ds.BOT_ID) & ds.READ_MESSAGE_HISTORY:
            return json_response([])
        limit = limit or 50
        messages = [m for m in channel.messages.values() if m.visible_to is None]
        if around is not None:
            older = [m for m in messages if m.id <= around][-((limit + 1) // 2) :]
            newer = [m for m in messages if m.id > around][: limit - len(older)]
            chosen = older + newer
        elif after is not None:
            chosen = [m for m in messages if m.id > after][:limit]
        else:
            if before is not None:
                messages = [m for m in messages if m.id < before]
            chosen = messages[-limit:]
        chosen.sort(key=lambda m: m.id, reverse=True)
        return json_response([self.world.message_json(m) for m in chosen])

    async def get_message(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        if not self.world.permissions(channel, ds.BOT_ID) & ds.READ_MESSAGE_HISTORY:
            raise DiscordError(*MISSING_ACCESS)
        message = self.message_in(channel, ctx.params["message_id"])
        return json_response(self.world.message_json(message))

    def message_fields(self, form: Form, data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        fields["content"] = form.string(data, "content", max_len=2000)
        fields["embeds"] = validate_embeds(form, data.get("embeds"))
        flags = form.integer(data, "flags", minimum=0)
        allowed = ds.CREATABLE_FLAGS if creating else ds.EDITABLE_FLAGS
        fields["flags"] = None if flags is None else flags & allowed
        form.merge("allowed_mentions", validate_allowed_mentions(data.get("allowed_mentions")))
        components = data.get("components")
        if components is not None and not isinstance(components, list):
            form.add("components", "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        fields["components"] = components if isinstance(components, list) else []
        if creating:
            nonce = data.get("nonce")
            if nonce is not None:
                if isinstance(nonce, bool) or not isinstance(nonce, int | str):
                    form.add("nonce", "NONCE_TYPE_INVALID", "Nonce must be an integer or string.")
                elif isinstance(nonce, str) and len(nonce) > 25:
                    form.add("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            fields["nonce"] = nonce
            fields["enforce_nonce"] = form.boolean(data, "enforce_nonce")
            fields["tts"] = form.boolean(data, "tts")
            reference = data.get("message_reference")
            if reference is not None:
                if not isinstance(reference, dict):
                    form.add("message_reference", "DICT_TYPE_CONVERT", "Only dictionaries")
                else:
                    if reference.get("message_id") is None:
                        form.add(
                            "message_reference.message_id",
                            "BASE_TYPE_REQUIRED",
                            "This field is required",
                        )
                    form.snowflake(reference, "message_id", path="message_reference.message_id")
                    form.snowflake(reference, "channel_id", path="message_reference.channel_id")
                    form.snowflake(reference, "guild_id", path="message_reference.guild_id")
                    if reference.get("fail_if_not_exists") is not None and not isinstance(
                        reference.get("fail_if_not_exists"), bool
                    ):
                        form.add(
                            "message_reference.fail_if_not_exists",
                            "BOOLEAN_TYPE_CONVERT",
                            "Must be either true or false.",
                        )
            fields["message_reference"] = reference if isinstance(reference, dict) else None
        return fields

    async def create_message(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        data = ctx.json_object()
        form = Form()
        fields = self.message_fields(form, data, creating=True)
        form.raise_if_any()
        needed = ds.SEND_MESSAGES_IN_THREADS if channel.is_thread else ds.SEND_MESSAGES
        self.require(channel, needed)
        if channel.is_thread:
            if (
                channel.locked
                and not self.world.permissions(channel, ds.BOT_ID) & ds.MANAGE_THREADS
            ):
                raise DiscordError(400, 160005, "This thread is locked")
            if channel.archived:
                channel.archived = False
                channel.archive_timestamp = time.time()
        content = fields["content"] or ""
        if not content.strip() and not fields["embeds"] and not data.get("sticker_ids"):
            raise DiscordError(400, 50006, "Cannot send an empty message")
        nonce = fields["nonce"]
        ctx.entry["nonce"] = nonce
        key = (channel.id, ds.BOT_ID, str(nonce))
        if nonce is not None and fields["enforce_nonce"]:
            earlier = self.world.nonces.get(key)
            window = self.core.limits.discord_nonce_window
            if earlier is not None and time.monotonic() - earlier[1] < window:
                existing = self.world.messages.get(earlier[0])
                if existing is not None:
                    ctx.entry["deduplicated"] = True
                    ctx.entry["message_id"] = str(existing.id)
                    return json_response(self.world.message_json(existing, include_nonce=True))
        reference = fields["message_reference"]
        if reference is not None:
            ref_id = int(reference["message_id"])
            ref_channel = int(reference.get("channel_id") or channel.id)
            if ref_id not in self.world.messages or ref_channel != channel.id:
                if reference.get("fail_if_not_exists", True):
                    raise invalid_form(
                        {
                            "message_reference": field_error(
                                "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                            )
                        }
                    )
                reference = None
            else:
                reference = {
                    "type": 0,
                    "channel_id": str(channel.id),
                    "message_id": str(ref_id),
                }
                if channel.guild_id:
                    reference["guild_id"] = str(channel.guild_id)
        message = self.new_message(
            channel,
            self.world.bot,
            content,
            embeds=fields["embeds"],
            components=fields["components"],
            flags=fields["flags"] or 0,
            tts=bool(fields["tts"]),
            nonce=nonce,
            allowed_mentions=data.get("allowed_mentions"),
            reference=reference,
        )
        if nonce is not None and fields["enforce_nonce"]:
            self.world.nonces[key] = (message.id, time.monotonic())
            self._prune_nonces()
        ctx.entry["message_id"] = str(message.id)
        await self.gateway.announce(message)
        return json_response(self.world.message_json(message, include_nonce=True))

    def _prune_nonces(self) -> None:
        if len(self.world.nonces) < 50_000:
            return
        horizon = time.monotonic() - self.core.limits.discord_nonce_window
        self.world.nonces = {k: v for k, v in self.world.nonces.items() if v[1] >= horizon}

    def new_message(
        self,
        channel: Channel,
        author: User,
        content: str,
        *,
        embeds: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
        flags: int = 0,
        tts: bool = False,
        nonce: int | str | None = None,
        allowed_mentions: Any = None,
        reference: dict[str, Any] | None = None,
        type: int = 0,
        interaction: dict[str, Any] | None = None,
        visible_to: int | None = None,
    ) -> Message:
        """Create and store a message, computing who it mentions as Discord does."""
        replied_user = None
        if reference is not None and type == 0:
            type = 19
            referenced = self.world.messages.get(int(reference["message_id"]))
            replied_user = referenced.author.id if referenced else None
        mentions = self.compute(channel, author, content, allowed_mentions, replied_user)
        message = Message(
            id=self.world.ids.next(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=author,
            content=content,
            timestamp=time.time(),
            embeds=embeds or [],
            components=components or [],
            flags=flags,
            tts=tts,
            type=type,
            nonce=nonce,
            mention_ids=mentions.user_ids,
            mention_role_ids=mentions.role_ids,
            mention_everyone=mentions.everyone,
            reference=reference,
            interaction=interaction,
            visible_to=visible_to,
        )
        if interaction is not None:
            message.application_id = self.world.application_id
            message.webhook_id = self.world.application_id
        self.world.add_message(message)
        if visible_to is None:
            self.core.log.stats.message_created("discord", channel.id)
        return message

    def compute(
        self,
        channel: Channel,
        author: User,
        content: str,
        allowed_mentions: Any,
        replied_user: int | None = None,
    ) -> Any:
        guild = self.world.guilds.get(channel.guild_id) if channel.guild_id else None
        known = set(guild.members) if guild else set(self.world.users)
        mentionable = {r.id: r.mentionable for r in guild.roles.values()} if guild else {}
        mentionable.pop(channel.guild_id or 0, None)
        perms = self.world.permissions(channel, author.id)
        return compute_mentions(
            content,
            allowed_mentions if isinstance(allowed_mentions, dict) else None,
            known_user_ids=known,
            role_mentionable=mentionable,
            can_mention_everyone=bool(perms & ds.MENTION_EVERYONE),
            replied_user_id=replied_user,
        )

    async def edit_message(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        message = self.message_in(channel, ctx.params["message_id"])
        data = ctx.json_object()
        form = Form()
        fields = self.message_fields(form, data, creating=False)
        form.raise_if_any()
        self.ensure_thread_open(channel)
        own = message.author.id == ds.BOT_ID
        changes_content = any(k in data for k in ("content", "embeds", "components"))
        if not own and (changes_content or "allowed_mentions" in data):
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        if not own and not self.world.permissions(channel, ds.BOT_ID) & ds.MANAGE_MESSAGES:
            raise DiscordError(*MISSING_PERMISSIONS)
        await self.apply_edit(message, channel, data, fields)
        return json_response(self.world.message_json(message))

    async def apply_edit(
        self, message: Message, channel: Channel, data: dict[str, Any], fields: dict[str, Any]
    ) -> None:
        if "content" in data:
            message.content = fields["content"] or ""
        if "embeds" in data:
            message.embeds = fields["embeds"]
        if "components" in data:
            message.components = fields["components"]
        if not message.content.strip() and not message.embeds and not message.components:
            raise DiscordError(400, 50006, "Cannot send an empty message")
        if fields["flags"] is not None:
            keep = message.flags & ~ds.EDITABLE_FLAGS
            message.flags = keep | fields["flags"]
        if message.flags & ds.LOADING:
            message.flags &= ~ds.LOADING
        elif "content" in data or "embeds" in data:
            message.edited_timestamp = time.time()
        mentions = self.compute(
            channel, message.author, message.content, data.get("allowed_mentions")
        )
        message.mention_ids = mentions.user_ids
        message.mention_role_ids = mentions.role_ids
        message.mention_everyone = mentions.everyone
        if message.visible_to is None:
            await self.gateway.dispatch(
                "MESSAGE_UPDATE",
                self.gateway.message_payload(message),
                channel=channel,
                message=message,
            )

    async def delete_message(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        message = self.message_in(channel, ctx.params["message_id"])
        if message.author.id != ds.BOT_ID:
            self.require(channel, ds.MANAGE_MESSAGES)
        await self.remove_message(message, channel)
        return web.Response(status=204)

    async def remove_message(self, message: Message, channel: Channel) -> None:
        self.world.delete_message(message)
        payload: dict[str, Any] = {"id": str(message.id), "channel_id": str(channel.id)}
        if channel.guild_id:
            payload["guild_id"] = str(channel.guild_id)
        await self.gateway.dispatch("MESSAGE_DELETE", payload, channel=channel)

    async def crosspost(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        message = self.message_in(channel, ctx.params["message_id"])
        if channel.type != ds.GUILD_ANNOUNCEMENT:
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        if message.author.id == ds.BOT_ID:
            self.require(channel, ds.SEND_MESSAGES)
        else:
            self.require(channel, ds.MANAGE_MESSAGES)
        if message.flags & ds.CROSSPOSTED:
            raise DiscordError(400, 40033, "This message has already been crossposted.")
        message.flags |= ds.CROSSPOSTED
        await self.gateway.dispatch(
            "MESSAGE_UPDATE",
            self.gateway.message_payload(message),
            channel=channel,
            message=message,
        )
        return json_response(self.world.message_json(message))
