"""The REST front door under ``/api/v10``: a ``Route`` table entry, the per-request ``Ctx`` the
handlers get, and the ``Router`` that matches a path, checks the token, applies faults and rate
limits, reads the body, calls the resource's handler and logs the exchange."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bots.sandbox import discord_state as ds
from bots.sandbox.common import json_response
from bots.sandbox.core import MAX_BODY_BYTES, SandboxCore, drop_connection
from bots.sandbox.discord.errors import DiscordError, field_error, invalid_form
from bots.sandbox.discord.forms import Form
from bots.sandbox.discord.ratelimits import RateLimits
from bots.sandbox.discord_state import DiscordWorld

log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"


@dataclass
class Route:
    method: str
    template: str
    handler: Callable[[Ctx], Awaitable[web.StreamResponse]]
    auth: bool = True
    bucket: str = "route"  # "route", "message_create" or "interaction" (global-exempt)
    regex: re.Pattern[str] = field(init=False)
    params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.params = tuple(re.findall(r"{(\w+)}", self.template))
        pattern = re.escape(self.template)
        for name in self.params:
            pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
        self.regex = re.compile(f"^{pattern}/?$")

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


NON_SNOWFLAKE_PARAMS = {"interaction_token", "webhook_token"}


@dataclass
class Ctx:
    request: web.Request
    route: Route
    params: dict[str, int]
    raw_params: dict[str, str]
    entry: dict[str, Any]
    body: Any = None

    def json_object(self) -> dict[str, Any]:
        if self.body is None:
            return {}
        if not isinstance(self.body, dict):
            raise invalid_form(
                field_error("DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            )
        return self.body


class Router:
    """Answers every REST request: ``routes`` comes from ``DiscordAPI``, which owns the table."""

    def __init__(
        self, core: SandboxCore, world: DiscordWorld, limits: RateLimits, routes: list[Route]
    ) -> None:
        self.core = core
        self.world = world
        self.limits = limits
        # Literal segments win over parameters ("/messages/pins" before "/messages/{id}").
        self.routes = sorted(routes, key=lambda route: len(route.params))

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed = False
        for route in self.routes:
            found = route.regex.match(path)
            if found is None:
                continue
            if route.method == method:
                return route, found.groupdict()
            allowed = True
        if allowed:
            raise DiscordError(405, 0, "405: Method Not Allowed")
        raise DiscordError(404, 0, "404: Not Found")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        path = request.path[len(API_PREFIX) :] or "/"
        entry: dict[str, Any] = {
            "time": time.time(),
            "platform": "discord",
            "method": request.method,
            "path": request.path,
            "route": None,
        }
        response: web.StreamResponse | None = None
        body: Any = None
        operation = f"{request.method} {path}"
        bucketed: tuple[Route, dict[str, int]] | None = None
        try:
            route, raw = self.match(request.method, path)
            operation = route.name
            entry["route"] = route.name
            params = self._snowflake_params(raw)
            for key in ("channel_id", "guild_id", "message_id", "interaction_id"):
                if key in params:
                    entry[key] = str(params[key])
            if route.auth and (
                request.headers.get("Authorization") != f"Bot {ds.BOT_TOKEN}"
                or self.world.token_revoked
            ):
                raise DiscordError(401, 0, "401: Unauthorized")
            target = params.get("channel_id")
            fault = self.core.faults.pick(
                "discord", route.name, None if target is None else str(target)
            )
            if fault is not None:
                entry["fault"] = fault.kind
                if fault.kind in ("500", "502", "429"):
                    response = self.limits.fault_response(
                        fault.kind, fault.retry_after, fault.scope
                    )
                    if fault.kind == "429":
                        entry["rate_limited"] = True
                        entry["scope"] = f"fault-{fault.scope}"
                    return response
                if not fault.after_effect:
                    if fault.kind == "timeout":
                        await self.core.hang(fault)
                    response = drop_connection(request)
                    entry["status"] = fault.kind
                    return response
            limited = self.limits.check(route, params, entry)
            if limited is not None:
                response = limited
                return response
            bucketed = (route, params)
            if request.method in ("POST", "PATCH", "PUT"):
                body = await self._read_body(request)
            ctx = Ctx(request, route, params, raw, entry, body)
            response = await route.handler(ctx)
            self.limits.add_headers(route, params, response)
            if fault is not None:  # after_effect: the work is done, the answer never arrives
                if fault.kind == "timeout":
                    await self.core.hang(fault)
                response = drop_connection(request)
                entry["status"] = fault.kind
            return response
        except DiscordError as exc:
            response = exc.response()
            if response.status == 413:
                response.force_close()
            if bucketed is not None:
                self.limits.add_headers(*bucketed, response)
            return response
        except ConnectionError:
            # The client went away while we read its request: nobody to answer.
            entry["status"] = "disconnected"
            response = web.Response(status=499)
            return response
        except Exception:
            # A bug of ours: keep Discord's shape, and make it loud in the log.
            log.exception("sandbox bug while handling %s %s", request.method, request.path)
            response = json_response({"message": "500: Internal Server Error", "code": 0}, 500)
            entry["sandbox_bug"] = True
            return response
        finally:
            entry["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
            entry.setdefault("status", response.status if response is not None else 0)
            self.core.log.add(entry)
            self.core.record("discord", operation, request, body, response)

    def _snowflake_params(self, raw: dict[str, str]) -> dict[str, int]:
        params: dict[str, int] = {}
        form = Form()
        for key, value in raw.items():
            if key in NON_SNOWFLAKE_PARAMS:
                continue
            if value.isdigit() and len(value) <= 20:
                params[key] = int(value)
            elif value == "@original":
                continue
            else:
                form.add(key, "NUMBER_TYPE_COERCE", f'Value "{value}" is not snowflake.')
        form.raise_if_any()
        return params

    async def _read_body(self, request: web.Request) -> Any:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise DiscordError(413, 40005, "Request entity too large")
        ctype = request.content_type
        try:
            if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
                try:
                    form = await request.post()
                except (ValueError, AssertionError, LookupError) as exc:
                    # aiohttp's parser: no boundary, a boundary that never comes, a truncated
                    # part, bytes that are not text. Discord answers all of these alike.
                    raise invalid_form(
                        field_error("BASE_TYPE_BAD_FORM", "The request body is not a valid form.")
                    ) from exc
                payload = form.get("payload_json")
                if isinstance(payload, str):
                    return self._parse_json(payload.encode())
                return {k: v for k, v in form.items() if isinstance(v, str)}
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise DiscordError(413, 40005, "Request entity too large") from exc
        if not raw:
            return None
        return self._parse_json(raw)

    @staticmethod
    def _parse_json(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise DiscordError(400, 50109, "The request body contains invalid JSON.") from exc
