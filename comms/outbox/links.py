"""Links to sent messages, for the panel's deliveries page and the Incident Log."""

from __future__ import annotations

from comms.destinations.models import Destination
from comms.enums import Platform
from comms.outbox.models import Delivery
from comms.settings import Settings


def _telegram_short(chat_id: str) -> str:
    """t.me/c/ links use a channel's or supergroup's id without the -100 prefix."""
    return chat_id[4:] if chat_id.startswith("-100") else chat_id.lstrip("-@")


def message_links(delivery: Delivery, destination: Destination, settings: Settings) -> list[str]:
    """One URL per sent message; empty when the link cannot be built (e.g. no Discord server id)."""
    if not delivery.platform_message_ids:
        return []
    if destination.platform == Platform.DISCORD.value:
        template = settings.discord_message_url
        if "{guild_id}" in template and not destination.guild_id:
            return []
        thread = delivery.platform_thread_id
        # Follow-ups live in the thread; the message that opened it lives in the channel.
        channel = thread if thread and thread not in delivery.platform_message_ids else None
        return [
            template.format(
                guild_id=destination.guild_id,
                channel_id=channel or destination.target,
                message_id=mid,
            )
            for mid in delivery.platform_message_ids
        ]
    return [
        settings.telegram_message_url.format(
            chat_id=destination.target,
            chat_short=_telegram_short(destination.target),
            message_id=mid,
        )
        for mid in delivery.platform_message_ids
    ]
