"""What every REST resource shares: the core, the world, the gateway to send events on, and the
lookups and permission checks that answer Unknown Channel, Missing Access and the like."""

from __future__ import annotations

from bots.sandbox import discord_state as ds
from bots.sandbox.core import SandboxCore
from bots.sandbox.discord.errors import MISSING_ACCESS, MISSING_PERMISSIONS, DiscordError, unknown
from bots.sandbox.discord.gateway import Gateway
from bots.sandbox.discord_state import Channel, DiscordWorld, Message


class Resource:
    """Base of the per-resource handler classes that ``DiscordAPI`` composes."""

    def __init__(self, core: SandboxCore, world: DiscordWorld, gateway: Gateway) -> None:
        self.core = core
        self.world = world
        self.gateway = gateway

    def channel(self, channel_id: int) -> Channel:
        channel = self.world.channels.get(channel_id)
        if channel is None:
            raise unknown("Channel")
        return channel

    def visible_channel(self, channel_id: int, user_id: int = ds.BOT_ID) -> Channel:
        channel = self.channel(channel_id)
        if not self.world.can_see(channel, user_id):
            raise DiscordError(*MISSING_ACCESS)
        return channel

    def message_in(self, channel: Channel, message_id: int) -> Message:
        message = channel.messages.get(message_id)
        if message is None or message.visible_to is not None:
            raise unknown("Message")
        return message

    def require(self, channel: Channel, permission: int, user_id: int = ds.BOT_ID) -> None:
        if not self.world.permissions(channel, user_id) & permission:
            raise DiscordError(*MISSING_PERMISSIONS)

    @staticmethod
    def ensure_thread_open(channel: Channel) -> None:
        if channel.is_thread and channel.archived:
            raise DiscordError(400, 50083, "Thread is archived")
