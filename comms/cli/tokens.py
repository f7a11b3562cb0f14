"""``comms`` commands: API tokens for automation."""

from __future__ import annotations

import click
from sqlalchemy.ext.asyncio import AsyncSession

from comms.cli.base import (
    AppContext,
    cli,
    in_transaction,
    pass_app,
    run_async,
)
from comms.users import service as users


@cli.group()
def token() -> None:
    """API tokens for automation."""


@token.command("create")
@click.argument("username")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(["read", "draft", "approve", "detections:write", "admin"]),
    help="A scope; repeat for several. The user's roles still apply.",
)
@click.option("--name", default="cli", show_default=True, help="What the token is for.")
@pass_app
@run_async
async def token_create(app: AppContext, username: str, scopes: tuple[str, ...], name: str) -> None:
    """Create an API token for USERNAME and print it once (only its hash is stored)."""
    from comms.auth import tokens

    async def body(session: AsyncSession) -> str:
        owner = await users.require_user(session, username=username)
        raw, _created = await tokens.create(
            session,
            user=owner,
            name=name,
            scopes=tokens.parse_scopes(scopes),
            actor=None,
        )
        return raw

    click.echo(await in_transaction(app, body))
