"""Rate limits of both platforms, computed exactly so benchmarks can state a lower bound.

Every limiter works on ``time.monotonic()`` seconds and never sleeps: it answers "allowed" or
"retry after N seconds". A rejected request consumes nothing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


@dataclass
class SandboxLimits:
    """Limits the emulators enforce; defaults follow the platforms' documented figures.

    ``enabled=False`` turns every rate limit off (nonce de-duplication still applies: it is
    behaviour, not a limit).
    """

    enabled: bool = True
    # Discord (topics/rate-limits): global 50 requests per second per bot.
    discord_global_per_second: int = 50
    # Undocumented but observed: 5 message creates per 5 s per channel.
    discord_message_create_limit: int = 5
    discord_message_create_window: float = 5.0
    # Every other route: a bucket per route and top-level resource.
    discord_route_limit: int = 50
    discord_route_window: float = 1.0
    # enforce_nonce window ("the past few minutes").
    discord_nonce_window: float = 300.0
    # Telegram (Bot FAQ / PTB FloodLimit): 1 message per second per chat with a short burst,
    # 20 messages per minute per group, 30 messages per second overall.
    telegram_chat_per_second: float = 1.0
    telegram_chat_burst: int = 3
    telegram_group_per_minute: int = 20
    telegram_global_per_second: int = 30

    @classmethod
    def unlimited(cls) -> SandboxLimits:
        return cls(enabled=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, changes: dict[str, Any]) -> SandboxLimits:
        """Return a copy with ``changes`` applied, checking names and types."""
        current = self.to_dict()
        for name, value in changes.items():
            if name not in current:
                raise ValueError(f"unknown limit {name!r}")
            expected = type(current[name])
            if expected is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be a boolean")
            elif expected is int:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{name} must be a positive integer")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number")
            current[name] = expected(value)
        return SandboxLimits(**current)


@dataclass
class FixedWindow:
    """Discord's bucket model: a window opens at the first request after the previous one ended.

    This is what the ``X-RateLimit-Remaining``/``Reset-After`` headers describe, so a client
    that honours them never sees a 429 from this bucket.
    """

    limit: int
    window: float
    count: int = 0
    reset_at: float = 0.0

    def _roll(self, now: float) -> None:
        if now >= self.reset_at:
            self.count = 0
            self.reset_at = now + self.window

    def retry_after(self, now: float) -> float:
        self._roll(now)
        if self.count < self.limit:
            return 0.0
        return self.reset_at - now

    def consume(self, now: float) -> None:
        self._roll(now)
        self.count += 1

    def remaining(self) -> int:
        return max(0, self.limit - self.count)


@dataclass
class TokenBucket:
    """``burst`` tokens, refilled continuously at ``rate`` per second; one token per request.

    The same model as aiolimiter's leaky bucket (what PTB's AIORateLimiter uses), so a client
    pacing itself with one at the documented rate is never refused.
    """

    rate: float
    burst: int
    tokens: float = -1.0
    last: float = 0.0

    def _refill(self, now: float) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)
        else:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now

    def retry_after(self, now: float) -> float:
        self._refill(now)
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def consume(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0


def telegram_retry_seconds(delay: float) -> int:
    """Telegram reports ``retry_after`` as whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(delay - 1e-9))
