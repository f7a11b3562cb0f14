"""The FastAPI application: the approval panel (server-rendered) and the JSON API.

``create_app`` takes everything from its arguments and keeps it on ``app.state``; there is no
module-level state, so tests and the demo can run several apps side by side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import iter_route_contexts
from fastapi.staticfiles import StaticFiles

from approvals import errors
from approvals.deps import guard
from approvals.routes import (
    account,
    admin,
    api,
    api_detections,
    audit,
    dashboard,
    deliveries,
    detections,
    drafts,
    grants,
    incidents,
    telegram_webhook,
)
from approvals.security import BodyLimitMiddleware, SecurityHeadersMiddleware
from approvals.state import PanelState
from approvals.web import make_templates
from comms import __version__
from comms.auth.crypto import Keys
from comms.auth.touches import purge_expired
from comms.clock import utcnow
from comms.db import Database
from comms.heap import freeze_startup_objects
from comms.settings import ConfigError, Settings

STATIC_DIR = Path(__file__).resolve().parent / "static"
log = logging.getLogger("comms.panel")


TOUCH_FLUSH_SECONDS = 5.0
PURGE_EVERY = 12  # flushes: expired sessions are deleted about once a minute


async def _write_touches(state: PanelState) -> None:
    """Write the visits noted by page views every few seconds; delete expired sessions now
    and then (page views no longer do either)."""
    turn = 0
    while True:
        await asyncio.sleep(TOUCH_FLUSH_SECONDS)
        turn += 1
        try:
            if state.touches.pending or turn % PURGE_EVERY == 0:
                async with state.database.transaction() as session:
                    await state.touches.flush(session)
                    if turn % PURGE_EVERY == 0:
                        await purge_expired(session, timeouts=state.timeouts, now=utcnow())
        except Exception:  # the next turn tries again; a lost visit only shortens idle time
            log.exception("could not write session visits")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: PanelState = app.state.panel
    freeze_startup_objects()  # full collections walked them: the panel's p99
    writer = asyncio.create_task(_write_touches(state))
    try:
        yield
    finally:
        writer.cancel()
        with suppress(asyncio.CancelledError):
            await writer
        if state.touches.pending:
            async with state.database.transaction() as session:
                await state.touches.flush(session)


def create_app(*, settings: Settings, database: Database) -> FastAPI:
    """Build the panel and API. Refuses to build without ``COMMS_SECRET_KEY``."""
    if settings.secret_key is None:
        raise ConfigError(
            "COMMS_SECRET_KEY: required to run the panel (it encrypts two-factor secrets and "
            "signs CSRF tokens); set it to a random value of at least 32 characters"
        )
    app = FastAPI(
        title="Incident comms approval panel API",
        version=__version__,
        description=(
            "Automation API for incident communications. Every request needs an API token "
            "(`Authorization: Bearer ...`) whose scopes cover the action and whose user holds "
            "a role allowed to do it. Approving also needs a current TOTP code in the "
            "`X-Comms-TOTP` header."
        ),
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        dependencies=[Depends(guard)],
        lifespan=_lifespan,
    )
    app.state.panel = PanelState(
        settings=settings,
        database=database,
        keys=Keys(settings.secret_key.get_secret_value()),
        templates=make_templates(),
    )
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(SecurityHeadersMiddleware, settings=settings)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    for module in (
        account,
        dashboard,
        incidents,
        detections,
        drafts,
        deliveries,
        grants,
        audit,
        admin,
    ):
        app.include_router(module.router)
    app.include_router(api.router)
    app.include_router(api_detections.router)
    if settings.telegram_webhook_url is not None:
        # Mounted, not routed: Telegram authenticates with its secret header, never a CSRF
        # token (see approvals/routes/telegram_webhook.py).
        app.mount(telegram_webhook.MOUNT_PATH, telegram_webhook.build(settings))

    def openapi() -> dict[str, Any]:
        """Only the JSON API is documented; the panel's HTML routes are for browsers."""
        if app.openapi_schema is None:
            routes = [
                r for r in iter_route_contexts(app.routes) if (r.path or "").startswith("/api/")
            ]
            app.openapi_schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=routes,
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def route_table(app: FastAPI) -> list[tuple[str, str, Callable[..., Any] | None]]:
    """(method, path, endpoint) for every route the app serves (for the access-rule tests)."""
    table = []
    for context in iter_route_contexts(app.routes):
        for method in sorted(context.methods or ()):
            if method != "HEAD":
                table.append((method, context.path or "", context.endpoint))
    return table
