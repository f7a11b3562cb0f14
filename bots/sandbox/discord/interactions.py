"""Interactions: a member running a slash command (``run_command``, driven by the control API),
the bot's callback, and the webhook routes for the original response and follow-ups."""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web

from bots.sandbox import discord_state as ds
from bots.sandbox.common import json_response
from bots.sandbox.core import SandboxCore
from bots.sandbox.discord.errors import DiscordError, unknown
from bots.sandbox.discord.forms import Form
from bots.sandbox.discord.gateway import Gateway
from bots.sandbox.discord.messages import Messages
from bots.sandbox.discord.resource import Resource
from bots.sandbox.discord.routing import Ctx
from bots.sandbox.discord_state import Channel, DiscordWorld, Message, User

INTERACTION_TTL = 15 * 60  # the token's life for follow-ups and edits
# The first response (type 4, or 5 to defer) must reach Discord within 3 s of the interaction;
# later it is 10062 Unknown interaction (docs: interactions/receiving-and-responding.mdx).
RESPONSE_DEADLINE = 3.0
# InteractionContextType: where a command may be run.
CONTEXT_GUILD, CONTEXT_BOT_DM = 0, 1


class Interactions(Resource):
    """``/interactions/{id}/{token}/callback`` and ``/webhooks/{application_id}/{token}...``."""

    def __init__(
        self, core: SandboxCore, world: DiscordWorld, gateway: Gateway, messages: Messages
    ) -> None:
        super().__init__(core, world, gateway)
        self.messages = messages
        self.interaction_tokens: dict[str, int] = {}

    def reset(self) -> None:
        self.interaction_tokens.clear()

    def interaction(self, interaction_id: int | None, token: str) -> ds.Interaction:
        if interaction_id is None:
            found = self.interaction_tokens.get(token)
            interaction_id = found
        interaction = self.world.interactions.get(interaction_id or 0)
        if interaction is None or interaction.token != token:
            raise unknown("interaction")
        if time.time() - interaction.created > INTERACTION_TTL:
            raise unknown("interaction")
        return interaction

    async def run_command(
        self, user: User, channel: Channel, command: ds.Command, options: dict[str, Any]
    ) -> ds.Interaction:
        """What a member typing the slash command makes Discord send to the bot.

        A global command is offered where its ``contexts`` allow (all of them when unset, as
        for new commands on Discord); elsewhere the member's client does not show it, which
        the control API answers 404 10063 Unknown application command."""
        context = CONTEXT_GUILD if channel.guild_id is not None else CONTEXT_BOT_DM
        if command.contexts is not None and context not in command.contexts:
            where = "in servers" if context == CONTEXT_GUILD else "in DMs with the bot"
            raise DiscordError(
                404, 10063, f"Unknown application command: /{command.name} is not offered {where}"
            )
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        option_list = []
        types = {o.get("name"): o.get("type", 3) for o in command.options}
        for name, value in options.items():
            option_list.append({"name": name, "type": types.get(name, 3), "value": value})
        interaction = ds.Interaction(
            id=self.world.ids.next(),
            token=token,
            channel_id=channel.id,
            guild_id=channel.guild_id,
            user=user,
            command=command,
            options=option_list,
            created=time.time(),
        )
        self.world.interactions[interaction.id] = interaction
        self.interaction_tokens[token] = interaction.id
        data: dict[str, Any] = {
            "id": str(command.id),
            "name": command.name,
            "type": command.type,
        }
        if option_list:
            data["options"] = option_list
        if command.guild_id is not None:
            data["guild_id"] = str(command.guild_id)
        payload: dict[str, Any] = {
            "id": str(interaction.id),
            "application_id": str(self.world.application_id),
            "type": 2,
            "token": token,
            "version": 1,
            "data": data,
            "channel_id": str(channel.id),
            "channel": self.world.channel_json(channel),
            "app_permissions": str(self.world.permissions(channel, ds.BOT_ID)),
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 26_214_400,
        }
        if channel.guild_id is not None:
            guild = self.world.guilds[channel.guild_id]
            member = guild.members.get(user.id) or ds.Member(user)
            payload["guild_id"] = str(guild.id)
            payload["guild"] = {"id": str(guild.id), "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            payload["member"] = {
                **member.to_json(),
                "permissions": str(self.world.permissions(channel, user.id)),
            }
            payload["authorizing_integration_owners"] = {"0": str(guild.id)}
            payload["context"] = 0
        else:
            payload["user"] = user.to_json()
            payload["authorizing_integration_owners"] = {"1": str(user.id)}
            payload["context"] = 1
        await self.gateway.dispatch("INTERACTION_CREATE", payload, channel=None)
        return interaction

    def _interaction_meta(self, interaction: ds.Interaction) -> dict[str, Any]:
        owners = (
            {"0": str(interaction.guild_id)}
            if interaction.guild_id
            else {"1": str(interaction.user.id)}
        )
        return {
            "metadata": {
                "id": str(interaction.id),
                "type": 2,
                "user": interaction.user.to_json(),
                "authorizing_integration_owners": owners,
                "name": interaction.command.name,
                "command_type": interaction.command.type,
            },
            "legacy": {
                "id": str(interaction.id),
                "type": 2,
                "name": interaction.command.name,
                "user": interaction.user.to_json(),
            },
        }

    async def interaction_callback(self, ctx: Ctx) -> web.Response:
        interaction = self.interaction(
            ctx.params["interaction_id"], ctx.raw_params["interaction_token"]
        )
        data = ctx.json_object()
        form = Form()
        if data.get("type") is None:
            form.add("type", "BASE_TYPE_REQUIRED", "This field is required")
        kind = form.choice(data, "type", (1, 4, 5, 6, 7, 8, 9, 12))
        inner = data.get("data") or {}
        if not isinstance(inner, dict):
            form.add("data", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            inner = {}
        fields = self.messages.message_fields(form, inner, creating=False)
        raw_flags: int = inner["flags"] if isinstance(inner.get("flags"), int) else 0
        form.raise_if_any()
        if kind not in (4, 5):
            raise DiscordError(400, 40043, "Interaction response type is not supported")
        if interaction.responded:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        if time.time() - interaction.created > RESPONSE_DEADLINE:
            raise unknown("interaction")
        channel = self.world.channels[interaction.channel_id]
        ephemeral = bool(raw_flags & ds.EPHEMERAL)
        flags = (raw_flags or 0) & (ds.EPHEMERAL | ds.SUPPRESS_EMBEDS | ds.SUPPRESS_NOTIFICATIONS)
        content = fields["content"] or ""
        if kind == 4 and not content.strip() and not fields["embeds"]:
            raise DiscordError(400, 50006, "Cannot send an empty message")
        if kind == 5:
            flags |= ds.LOADING
            content = ""
        message = self.messages.new_message(
            channel,
            self.world.bot,
            content,
            embeds=fields["embeds"] if kind == 4 else [],
            components=fields["components"] if kind == 4 else [],
            flags=flags,
            allowed_mentions=inner.get("allowed_mentions"),
            type=20,
            interaction=self._interaction_meta(interaction),
            visible_to=interaction.user.id if ephemeral else None,
        )
        interaction.responded = True
        interaction.response_type = kind
        interaction.response_message_id = message.id
        interaction.ephemeral = ephemeral
        ctx.entry["message_id"] = str(message.id)
        if not ephemeral:
            await self.gateway.announce(message)
        if ctx.request.query.get("with_response", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        result: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": 2,
                "response_message_id": str(message.id),
                "response_message_loading": kind == 5,
                "response_message_ephemeral": ephemeral,
                "channel_id": str(channel.id),
            }
        }
        if channel.guild_id:
            result["interaction"]["guild_id"] = str(channel.guild_id)
        if kind == 4:
            result["resource"] = {"type": 4, "message": self.world.message_json(message)}
        return json_response(result)

    def _webhook_interaction(self, ctx: Ctx) -> ds.Interaction:
        if ctx.params["application_id"] != self.world.application_id:
            raise unknown("Webhook")
        try:
            return self.interaction(None, ctx.raw_params["interaction_token"])
        except DiscordError as exc:
            raise unknown("Webhook") from exc

    def _webhook_message(self, ctx: Ctx, interaction: ds.Interaction) -> Message:
        raw = ctx.raw_params.get("message_id", "@original")
        message_id = (
            interaction.response_message_id if raw == "@original" else ctx.params.get("message_id")
        )
        allowed = {interaction.response_message_id, *interaction.followup_ids}
        message = self.world.messages.get(message_id or 0)
        if message is None or message_id not in allowed:
            raise unknown("Message")
        return message

    async def followup_create(self, ctx: Ctx) -> web.Response:
        interaction = self._webhook_interaction(ctx)
        if not interaction.responded:
            raise unknown("interaction")
        data = ctx.json_object()
        form = Form()
        fields = self.messages.message_fields(form, data, creating=False)
        raw_flags: int = data["flags"] if isinstance(data.get("flags"), int) else 0
        form.raise_if_any()
        content = fields["content"] or ""
        if not content.strip() and not fields["embeds"]:
            raise DiscordError(400, 50006, "Cannot send an empty message")
        channel = self.world.channels[interaction.channel_id]
        ephemeral = bool(raw_flags & ds.EPHEMERAL)
        message = self.messages.new_message(
            channel,
            self.world.bot,
            content,
            embeds=fields["embeds"],
            components=fields["components"],
            flags=raw_flags & (ds.EPHEMERAL | ds.SUPPRESS_EMBEDS | ds.SUPPRESS_NOTIFICATIONS),
            allowed_mentions=data.get("allowed_mentions"),
            type=20,
            interaction=self._interaction_meta(interaction),
            visible_to=interaction.user.id if ephemeral else None,
        )
        interaction.followup_ids.append(message.id)
        if not ephemeral:
            await self.gateway.announce(message)
        if ctx.request.query.get("wait", "").lower() in ("1", "true"):
            return json_response(self.world.message_json(message))
        return web.Response(status=204)

    async def webhook_message_get(self, ctx: Ctx) -> web.Response:
        interaction = self._webhook_interaction(ctx)
        message = self._webhook_message(ctx, interaction)
        return json_response(self.world.message_json(message))

    async def webhook_message_edit(self, ctx: Ctx) -> web.Response:
        interaction = self._webhook_interaction(ctx)
        message = self._webhook_message(ctx, interaction)
        data = ctx.json_object()
        form = Form()
        fields = self.messages.message_fields(form, data, creating=False)
        form.raise_if_any()
        await self.messages.apply_edit(
            message, self.world.channels[message.channel_id], data, fields
        )
        return json_response(self.world.message_json(message))

    async def webhook_message_delete(self, ctx: Ctx) -> web.Response:
        interaction = self._webhook_interaction(ctx)
        message = self._webhook_message(ctx, interaction)
        await self.messages.remove_message(message, self.world.channels[message.channel_id])
        return web.Response(status=204)
