"""``comms`` commands: the audit log: verify its hash chain, list events."""

from __future__ import annotations

import sys

import click
from sqlalchemy.ext.asyncio import AsyncSession

from comms.audit import service as audit
from comms.cli.base import (
    AppContext,
    cli,
    emit,
    in_session,
    in_transaction,
    pass_app,
    run_async,
)


@cli.group("audit")
def audit_group() -> None:
    """The tamper-evident audit log."""


@audit_group.command("verify")
@pass_app
@run_async
async def audit_verify(app: AppContext) -> None:
    """Check the whole hash chain; exits 1 and names the first bad event if it is broken."""

    async def body(session: AsyncSession) -> bool:
        result = await audit.verify(session)
        click.echo(result.describe(), err=not result.ok)
        return result.ok

    if not await in_transaction(app, body):
        sys.exit(1)


@audit_group.command("list")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@in_session
async def audit_list(app: AppContext, session: AsyncSession, limit: int, as_json: bool) -> None:
    """Show the newest audit events."""

    rows = await audit.recent(session, limit=limit)
    document = [
        {
            "seq": e.seq,
            "at": e.at.isoformat(),
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "details": e.details,
            "hash": e.hash,
        }
        for e in rows
    ]
    emit(
        document,
        as_json,
        lambda: "\n".join(
            f"#{e.seq:<6} {e.at:%Y-%m-%d %H:%M:%S}  {e.actor:<14} {e.action:<22} {e.target}"
            for e in rows
        ),
    )
