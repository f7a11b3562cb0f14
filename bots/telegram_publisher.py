"""Publishing to Telegram with python-telegram-bot.

Telegram has no idempotency key, so the outcome of a request matters: a refused connection or a
429 certainly did not post (retry), a read timeout or a dropped reply may have posted (the
delivery becomes ``uncertain`` for a person). Messages go out as HTML, link previews off unless
the draft asks, follow-ups as replies to the incident's first announcement in the chat.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from aiolimiter import AsyncLimiter
from telegram import LinkPreviewOptions, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import AIORateLimiter, ExtBot
from telegram.request import HTTPXRequest

from comms.enums import Platform
from comms.outbox.ports import (
    Outcome,
    ProgressCallback,
    PublishError,
    SendJob,
    SendResult,
    WireCallback,
)

log = logging.getLogger("comms.telegram")
T = TypeVar("T")

# httpx errors raised before the request could reach the server: retrying cannot duplicate.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _retry_after_seconds(error: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def classify(error: TelegramError) -> PublishError:
    """Map a python-telegram-bot error to what the outbox should do about it."""
    if isinstance(error, RetryAfter):
        seconds = _retry_after_seconds(error)
        return PublishError(
            f"429 Too Many Requests: retry after {seconds:g} s",
            outcome=Outcome.TRANSIENT,
            retry_after=seconds,
            status=429,
        )
    if isinstance(error, ChatMigrated):
        return PublishError(
            f"the group became a supergroup with id {error.new_chat_id}; "
            "update the destination's target",
            outcome=Outcome.PERMANENT,
        )
    if isinstance(error, BadRequest):
        return PublishError(
            f"400 Bad Request: {error.message}", outcome=Outcome.PERMANENT, status=400
        )
    if isinstance(error, Forbidden):
        return PublishError(
            f"403 Forbidden: {error.message}", outcome=Outcome.PERMANENT, status=403
        )
    if isinstance(error, InvalidToken):
        return PublishError(
            f"401 Unauthorized: {error.message}", outcome=Outcome.PERMANENT, status=401
        )
    cause = error.__cause__
    if isinstance(error, TimedOut | NetworkError) and isinstance(cause, NOT_SENT):
        return PublishError(f"cannot reach Telegram: {cause!r}", outcome=Outcome.TRANSIENT)
    if isinstance(error, TimedOut):
        return PublishError("no answer from Telegram in time", outcome=Outcome.AMBIGUOUS)
    if isinstance(error, NetworkError) and isinstance(cause, httpx.HTTPError):
        return PublishError(f"connection lost: {cause!r}", outcome=Outcome.AMBIGUOUS)
    # An HTTP 5xx answer: Telegram reports it did not process the request.
    return PublishError(f"Telegram server error: {error.message}", outcome=Outcome.TRANSIENT)


# The hook of the message this task is about to send (see ``_WireLimiter``).
_ON_WIRE: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "telegram_on_wire", default=None
)


class _WireLimiter(AIORateLimiter):
    """PTB's limiter, calling the sending task's on-wire hook once the limits let its request
    go: the moment the outbox must count the message as possibly sent. Marking it before the
    wait meant a worker killed during a fan-out left every delivery queued in the limiter (177
    of 500 in one run) in doubt, waiting for a person."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        hook = _ON_WIRE.get()
        if hook is None:
            return await super().process_request(
                callback, args, kwargs, endpoint, data, rate_limit_args
            )
        _ON_WIRE.set(None)  # one request per hook
        on_wire: Callable[[], Awaitable[None]] = hook

        async def leaving_now(*a: Any, **kw: Any) -> Any:
            await on_wire()
            return await callback(*a, **kw)

        return await super().process_request(
            leaving_now, args, kwargs, endpoint, data, rate_limit_args
        )


class TelegramPublisher:
    platform = Platform.TELEGRAM

    def __init__(
        self,
        *,
        token: str,
        api_base: str,
        read_timeout: float = 15.0,
        per_chat_rate: float = 1.0,
        overall_rate: float = 30.0,
        jitter_allowance: float = 0.1,
    ) -> None:
        request = HTTPXRequest(
            connection_pool_size=128,
            connect_timeout=5.0,
            read_timeout=read_timeout,
            write_timeout=read_timeout,
            pool_timeout=60.0,
        )
        # PTB's limiter keeps us under 30 messages/s overall and 20/min per group; it must
        # not retry by itself (max_retries=0): retries belong to the outbox, which records them.
        # The overall bucket refills at the full rate but holds ``overall_rate * jitter_allowance``
        # fewer messages than Telegram's: paced exactly at the limit, latency jitter made a
        # fan-out at full speed see 429s, each costing a second or more (the reasoning is at
        # ``bots.discord_publisher.paced``).
        overall = max(1.0, overall_rate - round(overall_rate * jitter_allowance))
        self._bot = ExtBot(
            token=token,
            base_url=api_base,
            request=request,
            rate_limiter=_WireLimiter(
                overall_max_rate=overall,
                overall_time_period=overall / overall_rate,
                max_retries=0,
            ),
        )
        self._per_chat_rate = per_chat_rate
        self._chat_limiters: defaultdict[str, AsyncLimiter] = defaultdict(
            lambda: AsyncLimiter(1, 1.0 / self._per_chat_rate)
        )
        self._started = False

    async def start(self) -> None:
        try:
            await self._bot.initialize()
        except TelegramError as error:
            raise classify(error) from None
        self._started = True
        log.info("Telegram publisher ready as @%s", self._bot.username)

    async def close(self) -> None:
        if self._started:
            await self._bot.shutdown()

    async def check(self) -> None:
        """getMe with the token: refused (401) while the token is revoked."""
        if not self._started:
            await self.start()
            return
        await self._call(self._bot.get_me())

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except TelegramError as error:
            raise classify(error) from None

    async def _post(
        self,
        job: SendJob,
        text: str,
        *,
        reply_to: str | None,
        index: int,
        on_wire: WireCallback | None,
    ) -> str:
        """One new message of ``job`` (the caller holds the chat's limiter); its id."""

        async def leaving() -> None:
            if on_wire is not None:
                await on_wire(index)

        token = _ON_WIRE.set(leaving)
        try:
            return await self._send_message(job, text, reply_to=reply_to)
        finally:
            _ON_WIRE.reset(token)

    async def _send_message(self, job: SendJob, text: str, *, reply_to: str | None) -> str:
        message = await self._call(
            self._bot.send_message(
                chat_id=job.target,
                text=text,
                parse_mode=ParseMode.HTML,
                disable_notification=job.silent,
                link_preview_options=LinkPreviewOptions(is_disabled=not job.link_previews),
                reply_parameters=ReplyParameters(
                    message_id=int(reply_to), allow_sending_without_reply=True
                )
                if reply_to
                else None,
            )
        )
        return str(message.message_id)

    async def send(
        self, job: SendJob, progress: ProgressCallback, on_wire: WireCallback | None = None
    ) -> SendResult:
        if not self._started:
            await self.start()
        previews = LinkPreviewOptions(is_disabled=not job.link_previews)
        chat = job.target
        ids = list(job.sent_ids)
        if job.edit_ids:
            # A correction: edit the original's messages in place; a longer correction posts
            # the rest as replies (as on Discord). Resumed after a crash from the first
            # message not yet recorded.
            ids = ids[: job.start_index]
            for index in range(job.start_index, len(job.messages)):
                async with self._chat_limiters[chat]:
                    if index < len(job.edit_ids):
                        await self._call(
                            self._bot.edit_message_text(
                                chat_id=chat,
                                message_id=int(job.edit_ids[index]),
                                text=job.messages[index],
                                parse_mode=ParseMode.HTML,
                                link_preview_options=previews,
                            )
                        )
                        ids.append(job.edit_ids[index])
                    else:
                        ids.append(
                            await self._post(
                                job,
                                job.messages[index],
                                reply_to=ids[-1],
                                index=index,
                                on_wire=on_wire,
                            )
                        )
                await progress(ids, last=index == len(job.messages) - 1)
            edited = min(len(ids), len(job.edit_ids))
            return SendResult(message_ids=ids, notes=[f"edited {edited} message(s) in place"])
        for index in range(job.start_index, len(job.messages)):
            reply_to = job.reply_to if index == 0 else ids[-1] if ids else None
            async with self._chat_limiters[chat]:
                ids.append(
                    await self._post(
                        job, job.messages[index], reply_to=reply_to, index=index, on_wire=on_wire
                    )
                )
            await progress(ids, last=index == len(job.messages) - 1 and not job.pin)
        if job.pin and ids:
            await self._call(
                self._bot.pin_chat_message(
                    chat_id=chat, message_id=int(ids[0]), disable_notification=job.silent
                )
            )
        return SendResult(message_ids=ids)

    async def notify(self, target: str, text: str, *, ping_role: str | None = None) -> str:
        if not self._started:
            await self.start()
        async with self._chat_limiters[target]:
            message = await self._call(
                self._bot.send_message(
                    chat_id=target,
                    text=text,
                    parse_mode=ParseMode.HTML,
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                )
            )
        return str(message.message_id)

    async def edit_notification(
        self, target: str, message_id: str, text: str, *, ping_role: str | None = None
    ) -> None:
        if not self._started:
            await self.start()
        async with self._chat_limiters[target]:
            try:
                await self._call(
                    self._bot.edit_message_text(
                        chat_id=target,
                        message_id=int(message_id),
                        text=text,
                        parse_mode=ParseMode.HTML,
                        link_preview_options=LinkPreviewOptions(is_disabled=True),
                    )
                )
            except PublishError as error:
                if "not modified" not in error.message:
                    raise
