"""What every ``comms`` command shares: the root group, the app context, one transaction per
command, exit codes and output.

Operators who hold the database act as any user with ``--by``; every rule still applies to that
user. Exit codes: 0 done, 2 usage or input error, 3 refused by a rule (one line on stderr that
names the rule). ``--json`` prints one JSON document for scripts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar

import click
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession

from comms import __version__
from comms.db import ROW_ID_MAX, Database
from comms.errors import (
    CommsError,
    Conflict,
    FieldProblem,
    InvalidInput,
    PermissionDenied,
    RuleViolation,
)
from comms.settings import ConfigError, Settings, load_settings

P = ParamSpec("P")
T = TypeVar("T")

ROW_ID = click.IntRange(1, ROW_ID_MAX)  # draft and delivery ids: larger ones cannot exist

EXIT_USAGE = 2
EXIT_REFUSED = 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
log = logging.getLogger("comms")


def configure_logging(level: str | int) -> None:
    from comms import redact

    logging.basicConfig(level=level, format=LOG_FORMAT)
    redact.install()
    # discord.py warns about voice support and gateway intents we deliberately do not use.
    logging.getLogger("discord").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass
class AppContext:
    settings: Settings

    def database(self) -> Database:
        return Database(self.settings.database_url)


def fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def report(error: CommsError) -> NoReturn:
    if isinstance(error, RuleViolation):
        fail(f"refused by rule {error.rule}: {error.message}", EXIT_REFUSED)
    if isinstance(error, PermissionDenied):
        fail(f"refused by rule {error.rule or 'permission'}: {error.message}", EXIT_REFUSED)
    if isinstance(error, Conflict):
        fail(f"refused by rule conflict: {error}", EXIT_REFUSED)
    if isinstance(error, InvalidInput):
        fail("error: " + "; ".join(str(p) for p in error.problems), EXIT_USAGE)
    fail(f"error: {error}", EXIT_USAGE)


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning our errors into exit codes and one-line messages."""
    try:
        return asyncio.run(work)
    except CommsError as error:
        report(error)
    except (OperationalError, ProgrammingError) as error:
        text = str(error.orig) if error.orig else str(error)
        if "no such table" in text or "does not exist" in text:
            fail("error: the database is not initialised; run `comms db upgrade`", EXIT_USAGE)
        raise


def run_async(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """An async command body, run with our errors turned into exit codes."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return _run(func(*args, **kwargs))

    return wrapper


async def in_transaction(app: AppContext, body: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """One transaction per command: everything is written, or nothing."""
    database = app.database()
    try:
        async with database.transaction() as session:
            return await body(session)
    finally:
        await database.dispose()


def pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=option)
        result[name.strip()] = value
    return result


def emit(document: Any, as_json: bool, text: Callable[[], str]) -> None:
    if as_json:
        click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(text())


def parse_when(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(FieldProblem(field, f"{value!r} is not an ISO-8601 time")) from None
    if moment.tzinfo is None or moment.utcoffset() != timedelta(0):
        raise InvalidInput(FieldProblem(field, "must be UTC (end with Z or +00:00)"))
    return moment


pass_app = click.make_pass_decorator(AppContext)


def in_session(
    func: Callable[Concatenate[AppContext, AsyncSession, P], Awaitable[None]],
) -> Callable[P, None]:
    """A command whose body runs in one transaction (everything is written, or nothing): the
    body gets the app and the session before the command's own arguments."""

    @wraps(func)
    def command(*args: P.args, **kwargs: P.kwargs) -> None:
        app = click.get_current_context().find_object(AppContext)
        assert app is not None

        async def work() -> None:
            async def body(session: AsyncSession) -> None:
                await func(app, session, *args, **kwargs)

            await in_transaction(app, body)

        _run(work())

    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="comms")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Incident community comms: approved announcements to Discord and Telegram."""
    try:
        ctx.obj = AppContext(settings=load_settings())
    except ConfigError as error:
        fail(str(error), EXIT_USAGE)
