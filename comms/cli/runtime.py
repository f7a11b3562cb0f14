"""The composition root: the commands that start the service's processes (the worker, the panel,
the demo, the sandbox). This is the only module of ``comms`` that imports ``approvals`` and
``bots``; a lint rule (ruff's banned imports) keeps it so.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from comms import flows
from comms.cli.base import (
    EXIT_USAGE,
    AppContext,
    cli,
    configure_logging,
    fail,
    log,
    pass_app,
)
from comms.db import Database
from comms.drafts import gate
from comms.heap import freeze_startup_objects
from comms.settings import ConfigError, Settings

if TYPE_CHECKING:
    from bots.telegram_listener import WebhookRegistry


async def _record_gate(settings: Settings, database: Database, process: str) -> None:
    """Audit the approval settings this process starts with; warn when they got weaker."""
    async with database.transaction() as session:
        weaker = await flows.record_gate_configuration(session, settings=settings, process=process)
    configuration = gate.configuration(settings)
    log.info("approval settings: %s", configuration)
    for change in weaker:
        log.warning("approval settings weakened since the last start: %s", change)


async def _run_worker(settings: Settings, database: Database, stop: asyncio.Event) -> None:
    """The outbox worker with the publishers the configuration provides, until ``stop``."""
    from bots.publishers import build_publishers
    from comms.outbox.worker import Worker

    publishers = build_publishers(settings)
    if not publishers:
        log.warning("no COMMS_DISCORD_TOKEN or COMMS_TELEGRAM_TOKEN: nothing can be published")
    for publisher in publishers.values():
        try:
            await publisher.start()
        except Exception as error:  # keep running: deliveries retry once the platform answers
            log.error("%s publisher could not start: %s", publisher.platform.value, error)
    freeze_startup_objects()  # full collections walked them, pausing every delivery in hand
    try:
        await Worker(database=database, settings=settings, publishers=publishers).run(stop)
    finally:
        for publisher in publishers.values():
            await publisher.close()


async def _run_bots(
    settings: Settings,
    database: Database,
    stop: asyncio.Event,
    *,
    webhook: WebhookRegistry | None = None,
) -> None:
    """The community-report listeners the configuration provides, until ``stop``. A listener
    that cannot start is logged and left out: the other one, and publishing, go on.

    ``webhook`` is the panel's Telegram webhook registry when the panel runs in this process;
    without it (``comms bots``) a Telegram listener in webhook mode refuses to start, since the
    updates would reach another process."""
    from bots.discord_listener import DiscordListener
    from bots.telegram_listener import TelegramListener
    from comms.detections.intake import Intake

    intake = Intake(database=database, settings=settings)
    listeners: list[DiscordListener | TelegramListener] = []
    if settings.discord_token is not None:
        listeners.append(DiscordListener(settings, intake))
    if settings.telegram_token is not None:
        listeners.append(TelegramListener(settings, intake, webhook=webhook))
    if not listeners:
        log.warning("no COMMS_DISCORD_TOKEN or COMMS_TELEGRAM_TOKEN: no community reports")
    started = []
    for listener in listeners:
        try:
            await listener.start()
            started.append(listener)
        except Exception as error:
            log.error("%s could not start: %s", type(listener).__name__, error)
    try:
        await stop.wait()
    finally:
        for listener in started:
            await listener.stop()


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


@cli.command("worker")
@pass_app
def worker(app: AppContext) -> None:
    """Run the outbox worker: send approved announcements and internal notifications."""
    from comms.migrate import upgrade

    configure_logging(app.settings.log_level)
    upgrade(app.settings.database_url)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        database = Database(app.settings.database_url)
        try:
            await _record_gate(app.settings, database, "comms worker")
            await _run_worker(app.settings, database, stop)
        finally:
            await database.dispose()

    asyncio.run(main())


@cli.command("bots")
@pass_app
def bots(app: AppContext) -> None:
    """Run the community-report listeners: /report, mentions and DMs to the Discord and
    Telegram bots become detections (docs/DETECTIONS.md)."""
    from comms.migrate import upgrade

    configure_logging(app.settings.log_level)
    upgrade(app.settings.database_url)

    async def main() -> None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        database = Database(app.settings.database_url)
        try:
            await _run_bots(app.settings, database, stop)
        finally:
            await database.dispose()

    asyncio.run(main())


@cli.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
def sandbox(host: str, port: int) -> None:
    """Run the Discord and Telegram emulators; the first line printed is their JSON info."""
    from bots.sandbox import run

    run(host=host, port=port)


async def _serve_panel_and_worker(
    settings: Settings,
    host: str,
    port: int,
    *,
    demo: bool,
    with_worker: bool = True,
    with_bots: bool = True,
) -> None:
    """The panel (uvicorn), the outbox worker and the report listeners in one asyncio process,
    until interrupted."""
    from approvals.routes.telegram_webhook import RECEIVERS
    from approvals.server import demo_settings
    from approvals.server import server as panel_server

    if demo:  # one throwaway key for the panel and the listener: the webhook secret agrees
        settings = demo_settings(settings)
    panel = await asyncio.to_thread(panel_server, settings, host, port, demo=demo)
    stop = asyncio.Event()
    database = Database(settings.database_url)
    await _record_gate(settings, database, "comms demo" if demo else "comms serve")
    tasks = []
    if with_worker:
        tasks.append(asyncio.create_task(_run_worker(settings, database, stop)))
    if with_bots:
        tasks.append(asyncio.create_task(_run_bots(settings, database, stop, webhook=RECEIVERS)))
    elif settings.telegram_webhook_url is not None and settings.telegram_token is not None:
        log.warning(
            "COMMS_TELEGRAM_WEBHOOK_URL is set but the listeners run elsewhere: POST "
            "/telegram/webhook answers 503 here (Telegram keeps the updates and retries)"
        )
    try:
        await panel.serve()  # returns on Ctrl-C or SIGTERM (uvicorn handles the signals)
    finally:
        stop.set()
        for task in tasks:
            await task
        await database.dispose()


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--no-worker", is_flag=True, help="Serve the panel only (run `comms worker` apart).")
@click.option(
    "--no-bots", is_flag=True, help="Leave the report listeners out (run `comms bots` apart)."
)
@click.option(
    "--workers",
    "processes",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Panel processes. With more than one, the outbox worker runs in a process of its own.",
)
@pass_app
def serve(
    app: AppContext, host: str, port: int, no_worker: bool, no_bots: bool, processes: int
) -> None:
    """Apply migrations, then serve the panel and JSON API, with the outbox worker and the
    community-report listeners."""
    configure_logging(app.settings.log_level)
    if processes > 1 and not no_bots and app.settings.telegram_webhook_url:
        fail(
            "COMMS_TELEGRAM_WEBHOOK_URL is set: Telegram's updates reach the listener only in "
            "the panel's own process, so serve with --workers 1 (or unset it to poll)",
            EXIT_USAGE,
        )
    try:
        if processes == 1:
            asyncio.run(
                _serve_panel_and_worker(
                    app.settings,
                    host,
                    port,
                    demo=False,
                    with_worker=not no_worker,
                    with_bots=not no_bots,
                )
            )
        else:
            _serve_panel_processes(
                app.settings,
                host,
                port,
                processes,
                with_worker=not no_worker,
                with_bots=not no_bots,
            )
    except ConfigError as error:
        fail(str(error), EXIT_USAGE)


def _serve_panel_processes(
    settings: Settings, host: str, port: int, processes: int, *, with_worker: bool, with_bots: bool
) -> None:
    """``processes`` panel processes (uvicorn's supervisor) and, beside them, ``comms worker``
    and ``comms bots``."""
    from approvals.server import serve_processes

    async def record() -> None:
        database = Database(settings.database_url)
        try:
            await _record_gate(settings, database, "comms serve")
        finally:
            await database.dispose()

    from comms.migrate import upgrade

    upgrade(settings.database_url)  # once, before any process starts
    helpers = [
        subprocess.Popen([sys.executable, "-m", "comms", command])  # noqa: S603 - fixed argv
        for command, wanted in (("worker", with_worker), ("bots", with_bots))
        if wanted
    ]
    try:
        asyncio.run(record())
        serve_processes(settings, host, port, processes=processes)
    finally:
        for helper in helpers:
            helper.terminate()
        for helper in helpers:
            try:
                helper.wait(timeout=60)
            except subprocess.TimeoutExpired:
                helper.kill()


@cli.command("demo")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--sandbox-port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--data-dir",
    default=".comms-demo",
    show_default=True,
    type=click.Path(),
    help="Where the demo keeps its database (recreated at every start).",
)
@pass_app
def demo(app: AppContext, host: str, port: int, sandbox_port: int, data_dir: str) -> None:
    """Everything on this machine, no accounts anywhere: the platform sandbox, seeded users and
    destinations, one sample incident, the panel and the worker."""
    from bots.sandbox import Sandbox
    from comms.demo import run_demo

    configure_logging(logging.WARNING)
    try:
        asyncio.run(
            run_demo(
                app.settings,
                host=host,
                port=port,
                sandbox_port=sandbox_port,
                data_dir=Path(data_dir),
                serve=_serve_panel_and_worker,
                sandbox_factory=Sandbox,
                echo=click.echo,
            )
        )
    except ConfigError as error:
        fail(str(error), EXIT_USAGE)
