"""The small typed interface between the outbox and the platform libraries.

The worker knows nothing of discord.py or python-telegram-bot: it hands a ``SendJob`` to the
``Publisher`` registered for the destination's platform and gets back message ids or a
``PublishError`` that says whether trying again is safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from comms.enums import Platform


class Outcome(StrEnum):
    """How a failed request should be treated."""

    TRANSIENT = "transient"  # not delivered; safe to try again (429, 5xx, refused connection)
    PERMANENT = "permanent"  # the platform refused for good (401, 403, 400, unknown chat)
    AMBIGUOUS = "ambiguous"  # the request may have been applied (read timeout, dropped reply)


class PublishError(Exception):
    """A platform call failed. ``message`` is the platform's own words where it gave any."""

    def __init__(
        self,
        message: str,
        *,
        outcome: Outcome,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.outcome = outcome
        self.retry_after = retry_after
        self.status = status


@dataclass(frozen=True)
class SendJob:
    """One delivery: an ordered series of messages to one channel or chat.

    ``start_index`` skips messages already recorded as sent (a resumed series).
    ``nonce`` is the idempotency key; Discord receives ``nonce + index``.
    """

    delivery_id: int
    platform: Platform
    target: str
    messages: tuple[str, ...]
    nonce: str
    start_index: int = 0
    sent_ids: tuple[str, ...] = ()
    silent: bool = False
    pin: bool = False
    crosspost: bool = False
    mention_everyone: bool = False
    link_previews: bool = False
    thread_name: str | None = None  # Discord: open a thread from the first message
    into_thread: str | None = None  # Discord: post into this thread (follow-ups)
    reply_to: str | None = None  # Telegram: reply to this message (follow-ups)
    lock_thread: str | None = None  # Discord: lock this thread after posting (resolution)
    edit_ids: tuple[str, ...] = ()  # corrections: edit these messages instead of posting
    edit_channel: str | None = None  # Discord: the thread the edited messages live in


@dataclass
class SendResult:
    message_ids: list[str] = field(default_factory=list)
    thread_id: str | None = None
    notes: list[str] = field(default_factory=list)


class ProgressCallback(Protocol):
    """Called after each accepted message with every id so far. ``last``: no other request of
    this job follows, so the outbox may record the ids with the job's result instead of at once
    (a crash in between leaves the same doubt as one just before recording them)."""

    async def __call__(self, message_ids: list[str], *, last: bool = False) -> None: ...


class WireCallback(Protocol):
    """Called just before the request that creates message ``index`` leaves, after every wait
    on the platform's rate limits; raising stops the send (nothing went out)."""

    async def __call__(self, index: int) -> None: ...


class Publisher(Protocol):
    """Sends to one platform. Implementations live in ``bots/``."""

    platform: Platform

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None:
        """Raise PublishError unless the platform accepts the bot token now (a cheap call)."""
        ...

    async def send(
        self, job: SendJob, progress: ProgressCallback, on_wire: WireCallback | None = None
    ) -> SendResult:
        """Post (or edit) the series; call ``progress`` after each message is accepted.

        A platform that cannot deduplicate a retried create (Telegram) calls ``on_wire`` before
        each create request leaves: the outbox records the message as possibly sent only then,
        so a crash while a delivery waits its turn under the rate limits leaves it safe to retry
        rather than in doubt.
        """
        ...

    async def notify(self, target: str, text: str, *, ping_role: str | None = None) -> str:
        """Post an internal notification (fixed template); returns the message id."""
        ...

    async def edit_notification(
        self, target: str, message_id: str, text: str, *, ping_role: str | None = None
    ) -> None:
        """Replace the text of an internal notification already posted (pings nobody)."""
        ...
