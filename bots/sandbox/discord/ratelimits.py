"""Discord's rate limits: the global token bucket, one fixed window per route and major
parameter, the ``X-RateLimit-*`` headers, and the 429/500/502 answers (real or injected)."""

from __future__ import annotations

import hashlib
import math
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bots.sandbox.common import json_response
from bots.sandbox.core import SandboxCore
from bots.sandbox.limits import FixedWindow, TokenBucket

if TYPE_CHECKING:
    from bots.sandbox.discord.routing import Route


def _ceil_ms(seconds: float) -> float:
    return math.ceil(seconds * 1000 - 1e-6) / 1000


class RateLimits:
    """The buckets of one Discord emulator; they read ``core.limits`` whenever they are made."""

    def __init__(self, core: SandboxCore) -> None:
        self.core = core
        self.global_bucket = self._global_bucket()
        self.buckets: dict[tuple[str, int], FixedWindow] = {}

    def reset(self) -> None:
        self.buckets.clear()
        self.global_bucket = self._global_bucket()

    def _global_bucket(self) -> TokenBucket:
        rate = self.core.limits.discord_global_per_second
        return TokenBucket(float(rate), rate)

    def _bucket_key(self, route: Route, params: dict[str, int]) -> tuple[str, int]:
        major = params.get("channel_id") or params.get("guild_id") or 0
        return route.name, major

    def _bucket(self, route: Route, params: dict[str, int]) -> FixedWindow:
        key = self._bucket_key(route, params)
        bucket = self.buckets.get(key)
        if bucket is None:
            limits = self.core.limits
            if route.bucket == "message_create":
                bucket = FixedWindow(
                    limits.discord_message_create_limit, limits.discord_message_create_window
                )
            else:
                bucket = FixedWindow(limits.discord_route_limit, limits.discord_route_window)
            self.buckets[key] = bucket
        return bucket

    @staticmethod
    def _bucket_hash(route: Route) -> str:
        return hashlib.sha1(route.name.encode()).hexdigest()[:16]  # noqa: S324 - an id, not security

    def check(
        self, route: Route, params: dict[str, int], entry: dict[str, Any]
    ) -> web.Response | None:
        limits = self.core.limits
        if not limits.enabled or route.bucket == "interaction":
            return None
        now = time.monotonic()
        wait = self.global_bucket.retry_after(now)
        if wait > 0:
            entry["rate_limited"] = True
            entry["scope"] = "global"
            return self._rate_limited(wait, "global", headers={"X-RateLimit-Global": "true"})
        bucket = self._bucket(route, params)
        wait = bucket.retry_after(now)
        if wait > 0:
            entry["rate_limited"] = True
            entry["scope"] = "user"
            headers = self._bucket_headers(route, bucket, now)
            return self._rate_limited(wait, "user", headers=headers)
        self.global_bucket.consume(now)
        bucket.consume(now)
        return None

    def _bucket_headers(self, route: Route, bucket: FixedWindow, now: float) -> dict[str, str]:
        # Rounded up to the millisecond: a client that waits exactly this long must find the
        # window open, never a few microseconds early.
        reset_after = _ceil_ms(max(0.0, bucket.reset_at - now))
        return {
            "X-RateLimit-Limit": str(bucket.limit),
            "X-RateLimit-Remaining": str(bucket.remaining()),
            "X-RateLimit-Reset": f"{_ceil_ms(time.time() + reset_after):.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": self._bucket_hash(route),
        }

    def add_headers(
        self, route: Route, params: dict[str, int], response: web.StreamResponse
    ) -> None:
        if not self.core.limits.enabled or route.bucket == "interaction":
            return
        bucket = self.buckets.get(self._bucket_key(route, params))
        if bucket is not None:
            response.headers.update(self._bucket_headers(route, bucket, time.monotonic()))

    @staticmethod
    def _rate_limited(
        retry_after: float,
        scope: str,
        headers: dict[str, str] | None = None,
        *,
        message: str = "You are being rate limited.",
        code: int | None = None,
    ) -> web.Response:
        retry = _ceil_ms(max(retry_after, 0.001))
        body: dict[str, Any] = {
            "message": message,
            "retry_after": retry,
            "global": scope == "global",
        }
        if code is not None:
            body["code"] = code
        all_headers = {
            "Retry-After": str(max(1, int(retry + 0.999))),
            "X-RateLimit-Scope": scope,
            "Via": "1.1 google",
            **(headers or {}),
        }
        return json_response(body, 429, headers=all_headers)

    def fault_response(self, kind: str, retry_after: float, scope: str) -> web.Response:
        if kind == "429":
            extra = {"X-RateLimit-Global": "true"} if scope == "global" else {}
            return self._rate_limited(retry_after, scope, headers=extra)
        if kind == "502":
            return web.Response(
                status=502,
                body=b"<html><head><title>502 Bad Gateway</title></head>"
                b"<body><center><h1>502 Bad Gateway</h1></center></body></html>",
                content_type="text/html",
            )
        return json_response({"message": "500: Internal Server Error", "code": 0}, 500)
