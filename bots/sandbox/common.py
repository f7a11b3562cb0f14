"""Small helpers shared by both emulators."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from aiohttp import web

DISCORD_EPOCH_MS = 1_420_070_400_000
WORLD_EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z: the default world's "creation"


def json_body(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A reply whose Content-Type is exactly ``application/json``, as discord.py requires."""
    return web.Response(
        body=json_body(data), status=status, content_type="application/json", headers=headers
    )


def snowflake(timestamp_ms: int, worker: int = 0, sequence: int = 0) -> int:
    return ((timestamp_ms - DISCORD_EPOCH_MS) << 22) | ((worker & 0x3FF) << 12) | (sequence & 0xFFF)


class SnowflakeFactory:
    """Increasing ids from wall-clock time, never repeating even within one millisecond."""

    def __init__(self, worker: int = 1) -> None:
        self._worker = worker
        self._last = 0

    def next(self) -> int:
        candidate = snowflake(int(time.time() * 1000), self._worker, 0)
        if candidate <= self._last:
            candidate = self._last + 1
        self._last = candidate
        return candidate


def iso(ts: float) -> str:
    """Discord's timestamp format: ``2025-01-01T00:00:00.000000+00:00``."""
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat(timespec="microseconds")
