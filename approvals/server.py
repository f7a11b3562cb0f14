"""Running the panel: migrations, then uvicorn. ``comms serve`` and ``comms demo`` call this."""

from __future__ import annotations

import secrets

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from approvals.app import create_app
from comms.db import Database
from comms.migrate import upgrade
from comms.settings import Settings, load_settings


def demo_settings(settings: Settings) -> Settings:
    """Demo mode may run without ``COMMS_SECRET_KEY``: a throwaway key for this process
    (two-factor enrolled during the demo then stops working after a restart)."""
    if settings.secret_key is not None:
        return settings
    return settings.model_copy(update={"secret_key": SecretStr(secrets.token_urlsafe(48))})


def build(settings: Settings, *, demo: bool = False) -> tuple[Settings, Database]:
    """Apply migrations and check the configuration; raises ConfigError naming a setting."""
    chosen = demo_settings(settings) if demo else settings
    upgrade(chosen.database_url)
    return chosen, Database(chosen.database_url)


def server(
    settings: Settings, host: str = "127.0.0.1", port: int = 8000, *, demo: bool = False
) -> uvicorn.Server:
    """A configured uvicorn server for the panel (migrations applied), to run in any loop:
    ``await server(...).serve()`` next to the worker in one asyncio process."""
    chosen, database = build(settings, demo=demo)
    app = create_app(settings=chosen, database=database)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=chosen.log_level.lower(),
        proxy_headers=True,
        server_header=False,
    )
    return uvicorn.Server(config)


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 8000, *, demo: bool = False
) -> None:
    """Migrate, then serve the panel and API until interrupted."""
    server(settings, host, port, demo=demo).run()


def app_from_environment() -> FastAPI:
    """The panel built from the environment (``COMMS_*``, ``COMMS_CONFIG``): the factory each
    of ``comms serve --workers N``'s processes calls (uvicorn starts them; the parent has
    applied the migrations)."""
    settings = load_settings()
    return create_app(settings=settings, database=Database(settings.database_url))


def serve_processes(settings: Settings, host: str, port: int, *, processes: int) -> None:
    """Migrate, then serve the panel from ``processes`` processes sharing one socket, until
    interrupted. One process runs Python on one core at a time: during an incident the whole
    team is in the panel, and on PostgreSQL one process saturated at 60-70 pages a second."""
    build(settings)  # migrations, and the configuration checked once, here
    create_app(settings=settings, database=Database(settings.database_url))  # refuses early
    uvicorn.run(
        "approvals.server:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=processes,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        server_header=False,
    )
