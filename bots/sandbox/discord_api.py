"""Discord REST v10 (under ``/api/v10``) and the Gateway WebSocket, on top of ``DiscordWorld``."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from . import discord_state as ds
from .common import iso, json_response
from .core import MAX_BODY_BYTES, SandboxCore, drop_connection
from .discord_mentions import compute_mentions, validate_allowed_mentions
from .discord_state import Channel, DiscordWorld, Message, User
from .limits import FixedWindow, TokenBucket

log = logging.getLogger(__name__)

API_PREFIX = "/api/v10"
GATEWAY_PATH = "/gateway"
HEARTBEAT_INTERVAL_MS = 41250
INTERACTION_TTL = 15 * 60
MAX_PINS = 250


class DiscordError(Exception):
    """An error answered in Discord's JSON shape."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self) -> web.Response:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return json_response(body, self.status, headers=self.headers)


def invalid_form(errors: dict[str, Any]) -> DiscordError:
    return DiscordError(400, 50035, "Invalid Form Body", errors)


def unknown(kind: str) -> DiscordError:
    codes = {
        "Channel": 10003,
        "Message": 10008,
        "Guild": 10004,
        "Application": 10002,
        "interaction": 10062,
        "Webhook": 10015,
    }
    return DiscordError(404, codes[kind], f"Unknown {kind}")


MISSING_ACCESS = (403, 50001, "Missing Access")
MISSING_PERMISSIONS = (403, 50013, "Missing Permissions")


def _ceil_ms(seconds: float) -> float:
    return math.ceil(seconds * 1000 - 1e-6) / 1000


def _err(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


# ------------------------------------------------------------------------------------------
# Field validation producing Discord's ``errors`` tree


class Form:
    """Collects field errors at dotted paths and renders Discord's nested ``errors`` object."""

    def __init__(self) -> None:
        self.errors: dict[str, Any] = {}

    def add(self, path: str, code: str, message: str) -> None:
        node = self.errors
        for part in path.split("."):
            node = node.setdefault(part, {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def merge(self, path: str, tree: dict[str, Any]) -> None:
        if not tree:
            return
        node = self.errors
        for part in path.split("."):
            node = node.setdefault(part, {})
        node.update(tree)

    def raise_if_any(self) -> None:
        if self.errors:
            raise invalid_form(self.errors)

    def string(
        self, data: dict[str, Any], key: str, *, max_len: int, min_len: int = 0, path: str = ""
    ) -> str | None:
        value = data.get(key)
        where = path or key
        if value is None:
            return None
        if not isinstance(value, str):
            self.add(where, "STRING_TYPE_CONVERT", f'Could not interpret "{value}" as string.')
            return None
        if len(value) > max_len or len(value) < min_len:
            if min_len:
                self.add(
                    where,
                    "BASE_TYPE_BAD_LENGTH",
                    f"Must be between {min_len} and {max_len} in length.",
                )
            else:
                self.add(where, "BASE_TYPE_MAX_LENGTH", f"Must be {max_len} or fewer in length.")
            return None
        return value

    def integer(
        self,
        data: dict[str, Any],
        key: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        path: str = "",
    ) -> int | None:
        value = data.get(key)
        where = path or key
        if value is None:
            return None
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(where, "NUMBER_TYPE_COERCE", f'Value "{value}" is not int.')
            return None
        if minimum is not None and value < minimum:
            self.add(
                where, "NUMBER_TYPE_MIN", f"int value should be greater than or equal to {minimum}."
            )
            return None
        if maximum is not None and value > maximum:
            self.add(
                where, "NUMBER_TYPE_MAX", f"int value should be less than or equal to {maximum}."
            )
            return None
        return value

    def boolean(self, data: dict[str, Any], key: str) -> bool | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.add(key, "BOOLEAN_TYPE_CONVERT", "Must be either true or false.")
            return None
        return value

    def choice(self, data: dict[str, Any], key: str, choices: tuple[int, ...]) -> int | None:
        value = self.integer(data, key)
        if value is not None and value not in choices:
            self.add(key, "BASE_TYPE_CHOICES", f"Value must be one of {set(choices)}.")
            return None
        return value

    def snowflake(self, data: dict[str, Any], key: str, path: str = "") -> int | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and value.isdigit() and len(value) <= 20:
            return int(value)
        self.add(path or key, "NUMBER_TYPE_COERCE", f'Value "{value}" is not snowflake.')
        return None


EMBED_LIMITS = {"title": 256, "description": 4096}


def validate_embeds(form: Form, value: Any) -> list[dict[str, Any]]:
    """Check the documented embed limits and return embeds in the response shape."""
    if value is None:
        return []
    if not isinstance(value, list):
        form.add("embeds", "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        return []
    if len(value) > 10:
        form.add("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
        return []
    result: list[dict[str, Any]] = []
    total = 0
    for index, embed in enumerate(value):
        base = f"embeds.{index}"
        if not isinstance(embed, dict):
            form.add(base, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            continue
        out: dict[str, Any] = {"type": "rich"}
        for key, limit in EMBED_LIMITS.items():
            text = form.string(embed, key, max_len=limit, path=f"{base}.{key}")
            if text is not None:
                out[key] = text
                total += len(text)
        url = form.string(embed, "url", max_len=2048, path=f"{base}.url")
        if url is not None:
            out["url"] = url
        color = form.integer(embed, "color", minimum=0, maximum=0xFFFFFF, path=f"{base}.color")
        if color is not None:
            out["color"] = color
        stamp = form.string(embed, "timestamp", max_len=64, path=f"{base}.timestamp")
        if stamp is not None:
            out["timestamp"] = stamp
        fields = embed.get("fields")
        if fields is not None:
            if not isinstance(fields, list):
                form.add(f"{base}.fields", "LIST_TYPE_CONVERT", "Only iterables may be used")
            elif len(fields) > 25:
                form.add(f"{base}.fields", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            else:
                out_fields = []
                for f_index, item in enumerate(fields):
                    f_base = f"{base}.fields.{f_index}"
                    if not isinstance(item, dict):
                        form.add(f_base, "DICT_TYPE_CONVERT", "Only dictionaries may be used")
                        continue
                    name = form.string(item, "name", max_len=256, min_len=1, path=f"{f_base}.name")
                    val = form.string(
                        item, "value", max_len=1024, min_len=1, path=f"{f_base}.value"
                    )
                    if item.get("name") is None:
                        form.add(f"{f_base}.name", "BASE_TYPE_REQUIRED", "This field is required")
                    if item.get("value") is None:
                        form.add(f"{f_base}.value", "BASE_TYPE_REQUIRED", "This field is required")
                    if name is not None and val is not None:
                        total += len(name) + len(val)
                        out_fields.append(
                            {"name": name, "value": val, "inline": bool(item.get("inline", False))}
                        )
                out["fields"] = out_fields
        for key, sub, limit in (("footer", "text", 2048), ("author", "name", 256)):
            part = embed.get(key)
            if part is None:
                continue
            if not isinstance(part, dict):
                form.add(f"{base}.{key}", "DICT_TYPE_CONVERT", "Only dictionaries may be used")
                continue
            text = form.string(part, sub, max_len=limit, path=f"{base}.{key}.{sub}")
            if text is not None:
                total += len(text)
                out[key] = {sub: text}
                for extra in ("url", "icon_url"):
                    if isinstance(part.get(extra), str):
                        out[key][extra] = part[extra]
        for key in ("image", "thumbnail"):
            part = embed.get(key)
            if isinstance(part, dict) and isinstance(part.get("url"), str):
                out[key] = {"url": part["url"], "proxy_url": part["url"], "width": 0, "height": 0}
        result.append(out)
    if total > 6000:
        form.add("embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
    return result


# ------------------------------------------------------------------------------------------
# Routing


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
                _err("DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            )
        return self.body


@dataclass
class GatewaySession:
    id: str
    intents: int
    shard: tuple[int, int]
    seq: int = 0
    ws: web.WebSocketResponse | None = None
    buffer: collections.deque[dict[str, Any]] = field(
        default_factory=lambda: collections.deque(maxlen=5000)
    )
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class DiscordAPI:
    def __init__(self, core: SandboxCore, world: DiscordWorld) -> None:
        self.core = core
        self.world = world
        self.sessions: dict[str, GatewaySession] = {}
        self.sockets: set[web.WebSocketResponse] = set()
        self.global_bucket = self._global_bucket()
        self.buckets: dict[tuple[str, int], FixedWindow] = {}
        self.interaction_tokens: dict[str, int] = {}
        self.routes = self._build_routes()

    def reset_limits(self) -> None:
        self.buckets.clear()
        self.global_bucket = self._global_bucket()

    def _global_bucket(self) -> TokenBucket:
        rate = self.core.limits.discord_global_per_second
        return TokenBucket(float(rate), rate)

    def reset(self) -> None:
        self.reset_limits()
        self.interaction_tokens.clear()
        for session in self.sessions.values():
            session.buffer.clear()

    async def resync(self) -> None:
        """After a reset, connected bots get the rebuilt guilds again."""
        for guild in self.world.guilds.values():
            await self.dispatch("GUILD_CREATE", self.world.guild_create_json(guild), channel=None)

    # --- routing ---------------------------------------------------------------------

    def _build_routes(self) -> list[Route]:
        r = Route
        routes = [
            r("GET", "/users/@me", self.get_me),
            r("GET", "/oauth2/applications/@me", self.get_application),
            r("POST", "/users/@me/channels", self.create_dm),
            r("GET", "/users/{user_id}", self.get_user),
            r("GET", "/gateway", self.get_gateway, auth=False),
            r("GET", "/gateway/bot", self.get_gateway_bot),
            r("GET", "/channels/{channel_id}", self.get_channel),
            r("PATCH", "/channels/{channel_id}", self.patch_channel),
            r("GET", "/channels/{channel_id}/messages", self.list_messages),
            r(
                "POST",
                "/channels/{channel_id}/messages",
                self.create_message,
                bucket="message_create",
            ),
            r("GET", "/channels/{channel_id}/messages/pins", self.list_pins),
            r("PUT", "/channels/{channel_id}/messages/pins/{message_id}", self.pin),
            r("DELETE", "/channels/{channel_id}/messages/pins/{message_id}", self.unpin),
            r("GET", "/channels/{channel_id}/pins", self.list_pins_legacy),
            r("PUT", "/channels/{channel_id}/pins/{message_id}", self.pin),
            r("DELETE", "/channels/{channel_id}/pins/{message_id}", self.unpin),
            r("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message),
            r("PATCH", "/channels/{channel_id}/messages/{message_id}", self.edit_message),
            r("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message),
            r("POST", "/channels/{channel_id}/messages/{message_id}/crosspost", self.crosspost),
            r("POST", "/channels/{channel_id}/messages/{message_id}/threads", self.start_thread),
            r("POST", "/guilds/{guild_id}/channels", self.create_guild_channel),
            r("GET", "/guilds/{guild_id}/channels", self.list_guild_channels),
            r("GET", "/applications/{application_id}/commands", self.list_commands),
            r("PUT", "/applications/{application_id}/commands", self.put_commands),
            r(
                "GET",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self.list_commands,
            ),
            r(
                "PUT",
                "/applications/{application_id}/guilds/{guild_id}/commands",
                self.put_commands,
            ),
            r(
                "POST",
                "/interactions/{interaction_id}/{interaction_token}/callback",
                self.interaction_callback,
                auth=False,
                bucket="interaction",
            ),
            r(
                "POST",
                "/webhooks/{application_id}/{interaction_token}",
                self.followup_create,
                auth=False,
                bucket="interaction",
            ),
        ]
        for method, handler in (
            ("GET", self.webhook_message_get),
            ("PATCH", self.webhook_message_edit),
            ("DELETE", self.webhook_message_delete),
        ):
            routes.append(
                r(
                    method,
                    "/webhooks/{application_id}/{interaction_token}/messages/@original",
                    handler,
                    auth=False,
                    bucket="interaction",
                )
            )
            routes.append(
                r(
                    method,
                    "/webhooks/{application_id}/{interaction_token}/messages/{message_id}",
                    handler,
                    auth=False,
                    bucket="interaction",
                )
            )
        # Literal segments win over parameters ("/messages/pins" before "/messages/{id}").
        routes.sort(key=lambda route: len(route.params))
        return routes

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

    # --- the request pipeline --------------------------------------------------------

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
                    response = self._fault_response(fault.kind, fault.retry_after, fault.scope)
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
            limited = self._check_rate_limits(route, params, entry)
            if limited is not None:
                response = limited
                return response
            bucketed = (route, params)
            if request.method in ("POST", "PATCH", "PUT"):
                body = await self._read_body(request)
            ctx = Ctx(request, route, params, raw, entry, body)
            response = await route.handler(ctx)
            self._add_bucket_headers(route, params, response)
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
                self._add_bucket_headers(*bucketed, response)
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
                        _err("BASE_TYPE_BAD_FORM", "The request body is not a valid form.")
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

    # --- rate limits -----------------------------------------------------------------

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

    def _check_rate_limits(
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

    def _add_bucket_headers(
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

    def _fault_response(self, kind: str, retry_after: float, scope: str) -> web.Response:
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

    # --- lookups and permission checks ------------------------------------------------

    def channel(self, channel_id: int) -> Channel:
        channel = self.world.channels.get(channel_id)
        if channel is None:
            raise unknown("Channel")
        return channel

    def visible_channel(self, channel_id: int, user_id: int = ds.BOT_ID) -> Channel:
        channel = self.channel(channel_id)
        if not self.world.can_see(channel, user_id):
            raise DiscordError(*MISSING_ACCESS)
        return channel

    def message_in(self, channel: Channel, message_id: int) -> Message:
        message = channel.messages.get(message_id)
        if message is None or message.visible_to is not None:
            raise unknown("Message")
        return message

    def require(self, channel: Channel, permission: int, user_id: int = ds.BOT_ID) -> None:
        if not self.world.permissions(channel, user_id) & permission:
            raise DiscordError(*MISSING_PERMISSIONS)

    @staticmethod
    def ensure_thread_open(channel: Channel) -> None:
        if channel.is_thread and channel.archived:
            raise DiscordError(400, 50083, "Thread is archived")

    # --- users, application, gateway --------------------------------------------------

    async def get_me(self, ctx: Ctx) -> web.Response:
        data = self.world.bot.to_json()
        data.update({"mfa_enabled": False, "locale": "en-US", "verified": True, "email": None})
        return json_response(data)

    async def get_application(self, ctx: Ctx) -> web.Response:
        flags = (1 << 19) if self.world.message_content_allowed else 0  # CONTENT_LIMITED
        return json_response(
            {
                "id": str(self.world.application_id),
                "name": self.world.bot.global_name or self.world.bot.username,
                "icon": None,
                "description": "Incident comms sandbox bot",
                "type": None,
                "bot": self.world.bot.to_json(),
                "bot_public": False,
                "bot_require_code_grant": False,
                "verify_key": hashlib.sha256(b"sandbox").hexdigest(),
                "flags": flags,
                "flags_new": str(flags),
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "role_connections_verification_url": None,
                "owner": self.world.owner.to_json(),
                "approximate_guild_count": len(self.world.guilds),
                "approximate_user_install_count": 0,
                "approximate_user_authorization_count": 0,
                "explicit_content_filter": 0,
                "team": None,
                "eligible_oauth2_scopes": ["bot", "applications.commands"],
                "rpc_origins": [],
                "tags": [],
            }
        )

    async def get_gateway(self, ctx: Ctx) -> web.Response:
        return json_response({"url": self.core.base_ws + GATEWAY_PATH})

    async def get_gateway_bot(self, ctx: Ctx) -> web.Response:
        return json_response(
            {
                "url": self.core.base_ws + GATEWAY_PATH,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 14_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    # --- channels ----------------------------------------------------------------------

    async def get_user(self, ctx: Ctx) -> web.Response:
        user = self.world.users.get(ctx.params["user_id"])
        if user is None:
            raise DiscordError(404, 10013, "Unknown User")
        return json_response(user.to_json())

    async def create_dm(self, ctx: Ctx) -> web.Response:
        data = ctx.json_object()
        form = Form()
        recipient = form.snowflake(data, "recipient_id")
        if data.get("recipient_id") is None:
            form.add("recipient_id", "BASE_TYPE_REQUIRED", "This field is required")
        form.raise_if_any()
        user = self.world.users.get(recipient or 0)
        if user is None or user.bot:
            raise DiscordError(400, 50007, "Cannot send messages to this user")
        return json_response(self.world.channel_json(self.world.dm_channel(user)))

    async def get_channel(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        return json_response(self.world.channel_json(channel))

    async def list_guild_channels(self, ctx: Ctx) -> web.Response:
        guild = self.world.guilds.get(ctx.params["guild_id"])
        if guild is None:
            raise unknown("Guild")
        return json_response(
            [
                self.world.channel_json(self.world.channels[cid])
                for cid in guild.channel_ids
                if self.world.can_see(self.world.channels[cid], ds.BOT_ID)
            ]
        )

    def _overwrites(self, form: Form, value: Any) -> list[ds.Overwrite] | None:
        if value is None:
            return None
        if not isinstance(value, list):
            form.add("permission_overwrites", "LIST_TYPE_CONVERT", "Only iterables may be used")
            return None
        result = []
        for index, item in enumerate(value):
            path = f"permission_overwrites.{index}"
            if not isinstance(item, dict):
                form.add(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                continue
            target = form.snowflake(item, "id", path=f"{path}.id")
            if item.get("id") is None:
                form.add(f"{path}.id", "BASE_TYPE_REQUIRED", "This field is required")
            kind = item.get("type", 0)
            if kind not in (0, 1, "0", "1", "role", "member"):
                form.add(f"{path}.type", "BASE_TYPE_CHOICES", "Value must be one of {0, 1}.")
                continue
            bits = {}
            for key in ("allow", "deny"):
                raw = item.get(key) or 0
                if isinstance(raw, str) and raw.isdigit():
                    raw = int(raw)
                if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
                    form.add(f"{path}.{key}", "NUMBER_TYPE_COERCE", f'Value "{raw}" is not int.')
                    raw = 0
                bits[key] = raw
            if target is not None:
                type_int = 1 if kind in (1, "1", "member") else 0
                result.append(ds.Overwrite(target, type_int, bits["allow"], bits["deny"]))
        return result

    async def create_guild_channel(self, ctx: Ctx) -> web.Response:
        guild = self.world.guilds.get(ctx.params["guild_id"])
        if guild is None:
            raise unknown("Guild")
        if not self.world.base_permissions(guild, ds.BOT_ID) & ds.MANAGE_CHANNELS:
            raise DiscordError(*MISSING_PERMISSIONS)
        data = ctx.json_object()
        form = Form()
        if data.get("name") is None:
            form.add("name", "BASE_TYPE_REQUIRED", "This field is required")
        name = form.string(data, "name", max_len=100, min_len=1)
        kind = form.choice(data, "type", ds.GUILD_CHANNEL_TYPES)
        topic = form.string(data, "topic", max_len=1024)
        slowmode = form.integer(data, "rate_limit_per_user", minimum=0, maximum=21600)
        nsfw = form.boolean(data, "nsfw")
        position = form.integer(data, "position", minimum=0)
        parent = form.snowflake(data, "parent_id")
        overwrites = self._overwrites(form, data.get("permission_overwrites"))
        form.raise_if_any()
        assert name is not None
        kind = ds.GUILD_TEXT if kind is None else kind
        if parent is not None and (
            parent not in self.world.channels
            or self.world.channels[parent].type != ds.GUILD_CATEGORY
        ):
            raise invalid_form(
                {"parent_id": _err("CHANNEL_PARENT_INVALID", "Invalid parent channel")}
            )
        bot_perms = self.world.base_permissions(guild, ds.BOT_ID)
        for overwrite in overwrites or []:
            if overwrite.allow & ~bot_perms or overwrite.deny & ~bot_perms:
                raise DiscordError(*MISSING_PERMISSIONS)
        if kind in (ds.GUILD_TEXT, ds.GUILD_ANNOUNCEMENT):
            name = re.sub(r"\s+", "-", name.strip().lower())
        channel = self.world.add_channel(
            Channel(
                self.world.ids.next(),
                guild.id,
                kind,
                name,
                position=position if position is not None else len(guild.channel_ids),
                topic=topic,
                nsfw=bool(nsfw),
                rate_limit_per_user=slowmode or 0,
                parent_id=parent,
                overwrites=overwrites or [],
            )
        )
        payload = self.world.channel_json(channel)
        await self.dispatch("CHANNEL_CREATE", payload, channel=channel)
        return json_response(payload, 201)

    async def patch_channel(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        data = ctx.json_object()
        form = Form()
        perms = self.world.permissions(channel, ds.BOT_ID)
        if channel.is_thread:
            name = form.string(data, "name", max_len=100, min_len=1)
            archived = form.boolean(data, "archived")
            locked = form.boolean(data, "locked")
            form.boolean(data, "invitable")
            duration = form.choice(data, "auto_archive_duration", (60, 1440, 4320, 10080))
            slowmode = form.integer(data, "rate_limit_per_user", minimum=0, maximum=21600)
            form.raise_if_any()
            manage = bool(perms & ds.MANAGE_THREADS)
            if (locked is not None or slowmode is not None) and not manage:
                raise DiscordError(*MISSING_PERMISSIONS)
            if channel.locked and not manage:
                raise DiscordError(400, 50083, "Thread is archived")
            if not manage and channel.owner_id != ds.BOT_ID:
                raise DiscordError(*MISSING_PERMISSIONS)
            if name is not None:
                channel.name = name
            if locked is not None:
                channel.locked = locked
            if archived is not None and archived != channel.archived:
                channel.archived = archived
                channel.archive_timestamp = time.time()
            if duration is not None:
                channel.auto_archive_duration = duration
            if slowmode is not None:
                channel.rate_limit_per_user = slowmode
            payload = self.world.channel_json(channel)
            await self.dispatch("THREAD_UPDATE", payload, channel=channel)
            return json_response(payload)
        name = form.string(data, "name", max_len=100, min_len=1)
        kind = form.choice(data, "type", (ds.GUILD_TEXT, ds.GUILD_ANNOUNCEMENT))
        topic = form.string(data, "topic", max_len=1024)
        slowmode = form.integer(data, "rate_limit_per_user", minimum=0, maximum=21600)
        nsfw = form.boolean(data, "nsfw")
        position = form.integer(data, "position", minimum=0)
        duration = form.choice(data, "default_auto_archive_duration", (60, 1440, 4320, 10080))
        overwrites = self._overwrites(form, data.get("permission_overwrites"))
        form.raise_if_any()
        if not perms & ds.MANAGE_CHANNELS:
            raise DiscordError(*MISSING_PERMISSIONS)
        if overwrites is not None and not perms & (ds.MANAGE_ROLES | ds.ADMINISTRATOR):
            raise DiscordError(*MISSING_PERMISSIONS)
        if kind is not None and channel.type not in (ds.GUILD_TEXT, ds.GUILD_ANNOUNCEMENT):
            raise invalid_form({"type": _err("BASE_TYPE_CHOICES", "Cannot convert channel")})
        if name is not None:
            channel.name = re.sub(r"\s+", "-", name.strip().lower())
        if kind is not None:
            channel.type = kind
        if "topic" in data:
            channel.topic = topic
        if slowmode is not None:
            channel.rate_limit_per_user = slowmode
        if nsfw is not None:
            channel.nsfw = nsfw
        if position is not None:
            channel.position = position
        if duration is not None:
            channel.default_auto_archive_duration = duration
        if overwrites is not None:
            channel.overwrites = overwrites
        payload = self.world.channel_json(channel)
        await self.dispatch("CHANNEL_UPDATE", payload, channel=channel)
        return json_response(payload)

    # --- messages ----------------------------------------------------------------------

    async def list_messages(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        query = dict(ctx.request.query)
        form = Form()
        limit = form.integer(query, "limit", minimum=1, maximum=100)
        before = form.snowflake(query, "before")
        after = form.snowflake(query, "after")
        around = form.snowflake(query, "around")
        form.raise_if_any()
        if not self.world.permissions(channel, ds.BOT_ID) & ds.READ_MESSAGE_HISTORY:
            return json_response([])
        limit = limit or 50
        messages = [m for m in channel.messages.values() if m.visible_to is None]
        if around is not None:
            older = [m for m in messages if m.id <= around][-((limit + 1) // 2) :]
            newer = [m for m in messages if m.id > around][: limit - len(older)]
            chosen = older + newer
        elif after is not None:
            chosen = [m for m in messages if m.id > after][:limit]
        else:
            if before is not None:
                messages = [m for m in messages if m.id < before]
            chosen = messages[-limit:]
        chosen.sort(key=lambda m: m.id, reverse=True)
        return json_response([self.world.message_json(m) for m in chosen])

    async def get_message(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        if not self.world.permissions(channel, ds.BOT_ID) & ds.READ_MESSAGE_HISTORY:
            raise DiscordError(*MISSING_ACCESS)
        message = self.message_in(channel, ctx.params["message_id"])
        return json_response(self.world.message_json(message))

    def _message_fields(
        self, form: Form, data: dict[str, Any], *, creating: bool
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        fields["content"] = form.string(data, "content", max_len=2000)
        fields["embeds"] = validate_embeds(form, data.get("embeds"))
        flags = form.integer(data, "flags", minimum=0)
        allowed = ds.CREATABLE_FLAGS if creating else ds.EDITABLE_FLAGS
        fields["flags"] = None if flags is None else flags & allowed
        form.merge("allowed_mentions", validate_allowed_mentions(data.get("allowed_mentions")))
        components = data.get("components")
        if components is not None and not isinstance(components, list):
            form.add("components", "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        fields["components"] = components if isinstance(components, list) else []
        if creating:
            nonce = data.get("nonce")
            if nonce is not None:
                if isinstance(nonce, bool) or not isinstance(nonce, int | str):
                    form.add("nonce", "NONCE_TYPE_INVALID", "Nonce must be an integer or string.")
                elif isinstance(nonce, str) and len(nonce) > 25:
                    form.add("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            fields["nonce"] = nonce
            fields["enforce_nonce"] = form.boolean(data, "enforce_nonce")
            fields["tts"] = form.boolean(data, "tts")
            reference = data.get("message_reference")
            if reference is not None:
                if not isinstance(reference, dict):
                    form.add("message_reference", "DICT_TYPE_CONVERT", "Only dictionaries")
                else:
                    if reference.get("message_id") is None:
                        form.add(
                            "message_reference.message_id",
                            "BASE_TYPE_REQUIRED",
                            "This field is required",
                        )
                    form.snowflake(reference, "message_id", path="message_reference.message_id")
                    form.snowflake(reference, "channel_id", path="message_reference.channel_id")
                    form.snowflake(reference, "guild_id", path="message_reference.guild_id")
                    if reference.get("fail_if_not_exists") is not None and not isinstance(
                        reference.get("fail_if_not_exists"), bool
                    ):
                        form.add(
                            "message_reference.fail_if_not_exists",
                            "BOOLEAN_TYPE_CONVERT",
                            "Must be either true or false.",
                        )
            fields["message_reference"] = reference if isinstance(reference, dict) else None
        return fields

    async def create_message(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        data = ctx.json_object()
        form = Form()
        fields = self._message_fields(form, data, creating=True)
        form.raise_if_any()
        needed = ds.SEND_MESSAGES_IN_THREADS if channel.is_thread else ds.SEND_MESSAGES
        self.require(channel, needed)
        if channel.is_thread:
            if (
                channel.locked
                and not self.world.permissions(channel, ds.BOT_ID) & ds.MANAGE_THREADS
            ):
                raise DiscordError(400, 160005, "This thread is locked")
            if channel.archived:
                channel.archived = False
                channel.archive_timestamp = time.time()
        content = fields["content"] or ""
        if not content.strip() and not fields["embeds"] and not data.get("sticker_ids"):
            raise DiscordError(400, 50006, "Cannot send an empty message")
        nonce = fields["nonce"]
        ctx.entry["nonce"] = nonce
        key = (channel.id, ds.BOT_ID, str(nonce))
        if nonce is not None and fields["enforce_nonce"]:
            earlier = self.world.nonces.get(key)
            window = self.core.limits.discord_nonce_window
            if earlier is not None and time.monotonic() - earlier[1] < window:
                existing = self.world.messages.get(earlier[0])
                if existing is not None:
                    ctx.entry["deduplicated"] = True
                    ctx.entry["message_id"] = str(existing.id)
                    return json_response(self.world.message_json(existing, include_nonce=True))
        reference = fields["message_reference"]
        if reference is not None:
            ref_id = int(reference["message_id"])
            ref_channel = int(reference.get("channel_id") or channel.id)
            if ref_id not in self.world.messages or ref_channel != channel.id:
                if reference.get("fail_if_not_exists", True):
                    raise invalid_form(
                        {
                            "message_reference": _err(
                                "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                            )
                        }
                    )
                reference = None
            else:
                reference = {
                    "type": 0,
                    "channel_id": str(channel.id),
                    "message_id": str(ref_id),
                }
                if channel.guild_id:
                    reference["guild_id"] = str(channel.guild_id)
        message = self.new_message(
            channel,
            self.world.bot,
            content,
            embeds=fields["embeds"],
            components=fields["components"],
            flags=fields["flags"] or 0,
            tts=bool(fields["tts"]),
            nonce=nonce,
            allowed_mentions=data.get("allowed_mentions"),
            reference=reference,
        )
        if nonce is not None and fields["enforce_nonce"]:
            self.world.nonces[key] = (message.id, time.monotonic())
            self._prune_nonces()
        ctx.entry["message_id"] = str(message.id)
        await self.announce(message)
        return json_response(self.world.message_json(message, include_nonce=True))

    def _prune_nonces(self) -> None:
        if len(self.world.nonces) < 50_000:
            return
        horizon = time.monotonic() - self.core.limits.discord_nonce_window
        self.world.nonces = {k: v for k, v in self.world.nonces.items() if v[1] >= horizon}

    def new_message(
        self,
        channel: Channel,
        author: User,
        content: str,
        *,
        embeds: list[dict[str, Any]] | None = None,
        components: list[dict[str, Any]] | None = None,
        flags: int = 0,
        tts: bool = False,
        nonce: int | str | None = None,
        allowed_mentions: Any = None,
        reference: dict[str, Any] | None = None,
        type: int = 0,
        interaction: dict[str, Any] | None = None,
        visible_to: int | None = None,
    ) -> Message:
        """Create and store a message, computing who it mentions as Discord does."""
        replied_user = None
        if reference is not None and type == 0:
            type = 19
            referenced = self.world.messages.get(int(reference["message_id"]))
            replied_user = referenced.author.id if referenced else None
        mentions = self.compute(channel, author, content, allowed_mentions, replied_user)
        message = Message(
            id=self.world.ids.next(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=author,
            content=content,
            timestamp=time.time(),
            embeds=embeds or [],
            components=components or [],
            flags=flags,
            tts=tts,
            type=type,
            nonce=nonce,
            mention_ids=mentions.user_ids,
            mention_role_ids=mentions.role_ids,
            mention_everyone=mentions.everyone,
            reference=reference,
            interaction=interaction,
            visible_to=visible_to,
        )
        if interaction is not None:
            message.application_id = self.world.application_id
            message.webhook_id = self.world.application_id
        self.world.add_message(message)
        if visible_to is None:
            self.core.log.stats.message_created("discord", channel.id)
        return message

    def compute(
        self,
        channel: Channel,
        author: User,
        content: str,
        allowed_mentions: Any,
        replied_user: int | None = None,
    ) -> Any:
        guild = self.world.guilds.get(channel.guild_id) if channel.guild_id else None
        known = set(guild.members) if guild else set(self.world.users)
        mentionable = {r.id: r.mentionable for r in guild.roles.values()} if guild else {}
        mentionable.pop(channel.guild_id or 0, None)
        perms = self.world.permissions(channel, author.id)
        return compute_mentions(
            content,
            allowed_mentions if isinstance(allowed_mentions, dict) else None,
            known_user_ids=known,
            role_mentionable=mentionable,
            can_mention_everyone=bool(perms & ds.MENTION_EVERYONE),
            replied_user_id=replied_user,
        )

    async def edit_message(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        message = self.message_in(channel, ctx.params["message_id"])
        data = ctx.json_object()
        form = Form()
        fields = self._message_fields(form, data, creating=False)
        form.raise_if_any()
        self.ensure_thread_open(channel)
        own = message.author.id == ds.BOT_ID
        changes_content = any(k in data for k in ("content", "embeds", "components"))
        if not own and (changes_content or "allowed_mentions" in data):
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        if not own and not self.world.permissions(channel, ds.BOT_ID) & ds.MANAGE_MESSAGES:
            raise DiscordError(*MISSING_PERMISSIONS)
        await self.apply_edit(message, channel, data, fields)
        return json_response(self.world.message_json(message))

    async def apply_edit(
        self, message: Message, channel: Channel, data: dict[str, Any], fields: dict[str, Any]
    ) -> None:
        if "content" in data:
            message.content = fields["content"] or ""
        if "embeds" in data:
            message.embeds = fields["embeds"]
        if "components" in data:
            message.components = fields["components"]
        if not message.content.strip() and not message.embeds and not message.components:
            raise DiscordError(400, 50006, "Cannot send an empty message")
        if fields["flags"] is not None:
            keep = message.flags & ~ds.EDITABLE_FLAGS
            message.flags = keep | fields["flags"]
        if message.flags & ds.LOADING:
            message.flags &= ~ds.LOADING
        elif "content" in data or "embeds" in data:
            message.edited_timestamp = time.time()
        mentions = self.compute(
            channel, message.author, message.content, data.get("allowed_mentions")
        )
        message.mention_ids = mentions.user_ids
        message.mention_role_ids = mentions.role_ids
        message.mention_everyone = mentions.everyone
        if message.visible_to is None:
            await self.dispatch(
                "MESSAGE_UPDATE", self.gateway_message(message), channel=channel, message=message
            )

    async def delete_message(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        message = self.message_in(channel, ctx.params["message_id"])
        if message.author.id != ds.BOT_ID:
            self.require(channel, ds.MANAGE_MESSAGES)
        await self.remove_message(message, channel)
        return web.Response(status=204)

    async def remove_message(self, message: Message, channel: Channel) -> None:
        self.world.delete_message(message)
        payload: dict[str, Any] = {"id": str(message.id), "channel_id": str(channel.id)}
        if channel.guild_id:
            payload["guild_id"] = str(channel.guild_id)
        await self.dispatch("MESSAGE_DELETE", payload, channel=channel)

    async def crosspost(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        message = self.message_in(channel, ctx.params["message_id"])
        if channel.type != ds.GUILD_ANNOUNCEMENT:
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        if message.author.id == ds.BOT_ID:
            self.require(channel, ds.SEND_MESSAGES)
        else:
            self.require(channel, ds.MANAGE_MESSAGES)
        if message.flags & ds.CROSSPOSTED:
            raise DiscordError(400, 40033, "This message has already been crossposted.")
        message.flags |= ds.CROSSPOSTED
        await self.dispatch(
            "MESSAGE_UPDATE", self.gateway_message(message), channel=channel, message=message
        )
        return json_response(self.world.message_json(message))

    # --- pins --------------------------------------------------------------------------

    def _pins(self, channel: Channel) -> list[Message]:
        pinned = [m for m in channel.messages.values() if m.pinned]
        pinned.sort(key=lambda m: m.pinned_at or 0, reverse=True)
        return pinned

    async def list_pins(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        query = dict(ctx.request.query)
        form = Form()
        limit = form.integer(query, "limit", minimum=1, maximum=50) or 50
        before = form.string(query, "before", max_len=64)
        form.raise_if_any()
        pins = self._pins(channel)
        if before:
            pins = [m for m in pins if iso(m.pinned_at or 0) < before]
        return json_response(
            {
                "items": [
                    {"pinned_at": iso(m.pinned_at or 0), "message": self.world.message_json(m)}
                    for m in pins[:limit]
                ],
                "has_more": len(pins) > limit,
            }
        )

    async def list_pins_legacy(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        return json_response([self.world.message_json(m) for m in self._pins(channel)])

    def _require_pin(self, channel: Channel) -> None:
        if not self.world.permissions(channel, ds.BOT_ID) & (ds.PIN_MESSAGES | ds.MANAGE_MESSAGES):
            raise DiscordError(*MISSING_PERMISSIONS)

    async def pin(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        message = self.message_in(channel, ctx.params["message_id"])
        self._require_pin(channel)
        self.ensure_thread_open(channel)
        if not message.pinned:
            if len(self._pins(channel)) >= MAX_PINS:
                raise DiscordError(400, 30003, f"Maximum number of pins reached ({MAX_PINS})")
            await self.set_pinned(message, channel, True, self.world.bot)
        return web.Response(status=204)

    async def unpin(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        message = self.message_in(channel, ctx.params["message_id"])
        self._require_pin(channel)
        self.ensure_thread_open(channel)
        if message.pinned:
            await self.set_pinned(message, channel, False, self.world.bot)
        return web.Response(status=204)

    async def set_pinned(self, message: Message, channel: Channel, pinned: bool, by: User) -> None:
        message.pinned = pinned
        message.pinned_at = time.time() if pinned else None
        pins = self._pins(channel)
        channel.last_pin_timestamp = pins[0].pinned_at if pins else None
        await self.dispatch(
            "MESSAGE_UPDATE", self.gateway_message(message), channel=channel, message=message
        )
        if pinned:
            reference = {
                "type": 0,
                "channel_id": str(channel.id),
                "message_id": str(message.id),
            }
            if channel.guild_id:
                reference["guild_id"] = str(channel.guild_id)
            notice = self.new_message(channel, by, "", type=6, reference=reference)
            await self.announce(notice)
        payload: dict[str, Any] = {
            "channel_id": str(channel.id),
            "last_pin_timestamp": iso(channel.last_pin_timestamp)
            if channel.last_pin_timestamp
            else None,
        }
        if channel.guild_id:
            payload["guild_id"] = str(channel.guild_id)
        await self.dispatch("CHANNEL_PINS_UPDATE", payload, channel=channel)

    # --- threads -----------------------------------------------------------------------

    async def start_thread(self, ctx: Ctx) -> web.Response:
        channel = self.visible_channel(ctx.params["channel_id"])
        message = self.message_in(channel, ctx.params["message_id"])
        data = ctx.json_object()
        form = Form()
        if data.get("name") is None:
            form.add("name", "BASE_TYPE_REQUIRED", "This field is required")
        name = form.string(data, "name", max_len=100, min_len=1)
        duration = form.choice(data, "auto_archive_duration", (60, 1440, 4320, 10080))
        slowmode = form.integer(data, "rate_limit_per_user", minimum=0, maximum=21600)
        form.raise_if_any()
        assert name is not None
        if channel.type not in (ds.GUILD_TEXT, ds.GUILD_ANNOUNCEMENT):
            raise DiscordError(400, 50024, "Cannot execute action on this channel type")
        self.require(channel, ds.CREATE_PUBLIC_THREADS)
        if message.thread_id is not None:
            raise DiscordError(400, 160004, "A thread has already been created for this message")
        thread = self.create_thread(
            channel, message, name, duration or channel.default_auto_archive_duration, slowmode or 0
        )
        payload = self.world.channel_json(thread)
        payload["member"] = {
            "id": str(thread.id),
            "user_id": str(ds.BOT_ID),
            "join_timestamp": iso(thread.create_timestamp or time.time()),
            "flags": 0,
        }
        await self.dispatch("THREAD_CREATE", {**payload, "newly_created": True}, channel=thread)
        await self.dispatch(
            "MESSAGE_UPDATE", self.gateway_message(message), channel=channel, message=message
        )
        return json_response(payload, 201)

    def create_thread(
        self, channel: Channel, message: Message, name: str, duration: int, slowmode: int
    ) -> Channel:
        now = time.time()
        thread = Channel(
            id=message.id,  # a thread started from a message shares the message's id
            guild_id=channel.guild_id,
            type=ds.ANNOUNCEMENT_THREAD
            if channel.type == ds.GUILD_ANNOUNCEMENT
            else ds.PUBLIC_THREAD,
            name=name,
            parent_id=channel.id,
            owner_id=ds.BOT_ID,
            auto_archive_duration=duration,
            rate_limit_per_user=slowmode,
            archive_timestamp=now,
            create_timestamp=now,
            member_ids={ds.BOT_ID},
        )
        self.world.add_channel(thread)
        message.thread_id = thread.id
        message.flags |= ds.HAS_THREAD
        return thread

    # --- application commands ----------------------------------------------------------

    def _check_application(self, ctx: Ctx) -> int | None:
        if ctx.params["application_id"] != self.world.application_id:
            raise DiscordError(*MISSING_ACCESS)
        guild_id = ctx.params.get("guild_id")
        if guild_id is not None and guild_id not in self.world.guilds:
            raise unknown("Guild")
        return guild_id

    async def list_commands(self, ctx: Ctx) -> web.Response:
        guild_id = self._check_application(ctx)
        commands = [c for c in self.world.commands.values() if c.guild_id == guild_id]
        return json_response([c.to_json() for c in commands])

    async def put_commands(self, ctx: Ctx) -> web.Response:
        guild_id = self._check_application(ctx)
        body = ctx.body if ctx.body is not None else []
        if not isinstance(body, list):
            raise invalid_form(
                _err("LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
            )
        form = Form()
        specs: list[dict[str, Any]] = []
        for index, item in enumerate(body):
            path = str(index)
            if not isinstance(item, dict):
                form.add(path, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                continue
            kind = item.get("type") or 1
            if isinstance(kind, bool) or kind not in (1, 2, 3, 4):
                form.add(f"{path}.type", "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4}.")
                continue
            name = item.get("name")
            if not isinstance(name, str) or not 1 <= len(name) <= 32:
                form.add(
                    f"{path}.name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length."
                )
            elif kind == 1 and (not re.fullmatch(r"[-_'\w]{1,32}", name) or name != name.lower()):
                form.add(
                    f"{path}.name", "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                )
            description = item.get("description") or ""
            if kind == 1 and (not isinstance(description, str) or not 1 <= len(description) <= 100):
                form.add(
                    f"{path}.description",
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                )
            options = item.get("options") or []
            if not isinstance(options, list) or len(options) > 25:
                form.add(
                    f"{path}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                )
                continue
            for o_index, option in enumerate(options):
                o_path = f"{path}.options.{o_index}"
                if not isinstance(option, dict):
                    form.add(o_path, "DICT_TYPE_CONVERT", "Only dictionaries may be used")
                    continue
                o_type = option.get("type")
                if isinstance(o_type, bool) or o_type not in range(1, 12):
                    form.add(f"{o_path}.type", "BASE_TYPE_CHOICES", "Value must be 1-11.")
                form.string(option, "name", max_len=32, min_len=1, path=f"{o_path}.name")
                form.string(option, "description", max_len=100, min_len=1,
                            path=f"{o_path}.description")  # fmt: skip
                for key in ("name", "description"):
                    if not isinstance(option.get(key), str):
                        form.add(f"{o_path}.{key}", "BASE_TYPE_REQUIRED", "This field is required")
            if (
                item.get("default_member_permissions") is not None
                and not str(item["default_member_permissions"]).isdigit()
            ):
                form.add(
                    f"{path}.default_member_permissions",
                    "NUMBER_TYPE_COERCE",
                    "Value is not int.",
                )
            for key in ("contexts", "integration_types"):
                value = item.get(key)
                if value is not None and (
                    not isinstance(value, list)
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                ):
                    form.add(f"{path}.{key}", "LIST_TYPE_CONVERT", "Only lists of integers")
            specs.append(item)
        form.raise_if_any()
        existing = {
            (c.name, c.type): c for c in self.world.commands.values() if c.guild_id == guild_id
        }
        for command in existing.values():
            del self.world.commands[command.id]
        result = []
        for item in specs:
            kind = int(item.get("type") or 1)
            previous = existing.get((item["name"], kind))
            permissions = item.get("default_member_permissions")
            command = ds.Command(
                id=previous.id if previous else self.world.ids.next(),
                application_id=self.world.application_id,
                name=item["name"],
                description=item.get("description") or "",
                type=kind,
                options=[
                    self._option_json(o) for o in item.get("options") or [] if isinstance(o, dict)
                ],
                guild_id=guild_id,
                version=self.world.ids.next(),
                default_member_permissions=None if permissions is None else str(permissions),
                contexts=item.get("contexts"),
                integration_types=item.get("integration_types") or [0],
                nsfw=bool(item.get("nsfw", False)),
            )
            self.world.commands[command.id] = command
            result.append(command.to_json())
        return json_response(result)

    @staticmethod
    def _option_json(option: dict[str, Any]) -> dict[str, Any]:
        data = {
            "type": option.get("type", 3),
            "name": option.get("name", ""),
            "description": option.get("description", ""),
        }
        if option.get("required"):
            data["required"] = True
        if isinstance(option.get("choices"), list):
            data["choices"] = option["choices"]
        return data

    # --- interactions ------------------------------------------------------------------

    def interaction(self, interaction_id: int | None, token: str) -> ds.Interaction:
        if interaction_id is None:
            found = self.interaction_tokens.get(token)
            interaction_id = found
        interaction = self.world.interactions.get(interaction_id or 0)
        if interaction is None or interaction.token != token:
            raise unknown("interaction")
        if time.time() - interaction.created > INTERACTION_TTL:
            raise unknown("interaction")
        return interaction

    async def run_command(
        self, user: User, channel: Channel, command: ds.Command, options: dict[str, Any]
    ) -> ds.Interaction:
        """What a member typing the slash command makes Discord send to the bot."""
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        option_list = []
        types = {o.get("name"): o.get("type", 3) for o in command.options}
        for name, value in options.items():
            option_list.append({"name": name, "type": types.get(name, 3), "value": value})
        interaction = ds.Interaction(
            id=self.world.ids.next(),
            token=token,
            channel_id=channel.id,
            guild_id=channel.guild_id,
            user=user,
            command=command,
            options=option_list,
            created=time.time(),
        )
        self.world.interactions[interaction.id] = interaction
        self.interaction_tokens[token] = interaction.id
        data: dict[str, Any] = {
            "id": str(command.id),
            "name": command.name,
            "type": command.type,
        }
        if option_list:
            data["options"] = option_list
        if command.guild_id is not None:
            data["guild_id"] = str(command.guild_id)
        payload: dict[str, Any] = {
            "id": str(interaction.id),
            "application_id": str(self.world.application_id),
            "type": 2,
            "token": token,
            "version": 1,
            "data": data,
            "channel_id": str(channel.id),
            "channel": self.world.channel_json(channel),
            "app_permissions": str(self.world.permissions(channel, ds.BOT_ID)),
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 26_214_400,
        }
        if channel.guild_id is not None:
            guild = self.world.guilds[channel.guild_id]
            member = guild.members.get(user.id) or ds.Member(user)
            payload["guild_id"] = str(guild.id)
            payload["guild"] = {"id": str(guild.id), "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            payload["member"] = {
                **member.to_json(),
                "permissions": str(self.world.permissions(channel, user.id)),
            }
            payload["authorizing_integration_owners"] = {"0": str(guild.id)}
            payload["context"] = 0
        else:
            payload["user"] = user.to_json()
            payload["authorizing_integration_owners"] = {"1": str(user.id)}
            payload["context"] = 1
        await self.dispatch("INTERACTION_CREATE", payload, channel=None)
        return interaction

    def _interaction_meta(self, interaction: ds.Interaction) -> dict[str, Any]:
        owners = (
            {"0": str(interaction.guild_id)}
            if interaction.guild_id
            else {"1": str(interaction.user.id)}
        )
        return {
            "metadata": {
                "id": str(interaction.id),
                "type": 2,
                "user": interaction.user.to_json(),
                "authorizing_integration_owners": owners,
                "name": interaction.command.name,
                "command_type": interaction.command.type,
            },
            "legacy": {
                "id": str(interaction.id),
                "type": 2,
                "name": interaction.command.name,
                "user": interaction.user.to_json(),
            },
        }

    async def interaction_callback(self, ctx: Ctx) -> web.Response:
        interaction = self.interaction(
            ctx.params["interaction_id"], ctx.raw_params["interaction_token"]
        )
        data = ctx.json_object()
        form = Form()
        if data.get("type") is None:
            form.add("type", "BASE_TYPE_REQUIRED", "This field is required")
        kind = form.choice(data, "type", (1, 4, 5, 6, 7, 8, 9, 12))
        inner = data.get("data") or {}
        if not isinstance(inner, dict):
            form.add("data", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            inner = {}
        fields = self._message_fields(form, inner, creating=False)
        raw_flags: int = inner["flags"] if isinstance(inner.get("flags"), int) else 0
        form.raise_if_any()
        if kind not in (4, 5):
            raise DiscordError(400, 40043, "Interaction response type is not supported")
        if interaction.responded:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        channel = self.world.channels[interaction.channel_id]
        ephemeral = bool(raw_flags & ds.EPHEMERAL)
        flags = (raw_flags or 0) & (ds.EPHEMERAL | ds.SUPPRESS_EMBEDS | ds.SUPPRESS_NOTIFICATIONS)
        content = fields["content"] or ""
        if kind == 4 and not content.strip() and not fields["embeds"]:
            raise DiscordError(400, 50006, "Cannot send an empty message")
        if kind == 5:
            flags |= ds.LOADING
            content = ""
        message = self.new_message(
            channel,
            self.world.bot,
            content,
            embeds=fields["embeds"] if kind == 4 else [],
            components=fields["components"] if kind == 4 else [],
            flags=flags,
            allowed_mentions=inner.get("allowed_mentions"),
            type=20,
            interaction=self._interaction_meta(interaction),
            visible_to=interaction.user.id if ephemeral else None,
        )
        interaction.responded = True
        interaction.response_type = kind
        interaction.response_message_id = message.id
        interaction.ephemeral = ephemeral
        ctx.entry["message_id"] = str(message.id)
        if not ephemeral:
            await self.announce(message)
        if ctx.request.query.get("with_response", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        result: dict[str, Any] = {
            "interaction": {
                "id": str(interaction.id),
                "type": 2,
                "response_message_id": str(message.id),
                "response_message_loading": kind == 5,
                "response_message_ephemeral": ephemeral,
                "channel_id": str(channel.id),
            }
        }
        if channel.guild_id:
            result["interaction"]["guild_id"] = str(channel.guild_id)
        if kind == 4:
            result["resource"] = {"type": 4, "message": self.world.message_json(message)}
        return json_response(result)

    def _webhook_interaction(self, ctx: Ctx) -> ds.Interaction:
        if ctx.params["application_id"] != self.world.application_id:
            raise unknown("Webhook")
        try:
            return self.interaction(None, ctx.raw_params["interaction_token"])
        except DiscordError as exc:
            raise unknown("Webhook") from exc

    def _webhook_message(self, ctx: Ctx, interaction: ds.Interaction) -> Message:
        raw = ctx.raw_params.get("message_id", "@original")
        message_id = (
            interaction.response_message_id if raw == "@original" else ctx.params.get("message_id")
        )
        allowed = {interaction.response_message_id, *interaction.followup_ids}
        message = self.world.messages.get(message_id or 0)
        if message is None or message_id not in allowed:
            raise unknown("Message")
        return message

    async def followup_create(self, ctx: Ctx) -> web.Response:
        interaction = self._webhook_interaction(ctx)
        if not interaction.responded:
            raise unknown("interaction")
        data = ctx.json_object()
        form = Form()
        fields = self._message_fields(form, data, creating=False)
        raw_flags: int = data["flags"] if isinstance(data.get("flags"), int) else 0
        form.raise_if_any()
        content = fields["content"] or ""
        if not content.strip() and not fields["embeds"]:
            raise DiscordError(400, 50006, "Cannot send an empty message")
        channel = self.world.channels[interaction.channel_id]
        ephemeral = bool(raw_flags & ds.EPHEMERAL)
        message = self.new_message(
            channel,
            self.world.bot,
            content,
            embeds=fields["embeds"],
            components=fields["components"],
            flags=raw_flags & (ds.EPHEMERAL | ds.SUPPRESS_EMBEDS | ds.SUPPRESS_NOTIFICATIONS),
            allowed_mentions=data.get("allowed_mentions"),
            type=20,
            interaction=self._interaction_meta(interaction),
            visible_to=interaction.user.id if ephemeral else None,
        )
        interaction.followup_ids.append(message.id)
        if not ephemeral:
            await self.announce(message)
        if ctx.request.query.get("wait", "").lower() in ("1", "true"):
            return json_response(self.world.message_json(message))
        return web.Response(status=204)

    async def webhook_message_get(self, ctx: Ctx) -> web.Response:
        interaction = self._webhook_interaction(ctx)
        message = self._webhook_message(ctx, interaction)
        return json_response(self.world.message_json(message))

    async def webhook_message_edit(self, ctx: Ctx) -> web.Response:
        interaction = self._webhook_interaction(ctx)
        message = self._webhook_message(ctx, interaction)
        data = ctx.json_object()
        form = Form()
        fields = self._message_fields(form, data, creating=False)
        form.raise_if_any()
        await self.apply_edit(message, self.world.channels[message.channel_id], data, fields)
        return json_response(self.world.message_json(message))

    async def webhook_message_delete(self, ctx: Ctx) -> web.Response:
        interaction = self._webhook_interaction(ctx)
        message = self._webhook_message(ctx, interaction)
        await self.remove_message(message, self.world.channels[message.channel_id])
        return web.Response(status=204)

    # --- gateway -----------------------------------------------------------------------

    def gateway_message(self, message: Message) -> dict[str, Any]:
        payload = self.world.message_json(message, include_nonce=True)
        if message.guild_id is not None:
            payload["guild_id"] = str(message.guild_id)
            member = self.world.guilds[message.guild_id].members.get(message.author.id)
            if member is not None:
                payload["member"] = member.to_json(with_user=False)
        channel = self.world.channels.get(message.channel_id)
        if channel is not None:
            payload["channel_type"] = channel.type
        return payload

    async def announce(self, message: Message) -> None:
        if message.visible_to is not None:
            return
        channel = self.world.channels[message.channel_id]
        await self.dispatch(
            "MESSAGE_CREATE", self.gateway_message(message), channel=channel, message=message
        )

    def _visible_to_session(
        self,
        session: GatewaySession,
        event: str,
        data: dict[str, Any],
        channel: Channel | None,
        message: Message | None,
    ) -> dict[str, Any] | None:
        if channel is not None and not self.world.can_see(channel, ds.BOT_ID):
            return None
        if event.startswith("MESSAGE_"):
            is_dm = channel is not None and channel.guild_id is None
            needed = ds.INTENT_DIRECT_MESSAGES if is_dm else ds.INTENT_GUILD_MESSAGES
            if not session.intents & needed:
                return None
            if message is not None and not session.intents & ds.INTENT_MESSAGE_CONTENT:
                exempt = is_dm or message.author.id == ds.BOT_ID or ds.BOT_ID in message.mention_ids
                if not exempt:
                    data = {
                        **data,
                        "content": "",
                        "embeds": [],
                        "attachments": [],
                        "components": [],
                    }
        elif event.startswith(("CHANNEL_", "THREAD_", "GUILD_")) and not (
            session.intents & ds.INTENT_GUILDS
        ):
            return None
        return data

    async def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        channel: Channel | None,
        message: Message | None = None,
        only: GatewaySession | None = None,
    ) -> None:
        """Send an event to every gateway session that should receive it (or buffer it)."""
        targets = [only] if only is not None else list(self.sessions.values())
        for session in targets:
            visible = self._visible_to_session(session, event, data, channel, message)
            if visible is None:
                continue
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": visible}
            session.buffer.append(frame)
            if self.core.record_exchanges:
                self.core.gateway_frames.append(frame)
            await self._send(session, frame)

    async def _send(self, session: GatewaySession, frame: dict[str, Any]) -> None:
        ws = session.ws
        if ws is None or ws.closed:
            return
        async with session.lock:
            try:
                await ws.send_str(json.dumps(frame, separators=(",", ":")))
            except (ConnectionError, RuntimeError):
                session.ws = None

    async def send_op(self, op: int, data: Any = None) -> int:
        """Send a bare opcode (7 RECONNECT, 9 INVALID_SESSION) to every connected session."""
        sent = 0
        for session in list(self.sessions.values()):
            ws = session.ws
            if ws is None or ws.closed:
                continue
            async with session.lock:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(json.dumps({"op": op, "d": data, "s": None, "t": None}))
                    sent += 1
            if op == 9:
                self.sessions.pop(session.id, None)
        return sent

    async def close_all(self) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"sandbox stopping")

    async def gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        self.sockets.add(ws)
        session: GatewaySession | None = None
        self.core.log.add(
            {
                "time": time.time(),
                "platform": "discord",
                "method": "GET",
                "path": request.path,
                "route": "GATEWAY connect",
                "status": 101,
                "duration_ms": 0.0,
            }
        )
        try:
            await ws.send_str(
                json.dumps(
                    {
                        "op": 10,
                        "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS},
                        "s": None,
                        "t": None,
                    }
                )
            )
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    payload = json.loads(msg.data)
                    op = payload["op"]
                except (ValueError, KeyError, TypeError):
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                if op == 1:
                    lock = session.lock if session is not None else asyncio.Lock()
                    async with lock:
                        await ws.send_str('{"op":11,"d":null,"s":null,"t":null}')
                elif op == 2:
                    if session is not None:
                        await ws.close(code=4005, message=b"Already authenticated.")
                        break
                    session = await self._identify(ws, payload.get("d"))
                    if session is None:
                        break
                elif op == 6:
                    session = await self._resume(ws, payload.get("d"))
                elif op in (3, 4, 8):
                    if session is None:
                        await ws.close(code=4003, message=b"Not authenticated.")
                        break
                    if op == 8:
                        await self._member_chunk(session, payload.get("d"))
                else:
                    await ws.close(code=4001, message=b"Unknown opcode.")
                    break
        finally:
            self.sockets.discard(ws)
            if session is not None and session.ws is ws:
                session.ws = None
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: Any) -> GatewaySession | None:
        if not isinstance(data, dict) or data.get("token") not in (
            ds.BOT_TOKEN,
            f"Bot {ds.BOT_TOKEN}",
        ):
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = data.get("intents")
        if isinstance(intents, bool) or not isinstance(intents, int) or intents < 0:
            await ws.close(code=4013, message=b"Invalid intent(s).")
            return None
        if intents & ds.INTENT_MESSAGE_CONTENT and not self.world.message_content_allowed:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        shard_raw = data.get("shard") or [0, 1]
        try:
            shard = (int(shard_raw[0]), max(1, int(shard_raw[1])))
        except (TypeError, ValueError, IndexError):
            await ws.close(code=4010, message=b"Invalid shard.")
            return None
        session = GatewaySession(secrets.token_hex(16), intents, shard, ws=ws)
        self.sessions[session.id] = session
        guilds = [g for g in self.world.guilds.values() if (g.id >> 22) % shard[1] == shard[0]]
        guilds = [g for g in guilds if ds.BOT_ID in g.members]
        bot = self.world.bot.to_json()
        bot.update({"verified": True, "mfa_enabled": False, "email": None, "flags": 0})
        ready = {
            "v": 10,
            "user": bot,
            "user_settings": {},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.core.base_ws + GATEWAY_PATH,
            "shard": list(shard),
            "application": {"id": str(self.world.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "auth": {},
        }
        await self.dispatch("READY", ready, channel=None, only=session)
        for guild in guilds:
            await self.dispatch(
                "GUILD_CREATE", self.world.guild_create_json(guild), channel=None, only=session
            )
        return session

    async def _member_chunk(self, session: GatewaySession, data: Any) -> None:
        """Answer Request Guild Members (op 8) with one GUILD_MEMBERS_CHUNK."""
        if not isinstance(data, dict):
            return
        raw = data.get("guild_id")
        if isinstance(raw, list):  # one request may name several guilds
            raw = raw[0] if raw else None
        text = str(raw or "").strip()
        guild = self.world.guilds.get(int(text)) if text.isdigit() else None
        if guild is None:
            return
        members = [m.to_json() for m in guild.members.values()]
        query = data.get("query")
        if isinstance(query, str) and query:
            members = [m for m in members if m["user"]["username"].startswith(query)]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await self.dispatch("GUILD_MEMBERS_CHUNK", chunk, channel=None, only=session)

    async def _resume(self, ws: web.WebSocketResponse, data: Any) -> GatewaySession | None:
        session = None
        if isinstance(data, dict) and data.get("token") in (ds.BOT_TOKEN, f"Bot {ds.BOT_TOKEN}"):
            session = self.sessions.get(str(data.get("session_id")))
        if session is None:
            await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
            return None
        session.ws = ws
        try:
            seq = int(data.get("seq") or 0)
        except (TypeError, ValueError):
            seq = 0
        for frame in list(session.buffer):
            if frame["s"] > seq:
                await self._send(session, frame)
        await self.dispatch("RESUMED", {}, channel=None, only=session)
        return session
