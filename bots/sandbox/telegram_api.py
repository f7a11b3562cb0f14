"""The Telegram Bot API at ``/bot<token>/<method>``, on top of ``TelegramWorld``."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from . import telegram_markup as markup
from . import telegram_state as ts
from .common import json_response
from .core import MAX_BODY_BYTES, SandboxCore, drop_connection
from .limits import TokenBucket, telegram_retry_seconds
from .telegram_state import TelegramWorld, TgChat, TgMessage, TgUser

MAX_POLL_TIMEOUT = 50
MAX_CAPTION_LENGTH = 1024
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
_WEBHOOK_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to "
    "delete the webhook first"
)
log = logging.getLogger(__name__)


class TelegramError(Exception):
    def __init__(
        self, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def response(self) -> web.Response:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return json_response(body, self.status)


def bad_request(text: str) -> TelegramError:
    return TelegramError(400, f"Bad Request: {text}")


def too_many(retry_after: int) -> TelegramError:
    return TelegramError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


# Parameter types of the supported methods (Bot API 10.1), used to decode form values.
_CHAT = "Integer|String"
METHOD_FIELDS: dict[str, dict[str, str]] = {
    "getMe": {},
    "logOut": {},
    "close": {},
    "getWebhookInfo": {},
    "deleteWebhook": {"drop_pending_updates": "Boolean"},
    "setWebhook": {
        "url": "String",
        "ip_address": "String",
        "max_connections": "Integer",
        "allowed_updates": "Array",
        "drop_pending_updates": "Boolean",
        "secret_token": "String",
    },
    "getUpdates": {
        "offset": "Integer",
        "limit": "Integer",
        "timeout": "Integer",
        "allowed_updates": "Array",
    },
    "sendMessage": {
        "business_connection_id": "String",
        "chat_id": _CHAT,
        "message_thread_id": "Integer",
        "direct_messages_topic_id": "Integer",
        "text": "String",
        "parse_mode": "String",
        "entities": "Array",
        "link_preview_options": "Object",
        "disable_web_page_preview": "Boolean",
        "disable_notification": "Boolean",
        "protect_content": "Boolean",
        "allow_paid_broadcast": "Boolean",
        "message_effect_id": "String",
        "suggested_post_parameters": "Object",
        "reply_parameters": "Object",
        "reply_to_message_id": "Integer",
        "allow_sending_without_reply": "Boolean",
        "reply_markup": "Object",
    },
    "editMessageText": {
        "business_connection_id": "String",
        "chat_id": _CHAT,
        "message_id": "Integer",
        "inline_message_id": "String",
        "text": "String",
        "parse_mode": "String",
        "entities": "Array",
        "link_preview_options": "Object",
        "disable_web_page_preview": "Boolean",
        "reply_markup": "Object",
    },
    "deleteMessage": {"chat_id": _CHAT, "message_id": "Integer"},
    "pinChatMessage": {
        "business_connection_id": "String",
        "chat_id": _CHAT,
        "message_id": "Integer",
        "disable_notification": "Boolean",
    },
    "unpinChatMessage": {
        "business_connection_id": "String",
        "chat_id": _CHAT,
        "message_id": "Integer",
    },
    "unpinAllChatMessages": {"chat_id": _CHAT},
    "setMyCommands": {"commands": "Array", "scope": "Object", "language_code": "String"},
    "getMyCommands": {"scope": "Object", "language_code": "String"},
    "deleteMyCommands": {"scope": "Object", "language_code": "String"},
    "getChat": {"chat_id": _CHAT},
    "setChatPermissions": {
        "chat_id": _CHAT,
        "permissions": "Object",
        "use_independent_chat_permissions": "Boolean",
    },
}
_BY_LOWER = {name.lower(): name for name in METHOD_FIELDS}
_JSON_NAMES = {
    "entities": "entities",
    "link_preview_options": "link preview options",
    "reply_parameters": "reply parameters",
    "reply_markup": "reply keyboard",
    "permissions": "chat permissions",
    "commands": "bot commands",
    "scope": "bot command scope",
    "allowed_updates": "allowed updates",
    "suggested_post_parameters": "suggested post parameters",
}
_SCOPES = {
    "default",
    "all_private_chats",
    "all_group_chats",
    "all_chat_administrators",
    "chat",
    "chat_administrators",
    "chat_member",
}


def _decode(name: str, kind: str, value: Any) -> Any:
    """Turn a form string (or JSON value) into the parameter's type, as the Bot API does."""
    if kind == "String":
        if isinstance(value, str):
            return value
        if isinstance(value, bool) or value is None:
            raise bad_request(f'field "{name}" must be of type String')
        if isinstance(value, int | float):
            return str(value)
        raise bad_request(f'field "{name}" must be of type String')
    if kind == "Integer":
        if isinstance(value, bool):
            raise bad_request(f'field "{name}" must be of type Integer')
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value.strip())
        raise bad_request(f'field "{name}" must be of type Integer')
    if kind == "Integer|String":
        if isinstance(value, bool) or value is None:
            raise bad_request("chat not found")
        if isinstance(value, int):
            return value
        text = str(value).strip()
        return int(text) if text.lstrip("-").isdigit() else text
    if kind == "Boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value != 0
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "false", "0", ""):
            return value.strip().lower() in ("true", "1")
        raise bad_request(f'field "{name}" must be of type Boolean')
    # Objects and arrays arrive JSON-encoded in form bodies.
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise bad_request(f"can't parse {_JSON_NAMES.get(name, name)} JSON object") from exc
    wanted = dict if kind == "Object" else list
    if not isinstance(value, wanted):
        raise bad_request(f"can't parse {_JSON_NAMES.get(name, name)} JSON object")
    return value


Handler = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any]]


class TelegramAPI:
    def __init__(self, core: SandboxCore, world: TelegramWorld) -> None:
        self.core = core
        self.world = world
        self.chat_buckets: dict[int, TokenBucket] = {}
        self.group_logs: dict[int, TokenBucket] = {}
        self.global_log = self._global_bucket()
        # Webhook pushes: one update at a time, in order (as with max_connections=1), retried
        # on anything but 2xx after a delay doubling from ``webhook_retry_first`` up to
        # ``webhook_retry_max`` seconds, for as long as the webhook is set. Tests shorten them.
        self.webhook_retry_first = 0.5
        self.webhook_retry_max = 30.0
        self.webhook_timeout = 10.0
        # Every push attempt: {"time", "url", "update_id", "update", "secret_sent", "status"
        # (the HTTP status, or null when no answer came), "error" (null after a 2xx)}.
        self.webhook_pushes: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self._pusher: asyncio.Task[None] | None = None
        self.handlers: dict[str, Handler] = {
            "getMe": self.get_me,
            "logOut": self.log_out,
            "close": self.log_out,
            "getWebhookInfo": self.get_webhook_info,
            "deleteWebhook": self.delete_webhook,
            "setWebhook": self.set_webhook,
            "getUpdates": self.get_updates,
            "sendMessage": self.send_message,
            "editMessageText": self.edit_message_text,
            "deleteMessage": self.delete_message,
            "pinChatMessage": self.pin_chat_message,
            "unpinChatMessage": self.unpin_chat_message,
            "unpinAllChatMessages": self.unpin_all,
            "setMyCommands": self.set_my_commands,
            "getMyCommands": self.get_my_commands,
            "deleteMyCommands": self.delete_my_commands,
            "getChat": self.get_chat,
            "setChatPermissions": self.set_chat_permissions,
        }

    async def not_found(self, request: web.Request) -> web.Response:
        """Paths under /bot that name no method: the Bot API's own 404."""
        return TelegramError(404, "Not Found").response()

    def reset(self) -> None:
        self._stop_pusher()
        self.webhook_pushes.clear()
        self.chat_buckets.clear()
        self.group_logs.clear()
        self.global_log = self._global_bucket()

    def _global_bucket(self) -> TokenBucket:
        rate = self.core.limits.telegram_global_per_second
        return TokenBucket(float(rate), rate)

    # --- pipeline ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        token = request.match_info["token"]
        method_raw = request.match_info["method"]
        method = _BY_LOWER.get(method_raw.lower(), method_raw)
        entry: dict[str, Any] = {
            "time": time.time(),
            "platform": "telegram",
            "method": request.method,
            "path": f"/bot<token>/{method_raw}",
            "route": method,
        }
        response: web.StreamResponse | None = None
        params: dict[str, Any] | None = None
        try:
            if token != ts.BOT_TOKEN or self.world.token_revoked:
                raise TelegramError(401, "Unauthorized")
            if method not in self.handlers:
                raise TelegramError(404, "Not Found")
            raw = await self._read_params(request)
            params = raw
            decoded = self._decode_params(method, raw)
            if "chat_id" in decoded:
                entry["chat_id"] = decoded["chat_id"]
            chat = self.world.find_chat(decoded.get("chat_id", ""))
            target = str(chat.id) if chat is not None else None
            fault = self.core.faults.pick("telegram", method, target)
            if fault is not None:
                entry["fault"] = fault.kind
                if fault.kind in ("500", "502", "429"):
                    if fault.kind == "429":
                        entry["rate_limited"] = True
                        entry["scope"] = "fault"
                    response = self._fault_response(fault.kind, fault.retry_after)
                    return response
                if not fault.after_effect:
                    if fault.kind == "timeout":
                        await self.core.hang(fault)
                    response = drop_connection(request)
                    entry["status"] = fault.kind
                    return response
            result = await self.handlers[method](decoded, entry)
            response = json_response({"ok": True, "result": result})
            if fault is not None:
                if fault.kind == "timeout":
                    await self.core.hang(fault)
                response = drop_connection(request)
                entry["status"] = fault.kind
            return response
        except TelegramError as exc:
            if exc.status == 429 and "scope" in entry:
                entry["rate_limited"] = True
            response = exc.response()
            return response
        except ConnectionError:
            # The client went away while we read its request: nobody to answer.
            entry["status"] = "disconnected"
            response = web.Response(status=499)
            return response
        except Exception:
            # A bug of ours: keep the Bot API's shape, and make it loud in the log.
            log.exception("sandbox bug while handling %s", method)
            response = TelegramError(500, "Internal Server Error").response()
            entry["sandbox_bug"] = True
            return response
        finally:
            entry["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
            entry.setdefault("status", response.status if response is not None else 0)
            self.core.log.add(entry)
            self.core.record("telegram", method, request, params, response)

    def _fault_response(self, kind: str, retry_after: float) -> web.Response:
        if kind == "429":
            return too_many(telegram_retry_seconds(retry_after)).response()
        if kind == "502":
            return web.Response(
                status=502,
                body=b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
                b"</body>\r\n</html>\r\n",
                content_type="text/html",
            )
        return TelegramError(500, "Internal Server Error").response()

    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise TelegramError(413, "Request Entity Too Large")
        ctype = request.content_type
        try:
            if ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
                return params
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise TelegramError(413, "Request Entity Too Large") from exc
        if raw and ctype == "application/json":
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise bad_request("can't parse JSON object") from exc
            if not isinstance(body, dict):
                raise bad_request("can't parse JSON object")
            params.update(body)
        return params

    @staticmethod
    def _decode_params(method: str, raw: dict[str, Any]) -> dict[str, Any]:
        fields = METHOD_FIELDS[method]
        decoded: dict[str, Any] = {}
        for name, value in raw.items():
            kind = fields.get(name)
            if kind is None or value is None:
                continue  # the Bot API ignores parameters it does not know
            decoded[name] = _decode(name, kind, value)
        return decoded

    # --- helpers -----------------------------------------------------------------------

    def chat(self, params: dict[str, Any]) -> TgChat:
        if "chat_id" not in params or params["chat_id"] == "":
            raise bad_request("chat_id is empty")
        chat = self.world.find_chat(params["chat_id"])
        if chat is None:
            if self.world.find_user(params["chat_id"]) is not None and isinstance(
                params["chat_id"], int
            ):
                raise TelegramError(403, "Forbidden: bot can't initiate conversation with a user")
            raise bad_request("chat not found")
        if not chat.bot_member:
            if chat.type == "private":
                raise TelegramError(403, "Forbidden: bot was blocked by the user")
            kind = {"group": "group", "supergroup": "supergroup", "channel": "channel"}[chat.type]
            if chat.type == "group":
                raise TelegramError(403, "Forbidden: bot was kicked from the group chat")
            raise TelegramError(403, f"Forbidden: bot is not a member of the {kind} chat")
        return chat

    @staticmethod
    def message(chat: TgChat, params: dict[str, Any], what: str) -> TgMessage:
        message_id = params.get("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        message = chat.messages.get(message_id)
        if message is None:
            raise bad_request(f"message to {what} not found")
        return message

    def resolve_user(self, user_id: int) -> dict[str, Any] | None:
        user = self.world.users.get(user_id)
        return user.to_json() if user is not None else None

    def _flood_check(self, chat: TgChat, entry: dict[str, Any]) -> None:
        limits = self.core.limits
        if not limits.enabled:
            return
        now = time.monotonic()
        bucket = self.chat_buckets.get(chat.id)
        if bucket is None:
            bucket = TokenBucket(limits.telegram_chat_per_second, limits.telegram_chat_burst)
            self.chat_buckets[chat.id] = bucket
        waits = {"chat": bucket.retry_after(now)}
        group = None
        if chat.id < 0:
            group = self.group_logs.get(chat.id)
            if group is None:
                per_minute = limits.telegram_group_per_minute
                group = TokenBucket(per_minute / 60.0, per_minute)
                self.group_logs[chat.id] = group
            waits["group"] = group.retry_after(now)
        waits["global"] = self.global_log.retry_after(now)
        scope, wait = max(waits.items(), key=lambda item: item[1])
        if wait > 0:
            entry["scope"] = scope
            raise too_many(telegram_retry_seconds(wait))
        bucket.consume(now)
        if group is not None:
            group.consume(now)
        self.global_log.consume(now)

    # --- methods -----------------------------------------------------------------------

    async def get_me(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        data = self.world.bot.to_json()
        data.update(
            {
                "can_join_groups": True,
                "can_read_all_group_messages": not self.world.privacy_mode,
                "supports_inline_queries": False,
                "can_connect_to_business": False,
                "has_main_web_app": False,
            }
        )
        return data

    async def log_out(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        return True

    async def get_webhook_info(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        world = self.world
        info: dict[str, Any] = {
            "url": world.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(world.queue.updates),
        }
        if world.webhook_url:
            info["max_connections"] = world.webhook_max_connections
            if world.webhook_allowed_updates is not None:
                info["allowed_updates"] = list(world.webhook_allowed_updates)
        if world.webhook_last_error_date is not None:
            info["last_error_date"] = world.webhook_last_error_date
            info["last_error_message"] = world.webhook_last_error_message or ""
        return info

    async def delete_webhook(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        """Back to getUpdates. A push in flight is abandoned: its update stays pending (the
        receiver may have seen it; Telegram delivers at least once)."""
        await self._remove_webhook()
        if params.get("drop_pending_updates"):
            self.world.queue.clear()
        return True

    async def _remove_webhook(self) -> None:
        world = self.world
        self._stop_pusher()
        world.webhook_url = ""
        world.webhook_secret = None
        world.webhook_allowed_updates = None
        world.webhook_last_error_date = None
        world.webhook_last_error_message = None

    async def set_webhook(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        """Push updates to ``url`` from now on. Unlike Telegram, plain http and any port are
        accepted (the sandbox pushes to loopback servers); an empty URL removes the webhook.
        Setting the same URL and secret again keeps the delivery going as it was (pending
        updates, retry delay)."""
        world = self.world
        url = params.get("url")
        if url is None:
            raise bad_request('parameter "url" is required')
        if url == "":
            await self._remove_webhook()
            return True
        try:
            parts = urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            valid = False
        if not valid:
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not _WEBHOOK_SECRET.match(secret):
            raise bad_request("bad webhook: secret token contains unallowed characters")
        connections = params.get("max_connections", world.webhook_max_connections)
        if not 1 <= connections <= 100:
            raise bad_request("bad webhook: max_connections must be between 1 and 100")
        allowed = params.get("allowed_updates")
        if allowed is not None:
            names = [a for a in allowed if isinstance(a, str)]
            world.queue.allowed = frozenset(names) if names else ts.DEFAULT_ALLOWED_UPDATES
            world.webhook_allowed_updates = sorted(world.queue.allowed)
        if params.get("drop_pending_updates"):
            world.queue.clear()
        changed = (url, secret) != (world.webhook_url, world.webhook_secret)
        world.webhook_url, world.webhook_secret = url, secret
        world.webhook_max_connections = connections
        if changed:
            self._stop_pusher()
            world.webhook_last_error_date = world.webhook_last_error_message = None
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.create_task(self._push_updates(), name="telegram-webhook")
        async with world.queue.changed:
            world.queue.changed.notify_all()  # a held getUpdates now ends with 409
        return True

    def _stop_pusher(self) -> None:
        if self._pusher is not None:
            self._pusher.cancel()
            self._pusher = None

    async def _push_updates(self) -> None:
        """Deliver pending updates to the webhook, oldest first, until it is removed or the
        sandbox stops. An update leaves the queue only when the receiver answered 2xx."""
        world, queue, stopping = self.world, self.world.queue, self.core.stopping
        delay = self.webhook_retry_first
        timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while world.webhook_url and not stopping.is_set():
                pending = queue.available(1)
                if not pending:
                    async with queue.changed:
                        if not queue.available(1) and not stopping.is_set():
                            await queue.changed.wait()
                    continue
                update = pending[0]
                error = await self._push(session, update)
                if stopping.is_set():
                    return
                if error is None:
                    queue.confirm(update["update_id"] + 1)
                    delay = self.webhook_retry_first
                    continue
                world.webhook_last_error_date = world.now()
                world.webhook_last_error_message = error
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
                delay = min(delay * 2, self.webhook_retry_max)

    async def _push(self, session: aiohttp.ClientSession, update: dict[str, Any]) -> str | None:
        """POST one update as Telegram does; the error text getWebhookInfo will show, or None.
        Races the sandbox's stop so that stopping never waits for a slow receiver."""
        world = self.world
        headers = {"Content-Type": "application/json"}
        if world.webhook_secret is not None:
            headers[SECRET_HEADER] = world.webhook_secret
        record: dict[str, Any] = {
            "time": time.time(),
            "url": world.webhook_url,
            "update_id": update["update_id"],
            "update": update,
            "secret_sent": world.webhook_secret is not None,
            "status": None,
            "error": None,
        }
        self.webhook_pushes.append(record)

        async def post() -> str | None:
            try:
                async with session.post(
                    world.webhook_url, data=json.dumps(update), headers=headers
                ) as response:
                    await response.read()
                    record["status"] = response.status
                    if 200 <= response.status < 300:
                        return None
                    return f"Wrong response from the webhook: {response.status} {response.reason}"
            except TimeoutError:
                return "Read timeout expired"
            except aiohttp.ClientConnectorError:
                return "Connection refused"
            except aiohttp.ClientError as exc:
                return f"Connection error: {type(exc).__name__}"

        sending = asyncio.ensure_future(post())
        stopped = asyncio.ensure_future(self.core.stopping.wait())
        try:
            await asyncio.wait({sending, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not sending.done():
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending
        error = "Sandbox stopped" if sending.cancelled() else sending.result()
        record["error"] = error
        return error

    async def get_updates(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        queue = self.world.queue
        if self.world.webhook_url:
            raise TelegramError(409, WEBHOOK_CONFLICT)
        limit = params.get("limit", 100)
        limit = 100 if not isinstance(limit, int) or limit < 1 or limit > 100 else limit
        timeout = params.get("timeout", 0)
        timeout = max(0, min(MAX_POLL_TIMEOUT, timeout if isinstance(timeout, int) else 0))
        allowed = params.get("allowed_updates")
        if allowed is not None:
            names = [a for a in allowed if isinstance(a, str)]
            queue.allowed = frozenset(names) if names else ts.DEFAULT_ALLOWED_UPDATES
        queue.generation += 1
        mine = queue.generation
        async with queue.changed:
            queue.changed.notify_all()  # an older long poll is terminated by this one
        if "offset" in params:
            queue.confirm(params["offset"])
        updates = queue.available(limit)
        if updates or timeout == 0:
            return updates
        deadline = time.monotonic() + timeout
        async with queue.changed:
            while True:
                if self.world.webhook_url:
                    raise TelegramError(409, WEBHOOK_CONFLICT)
                if queue.generation != mine:
                    raise TelegramError(
                        409,
                        "Conflict: terminated by other getUpdates request; make sure that only "
                        "one bot instance is running",
                    )
                updates = queue.available(limit)
                remaining = deadline - time.monotonic()
                if updates or remaining <= 0 or self.core.stopping.is_set():
                    return updates
                try:
                    await asyncio.wait_for(queue.changed.wait(), remaining)
                except TimeoutError:
                    return queue.available(limit)

    def _check_can_post(self, chat: TgChat) -> None:
        if chat.type == "channel" and not chat.right("can_post_messages"):
            raise bad_request("need administrator rights in the channel chat")
        if chat.is_group and not chat.bot_admin and not chat.permissions.get("can_send_messages"):
            raise bad_request("not enough rights to send text messages to the chat")

    def _format(
        self, params: dict[str, Any], *, required: bool = True
    ) -> markup.FormattedText | None:
        text = params.get("text")
        if text is None:
            if required:
                raise bad_request("message text is empty")
            return None
        entities = params.get("entities")
        if entities is not None:
            for entity in entities:
                if (
                    not isinstance(entity, dict)
                    or not isinstance(entity.get("type"), str)
                    or not isinstance(entity.get("offset"), int)
                    or not isinstance(entity.get("length"), int)
                ):
                    raise bad_request("can't parse entities JSON object")
        try:
            return markup.prepare_text(
                text, params.get("parse_mode"), entities, resolve_user=self.resolve_user
            )
        except markup.EntityParseError as exc:
            raise TelegramError(400, exc.description) from exc
        except markup.MessageTextError as exc:
            raise TelegramError(400, exc.description) from exc

    @staticmethod
    def _link_preview(params: dict[str, Any]) -> dict[str, Any] | None:
        options = params.get("link_preview_options")
        if options is None and params.get("disable_web_page_preview"):
            options = {"is_disabled": True}
        if options is None:
            return None
        cleaned: dict[str, Any] = {}
        for key in (
            "is_disabled",
            "prefer_small_media",
            "prefer_large_media",
            "show_above_text",
        ):
            if key in options:
                if not isinstance(options[key], bool):
                    raise bad_request("can't parse link preview options JSON object")
                if options[key]:
                    cleaned[key] = True
        if "url" in options:
            if not isinstance(options["url"], str):
                raise bad_request("can't parse link preview options JSON object")
            cleaned["url"] = options["url"]
        return cleaned or None

    async def send_message(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        chat = self.chat(params)
        self._check_can_post(chat)
        formatted = self._format(params)
        assert formatted is not None
        preview = self._link_preview(params)
        reply_to = None
        reply = params.get("reply_parameters")
        if reply is None and params.get("reply_to_message_id") is not None:
            reply = {
                "message_id": params["reply_to_message_id"],
                "allow_sending_without_reply": params.get("allow_sending_without_reply", False),
            }
        if reply is not None:
            target = reply.get("message_id")
            if isinstance(target, bool) or not isinstance(target, int):
                raise bad_request("can't parse reply parameters JSON object")
            reply_chat = chat
            if reply.get("chat_id") is not None:
                other = self.world.find_chat(reply["chat_id"])
                if other is None:
                    raise bad_request("chat not found")
                reply_chat = other
            if target in reply_chat.messages and reply_chat is chat:
                reply_to = target
            elif not reply.get("allow_sending_without_reply"):
                raise bad_request("message to be replied not found")
        keyboard = params.get("reply_markup")
        self._flood_check(chat, entry)
        message = TgMessage(
            message_id=self.world.next_message_id(chat),
            chat_id=chat.id,
            date=self.world.now(),
            text=formatted.text,
            entities=formatted.entities,
            sender=None if chat.type == "channel" else self.world.bot,
            reply_to=reply_to,
            link_preview_options=preview,
            silent=bool(params.get("disable_notification")),
            protected=bool(params.get("protect_content")),
            reply_markup=keyboard
            if isinstance(keyboard, dict) and "inline_keyboard" in keyboard
            else None,
        )
        self.world.add_message(chat, message)
        chat.last_bot_id = self.world.bot.id
        entry["message_id"] = message.message_id
        self.core.log.stats.message_created("telegram", chat.id)
        await self._forward_to_discussion(chat, message)
        return self.world.message_json(chat, message)

    async def _forward_to_discussion(self, channel: TgChat, post: TgMessage) -> None:
        """A channel post appears in the linked discussion group as an automatic forward
        (``is_automatic_forward``, ``sender_chat`` the channel, sent by Telegram's service
        account); the bot sees it as it would see any member's message there."""
        group = self.world.chats.get(channel.linked_chat_id or 0)
        if channel.type != "channel" or group is None:
            return
        copy = TgMessage(
            message_id=self.world.next_message_id(group),
            chat_id=group.id,
            date=post.date,
            text=post.text,
            entities=[dict(entity) for entity in post.entities],
            sender=self.world.service_user,
            forwarded_from=(channel.id, post.message_id),
        )
        self.world.add_message(group, copy)
        if self.bot_receives(group, copy):
            await self.world.queue.push("message", self.world.message_json(group, copy))

    async def edit_message_text(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        if params.get("inline_message_id") is not None and params.get("chat_id") is None:
            raise bad_request("MESSAGE_ID_INVALID")
        chat = self.chat(params)
        message = self.message(chat, params, "edit")
        if message.sender is not self.world.bot and not (
            chat.type == "channel" and message.sender is None
        ):
            raise bad_request("message can't be edited")
        if message.pinned_message_id is not None:
            raise bad_request("message can't be edited")
        formatted = self._format(params)
        assert formatted is not None
        preview = self._link_preview(params)
        keyboard = params.get("reply_markup")
        if (
            formatted.text == message.text
            and formatted.entities == message.entities
            and preview == message.link_preview_options
            and keyboard == message.reply_markup
        ):
            raise bad_request(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        message.text = formatted.text
        message.entities = formatted.entities
        message.link_preview_options = preview
        message.reply_markup = keyboard if isinstance(keyboard, dict) else None
        message.edit_date = self.world.now()
        entry["message_id"] = message.message_id
        return self.world.message_json(chat, message)

    async def delete_message(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        chat = self.chat(params)
        message = self.message(chat, params, "delete")
        own = message.sender is self.world.bot or (
            chat.type == "channel" and message.sender is None
        )
        if not own and chat.type != "private" and not chat.right("can_delete_messages"):
            raise bad_request("message can't be deleted")
        del chat.messages[message.message_id]
        entry["message_id"] = message.message_id
        return True

    def _check_pin_rights(self, chat: TgChat) -> None:
        if chat.type == "channel":
            if not chat.right("can_edit_messages"):
                raise bad_request("not enough rights to manage pinned messages in the chat")
        elif chat.is_group:
            member_may = chat.type == "group" and chat.permissions.get("can_pin_messages")
            if not chat.right("can_pin_messages") and not member_may:
                raise bad_request("not enough rights to manage pinned messages in the chat")

    async def pin_chat_message(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        chat = self.chat(params)
        message = self.message(chat, params, "pin")
        self._check_pin_rights(chat)
        if message.pinned_message_id is not None:
            raise bad_request("message can't be pinned")
        message.pinned = True
        notice = TgMessage(
            message_id=self.world.next_message_id(chat),
            chat_id=chat.id,
            date=self.world.now(),
            text="",
            entities=[],
            sender=None if chat.type == "channel" else self.world.bot,
            pinned_message_id=message.message_id,
            silent=bool(params.get("disable_notification")),
        )
        self.world.add_message(chat, notice)
        entry["message_id"] = message.message_id
        return True

    async def unpin_chat_message(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        chat = self.chat(params)
        self._check_pin_rights(chat)
        if params.get("message_id") is None:
            pinned = [m for m in chat.messages.values() if m.pinned]
            if not pinned:
                raise bad_request("message to unpin not found")
            message = pinned[-1]
        else:
            message = self.message(chat, params, "unpin")
        message.pinned = False
        return True

    async def unpin_all(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        chat = self.chat(params)
        self._check_pin_rights(chat)
        for message in chat.messages.values():
            message.pinned = False
        return True

    @staticmethod
    def _scope_key(params: dict[str, Any]) -> str:
        scope = params.get("scope") or {"type": "default"}
        if scope.get("type") not in _SCOPES:
            raise bad_request("unsupported bot command scope type")
        return json.dumps(scope, sort_keys=True) + "|" + str(params.get("language_code") or "")

    async def set_my_commands(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        commands = params.get("commands")
        if commands is None:
            raise bad_request('parameter "commands" is required')
        if len(commands) > 100:
            raise bad_request("too many commands specified")
        cleaned = []
        for command in commands:
            if not isinstance(command, dict):
                raise bad_request("can't parse bot commands JSON object")
            name = command.get("command")
            description = command.get("description")
            if not isinstance(name, str) or not 1 <= len(name) <= 32:
                raise bad_request("BOT_COMMAND_INVALID")
            if not all(c.islower() or c.isdigit() or c == "_" for c in name):
                raise bad_request("BOT_COMMAND_INVALID")
            if not isinstance(description, str) or not 1 <= len(description) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": name, "description": description})
        self.world.commands[self._scope_key(params)] = cleaned
        return True

    async def get_my_commands(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        return self.world.commands.get(self._scope_key(params), [])

    async def delete_my_commands(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        self.world.commands.pop(self._scope_key(params), None)
        return True

    async def get_chat(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        chat = self.chat(params)
        data = chat.to_json()
        data.update(
            {
                "accent_color_id": 0,
                "max_reaction_count": 11,
                "accepted_gift_types": {
                    "unlimited_gifts": False,
                    "limited_gifts": False,
                    "unique_gifts": False,
                    "premium_subscription": False,
                    "gifts_from_channels": False,
                },
            }
        )
        if chat.description:
            data["description"] = chat.description
        if chat.linked_chat_id is not None:
            data["linked_chat_id"] = chat.linked_chat_id
        if chat.is_group:
            data["permissions"] = dict(chat.permissions)
            if chat.slow_mode_delay:
                data["slow_mode_delay"] = chat.slow_mode_delay
        pinned = [m for m in chat.messages.values() if m.pinned]
        if pinned:
            data["pinned_message"] = self.world.message_json(chat, pinned[-1])
        return data

    async def set_chat_permissions(self, params: dict[str, Any], entry: dict[str, Any]) -> Any:
        chat = self.chat(params)
        if not chat.is_group:
            raise bad_request("method is available only for supergroups and basic groups")
        permissions = params.get("permissions")
        if permissions is None:
            raise bad_request('parameter "permissions" is required')
        if not chat.right("can_restrict_members"):
            raise bad_request("not enough rights to change chat permissions")
        for key, value in permissions.items():
            if key in ts.MEMBER_PERMISSIONS:
                if not isinstance(value, bool):
                    raise bad_request("can't parse chat permissions JSON object")
                chat.permissions[key] = value
        return True

    # --- messages from community members ------------------------------------------------

    def bot_receives(self, chat: TgChat, message: TgMessage) -> bool:
        """Privacy mode as documented: what a bot in a group is shown. Bots never see other
        bots' messages, whatever the mode."""
        if message.sender is not None and message.sender.is_bot:
            return False
        if chat.type in ("private", "channel"):
            return chat.bot_member
        if not chat.bot_member:
            return False
        if chat.bot_admin or not self.world.privacy_mode:
            return True
        username = (self.world.bot.username or "").lower()
        for entity in message.entities:
            covered = markup.entity_text(message.text, entity).lower()
            if entity["type"] == "bot_command":
                addressed = covered.split("@", 1)[1] if "@" in covered else None
                if addressed == username or (
                    addressed is None and chat.last_bot_id == self.world.bot.id
                ):
                    return True
            elif (entity["type"] == "mention" and covered == f"@{username}") or (
                entity["type"] == "text_mention" and entity.get("user", {}).get("id") == ts.BOT_ID
            ):
                return True
        if message.reply_to is not None:
            replied = chat.messages.get(message.reply_to)
            if replied is not None and replied.sender is self.world.bot:
                return True
        return False

    @staticmethod
    def _photo_sizes(chat: TgChat, *, message_id: int) -> list[dict[str, Any]]:
        """Two sizes of a made-up photo, with ids unique per message (files are not served)."""
        base = f"sandbox-photo-{abs(chat.id)}-{message_id}"
        return [
            {
                "file_id": f"{base}-s",
                "file_unique_id": f"{base}s",
                "width": 90,
                "height": 90,
                "file_size": 1200,
            },
            {
                "file_id": f"{base}-m",
                "file_unique_id": f"{base}m",
                "width": 800,
                "height": 800,
                "file_size": 48000,
            },
        ]

    async def edit_as_member(self, chat: TgChat, message: TgMessage, text: str) -> bool:
        """A member edits their message; returns whether the bot got ``edited_message``."""
        formatted = markup.prepare_text(
            text,
            None,
            resolve_user=self.resolve_user,
            max_length=MAX_CAPTION_LENGTH if message.photo is not None else markup.MAX_TEXT_LENGTH,
        )
        message.text = formatted.text
        message.entities = formatted.entities
        message.edit_date = self.world.now()
        delivered = self.bot_receives(chat, message)
        if delivered:
            kind = "edited_channel_post" if chat.type == "channel" else "edited_message"
            await self.world.queue.push(kind, self.world.message_json(chat, message))
        return delivered

    async def post_as_member(
        self,
        chat: TgChat,
        user: TgUser,
        text: str,
        *,
        reply_to: int | None = None,
        parse_mode: str | None = None,
        photo: bool = False,
    ) -> tuple[TgMessage, bool]:
        """A community member writes in a chat; returns the message and whether the bot got it.

        ``photo``: the member sends a photo and ``text`` is its caption (up to 1024 long, may
        be empty), delivered as ``photo``, ``caption`` and ``caption_entities``."""
        if photo and not text.strip():
            formatted = markup.FormattedText("", [])
        else:
            formatted = markup.prepare_text(
                text,
                parse_mode,
                resolve_user=self.resolve_user,
                max_length=MAX_CAPTION_LENGTH if photo else markup.MAX_TEXT_LENGTH,
            )
        if reply_to is not None and reply_to not in chat.messages:
            raise bad_request("message to be replied not found")
        message_id = self.world.next_message_id(chat)
        message = TgMessage(
            message_id=message_id,
            chat_id=chat.id,
            date=self.world.now(),
            text=formatted.text,
            entities=formatted.entities,
            sender=None if chat.type == "channel" else user,
            reply_to=reply_to,
            photo=self._photo_sizes(chat, message_id=message_id) if photo else None,
        )
        self.world.add_message(chat, message)
        chat.members.add(user.id)
        delivered = self.bot_receives(chat, message)
        if delivered:
            kind = "channel_post" if chat.type == "channel" else "message"
            await self.world.queue.push(kind, self.world.message_json(chat, message))
        return message, delivered
