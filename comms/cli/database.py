"""``comms`` commands: the database: create or migrate the schema."""

from __future__ import annotations

import click

from comms.cli.base import (
    AppContext,
    cli,
    pass_app,
)


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@pass_app
def db_upgrade(app: AppContext) -> None:
    """Create or migrate the schema to the latest version."""
    from comms.migrate import upgrade

    upgrade(app.settings.database_url)
    click.echo("database is up to date")
