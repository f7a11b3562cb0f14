"""``comms`` commands: destinations: the Discord channels and Telegram chats."""

from __future__ import annotations

import click
from sqlalchemy.ext.asyncio import AsyncSession

from comms.cli.base import (
    AppContext,
    cli,
    emit,
    in_session,
)
from comms.destinations import service as destinations
from comms.destinations.models import InternalUse, Visibility


@cli.group()
def destination() -> None:
    """Discord channels and Telegram chats that receive announcements."""


@destination.command("add")
@click.argument("name")
@click.option("--platform", required=True, type=click.Choice(["discord", "telegram"]))
@click.option("--target", required=True, help="Discord channel id, or Telegram chat id / @name.")
@click.option("--private", is_flag=True, help="An internal destination (not public).")
@click.option("--pin", is_flag=True, help="Pin announcements.")
@click.option("--silent", is_flag=True, help="Send without notifications.")
@click.option("--crosspost", is_flag=True, help="Publish to following servers (Discord news).")
@click.option("--allow-everyone", is_flag=True, help="Allow @everyone for P1 alerts.")
@click.option("--thread-updates", is_flag=True, help="Follow-ups go into a thread (Discord).")
@click.option("--guild", "guild_id", default="", help="Discord server id (for message links).")
@click.option(
    "--internal-use",
    "internal_uses",
    multiple=True,
    type=click.Choice([u.value for u in InternalUse]),
    help="Internal notifications this private destination receives.",
)
@in_session
async def destination_add(
    app: AppContext,
    session: AsyncSession,
    name: str,
    platform: str,
    target: str,
    private: bool,
    pin: bool,
    silent: bool,
    crosspost: bool,
    allow_everyone: bool,
    thread_updates: bool,
    internal_uses: tuple[str, ...],
    guild_id: str,
) -> None:
    """Add a destination."""

    created = await destinations.create(
        session,
        name=name,
        platform=destinations.parse_platform(platform),
        target=target,
        actor=None,
        visibility=Visibility.PRIVATE if private else Visibility.PUBLIC,
        pin=pin,
        silent=silent,
        crosspost=crosspost,
        allow_everyone=allow_everyone,
        thread_updates=thread_updates,
        internal_uses=[InternalUse(u) for u in internal_uses],
        guild_id=guild_id,
    )
    click.echo(f"added {created.name} ({created.platform}:{created.target})")


@destination.command("list")
@click.option("--json", "as_json", is_flag=True)
@in_session
async def destination_list(app: AppContext, session: AsyncSession, as_json: bool) -> None:
    """List destinations."""

    rows = await destinations.list_destinations(session)
    document = [
        {
            "name": d.name,
            "platform": d.platform,
            "target": d.target,
            "visibility": d.visibility,
            "enabled": d.enabled,
            "compromised": d.compromised,
            "internal_uses": d.internal_uses,
            **d.options(),
        }
        for d in rows
    ]

    def text() -> str:
        lines = []
        for d in document:
            flags = [
                k
                for k in ("pin", "silent", "crosspost", "allow_everyone", "thread_updates")
                if d[k]
            ]
            state = (
                "COMPROMISED" if d["compromised"] else ("enabled" if d["enabled"] else "disabled")
            )
            lines.append(
                f"{d['name']:<24} {d['platform']:<9} {d['target']:<22} "
                f"{d['visibility']:<8} {state:<11} {','.join(flags)}"
            )
        return "\n".join(lines) or "(no destinations)"

    emit(document, as_json, text)


@destination.command("compromised")
@click.argument("name")
@click.option("--reason", required=True)
@in_session
async def destination_compromised(
    app: AppContext, session: AsyncSession, name: str, reason: str
) -> None:
    """Mark a destination compromised: nothing is sent there until it is restored."""

    target = await destinations.require_destination(session, name=name)
    await destinations.mark_compromised(session, destination=target, reason=reason, actor=None)
    click.echo(f"{target.name} marked compromised")


@destination.command("restore")
@click.argument("name")
@in_session
async def destination_restore(app: AppContext, session: AsyncSession, name: str) -> None:
    """Clear the compromised mark of a destination."""

    target = await destinations.require_destination(session, name=name)
    await destinations.mark_compromised(
        session, destination=target, reason="", actor=None, compromised=False
    )
    click.echo(f"{target.name} restored")
