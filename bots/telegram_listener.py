"""Listening for community reports on Telegram with python-telegram-bot.

Members report with ``/report@bot what happened``, by mentioning the bot, by replying to one of
its messages, or by writing to it in private. Everything else the bot sees is ignored: with
privacy mode off (or as a group administrator) it sees every group message, and most of them
are not meant for it. Each report goes to ``Intake.take``, which stores it (committed before we
answer) and decides the answer; the answer is a fixed text, never the reporter's words, because
whatever the bot posts in a public group reads as the team speaking.

The application is run piecewise (``initialize``, ``start``, ``updater.start_polling``) rather
than with ``run_polling``, which would own the event loop that the rest of the process shares.

Webhook mode (``COMMS_TELEGRAM_WEBHOOK_URL`` set): instead of polling, the listener calls
``setWebhook`` and registers itself with the panel's ``POST /telegram/webhook`` in this process
(``WebhookRegistry``, passed in by ``comms serve``), which hands it each update; the updates go
through ``Application.update_queue``, so the same handlers run as when polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any, Protocol

from telegram import (
    LinkPreviewOptions,
    Message,
    MessageEntity,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatType, ParseMode
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    BaseUpdateProcessor,
    ContextTypes,
    MessageHandler,
    filters,
)

from comms.detections.intake import Intake, ack_texts
from comms.detections.models import DetectionSource
from comms.detections.service import Report
from comms.enums import Platform
from comms.settings import ConfigError, Settings, telegram_webhook_url_problem

log = logging.getLogger("comms.telegram.listener")

CHAT_PREFIX = "telegram:"
# Only what reports can arrive in; everything else Telegram would send is never fetched.
ALLOWED_UPDATES = (Update.MESSAGE, Update.EDITED_MESSAGE)

AnyApplication = Application[Any, Any, Any, Any, Any, Any]
CONCURRENT_UPDATES = 256


class MessageOrder(BaseUpdateProcessor):
    """Updates are handled concurrently, so that a flood's reports share the intake's batches
    instead of waiting for each other's answers; but the updates of one message keep their
    order: an edit waits until its report is stored, or it would find nothing to update."""

    def __init__(self, max_concurrent_updates: int = CONCURRENT_UPDATES) -> None:
        super().__init__(max_concurrent_updates)
        self._last: dict[tuple[int, int], asyncio.Future[None]] = {}

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        message = (update.message or update.edited_message) if isinstance(update, Update) else None
        if message is None:
            await coroutine
            return
        key = (message.chat.id, message.message_id)
        before = self._last.get(key)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last[key] = done
        try:
            if before is not None:
                await before
            await coroutine
        finally:
            done.set_result(None)
            if self._last.get(key) is done:
                del self._last[key]

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


UpdateReceiver = Callable[[dict[str, Any]], None]


class WebhookRegistry(Protocol):
    """Where the panel's webhook route finds the running listener (``approvals`` implements
    it; ``bots`` may not import ``approvals``, so this is the shape only)."""

    def register(self, receiver: UpdateReceiver) -> None: ...

    def unregister(self, receiver: UpdateReceiver) -> None: ...


class Kind(Enum):
    REPORT = "report"
    HELP = "help"


@dataclass(frozen=True)
class Addressed:
    """A message meant for the bot: a report (its text with the command or mention removed,
    and the links hidden in ``text_link`` entities) or a request for help."""

    kind: Kind
    text: str = ""
    hidden_urls: tuple[str, ...] = ()


def _utf16_cut(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """``text`` without the ``(offset, length)`` spans, counted in UTF-16 code units as
    Telegram counts entity offsets (an emoji before a mention shifts it by two)."""
    data = text.encode("utf-16-le")
    pieces: list[str] = []
    position = 0
    for offset, length in sorted(spans):
        start, end = offset * 2, (offset + length) * 2
        if start < position:
            continue  # overlapping spans: the first one already removed this part
        pieces.append(data[position:start].decode("utf-16-le", errors="replace"))
        position = end
    pieces.append(data[position:].decode("utf-16-le", errors="replace"))
    # Where something was cut out of a line, the words on either side are one space apart.
    joined = pieces[0]
    for piece in pieces[1:]:
        left, right = joined.rstrip(" \t"), piece.lstrip(" \t")
        gap = " " if left and right and left[-1] != "\n" and right[0] != "\n" else ""
        joined = left + gap + right
    return joined.strip(" \t\r\n,:;")


def classify(message: Message, *, bot_id: int, bot_username: str) -> Addressed | None:
    """What ``message`` asks of the bot, or ``None`` when it is not meant for it.

    Pure, so the rules can be read in one place: messages from bots (other bots and our own)
    and automatic forwards of channel posts are never reports; a command for another bot is not
    ours; in groups only ``/report``, a mention of the bot or a reply to it counts, while in a
    private chat everything does except ``/start`` and ``/help``.
    """
    sender = message.from_user
    if sender is None or sender.is_bot or message.is_automatic_forward:
        return None
    chat = message.chat
    if chat.type == ChatType.CHANNEL:
        return None
    private = chat.type == ChatType.PRIVATE
    text = message.text if message.text is not None else (message.caption or "")
    entities: Sequence[MessageEntity] = (
        message.entities if message.text is not None else message.caption_entities
    )
    parse = message.parse_entity if message.text is not None else message.parse_caption_entity
    username = bot_username.lower()
    hidden = tuple(e.url for e in entities if e.type == MessageEntity.TEXT_LINK and e.url)
    cut: list[tuple[int, int]] = []
    addressed = private

    first = entities[0] if entities else None
    if first is not None and first.type == MessageEntity.BOT_COMMAND and first.offset == 0:
        command, _, target = parse(first)[1:].lower().partition("@")
        if target and target != username:
            return None  # /cmd@otherbot
        if command == "help" or (command == "start" and (private or target)):
            return Addressed(Kind.HELP)
        if command == "report":
            addressed = True
            cut.append((first.offset, first.length))
    for entity in entities:
        by_name = entity.type == MessageEntity.MENTION and parse(entity).lower() == f"@{username}"
        user_id = entity.user.id if entity.user is not None else None
        by_user = entity.type == MessageEntity.TEXT_MENTION and user_id == bot_id
        if by_name or by_user:
            addressed = True
            cut.append((entity.offset, entity.length))
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == bot_id:
        addressed = True
    if not addressed:
        return None
    return Addressed(Kind.REPORT, _utf16_cut(text, cut), hidden)


def help_text(bot_username: str, protocol_name: str) -> str:
    """The answer to /help. Groups need the bot's name in the command: with privacy mode on
    (the default) a bare /report in a group reaches the bot only when it was the last bot to
    post there."""
    return (
        f"To report a problem with {protocol_name} (a suspicious address, transaction or "
        f"link), write in the group:\n/report@{bot_username} what happened\n"
        f"or mention @{bot_username} in your message. In a private chat with me, just write "
        "what happened.\n\n"
        "Stay safe: our team will never send you a direct message first, and will never ask "
        "for your seed phrase, private keys or a signature."
    )


def _chat_short(chat_id: int) -> str:
    """t.me/c/ links use a supergroup's or channel's id without the -100 prefix."""
    raw = str(chat_id)
    return raw[4:] if raw.startswith("-100") else raw.lstrip("-")


class TelegramListener:
    """Long-polls Telegram (or, in webhook mode, takes the updates the panel receives) for
    community reports and hands them to the intake.

    ``poll_timeout`` is the long poll's length (Telegram holds ``getUpdates`` that long when
    nothing happens); ``combined_interval`` is how often the flood answers are checked;
    ``webhook`` is the panel's registry in this process, needed in webhook mode only.
    """

    def __init__(
        self,
        settings: Settings,
        intake: Intake,
        *,
        poll_timeout: int = 10,
        combined_interval: float = 5.0,
        webhook: WebhookRegistry | None = None,
    ) -> None:
        if settings.telegram_token is None:
            raise ValueError("COMMS_TELEGRAM_TOKEN is not set: the Telegram listener needs it")
        self._settings = settings
        self._intake = intake
        self._webhook = webhook
        self._registered = False
        self._poll_timeout = poll_timeout
        self._combined_interval = combined_interval
        # A 429 on an answer waits once and retries; the client-side limits keep us under
        # Telegram's 20 messages a minute per group and 30 a second overall.
        self._app: AnyApplication = (
            ApplicationBuilder()
            .token(settings.telegram_token.get_secret_value())
            .base_url(settings.telegram_api_base)
            .rate_limiter(AIORateLimiter(max_retries=1))
            .concurrent_updates(MessageOrder())
            .build()
        )
        self._app.add_handler(MessageHandler(filters.UpdateType.MESSAGES, self._on_message))
        self._app.add_error_handler(self._on_error)
        self._combined: asyncio.Task[None] | None = None
        self._running = False

    @property
    def application(self) -> AnyApplication:
        return self._app

    @property
    def webhook_mode(self) -> bool:
        return self._settings.telegram_webhook_url is not None

    def _webhook_config(self) -> tuple[str, str, WebhookRegistry]:
        """The URL, the secret and the registry, or a ConfigError naming the setting. Checked
        here too because settings built with ``model_copy`` skip the validators."""
        url = self._settings.telegram_webhook_url
        assert url is not None
        problem = telegram_webhook_url_problem(url)
        if problem is not None:
            raise ConfigError(f"COMMS_TELEGRAM_WEBHOOK_URL: {problem}")
        secret = self._settings.telegram_webhook_token()
        if secret is None:
            raise ConfigError(
                "COMMS_TELEGRAM_WEBHOOK_SECRET: needed in webhook mode (or set COMMS_SECRET_KEY "
                "and one is derived from it)"
            )
        if self._webhook is None:
            raise ConfigError(
                "COMMS_TELEGRAM_WEBHOOK_URL: webhook mode needs the Telegram listener in the "
                "panel's process: run `comms serve` (one process, without --no-bots), not "
                "`comms bots` or `comms serve --workers N`; or unset it to long-poll"
            )
        return url, secret, self._webhook

    async def start(self) -> None:
        """Connect (getMe: the bot's username is needed to recognise ``/report@bot``) and
        poll in the background, or set the webhook. Pending updates are kept either way:
        reports sent while the listener was down are still reports (Telegram keeps them for
        24 hours)."""
        webhook = self._webhook_config() if self.webhook_mode else None
        await self._app.initialize()
        try:
            await self._app.start()
            if webhook is not None:
                await self._start_webhook(*webhook)
            else:
                assert self._app.updater is not None
                # Bootstrapping calls deleteWebhook first: unsetting the URL returns to polling.
                await self._app.updater.start_polling(
                    poll_interval=0.0,
                    timeout=timedelta(seconds=self._poll_timeout),
                    allowed_updates=list(ALLOWED_UPDATES),
                    drop_pending_updates=False,
                    error_callback=self._on_poll_error,
                )
        except BaseException:
            self._unregister()
            await self._shutdown()
            raise
        self._running = True
        self._combined = asyncio.create_task(self._post_combined(), name="telegram-combined")
        how = "by webhook" if webhook is not None else "polling"
        log.info("Telegram listener %s as @%s", how, self._app.bot.username)

    async def _start_webhook(self, url: str, secret: str, registry: WebhookRegistry) -> None:
        """Register with the panel before ``setWebhook``, so the first push finds us. Pending
        updates are kept; the webhook stays set when we stop (``stop``)."""
        registry.register(self.accept_update)
        self._registered = True
        await self._app.bot.set_webhook(
            url=url,
            secret_token=secret,
            allowed_updates=list(ALLOWED_UPDATES),
            drop_pending_updates=False,
        )

    def accept_update(self, data: dict[str, Any]) -> None:
        """An update the panel received by webhook: queued for the same handlers as a polled
        one (``Application.update_queue``, unbounded). Raises when ``data`` is no Update."""
        update = Update.de_json(data, self._app.bot)
        self._app.update_queue.put_nowait(update)

    def _unregister(self) -> None:
        if self._registered and self._webhook is not None:
            self._webhook.unregister(self.accept_update)
        self._registered = False

    async def stop(self) -> None:
        """Stop polling (confirming the offsets of handled updates), finish the update in
        hand, and close the connections. Safe to call twice.

        In webhook mode the panel stops handing us updates first (it answers 503 and Telegram
        keeps them), the ones already queued are handled, and the webhook stays set: deleting
        it would have Telegram hold updates for a getUpdates nobody makes, and a restart must
        not lose any. ``deleteWebhook`` (or starting without the URL) returns to polling."""
        self._unregister()
        if self._combined is not None:
            self._combined.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._combined
            self._combined = None
        if self._running:
            self._running = False
            await self._shutdown()

    async def _shutdown(self) -> None:
        updater = self._app.updater
        if updater is not None and updater.running:
            await updater.stop()
        if self._app.running:
            await self._app.stop()
        await self._app.shutdown()

    # --- updates ------------------------------------------------------------------------

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        edited = update.edited_message is not None
        message = update.edited_message or update.message
        if message is None:
            return
        bot = self._app.bot
        found = classify(message, bot_id=bot.id, bot_username=bot.username)
        if found is None:
            return
        if found.kind is Kind.HELP:
            if not edited:
                await self._answer(
                    message, help_text(bot.username, self._settings.protocol_name), html=False
                )
            return
        if edited:
            await self._edit(message, found)
        else:
            await self._take(message, found)

    async def _take(self, message: Message, found: Addressed) -> None:
        user = message.from_user
        assert user is not None  # classify() refuses messages without a sender
        chat = message.chat
        report = Report(
            source=DetectionSource.TELEGRAM,
            text=found.text,
            external_id=f"{chat.id}:{message.message_id}",
            reporter_id=str(user.id),
            reporter_name=user.full_name or user.username or "",
            location={"chat": str(chat.id), "chat_title": chat.title or ""},
            message_url=self._settings.telegram_message_url.format(
                chat_id=chat.id, chat_short=_chat_short(chat.id), message_id=message.message_id
            ),
            hidden_urls=found.hidden_urls,
        )
        taken = await self._intake.take(report, chat=f"{CHAT_PREFIX}{chat.id}")
        if taken.detection is not None:
            log.info("report %s from chat %s", taken.reference, chat.id)
        if taken.prompt is not None:
            await self._answer(message, taken.prompt, html=False)
        if taken.ack is not None:
            for text in ack_texts(taken.ack, Platform.TELEGRAM):
                await self._answer(message, text, html=True)

    async def _edit(self, message: Message, found: Addressed) -> None:
        """An edited report updates its detection and is not answered again. An edit that
        leaves nothing keeps the earlier text: a report is never emptied after the fact."""
        if not found.text.strip() and not found.hidden_urls:
            return
        detection = await self._intake.edit(
            DetectionSource.TELEGRAM,
            f"{message.chat.id}:{message.message_id}",
            found.text,
            hidden_urls=found.hidden_urls,
        )
        if detection is not None:
            log.info("report %s edited", detection.reference)

    async def _answer(self, message: Message, text: str, *, html: bool) -> None:
        """Reply to ``message``; a failure (429 after one retry, 403 when the bot was removed,
        a network error) is logged: the report is already stored."""
        try:
            await self._app.bot.send_message(
                chat_id=message.chat.id,
                text=text,
                parse_mode=ParseMode.HTML if html else None,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                reply_parameters=ReplyParameters(
                    message_id=message.message_id, allow_sending_without_reply=True
                ),
            )
        except TelegramError as error:
            log.warning("cannot answer in chat %s: %s", message.chat.id, error)

    async def _post_combined(self) -> None:
        """Every few seconds, post the answers for reports held back during a flood. Nothing
        may end this loop but ``stop``: a dead loop would silently stop answering floods."""
        while True:
            await asyncio.sleep(self._combined_interval)
            try:
                await self._post_combined_once()
            except Exception:
                log.exception("posting the combined answers failed")

    async def _post_combined_once(self) -> None:
        for chat, text in self._intake.combined_due(CHAT_PREFIX):
            chat_id = int(chat.removeprefix(CHAT_PREFIX))
            try:
                await self._app.bot.send_message(
                    chat_id=chat_id,
                    text=text,
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                )
            except TelegramError as error:
                log.warning("cannot post the combined answer in chat %s: %s", chat_id, error)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A failing update (e.g. the database is unreachable) is logged and skipped; the
        listener keeps polling."""
        log.error("handling a Telegram update failed", exc_info=context.error)

    def _on_poll_error(self, error: TelegramError) -> None:
        log.warning("getUpdates failed (retrying): %s", error)
