"""``POST /telegram/webhook``: Telegram's pushed updates, handed to this process's listener.

Telegram authenticates itself with the secret given to ``setWebhook``, sent back in
``X-Telegram-Bot-Api-Secret-Token``; there is no session, API token or CSRF token. The panel's
guard (``approvals/deps.py``) demands a CSRF token on every unsafe route outside ``/api/``,
which Telegram can never send, so this route is a small Starlette router mounted beside the
FastAPI routes (like ``/static``): the guard does not run here and the secret check below is
the whole access rule (declared ``Gate.PUBLIC``: no person is authenticated). It is mounted
only when ``COMMS_TELEGRAM_WEBHOOK_URL`` is set. Body limits and security headers still apply
(the middlewares wrap the whole app).

The listener runs in the same process (``comms serve``) and registers itself in ``RECEIVERS``
through the composition root (``comms/cli/runtime.py``), since ``approvals`` and ``bots`` never
import each other. With no listener registered the answer is 503: Telegram keeps the update and
retries, so nothing is lost while the listener restarts.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router

from approvals.rules import Gate, allow
from comms.settings import TELEGRAM_WEBHOOK_PATH, Settings

log = logging.getLogger("comms.telegram.webhook")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
# An update is a message or an edit (4,096 characters, entities, one replied-to message):
# far below this. The app-wide BodyLimitMiddleware (1 MB) has already read the body.
MAX_UPDATE_BYTES = 256 * 1024
MOUNT_PATH, _, _ROUTE_NAME = TELEGRAM_WEBHOOK_PATH.rpartition("/")

Receiver = Callable[[dict[str, Any]], None]


class WebhookReceivers:
    """The in-process meeting point of the webhook route and the Telegram listener: at most
    one receiver (the running listener's ``accept_update``). Process-wide on purpose: uvicorn
    builds the panel from the settings, and the listener is started beside it by
    ``comms serve``; each only knows this object."""

    def __init__(self) -> None:
        self._receiver: Receiver | None = None

    def register(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def unregister(self, receiver: Receiver) -> None:
        """Forget ``receiver`` if it is still the one registered (a newer one stays)."""
        if self._receiver == receiver:
            self._receiver = None

    def current(self) -> Receiver | None:
        return self._receiver


RECEIVERS = WebhookReceivers()


def _answer(status: int, description: str) -> JSONResponse:
    return JSONResponse({"ok": status == 200, "description": description}, status_code=status)


def build(settings: Settings, receivers: WebhookReceivers = RECEIVERS) -> Router:
    """The router to mount at ``MOUNT_PATH``. The expected secret is computed once here."""
    expected = settings.telegram_webhook_token()
    expected_bytes = expected.encode("ascii") if expected is not None else None

    @allow(Gate.PUBLIC)
    async def telegram_webhook(request: Request) -> Response:
        """Check the secret before reading anything, then hand the update over and answer at
        once: Telegram waits for the answer before pushing the next update."""
        supplied = request.headers.get(SECRET_HEADER)
        # Header values arrive latin-1 decoded: encoding back gives the bytes as sent.
        if (
            expected_bytes is None
            or supplied is None
            or not hmac.compare_digest(supplied.encode("latin-1"), expected_bytes)
        ):
            return _answer(403, "Forbidden: wrong or missing secret token")
        body = await request.body()
        if len(body) > MAX_UPDATE_BYTES:
            return _answer(413, "Request Entity Too Large")
        try:
            data = json.loads(body)
        except ValueError:
            return _answer(400, "Bad Request: the body is not JSON")
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            return _answer(400, "Bad Request: not a Telegram Update")
        receiver = receivers.current()
        if receiver is None:
            # `comms serve --no-bots`, `--workers N`, or the listener restarting: Telegram
            # keeps the update and retries it.
            return _answer(503, "Service Unavailable: no Telegram listener in this process")
        try:
            receiver(data)
        except Exception:
            log.exception("cannot read Telegram update %s", data.get("update_id"))
            return _answer(400, "Bad Request: the update cannot be read")
        return _answer(200, "OK")

    return Router(routes=[Route(f"/{_ROUTE_NAME}", telegram_webhook, methods=["POST"])])
