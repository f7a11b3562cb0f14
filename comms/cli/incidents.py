"""``comms`` commands: incidents and their Incident Log."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.ext.asyncio import AsyncSession

from comms import flows
from comms.cli.base import (
    AppContext,
    cli,
    emit,
    in_session,
)
from comms.clock import utcnow
from comms.drafts import service as drafts
from comms.incidents import cadence, export, resolution
from comms.incidents import service as incidents
from comms.incidents.models import LogKind
from comms.users import service as users


@cli.group()
def incident() -> None:
    """Incidents, their roles and the Incident Log."""


def _incident_document(inc: Any) -> dict[str, Any]:
    return {
        "key": inc.key,
        "title": inc.title,
        "summary": inc.summary,
        "severity": inc.severity,
        "status": inc.status,
        "opened_at": inc.opened_at.isoformat(),
        "opened_by": inc.opened_by.username,
        "leader": inc.leader.username if inc.leader else None,
        "pending_leader": inc.pending_leader.user.username if inc.pending_leader else None,
        "roles": [
            {
                "role": a.role,
                "user": a.user.username,
                "acknowledged_at": a.acknowledged_at.isoformat() if a.acknowledged_at else None,
            }
            for a in inc.assignments
            if a.ended_at is None
        ],
    }


def _due_document(due: cadence.Due | None) -> dict[str, Any] | None:
    if due is None:
        return None
    stage = due.stage(utcnow())
    return {
        "due_at": due.at.isoformat(),
        "basis": "promised" if due.promised else "cadence",
        "interval_minutes": int(due.interval.total_seconds() // 60) if due.interval else None,
        "overdue_at": due.overdue_at.isoformat(),
        "stage": stage.value if stage else None,
    }


@incident.command("open")
@click.option("--title", required=True)
@click.option("--severity", required=True, help="P1 (critical) .. P5 (info).")
@click.option("--summary", default="")
@click.option("--by", "by", required=True, help="Who opens it (becomes the Detector).")
@in_session
async def incident_open(
    app: AppContext, session: AsyncSession, title: str, severity: str, summary: str, by: str
) -> None:
    """Open an incident; prints its key."""

    actor = await users.require_user(session, username=by, field="by")
    created = await incidents.open_incident(
        session,
        title=title,
        severity=incidents.parse_severity(severity),
        summary=summary,
        actor=actor,
    )
    click.echo(created.key)


@incident.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--open", "open_only", is_flag=True, help="Only incidents not closed.")
@in_session
async def incident_list(
    app: AppContext, session: AsyncSession, as_json: bool, open_only: bool
) -> None:
    """List incidents, newest first."""

    rows = await incidents.list_incidents(session, open_only=open_only)
    document = [_incident_document(i) for i in rows]
    emit(
        document,
        as_json,
        lambda: (
            "\n".join(
                f"{d['key']}  {d['severity']}  {d['status']:<13} {d['title']}" for d in document
            )
            or "(no incidents)"
        ),
    )


@incident.command("show")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
@in_session
async def incident_show(app: AppContext, session: AsyncSession, key: str, as_json: bool) -> None:
    """Show one incident."""

    inc = await incidents.require_incident(session, key=key)
    document = _incident_document(inc)
    due = await cadence.next_update(session, inc, app.settings)
    document["next_update"] = _due_document(due)
    document["drafts"] = [
        {"id": d.id, "template": d.template, "version": d.version, "status": d.status}
        for d in await drafts.list_drafts(session, incident=inc)
    ]

    def text() -> str:
        lines = [f"{inc.key}  {inc.severity}  {inc.status}", inc.title]
        if inc.summary:
            lines.append(inc.summary)
        lines.append(
            "roles: "
            + (
                ", ".join(
                    f"{r['role']}={r['user']}" + ("" if r["acknowledged_at"] else " (pending)")
                    for r in document["roles"]
                )
                or "none"
            )
        )
        if due is not None:
            lines.append(
                f"next public update due {due.at:%Y-%m-%d %H:%M} UTC"
                + (" (promised)" if due.promised else "")
                + (
                    f", {document['next_update']['stage']}"
                    if document["next_update"]["stage"]
                    else ""
                )
            )
        lines += [
            f"draft #{d['id']} v{d['version']} {d['template']} {d['status']}"
            for d in document["drafts"]
        ]
        return "\n".join(lines)

    emit(document, as_json, text)


@incident.command("log")
@click.argument("key")
@click.option("--markdown", is_flag=True, help="The Incident Log layout, as Markdown.")
@click.option("--json", "as_json", is_flag=True)
@in_session
async def incident_log(
    app: AppContext, session: AsyncSession, key: str, markdown: bool, as_json: bool
) -> None:
    """Print the Incident Log."""

    inc = await incidents.require_incident(session, key=key)
    rows = await incidents.entries(session, incident=inc)
    if markdown:
        click.echo(export.render_markdown(inc, rows), nl=False)
        return
    document = [
        {
            "at": e.at.isoformat(),
            "kind": e.kind,
            "actor": e.actor.username if e.actor else None,
            "text": e.text,
            "rationale": e.rationale,
            "owner": e.owner.username if e.owner else None,
            "channel": e.channel,
        }
        for e in rows
    ]
    emit(
        document,
        as_json,
        lambda: "\n".join(
            f"{e.at:%Y-%m-%d %H:%M:%S} UTC  {e.kind:<8} {e.text}"
            + (f"  (rationale: {e.rationale})" if e.rationale else "")
            for e in rows
        ),
    )


@incident.command("status")
@click.argument("key")
@click.argument("status")
@click.option("--rationale", default="")
@click.option("--by", "by", required=True)
@in_session
async def incident_status(
    app: AppContext, session: AsyncSession, key: str, status: str, rationale: str, by: str
) -> None:
    """Move an incident to another status (the status machine refuses invalid moves)."""

    actor = await users.require_user(session, username=by, field="by")
    inc = await incidents.require_incident(session, key=key)
    await incidents.change_status(
        session,
        incident=inc,
        status=incidents.parse_status(status),
        actor=actor,
        rationale=rationale,
        min_monitoring=app.settings.min_monitoring,
    )
    click.echo(f"{inc.key} is now {inc.status}")


@incident.command("severity")
@click.argument("key")
@click.argument("severity")
@click.option("--rationale", required=True)
@click.option("--by", "by", required=True)
@in_session
async def incident_severity(
    app: AppContext, session: AsyncSession, key: str, severity: str, rationale: str, by: str
) -> None:
    """Change the severity; unsent drafts are re-rendered and need approval again."""

    actor = await users.require_user(session, username=by, field="by")
    inc = await incidents.require_incident(session, key=key)
    touched = await flows.change_severity(
        session,
        incident=inc,
        severity=incidents.parse_severity(severity),
        actor=actor,
        rationale=rationale,
        settings=app.settings,
    )
    click.echo(
        f"{inc.key} is now {inc.severity}"
        + (f"; re-rendered drafts {', '.join(f'#{d.id}' for d in touched)}" if touched else "")
    )


@incident.command("assign")
@click.argument("key")
@click.option("--role", required=True, help="incident_leader, scribe, comms_manager, ...")
@click.option("--user", "username", required=True)
@click.option("--by", "by", required=True)
@in_session
async def incident_assign(
    app: AppContext, session: AsyncSession, key: str, role: str, username: str, by: str
) -> None:
    """Assign an incident role (a new Incident Leader must acknowledge)."""

    actor = await users.require_user(session, username=by, field="by")
    assignee = await users.require_user(session, username=username, field="user")
    inc = await incidents.require_incident(session, key=key)
    assignment = await incidents.assign(
        session,
        incident=inc,
        role=incidents.parse_incident_role(role),
        user=assignee,
        actor=actor,
    )
    pending = assignment.acknowledged_at is None
    click.echo(
        f"{assignee.username} assigned as {role}"
        + (" (awaiting acknowledgment)" if pending else "")
    )


@incident.command("ack")
@click.argument("key")
@click.option("--by", "by", required=True, help="The offered Incident Leader.")
@in_session
async def incident_ack(app: AppContext, session: AsyncSession, key: str, by: str) -> None:
    """Acknowledge the Incident Leader hand-off."""

    actor = await users.require_user(session, username=by, field="by")
    inc = await incidents.require_incident(session, key=key)
    await incidents.acknowledge_leadership(session, incident=inc, actor=actor)
    click.echo(f"{actor.username} now leads {inc.key}")


@incident.command("note")
@click.argument("key")
@click.argument("text")
@click.option(
    "--kind", type=click.Choice(["note", "decision", "action", "monitoring"]), default="note"
)
@click.option("--rationale", default="")
@click.option("--owner", default=None, help="Owner of an action.")
@click.option("--by", "by", required=True)
@in_session
async def incident_note(
    app: AppContext,
    session: AsyncSession,
    key: str,
    text: str,
    kind: str,
    rationale: str,
    owner: str | None,
    by: str,
) -> None:
    """Add a note, a decision (with rationale), an action (with owner) or monitoring added
    after mitigation to the Incident Log."""

    actor = await users.require_user(session, username=by, field="by")
    inc = await incidents.require_incident(session, key=key)
    owner_user = await users.require_user(session, username=owner, field="owner") if owner else None
    await incidents.add_entry(
        session,
        incident=inc,
        kind=LogKind(kind),
        text=text,
        actor=actor,
        rationale=rationale,
        owner=owner_user,
    )
    click.echo(f"logged {kind} on {inc.key}")


@incident.command("no-news")
@click.argument("key")
@click.option("--by", "by", required=True, help="Who writes it (a Communication Manager).")
@in_session
async def incident_no_news(app: AppContext, session: AsyncSession, key: str, by: str) -> None:
    """Prepare a "no new information; next update at T" draft (it still needs approval);
    prints its id."""

    actor = await users.require_user(session, username=by, field="by")
    inc = await incidents.require_incident(session, key=key)
    draft = await flows.no_news_draft(session, incident=inc, actor=actor, settings=app.settings)
    click.echo(draft.id)


@incident.command("checklist")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
@in_session
async def incident_checklist(
    app: AppContext, session: AsyncSession, key: str, as_json: bool
) -> None:
    """The resolution checklist: each item, and who ticked it when."""

    inc = await incidents.require_incident(session, key=key)
    rows = await resolution.items(session, inc)
    document = [
        {
            "item": row.key,
            "label": row.label,
            "ticked_by": row.tick.ticked_by.username if row.tick else None,
            "ticked_at": row.tick.ticked_at.isoformat() if row.tick else None,
            "note": row.tick.note if row.tick else "",
        }
        for row in rows
    ]
    emit(
        document,
        as_json,
        lambda: "\n".join(
            f"[{'x' if row.tick else ' '}] {row.key:<22} {row.label}"
            + (
                f"  ({row.tick.ticked_by.username}, {row.tick.ticked_at:%Y-%m-%d %H:%M} UTC)"
                if row.tick
                else ""
            )
            for row in rows
        ),
    )


@incident.command("tick")
@click.argument("key")
@click.argument("item")
@click.option("--note", default="", help="Required for permanent_fix_planned: owner, timeline.")
@click.option("--by", "by", required=True)
@in_session
async def incident_tick(
    app: AppContext, session: AsyncSession, key: str, item: str, note: str, by: str
) -> None:
    """Tick a resolution checklist item (mitigation_applied, mitigation_verified,
    stakeholders_notified, permanent_fix_planned)."""

    actor = await users.require_user(session, username=by, field="by")
    inc = await incidents.require_incident(session, key=key)
    tick = await incidents.tick_checklist(session, incident=inc, item=item, actor=actor, note=note)
    click.echo(f"ticked {tick.item} on {inc.key}")
