"""``comms`` commands: people and their roles."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.ext.asyncio import AsyncSession

from comms import flows
from comms.cli.base import (
    AppContext,
    cli,
    emit,
    in_session,
    in_transaction,
    pass_app,
    run_async,
)
from comms.drafts import gate
from comms.enums import Role
from comms.users import service as users


@cli.group()
def user() -> None:
    """People and their roles."""


def _role_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--role",
        "roles",
        multiple=True,
        required=True,
        type=click.Choice([r.value for r in Role]),
        help="A role; repeat for several.",
    )


@user.command("add")
@click.argument("username")
@_role_option()
@click.option("--name", "display_name", help="Display name (defaults to the username).")
@pass_app
@run_async
async def user_add(
    app: AppContext, username: str, roles: tuple[str, ...], display_name: str | None
) -> None:
    """Add a user. The password comes from COMMS_PASSWORD, or is asked for.

    The operator at the CLI holds the database, so the roles given here take effect at once:
    this is how the first Decision Makers of an installation are made. From the panel, granting
    decision_maker needs the approval of the existing Decision Makers (the P1 quorum).
    """
    password = os.environ.get("COMMS_PASSWORD") or click.prompt(
        f"Password for {username}", hide_input=True, confirmation_prompt=True
    )

    async def body(session: AsyncSession) -> None:
        created = await users.create(
            session,
            username=username,
            password=password,
            roles=users.parse_roles(roles),
            display_name=display_name,
        )
        click.echo(f"added {created.username} ({', '.join(sorted(created.role_set))})")
        if Role.DECISION_MAKER in created.role_set:
            click.echo(
                "decision_maker takes effect at once: the operator at the CLI holds the "
                "database (this is how the first Decision Makers are made). From the panel, "
                f"granting decision_maker needs {gate.grant_quorum(app.settings)} existing "
                "Decision Makers' approval."
            )

    await in_transaction(app, body)


@user.command("list")
@click.option("--json", "as_json", is_flag=True)
@in_session
async def user_list(app: AppContext, session: AsyncSession, as_json: bool) -> None:
    """List users and their roles."""

    rows = await users.list_users(session)
    document: list[dict[str, Any]] = [
        {
            "username": u.username,
            "display_name": u.display_name,
            "roles": sorted(u.role_set),
            "active": u.active,
            "two_factor": bool(u.totp_enabled_at),
        }
        for u in rows
    ]
    emit(
        document,
        as_json,
        lambda: (
            "\n".join(
                f"{d['username']:<20} {','.join(d['roles']):<40} "
                f"{'active' if d['active'] else 'disabled'}"
                for d in document
            )
            or "(no users)"
        ),
    )


@user.command("roles")
@click.argument("username")
@_role_option()
@in_session
async def user_roles(
    app: AppContext, session: AsyncSession, username: str, roles: tuple[str, ...]
) -> None:
    """Replace a user's roles (approvals they gave are recounted at once)."""

    target = await users.require_user(session, username=username)
    await flows.set_roles(
        session, user=target, roles=users.parse_roles(roles), actor=None, settings=app.settings
    )
    click.echo(f"{target.username}: {', '.join(sorted(target.role_set))}")


@user.command("disable")
@click.argument("username")
@in_session
async def user_disable(app: AppContext, session: AsyncSession, username: str) -> None:
    """Disable a user: they can no longer log in, and their approvals stop counting."""

    target = await users.require_user(session, username=username)
    await flows.set_active(session, user=target, active=False, actor=None, settings=app.settings)
    click.echo(f"{target.username} disabled")


@user.command("enable")
@click.argument("username")
@in_session
async def user_enable(app: AppContext, session: AsyncSession, username: str) -> None:
    """Enable a disabled user."""

    target = await users.require_user(session, username=username)
    await flows.set_active(session, user=target, active=True, actor=None, settings=app.settings)
    click.echo(f"{target.username} enabled")
