"""``DiscordAPI``: the Discord emulator as the sandbox mounts it. It composes one handler class per
resource (users, channels, messages, pins, threads, commands, interactions), the gateway, the rate
limits and the router, and holds the route table that maps each REST route to its handler."""

from __future__ import annotations

from bots.sandbox.core import SandboxCore
from bots.sandbox.discord.channels import Channels
from bots.sandbox.discord.commands import Commands
from bots.sandbox.discord.gateway import Gateway
from bots.sandbox.discord.interactions import Interactions
from bots.sandbox.discord.messages import Messages
from bots.sandbox.discord.pins import Pins
from bots.sandbox.discord.ratelimits import RateLimits
from bots.sandbox.discord.routing import Route, Router
from bots.sandbox.discord.threads import Threads
from bots.sandbox.discord.users import Users
from bots.sandbox.discord_state import DiscordWorld


class DiscordAPI:
    """Discord REST v10 (``router.handle`` under ``/api/v10``) and the Gateway WebSocket
    (``gateway.websocket``), on top of ``DiscordWorld``."""

    def __init__(self, core: SandboxCore, world: DiscordWorld) -> None:
        self.core = core
        self.world = world
        self.gateway = Gateway(core, world)
        self.users = Users(core, world, self.gateway)
        self.channels = Channels(core, world, self.gateway)
        self.messages = Messages(core, world, self.gateway)
        self.pins = Pins(core, world, self.gateway, self.messages)
        self.threads = Threads(core, world, self.gateway)
        self.commands = Commands(core, world, self.gateway)
        self.interactions = Interactions(core, world, self.gateway, self.messages)
        self.limits = RateLimits(core)
        self.router = Router(core, world, self.limits, self._build_routes())

    def reset_limits(self) -> None:
        self.limits.reset()

    def reset(self) -> None:
        self.reset_limits()
        self.interactions.reset()
        self.gateway.reset()

    def _build_routes(self) -> list[Route]:
        """Every REST route and its handler; ``Router`` orders them (literal segments first)."""
        r = Route
        routes = [
            r("GET", "/users/@me", self.users.get_me),
            r("GET", "/oauth2/applications/@me", self.users.get_application),
            r("POST", "/users/@me/channels", self.users.create_dm),
            r("GET", "/users/{user_id}", self.users.get_user),
            r("GET", "/gateway", self.gateway.get_gateway, auth=False),
            r("GET", "/gateway/bot", self.gateway.get_gateway_bot),
            r("GET", "/channels/{channel_id}", self.channels.get_channel),
            r("PATCH", "/channels/{channel_id}", self.channels.patch_channel),
            r("GET", "/channels/{channel_id}/messages", self.messages.list_messages),
            r(
                "POST",
                "/channels/{channel_id}/messages",
                self.messages.create_message,
                bucket="message_create",
            ),
            r("GET", "/channels/{channel_id}/messages/pins", self.pins.list_pins),
            r("PUT", "/channels/{channel_id}/messages/pins/{message_id}", self.pins.pin),
            r("DELETE", "/channels/{channel_id}/messages/pins/{message_id}", self.pins.unpin),
            r("GET", "/channels/{channel_id}/pins", self.pins.list_pins_legacy),
            r("PUT", "/channels/{channel_id}/pins/{message_id}", self.pins.pin),
            r("DELETE", "/channels/{channel_id}/pins/{message_id}", self.pins.unpin),
            r("GET", "/channels/{channel_id}/messages/{message_id}", self.messages.get_message),
            r("PATCH", "/channels/{channel_id}/messages/{message_id}", self.messages.edit_message),
            r(
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}",
                self.messages.delete_message,
            ),
            r(
                "POST",
                "/channels/{channel_id}/messages/{message_id}/crosspost",
                self.messages.crosspost,
            ),
            r(
                "POST",
                "/channels/{channel_id}/messages/{message_id}/threads",
                self.threads.start_thread,
            ),
            r("POST", "/guilds/{guild_id}/channels", self.channels.create_guild_channel),
            r("GET", "/guilds/{guild_id}/channels", self.channels.list_guild_channels),
            r("GET", "/applications/{application_id}/commands", self.commands.list_commands),
            r("PUT", "/applications/{application_id}/commands", self.commands.put_commands),
            r(
                "GET",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self.commands.list_commands,
            ),
            r(
                "PUT",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self.commands.put_commands,
            ),
            r(
                "POST",
                "/interactions/{interaction_id}/{interaction_token}/callback",
                self.interactions.interaction_callback,
                auth=False,
                bucket="interaction",
            ),
            r(
                "POST",
                "/webhooks/{application_id}/{interaction_token}",
                self.interactions.followup_create,
                auth=False,
                bucket="interaction",
            ),
        ]
        for method, handler in (
            ("GET", self.interactions.webhook_message_get),
            ("PATCH", self.interactions.webhook_message_edit),
            ("DELETE", self.interactions.webhook_message_delete),
        ):
            routes.append(
                r(
                    method,
                    "/webhooks/{application_id}/{interaction_token}/messages/@original",
                    handler,
                    auth=False,
                    bucket="interaction",
                )
            )
            routes.append(
                r(
                    method,
                    "/webhooks/{application_id}/{interaction_token}/messages/{message_id}",
                    handler,
                    auth=False,
                    bucket="interaction",
                )
            )
        return routes
