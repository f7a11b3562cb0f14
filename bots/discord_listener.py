"""Listening on Discord for community reports (discord.py over the Gateway).

During an exploit members tell the bot what they see: by mentioning it, by replying to one of
its messages, in a DM, or with ``/report``. Every such message goes to the intake
(``comms/detections/intake.py``), which stores it and decides the answer; this module only
recognises reports and posts the answers the intake chose. Nothing a reporter wrote is ever
posted back (the acknowledgement is a fixed template), and every answer pings nobody.

The bot runs without the privileged message-content intent: Discord still delivers the content
of DMs and of messages that mention the bot, which are exactly the reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket

from bots.discord_publisher import use_api_base
from comms.detections.intake import Intake, Taken, ack_texts
from comms.detections.models import DetectionSource
from comms.detections.service import Report
from comms.enums import Platform
from comms.settings import Settings

log = logging.getLogger("comms.discord.listener")

REPORT_COMMAND = "report"
REPORT_DESCRIPTION = "Report a problem (a scam, a suspicious link, funds at risk) to the team"
REPORT_OPTION = "text"
REPORT_OPTION_DESCRIPTION = "What happened: an address, a transaction, a link"
# Discord drops an interaction that gets no first response within 3 s; answering after
# ANSWER_WITHIN leaves room for the request itself, otherwise we defer and follow up.
INTERACTION_DEADLINE = 3.0
ANSWER_WITHIN = 2.0
NO_MENTIONS = discord.AllowedMentions.none()
# Answers to a /report whose acknowledgement the intake withheld (rationed or over the limit):
# an interaction must be answered, or the member sees "The application did not respond" and
# reports again. Ephemeral answers are seen by the reporter only and cost no channel posts.
RECEIVED = "Thank you, we have received your report. Reference: `{reference}`"
ALREADY_RECEIVED = "Thank you, we have received your reports; the team is on it."
SEND_ERRORS = (discord.HTTPException, aiohttp.ClientError, OSError, TimeoutError)


class ListenerError(RuntimeError):
    """The listener could not log in or connect."""


def _definition(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of an application command that Discord's copy must match, normalised so that
    the tree's ``to_dict`` and Discord's answer compare equal when nothing changed."""
    contexts = raw.get("contexts")
    return {
        "name": raw["name"],
        "type": int(raw.get("type") or 1),
        "description": raw.get("description") or "",
        "options": [_option(o) for o in raw.get("options") or []],
        "contexts": sorted(contexts) if contexts is not None else None,
    }


def _option(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": raw["name"],
        "type": int(raw["type"]),
        "description": raw.get("description") or "",
        "required": bool(raw.get("required", False)),
        "choices": [(c["name"], c["value"]) for c in raw.get("choices") or []],
        "options": [_option(o) for o in raw.get("options") or []],
    }


def _definitions(commands: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return sorted((_definition(c) for c in commands), key=lambda d: (d["name"], d["type"]))


class _Client(discord.Client):
    """discord.Client handing its events to the listener."""

    def __init__(self, listener: DiscordListener, **options: Any) -> None:
        super().__init__(**options)
        self.listener = listener

    async def on_ready(self) -> None:
        self.listener._ready.set()

    async def on_message(self, message: discord.Message) -> None:
        await self.listener._on_message(message)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        await self.listener._on_edit(payload)


class DiscordListener:
    """Takes community reports from Discord into the intake and posts the intake's answers."""

    def __init__(
        self,
        settings: Settings,
        intake: Intake,
        *,
        ready_timeout: float = 30.0,
        guild_ready_timeout: float = 2.0,
        combined_every: float = 5.0,
    ) -> None:
        if settings.discord_token is None:
            raise ListenerError("COMMS_DISCORD_TOKEN is not set")
        self.settings = settings
        self.intake = intake
        self._token = settings.discord_token.get_secret_value()
        self._ready_timeout = ready_timeout
        self._combined_every = combined_every
        self._ready = asyncio.Event()
        # Guilds for the server list, guild and DM messages for reports; not the privileged
        # message content: mentions and DMs carry their content anyway.
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.dm_messages = True
        self.client = _Client(
            self,
            intents=intents,
            allowed_mentions=NO_MENTIONS,
            guild_ready_timeout=guild_ready_timeout,
            max_ratelimit_timeout=30.0,
        )
        self.tree = app_commands.CommandTree(self.client)
        self.tree.add_command(self._report_command())
        self._gateway_task: asyncio.Task[None] | None = None
        self._combined_task: asyncio.Task[None] | None = None
        self.synced = False  # whether the last start had to register the commands again

    # --- life ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Log in, register ``/report`` if Discord's copy differs, connect to the Gateway in
        the background and return once ready; raises ListenerError (or the library's error)
        when that fails."""
        use_api_base(self.settings.discord_api_base)
        try:
            await self._connect()
        except BaseException:
            await self.stop()  # the HTTP session login opened, and a half-open Gateway
            raise
        self._combined_task = asyncio.create_task(self._post_combined(), name="discord-combined")
        user = self.client.user
        log.info("Discord listener ready as %s", user.name if user else "?")

    async def _connect(self) -> None:
        try:
            await self.client.login(self._token)
        except discord.LoginFailure as error:
            raise ListenerError(f"Discord refused the bot token: {error}") from None
        # The plain Client connects to DEFAULT_GATEWAY; ask the API where its Gateway is (a
        # proxy or the sandbox answers with its own).
        found = await self.client.http.request(discord.http.Route("GET", "/gateway"))
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(found["url"])
        try:
            self.synced = await self.sync_commands()
        except SEND_ERRORS:
            # Mentions, replies and DMs still work without the command.
            log.exception("could not register the /report command")
        gateway = asyncio.create_task(self.client.connect(reconnect=True), name="discord-gateway")
        gateway.add_done_callback(_gateway_ended)
        self._gateway_task = gateway
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait(
            {ready, gateway}, timeout=self._ready_timeout, return_when="FIRST_COMPLETED"
        )
        if ready in done:
            return
        ready.cancel()
        if gateway.done() and not gateway.cancelled() and gateway.exception() is not None:
            raise ListenerError(f"Discord Gateway: {gateway.exception()!r}")
        raise ListenerError(f"Discord Gateway not ready within {self._ready_timeout:g} s")

    async def stop(self) -> None:
        """Close the Gateway and the HTTP session; idempotent."""
        if self._combined_task is not None:
            self._combined_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._combined_task
            self._combined_task = None
        await self.client.close()
        if self._gateway_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._gateway_task, 10)
            self._gateway_task = None
        self._ready.clear()

    async def sync_commands(self) -> bool:
        """Register the tree's commands only when Discord's global commands differ (Discord
        allows 200 command creates a day): ``True`` when it synced."""
        application_id = self.client.application_id
        assert application_id is not None  # set by login
        registered = await self.client.http.get_global_commands(application_id)
        wanted = [command.to_dict(self.tree) for command in self.tree.get_commands()]
        if _definitions(registered) == _definitions(wanted):
            return False
        await self.tree.sync()
        log.info("registered the Discord application commands again")
        return True

    # --- messages -----------------------------------------------------------------------

    async def _on_message(self, message: discord.Message) -> None:
        try:
            text = await self._report_text(message)
            if text is None:
                return
            taken = await self.intake.take(self._message_report(message, text), chat=_chat(message))
        except Exception:
            log.exception("Discord message %s: report not taken", message.id)
            return
        await self._answer_message(message, taken)

    async def _report_text(self, message: discord.Message) -> str | None:
        """The report in ``message`` with the bot's mention removed, or None when the message
        does not address the bot (or comes from a bot or a webhook)."""
        me = self.client.user
        if me is None or message.author.bot or message.webhook_id is not None:
            return None
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return None
        # Not mentioned_in(): that is also true for @everyone and @here.
        addressed = (
            message.guild is None
            or any(user.id == me.id for user in message.mentions)
            or await self._replies_to_me(message, me.id)
        )
        if not addressed:
            return None
        return _without_mention(message.content, me.id)

    async def _replies_to_me(self, message: discord.Message, my_id: int) -> bool:
        reference = message.reference
        if message.type is not discord.MessageType.reply or reference is None:
            return False
        resolved = reference.resolved or reference.cached_message
        if isinstance(resolved, discord.Message):
            return resolved.author.id == my_id
        if reference.message_id is None or isinstance(resolved, discord.DeletedReferencedMessage):
            return False
        try:
            replied = await message.channel.fetch_message(reference.message_id)
        except SEND_ERRORS:
            return False
        return replied.author.id == my_id

    def _message_report(self, message: discord.Message, text: str) -> Report:
        guild = message.guild
        channel = message.channel
        location = {"guild": str(guild.id) if guild else "@me", "channel": str(channel.id)}
        if guild is not None:
            location["guild_name"] = guild.name
        name = getattr(channel, "name", None)
        if isinstance(name, str):
            location["channel_name"] = name
        return Report(
            source=DetectionSource.DISCORD,
            text=text,
            external_id=str(message.id),
            reporter_id=str(message.author.id),
            reporter_name=str(message.author),
            reporter_created_at=discord.utils.snowflake_time(message.author.id),
            location=location,
            message_url=self.settings.discord_message_url.format(
                guild_id=guild.id if guild else "@me",
                channel_id=channel.id,
                message_id=message.id,
            ),
        )

    async def _answer_message(self, message: discord.Message, taken: Taken) -> None:
        """Reply with the prompt or the acknowledgement (its first message as the reply, any
        further ones after it), pinging nobody; failures are logged, the report is stored."""
        texts: tuple[str, ...] = ()
        if taken.prompt is not None:
            texts = (taken.prompt,)
        elif taken.ack is not None:
            texts = ack_texts(taken.ack, Platform.DISCORD)
        try:
            for index, text in enumerate(texts):
                if index == 0:
                    await message.reply(text, mention_author=False, allowed_mentions=NO_MENTIONS)
                else:
                    await message.channel.send(text, allowed_mentions=NO_MENTIONS)
        except SEND_ERRORS as error:
            log.warning("Discord message %s: answer not sent: %r", message.id, error)

    async def _on_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """An edited report updates its detection; never a new one, no new answer."""
        if "content" not in payload.data:
            return
        me = self.client.user
        message = payload.message
        if me is None or message.author.bot or message.webhook_id is not None:
            return
        text = _without_mention(message.content, me.id)
        if not text.strip():
            # Hidden (no content intent once the mention is gone) or emptied: keep the report.
            return
        try:
            await self.intake.edit(DetectionSource.DISCORD, str(payload.message_id), text)
        except Exception:
            log.exception("Discord message %s: edit not recorded", payload.message_id)

    # --- /report --------------------------------------------------------------------------

    def _report_command(self) -> app_commands.Command[Any, ..., None]:
        listener = self

        @app_commands.command(name=REPORT_COMMAND, description=REPORT_DESCRIPTION)
        @app_commands.describe(text=REPORT_OPTION_DESCRIPTION)
        @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
        async def report(interaction: discord.Interaction, text: str) -> None:
            await listener._on_report_command(interaction, text)

        return report

    async def _on_report_command(self, interaction: discord.Interaction, text: str) -> None:
        """Take the report and answer ephemerally within the 3 s deadline: directly when the
        intake is quick enough, otherwise defer first and follow up."""
        user = interaction.user
        guild_id = interaction.guild_id
        channel_id = interaction.channel_id or 0
        report = Report(
            source=DetectionSource.DISCORD,
            text=text,
            external_id=f"interaction:{interaction.id}",
            reporter_id=str(user.id),
            reporter_name=str(user),
            reporter_created_at=discord.utils.snowflake_time(user.id),
            location={"guild": str(guild_id) if guild_id else "@me", "channel": str(channel_id)},
        )
        taking = asyncio.create_task(self.intake.take(report, chat=f"discord:{channel_id}"))
        # Measured from receipt and from the interaction's own timestamp, whichever is
        # stricter, so that neither a slow delivery nor clock skew makes us miss the deadline.
        age = (datetime.now(UTC) - interaction.created_at).total_seconds()
        budget = max(0.0, min(ANSWER_WITHIN, INTERACTION_DEADLINE - 0.5 - age))
        done, _ = await asyncio.wait({taking}, timeout=budget)
        deferred = False
        if not done:
            try:
                await interaction.response.defer(ephemeral=True, thinking=True)
                deferred = True
            except SEND_ERRORS as error:
                log.warning("interaction %s: defer failed: %r", interaction.id, error)
        try:
            taken = await taking
        except Exception:
            log.exception("interaction %s: report not taken", interaction.id)
            return
        try:
            await self._answer_interaction(interaction, taken, deferred=deferred)
        except SEND_ERRORS as error:
            log.warning("interaction %s: answer not sent: %r", interaction.id, error)

    async def _answer_interaction(
        self, interaction: discord.Interaction, taken: Taken, *, deferred: bool
    ) -> None:
        if taken.prompt is not None:
            texts: tuple[str, ...] = (taken.prompt,)
        elif taken.ack is not None:
            texts = ack_texts(taken.ack, Platform.DISCORD)
        elif taken.reference is not None:
            texts = (RECEIVED.format(reference=taken.reference),)
        else:
            texts = (ALREADY_RECEIVED,)
        for index, text in enumerate(texts):
            if index == 0 and deferred:
                # Replaces the "thinking" placeholder, which is already ephemeral.
                await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)
            elif index == 0:
                await interaction.response.send_message(
                    text, ephemeral=True, allowed_mentions=NO_MENTIONS
                )
            else:
                await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)

    # --- combined answers ---------------------------------------------------------------

    async def _post_combined(self) -> None:
        """Post the intake's "we have received N reports" answers for Discord channels."""
        while True:
            await asyncio.sleep(self._combined_every)
            try:
                due = self.intake.combined_due("discord:")
            except Exception:
                log.exception("combined answers: intake failed")
                continue
            for chat, text in due:
                platform, _, channel_id = chat.partition(":")
                if platform != "discord" or not channel_id.isdigit():
                    continue
                channel = self.client.get_partial_messageable(int(channel_id))
                try:
                    await channel.send(text, allowed_mentions=NO_MENTIONS)
                except SEND_ERRORS as error:
                    log.warning("combined answer to %s not sent: %r", chat, error)


def _gateway_ended(task: asyncio.Task[None]) -> None:
    """A Gateway that ends on its own (a revoked token, disallowed intents) is logged: the
    reports stop arriving, and nothing else would say so."""
    if not task.cancelled() and task.exception() is not None:
        log.error("Discord Gateway connection ended: %r", task.exception())


def _chat(message: discord.Message) -> str:
    return f"discord:{message.channel.id}"


def _without_mention(content: str, user_id: int) -> str:
    """The content without the bot's own mentions (``<@id>`` and the legacy ``<@!id>``)."""
    return re.sub(rf"<@!?{user_id}>", " ", content).strip()
