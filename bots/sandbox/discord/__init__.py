"""The Discord emulator: REST v10 under ``/api/v10`` and the Gateway WebSocket, one module per
resource (see api.py for how they fit together), on top of ``discord_state.DiscordWorld``."""

from bots.sandbox.discord.api import DiscordAPI
from bots.sandbox.discord.errors import DiscordError
from bots.sandbox.discord.gateway import GATEWAY_PATH
from bots.sandbox.discord.routing import API_PREFIX

__all__ = ["API_PREFIX", "GATEWAY_PATH", "DiscordAPI", "DiscordError"]
