"""``comms`` commands: deliveries: list them, retry, resend or dismiss."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.ext.asyncio import AsyncSession

from comms.cli.base import (
    ROW_ID,
    AppContext,
    cli,
    emit,
    in_session,
)
from comms.users import service as users


@cli.group()
def delivery() -> None:
    """Deliveries of approved announcements (the outbox)."""


def _delivery_row(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "draft": d.draft_id,
        "version": d.draft_version,
        "destination": d.destination.name,
        "platform": d.destination.platform,
        "state": d.state,
        "attempts": d.attempts,
        "message_ids": d.platform_message_ids,
        "uncertain_count": d.uncertain_count,
        "last_error": d.last_error,
        "sent_at": d.sent_at.isoformat() if d.sent_at else None,
    }


@delivery.command("list")
@click.option(
    "--draft", "draft_id", type=ROW_ID, default=None, help="Only this draft's deliveries."
)
@click.option("--json", "as_json", is_flag=True)
@in_session
async def delivery_list(
    app: AppContext, session: AsyncSession, draft_id: int | None, as_json: bool
) -> None:
    """List deliveries: one draft's, or every failed and uncertain one."""
    from comms.outbox import service as outbox

    rows = (
        await outbox.for_draft(session, draft_id=draft_id)
        if draft_id is not None
        else await outbox.needing_attention(session)
    )
    document = [_delivery_row(d) for d in rows]
    emit(
        document,
        as_json,
        lambda: (
            "\n".join(
                f"#{d['id']:<5} draft #{d['draft']} v{d['version']:<3} {d['destination']:<24} "
                f"{d['state']:<10} {d['last_error']}"
                for d in document
            )
            or "(nothing)"
        ),
    )


@delivery.command("retry")
@click.argument("delivery_id", type=ROW_ID)
@click.option("--by", "by", required=True)
@in_session
async def delivery_retry(app: AppContext, session: AsyncSession, delivery_id: int, by: str) -> None:
    """Send a failed delivery again (the same approved content; audited)."""
    from comms.outbox import service as outbox

    actor = await users.require_user(session, username=by, field="by")
    found = await outbox.require_delivery(session, delivery_id=delivery_id)
    await outbox.retry(session, delivery=found, actor=actor)
    click.echo(f"delivery #{found.id} queued again")


@delivery.command("resend")
@click.argument("delivery_id", type=ROW_ID)
@click.option("--by", "by", required=True)
@in_session
async def delivery_resend(
    app: AppContext, session: AsyncSession, delivery_id: int, by: str
) -> None:
    """Resend an uncertain delivery (check the chat first: it may already be there)."""
    from comms.outbox import service as outbox

    actor = await users.require_user(session, username=by, field="by")
    found = await outbox.require_delivery(session, delivery_id=delivery_id)
    await outbox.resolve_uncertain(session, delivery=found, actor=actor, resend=True)
    click.echo(f"delivery #{found.id} will be sent again")


@delivery.command("dismiss")
@click.argument("delivery_id", type=ROW_ID)
@click.option("--note", default="", help="Why (e.g. 'checked: it arrived').")
@click.option("--by", "by", required=True)
@in_session
async def delivery_dismiss(
    app: AppContext, session: AsyncSession, delivery_id: int, note: str, by: str
) -> None:
    """Dismiss an uncertain delivery: do not send it again."""
    from comms.outbox import service as outbox

    actor = await users.require_user(session, username=by, field="by")
    found = await outbox.require_delivery(session, delivery_id=delivery_id)
    await outbox.resolve_uncertain(session, delivery=found, actor=actor, resend=False, note=note)
    click.echo(f"delivery #{found.id} dismissed")
