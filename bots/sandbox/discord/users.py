"""Users and the application: ``/users/@me``, ``/users/{id}``, opening a DM
(``POST /users/@me/channels``) and ``/oauth2/applications/@me``."""

from __future__ import annotations

import hashlib

from aiohttp import web

from bots.sandbox.common import json_response
from bots.sandbox.discord.errors import DiscordError
from bots.sandbox.discord.forms import Form
from bots.sandbox.discord.resource import Resource
from bots.sandbox.discord.routing import Ctx


class Users(Resource):
    """The bot user, other users, DMs and the application."""

    async def get_me(self, ctx: Ctx) -> web.Response:
        data = self.world.bot.to_json()
        data.update({"mfa_enabled": False, "locale": "en-US", "verified": True, "email": None})
        return json_response(data)

    async def get_application(self, ctx: Ctx) -> web.Response:
        flags = (1 << 19) if self.world.message_content_allowed else 0  # CONTENT_LIMITED
        return json_response(
            {
                "id": str(self.world.application_id),
                "name": self.world.bot.global_name or self.world.bot.username,
                "icon": None,
                "description": "Incident comms sandbox bot",
                "type": None,
                "bot": self.world.bot.to_json(),
                "bot_public": False,
                "bot_require_code_grant": False,
                "verify_key": hashlib.sha256(b"sandbox").hexdigest(),
                "flags": flags,
                "flags_new": str(flags),
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "role_connections_verification_url": None,
                "owner": self.world.owner.to_json(),
                "approximate_guild_count": len(self.world.guilds),
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "explicit_content_filter": 0,
                "team": None,
                "eligible_oauth2_scopes": ["bot", "applications.commands"],
                "rpc_origins": [],
                "tags": [],
            }
        )

    async def get_user(self, ctx: Ctx) -> web.Response:
        user = self.world.users.get(ctx.params["user_id"])
        if user is None:
            raise DiscordError(404, 10013, "Unknown User")
        return json_response(user.to_json())

    async def create_dm(self, ctx: Ctx) -> web.Response:
        data = ctx.json_object()
        form = Form()
        recipient = form.snowflake(data, "recipient_id")
        if data.get("recipient_id") is None:
            form.add("recipient_id", "BASE_TYPE_REQUIRED", "This field is required")
        form.raise_if_any()
        user = self.world.users.get(recipient or 0)
        if user is None or user.bot:
            raise DiscordError(400, 50007, "Cannot send messages to this user")
        return json_response(self.world.channel_json(self.world.dm_channel(user)))
