"""Publishing to Discord with discord.py over REST (no gateway connection is needed to send).

Every message carries a deterministic nonce (delivery key + index) and discord.py adds
``enforce_nonce``, so a retry after a timeout or a crash returns the message Discord already
created instead of posting it twice. Mentions are off (``AllowedMentions.none()``) except
@everyone on an approved P1 alert where the destination allows it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

import aiohttp
import discord
from aiolimiter import AsyncLimiter

from comms.enums import Platform
from comms.outbox.ports import (
    Outcome,
    ProgressCallback,
    PublishError,
    SendJob,
    SendResult,
    WireCallback,
)

log = logging.getLogger("comms.discord")
T = TypeVar("T")

ALREADY_CROSSPOSTED = 40033
THREAD_EXISTS = 160004


def paced(rate: float, jitter: float) -> AsyncLimiter:
    """A client-side bucket refilled at the platform's full ``rate`` per second, holding
    ``rate * jitter`` fewer tokens than the platform's bucket (which holds ``rate``).

    Paced exactly at the limit, a request released on time is refused whenever it reaches the
    platform sooner, relative to the first request of the burst, than that one did: latency
    varies (more so while the event loop is busy with the outbox's own work), and a fan-out at
    full speed saw 429s on both platforms. The missing tokens absorb up to ``jitter`` seconds of
    such variation and cost ``jitter`` seconds once per burst; the sustained rate stays the
    platform's.
    """
    capacity = max(1.0, rate - round(rate * jitter))
    return AsyncLimiter(capacity, capacity / rate)


def use_api_base(api_base: str) -> None:
    """Point discord.py at ``api_base`` (a REST proxy in production, the sandbox in tests).

    discord.py builds every URL from the class attribute ``Route.BASE``.
    """
    discord.http.Route.BASE = api_base.rstrip("/")


class DiscordPublisher:
    platform = Platform.DISCORD

    def __init__(
        self,
        *,
        token: str,
        api_base: str,
        request_timeout: float = 15.0,
        global_rate: float = 50.0,
        jitter_allowance: float = 0.1,
    ) -> None:
        self._token = token
        self._api_base = api_base
        self._timeout = request_timeout
        # Discord allows 50 requests/s per bot; pacing ourselves avoids global 429s, which
        # would stall every destination at once.
        self._limiter = paced(global_rate, jitter_allowance)
        # When Discord's last global rate limit ends (event-loop time), read from the 429's own
        # headers as discord.py receives it.
        self._global_until = 0.0
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(self._on_request_end)
        self._client = discord.Client(
            intents=discord.Intents.none(),
            allowed_mentions=discord.AllowedMentions.none(),
            max_ratelimit_timeout=30.0,
            http_trace=trace,
        )
        self._started = False

    async def start(self) -> None:
        use_api_base(self._api_base)
        try:
            await asyncio.wait_for(self._client.login(self._token), self._timeout)
        except discord.LoginFailure as error:
            raise PublishError(
                f"Discord refused the bot token: {error}", outcome=Outcome.PERMANENT, status=401
            ) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise PublishError(
                f"cannot reach Discord at {self._api_base}: {error!r}", outcome=Outcome.TRANSIENT
            ) from None
        self._started = True
        user = self._client.user
        log.info("Discord publisher logged in as %s", user.name if user else "?")

    async def close(self) -> None:
        await self._client.close()

    async def check(self) -> None:
        """GET /users/@me with the token: refused (401) while the token is revoked."""
        if not self._started:
            await self.start()
            return
        await self._call(self._client.http.request(discord.http.Route("GET", "/users/@me")))

    async def _call(self, awaitable: Awaitable[T]) -> T:
        """Run one request under the rate limiter and a timeout, mapping errors to outcomes."""
        async with self._limiter:
            try:
                return await asyncio.wait_for(awaitable, self._timeout)
            except TimeoutError:
                waiting = self._after_timeout()
                raise PublishError(
                    f"no answer from Discord within {self._timeout:g} s"
                    + (f" (global rate limit for {waiting:.1f} s more)" if waiting else ""),
                    outcome=Outcome.AMBIGUOUS,
                    retry_after=waiting or None,
                ) from None
            except discord.RateLimited as error:
                raise PublishError(
                    f"rate limited for {error.retry_after:.1f} s",
                    outcome=Outcome.TRANSIENT,
                    retry_after=error.retry_after,
                    status=429,
                ) from None
            except discord.DiscordServerError as error:
                raise PublishError(
                    str(error), outcome=Outcome.TRANSIENT, status=error.status
                ) from None
            except discord.HTTPException as error:
                transient = error.status == 429 or error.status >= 500
                raise PublishError(
                    str(error),
                    status=error.status,
                    outcome=Outcome.TRANSIENT if transient else Outcome.PERMANENT,
                ) from None
            except aiohttp.ClientConnectorError as error:
                raise PublishError(
                    f"cannot connect to Discord: {error}", outcome=Outcome.TRANSIENT
                ) from None
            except (aiohttp.ClientError, OSError) as error:
                raise PublishError(
                    f"connection lost: {error!r}", outcome=Outcome.AMBIGUOUS
                ) from None

    async def _on_request_end(
        self, _session: Any, _context: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        headers = params.response.headers
        if params.response.status == 429 and headers.get("X-RateLimit-Global") == "true":
            try:
                wait = float(headers.get("Retry-After", "0"))  # whole seconds, rounded up
            except ValueError:
                wait = 0.0
            until = asyncio.get_running_loop().time() + wait
            self._global_until = max(self._global_until, until)

    def _after_timeout(self) -> float:
        """Undo what our timeout did to discord.py's global rate-limit lock; seconds it holds.

        discord.py sleeps out a global 429 inside the request, holding ``HTTPClient._global_over``
        (an ``asyncio.Event``) cleared, and sets it again only when that sleep ends. Our timeout
        cancels the sleep, so without this the lock would stay cleared and every later Discord
        request would wait for ever. It is set again when Discord's limit ends, never sooner.
        """
        lock = getattr(self._client.http, "_global_over", None)
        if not isinstance(lock, asyncio.Event) or lock.is_set():
            return 0.0
        loop = asyncio.get_running_loop()
        remaining = max(0.0, self._global_until - loop.time())
        loop.call_later(remaining, lock.set)
        return remaining

    def _mentions(self, everyone: bool) -> discord.AllowedMentions:
        if everyone:
            return discord.AllowedMentions(
                everyone=True, users=False, roles=False, replied_user=False
            )
        return discord.AllowedMentions.none()

    async def send(
        self, job: SendJob, progress: ProgressCallback, on_wire: WireCallback | None = None
    ) -> SendResult:
        """``on_wire`` is not needed: every create carries its nonce, so a retry of a message
        that did go out returns it instead of posting it again."""
        if not self._started:
            await self.start()
        if job.edit_ids:
            return await self._edit(job, progress)
        http = self._client.http
        channel_id = int(job.into_thread or job.target)
        channel = self._client.get_partial_messageable(channel_id)
        ids = list(job.sent_ids)
        follow_up = (
            job.pin
            or (job.crosspost and job.into_thread is None)
            or job.thread_name is not None
            or job.lock_thread is not None
        )
        for index in range(job.start_index, len(job.messages)):
            message = await self._call(
                channel.send(
                    job.messages[index],
                    nonce=f"{job.nonce}{index:02d}",
                    allowed_mentions=self._mentions(job.mention_everyone and index == 0),
                    silent=job.silent,
                    suppress_embeds=not job.link_previews,
                )
            )
            ids.append(str(message.id))
            await progress(ids, last=index == len(job.messages) - 1 and not follow_up)
        result = SendResult(message_ids=ids)
        first = int(ids[0])
        if job.pin:
            await self._call(http.pin_message(channel_id, first))
        if job.crosspost and job.into_thread is None:
            for message_id in ids:
                await self._tolerate(
                    ALREADY_CROSSPOSTED, http.publish_message(channel_id, int(message_id))
                )
        if job.thread_name:
            await self._tolerate(
                THREAD_EXISTS,
                http.start_thread_with_message(
                    channel_id,
                    first,
                    name=job.thread_name,
                    auto_archive_duration=10080,
                    rate_limit_per_user=None,
                ),
            )
            result.thread_id = str(first)  # a thread started from a message shares its id
        if job.lock_thread is not None:
            thread_id = job.lock_thread or result.thread_id
            if thread_id:
                await self._call(http.edit_channel(int(thread_id), locked=True))
                result.notes.append(f"thread {thread_id} locked")
        return result

    async def _tolerate(self, code: int, awaitable: Awaitable[Any]) -> None:
        """Run a follow-up step that a resumed delivery may already have done."""
        try:
            await self._call(awaitable)
        except PublishError as error:
            if f"error code: {code}" not in error.message:
                raise

    async def _edit(self, job: SendJob, progress: ProgressCallback) -> SendResult:
        """A correction: replace the text of the messages the original announcement sent."""
        channel = self._client.get_partial_messageable(int(job.edit_channel or job.target))
        ids: list[str] = []
        for index, text in enumerate(job.messages):
            if index < len(job.edit_ids):
                message = channel.get_partial_message(int(job.edit_ids[index]))
                await self._call(message.edit(content=text, allowed_mentions=self._mentions(False)))
                ids.append(job.edit_ids[index])
            else:  # the correction is longer than the original: post the rest
                sent = await self._call(
                    channel.send(
                        text,
                        nonce=f"{job.nonce}{index:02d}",
                        silent=job.silent,
                        allowed_mentions=self._mentions(False),
                        suppress_embeds=not job.link_previews,
                    )
                )
                ids.append(str(sent.id))
            await progress(ids, last=index == len(job.messages) - 1)
        return SendResult(
            message_ids=ids,
            notes=[f"edited {min(len(ids), len(job.edit_ids))} message(s) in place"],
        )

    async def notify(self, target: str, text: str, *, ping_role: str | None = None) -> str:
        if not self._started:
            await self.start()
        channel = self._client.get_partial_messageable(int(target))
        if ping_role:
            content = f"<@&{ping_role}> {text}"
            mentions = discord.AllowedMentions(
                everyone=False, users=False, roles=[discord.Object(id=int(ping_role))]
            )
        else:
            content, mentions = text, discord.AllowedMentions.none()
        message = await self._call(
            channel.send(content, allowed_mentions=mentions, suppress_embeds=True)
        )
        return str(message.id)

    async def edit_notification(
        self, target: str, message_id: str, text: str, *, ping_role: str | None = None
    ) -> None:
        if not self._started:
            await self.start()
        channel = self._client.get_partial_messageable(int(target))
        content = f"<@&{ping_role}> {text}" if ping_role else text  # as posted; pings nobody
        await self._call(
            channel.get_partial_message(int(message_id)).edit(
                content=content, allowed_mentions=discord.AllowedMentions.none()
            )
        )
