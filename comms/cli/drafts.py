"""``comms`` commands: drafts: write, edit, submit, approve, reject, withdraw."""

from __future__ import annotations

import click
from sqlalchemy.ext.asyncio import AsyncSession

from comms.cli.base import (
    ROW_ID,
    AppContext,
    cli,
    emit,
    in_session,
    pairs,
    parse_when,
)
from comms.destinations import service as destinations
from comms.drafts import service as drafts
from comms.drafts.payload import DraftOptions
from comms.drafts.views import draft_document
from comms.incidents import service as incidents
from comms.users import service as users


@cli.group()
def draft() -> None:
    """Announcement drafts and their approval."""


def _draft_options(
    pin: bool | None, silent: bool | None, link_previews: bool, publish_at: str | None
) -> DraftOptions:
    return DraftOptions(
        pin=pin,
        silent=silent,
        link_previews=link_previews,
        publish_at=parse_when(publish_at, "publish_at"),
    )


@draft.command("new")
@click.option("--incident", "incident_key", required=True)
@click.option("--template", "template_name", required=True)
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE")
@click.option("--to", "targets", multiple=True, required=True, metavar="DESTINATION")
@click.option("--pin/--no-pin", default=None, help="Override the destinations' pin setting.")
@click.option("--silent/--no-silent", default=None, help="Override the destinations' setting.")
@click.option("--link-previews", is_flag=True, help="Let platforms show link previews.")
@click.option("--publish-at", default=None, help="Hold until this UTC time (ISO-8601).")
@click.option(
    "--corrects", type=ROW_ID, default=None, help="Draft id of the announcement corrected."
)
@click.option("--by", "by", required=True)
@in_session
async def draft_new(
    app: AppContext,
    session: AsyncSession,
    incident_key: str,
    template_name: str,
    variables: tuple[str, ...],
    targets: tuple[str, ...],
    pin: bool | None,
    silent: bool | None,
    link_previews: bool,
    publish_at: str | None,
    corrects: int | None,
    by: str,
) -> None:
    """Write a draft from a template; prints the draft id."""
    values = pairs(variables, "--var")

    actor = await users.require_user(session, username=by, field="by")
    inc = await incidents.require_incident(session, key=incident_key)
    chosen = [await destinations.require_destination(session, name=n, field="to") for n in targets]
    corrected = (
        await drafts.require_draft(session, draft_id=corrects, field="corrects")
        if corrects is not None
        else None
    )
    created = await drafts.create(
        session,
        incident=inc,
        template=template_name,
        variables=values,
        destinations=chosen,
        actor=actor,
        settings=app.settings,
        options=_draft_options(pin, silent, link_previews, publish_at),
        correction_of=corrected,
    )
    click.echo(created.id)
    for warning in created.warnings:
        click.echo(f"warning: {warning['message']}", err=True)


@draft.command("edit")
@click.argument("draft_id", type=ROW_ID)
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE")
@click.option(
    "--to", "targets", multiple=True, metavar="DESTINATION", help="Replace the destinations."
)
@click.option(
    "--expect-version",
    type=int,
    default=None,
    help="Refuse if the draft is no longer at this version.",
)
@click.option("--by", "by", required=True)
@in_session
async def draft_edit(
    app: AppContext,
    session: AsyncSession,
    draft_id: int,
    variables: tuple[str, ...],
    targets: tuple[str, ...],
    expect_version: int | None,
    by: str,
) -> None:
    """Change variables or destinations: a new version, and earlier approvals stop counting."""
    values = pairs(variables, "--var")
    if not values and not targets:
        raise click.UsageError("nothing to change: give --var or --to")

    actor = await users.require_user(session, username=by, field="by")
    found = await drafts.require_draft(session, draft_id=draft_id)
    chosen = (
        [await destinations.require_destination(session, name=n, field="to") for n in targets]
        if targets
        else None
    )
    edited = await drafts.edit(
        session,
        draft=found,
        actor=actor,
        settings=app.settings,
        variables=values,
        destinations=chosen,
        expected_version=expect_version,
    )
    click.echo(f"draft #{edited.id} is now version {edited.version} ({edited.status})")


@draft.command("list")
@click.option("--incident", "incident_key", default=None)
@click.option("--json", "as_json", is_flag=True)
@in_session
async def draft_list(
    app: AppContext, session: AsyncSession, incident_key: str | None, as_json: bool
) -> None:
    """List drafts, most recently changed first."""

    inc = await incidents.require_incident(session, key=incident_key) if incident_key else None
    rows = await drafts.list_drafts(session, incident=inc)
    document = [
        {
            "id": d.id,
            "incident": d.incident.key,
            "template": d.template,
            "version": d.version,
            "status": d.status,
            "author": d.author.username,
        }
        for d in rows
    ]
    emit(
        document,
        as_json,
        lambda: (
            "\n".join(
                f"#{d['id']:<5} {d['incident']}  v{d['version']:<3} "
                f"{d['status']:<16} {d['template']}"
                for d in document
            )
            or "(no drafts)"
        ),
    )


@draft.command("show")
@click.argument("draft_id", type=ROW_ID)
@click.option("--json", "as_json", is_flag=True)
@in_session
async def draft_show(app: AppContext, session: AsyncSession, draft_id: int, as_json: bool) -> None:
    """Show a draft: rendered text per platform, approvals, quorum, warnings, deliveries."""

    found = await drafts.require_draft(session, draft_id=draft_id)
    document = await draft_document(session, draft=found, settings=app.settings)

    def text() -> str:
        q = document["quorum"]
        lines = [
            f"draft #{document['id']} v{document['version']} {document['template']} "
            f"for {document['incident']} — {document['status']}",
            f"author {document['author']}; content hash {document['content_hash']}",
            f"destinations: {', '.join(document['destinations'])}",
            f"quorum: {q['have']} of {q['needed']}"
            + (f" (blocked: {q['blocked']})" if q.get("blocked") else ""),
        ]
        for a in document["approvals"]:
            mark = "counts" if a["counts"] else f"does not count: {a['why']}"
            lines.append(f"  {a['decision']} by {a['by']} on v{a['version']} — {mark}")
        lines += [f"warning: {w['message']}" for w in document["warnings"]]
        for platform in ("discord", "telegram"):
            for i, message in enumerate(document["rendered"][platform], 1):
                lines += [f"--- {platform} message {i} ---", message]
        lines += [f"delivery to {d['destination']}: {d['state']}" for d in document["deliveries"]]
        return "\n".join(lines)

    emit(document, as_json, text)


@draft.command("submit")
@click.argument("draft_id", type=ROW_ID)
@click.option("--by", "by", required=True)
@in_session
async def draft_submit(app: AppContext, session: AsyncSession, draft_id: int, by: str) -> None:
    """Submit a draft for approval."""

    actor = await users.require_user(session, username=by, field="by")
    found = await drafts.require_draft(session, draft_id=draft_id)
    submitted = await drafts.submit(session, draft=found, actor=actor, settings=app.settings)
    state = drafts.quorum(submitted, settings=app.settings)
    click.echo(
        f"draft #{submitted.id} v{submitted.version} is in review "
        f"(needs {state.needed} approval(s))"
    )


@draft.command("approve")
@click.argument("draft_id", type=ROW_ID)
@click.option("--expect-hash", default=None, help="Refuse unless this is the current content hash.")
@click.option("--by", "by", required=True)
@in_session
async def draft_approve(
    app: AppContext, session: AsyncSession, draft_id: int, expect_hash: str | None, by: str
) -> None:
    """Approve the current version of a draft."""

    actor = await users.require_user(session, username=by, field="by")
    found = await drafts.require_draft(session, draft_id=draft_id)
    approved = await drafts.approve(
        session,
        draft=found,
        actor=actor,
        settings=app.settings,
        expected_hash=expect_hash,
    )
    state = drafts.quorum(approved, settings=app.settings)
    click.echo(
        f"draft #{approved.id} v{approved.version}: {state.have} of {state.needed} "
        f"approvals — {approved.status}"
    )


@draft.command("reject")
@click.argument("draft_id", type=ROW_ID)
@click.option("--reason", required=True)
@click.option("--expect-hash", default=None)
@click.option("--by", "by", required=True)
@in_session
async def draft_reject(
    app: AppContext,
    session: AsyncSession,
    draft_id: int,
    reason: str,
    expect_hash: str | None,
    by: str,
) -> None:
    """Reject a draft, with a reason; it goes back to its author."""

    actor = await users.require_user(session, username=by, field="by")
    found = await drafts.require_draft(session, draft_id=draft_id)
    rejected = await drafts.reject(
        session, draft=found, actor=actor, reason=reason, expected_hash=expect_hash
    )
    click.echo(f"draft #{rejected.id} v{rejected.version} rejected")


@draft.command("withdraw")
@click.argument("draft_id", type=ROW_ID)
@click.option("--reason", required=True)
@click.option("--by", "by", required=True)
@in_session
async def draft_withdraw(
    app: AppContext, session: AsyncSession, draft_id: int, reason: str, by: str
) -> None:
    """Withdraw a draft that has not gone out."""

    actor = await users.require_user(session, username=by, field="by")
    found = await drafts.require_draft(session, draft_id=draft_id)
    await drafts.withdraw(session, draft=found, actor=actor, reason=reason)
    click.echo(f"draft #{found.id} withdrawn")
