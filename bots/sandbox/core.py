"""State shared by the emulators: limits, faults, the request log, recordings and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .faults import Fault, Faults
from .limits import SandboxLimits
from .reqlog import RequestLog

MAX_BODY_BYTES = 25 * 1024 * 1024  # Discord's documented request size limit


@dataclass
class Exchange:
    """One request and its answer, kept when recording is on (the conformance tests check
    every exchange against the platforms' published schemas)."""

    platform: str
    operation: str  # "POST /channels/{channel_id}/messages" or a Bot API method name
    path: str
    query: dict[str, str]
    content_type: str
    request: Any  # parsed JSON, a dict of form fields, or None
    status: int
    response: Any  # parsed JSON, text, or None
    headers: dict[str, str] = field(default_factory=dict)


class SandboxCore:
    def __init__(
        self,
        *,
        limits: SandboxLimits,
        request_log: Path | None,
        seed: int | None,
        record_exchanges: bool,
    ) -> None:
        self.initial_limits = limits
        self.limits = limits
        self.faults = Faults(seed)
        self.log = RequestLog(request_log)
        self.record_exchanges = record_exchanges
        self.exchanges: list[Exchange] = []
        self.gateway_frames: list[dict[str, Any]] = []  # dispatches, when recording
        self.stopping = asyncio.Event()
        self.base_http = ""
        self.base_ws = ""

    def record(
        self,
        platform: str,
        operation: str,
        request: web.Request,
        body: Any,
        response: web.StreamResponse | None,
    ) -> None:
        if not self.record_exchanges or response is None or response.status == 499:
            return  # 499: dropped or abandoned, the client never saw an answer
        parsed: Any = None
        if isinstance(response, web.Response) and response.body is not None:
            raw = response.body
            if isinstance(raw, bytes | bytearray):
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    parsed = raw.decode("utf-8", "replace")
        self.exchanges.append(
            Exchange(
                platform=platform,
                operation=operation,
                path=request.path,
                query=dict(request.query),
                content_type=request.content_type,
                request=body,
                status=response.status,
                response=parsed,
                headers=dict(response.headers),
            )
        )

    async def hang(self, fault: Fault) -> None:
        """Hold a request for ``hang_seconds`` or until the sandbox stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), fault.hang_seconds)


def drop_connection(request: web.Request) -> web.Response:
    """Close the TCP connection without answering (the client sees a reset/EOF)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    # aiohttp discards a response written to an aborted transport without logging an error.
    return web.Response(status=499)
