"""The one source of "now" for the whole service.

Everything time-dependent (session timeouts, approval expiry, scheduled publishing, lockouts,
Incident Log timestamps) reads ``utcnow()``. Tests install a ``FrozenClock`` with ``use_clock``
instead of sleeping or patching functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        self._now += delta if delta is not None else timedelta(**kwargs)
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = moment


_SYSTEM = SystemClock()
_current: ContextVar[Clock] = ContextVar("comms_clock", default=_SYSTEM)
_global: list[Clock] = [_SYSTEM]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, from the installed clock."""
    clock = _current.get()
    if clock is _SYSTEM:
        clock = _global[0]
    return clock.now()


def set_global_clock(clock: Clock | None) -> None:
    """Install a clock for every task and thread (test servers run in other threads)."""
    _global[0] = clock or _SYSTEM


@contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Install ``clock`` for the duration of the block, everywhere in the process."""
    previous = _global[0]
    set_global_clock(clock)
    try:
        yield clock
    finally:
        set_global_clock(previous)


def ensure_utc(moment: datetime) -> datetime:
    """Attach UTC to naive datetimes (SQLite returns them naive) and convert others."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
