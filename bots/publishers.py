"""Build the publishers the configuration asks for."""

from __future__ import annotations

from bots.discord_publisher import DiscordPublisher
from bots.telegram_publisher import TelegramPublisher
from comms.enums import Platform
from comms.outbox.ports import Publisher
from comms.settings import Settings


def build_publishers(settings: Settings) -> dict[Platform, Publisher]:
    """One publisher per platform that has a token; a platform without one is not published to
    (its deliveries fail with a message naming the missing setting)."""
    publishers: dict[Platform, Publisher] = {}
    if settings.discord_token is not None:
        publishers[Platform.DISCORD] = DiscordPublisher(
            token=settings.discord_token.get_secret_value(),
            api_base=settings.discord_api_base,
            request_timeout=settings.platform_timeout_seconds,
        )
    if settings.telegram_token is not None:
        publishers[Platform.TELEGRAM] = TelegramPublisher(
            token=settings.telegram_token.get_secret_value(),
            api_base=settings.telegram_api_base,
            read_timeout=settings.platform_timeout_seconds,
        )
    return publishers
