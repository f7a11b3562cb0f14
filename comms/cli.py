"""The ``comms`` command: the operator's tool, and the composition root of the service.

Operators who hold the database act as any user with ``--by``; every rule still applies to that
user. Exit codes: 0 done, 2 usage or input error, 3 refused by a rule (one line on stderr that
names the rule). ``--json`` prints one JSON document for scripts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession

from comms import __version__, flows
from comms.audit import service as audit
from comms.db import ROW_ID_MAX, Database
from comms.destinations import service as destinations
from comms.destinations.models import InternalUse, Visibility
from comms.drafts import gate
from comms.drafts import service as drafts
from comms.drafts.payload import DraftOptions
from comms.drafts.views import draft_document
from comms.enums import Role
from comms.errors import (
    CommsError,
    Conflict,
    FieldProblem,
    InvalidInput,
    NotFound,
    PermissionDenied,
    RuleViolation,
)
from comms.incidents import export
from comms.incidents import service as incidents
from comms.incidents.models import LogKind
from comms.settings import ConfigError, Settings, load_settings
from comms.users import service as users

P = ParamSpec("P")
T = TypeVar("T")

ROW_ID = click.IntRange(1, ROW_ID_MAX)  # draft and delivery ids: larger ones cannot exist

EXIT_USAGE = 2
EXIT_REFUSED = 3
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
log = logging.getLogger("comms")


def _configure_logging(level: str | int) -> None:
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


def _fail(message: str, code: int) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)


def _report(error: CommsError) -> NoReturn:
    if isinstance(error, RuleViolation):
        _fail(f"refused by rule {error.rule}: {error.message}", EXIT_REFUSED)
    if isinstance(error, PermissionDenied):
        _fail(f"refused by rule {error.rule or 'permission'}: {error.message}", EXIT_REFUSED)
    if isinstance(error, Conflict):
        _fail(f"refused by rule conflict: {error}", EXIT_REFUSED)
    if isinstance(error, InvalidInput):
        _fail("error: " + "; ".join(str(p) for p in error.problems), EXIT_USAGE)
    _fail(f"error: {error}", EXIT_USAGE)


def run_async(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Run an async command body, turning our errors into exit codes and one-line messages."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return asyncio.run(func(*args, **kwargs))
        except CommsError as error:
            _report(error)
        except (OperationalError, ProgrammingError) as error:
            text = str(error.orig) if error.orig else str(error)
            if "no such table" in text or "does not exist" in text:
                _fail("error: the database is not initialised; run `comms db upgrade`", EXIT_USAGE)
            raise

    return wrapper


async def in_transaction(app: AppContext, body: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """One transaction per command: everything is written, or nothing."""
    database = app.database()
    try:
        async with database.transaction() as session:
            return await body(session)
    finally:
        await database.dispose()


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=option)
        result[name.strip()] = value
    return result


def _emit(document: Any, as_json: bool, text: Callable[[], str]) -> None:
    if as_json:
        click.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))
    else:
        click.echo(text())


def _parse_when(value: str | None, field: str) -> datetime | None:
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="comms")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Incident community comms: approved announcements to Discord and Telegram."""
    try:
        ctx.obj = AppContext(settings=load_settings())
    except ConfigError as error:
        _fail(str(error), EXIT_USAGE)


# --------------------------------------------------------------------------------- database


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


# ------------------------------------------------------------------------------------ users


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
@pass_app
@run_async
async def user_list(app: AppContext, as_json: bool) -> None:
    """List users and their roles."""

    async def body(session: AsyncSession) -> None:
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
        _emit(
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

    await in_transaction(app, body)


@user.command("roles")
@click.argument("username")
@_role_option()
@pass_app
@run_async
async def user_roles(app: AppContext, username: str, roles: tuple[str, ...]) -> None:
    """Replace a user's roles (approvals they gave are recounted at once)."""

    async def body(session: AsyncSession) -> None:
        target = await users.require_user(session, username=username)
        await flows.set_roles(
            session, user=target, roles=users.parse_roles(roles), actor=None, settings=app.settings
        )
        click.echo(f"{target.username}: {', '.join(sorted(target.role_set))}")

    await in_transaction(app, body)


@user.command("disable")
@click.argument("username")
@pass_app
@run_async
async def user_disable(app: AppContext, username: str) -> None:
    """Disable a user: they can no longer log in, and their approvals stop counting."""

    async def body(session: AsyncSession) -> None:
        target = await users.require_user(session, username=username)
        await flows.set_active(
            session, user=target, active=False, actor=None, settings=app.settings
        )
        click.echo(f"{target.username} disabled")

    await in_transaction(app, body)


@user.command("enable")
@click.argument("username")
@pass_app
@run_async
async def user_enable(app: AppContext, username: str) -> None:
    """Enable a disabled user."""

    async def body(session: AsyncSession) -> None:
        target = await users.require_user(session, username=username)
        await flows.set_active(session, user=target, active=True, actor=None, settings=app.settings)
        click.echo(f"{target.username} enabled")

    await in_transaction(app, body)


# ----------------------------------------------------------------------------- destinations


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
@pass_app
@run_async
async def destination_add(
    app: AppContext,
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

    async def body(session: AsyncSession) -> None:
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

    await in_transaction(app, body)


@destination.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@run_async
async def destination_list(app: AppContext, as_json: bool) -> None:
    """List destinations."""

    async def body(session: AsyncSession) -> None:
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
                    "COMPROMISED"
                    if d["compromised"]
                    else ("enabled" if d["enabled"] else "disabled")
                )
                lines.append(
                    f"{d['name']:<24} {d['platform']:<9} {d['target']:<22} "
                    f"{d['visibility']:<8} {state:<11} {','.join(flags)}"
                )
            return "\n".join(lines) or "(no destinations)"

        _emit(document, as_json, text)

    await in_transaction(app, body)


@destination.command("compromised")
@click.argument("name")
@click.option("--reason", required=True)
@pass_app
@run_async
async def destination_compromised(app: AppContext, name: str, reason: str) -> None:
    """Mark a destination compromised: nothing is sent there until it is restored."""

    async def body(session: AsyncSession) -> None:
        target = await destinations.require_destination(session, name=name)
        await destinations.mark_compromised(session, destination=target, reason=reason, actor=None)
        click.echo(f"{target.name} marked compromised")

    await in_transaction(app, body)


@destination.command("restore")
@click.argument("name")
@pass_app
@run_async
async def destination_restore(app: AppContext, name: str) -> None:
    """Clear the compromised mark of a destination."""

    async def body(session: AsyncSession) -> None:
        target = await destinations.require_destination(session, name=name)
        await destinations.mark_compromised(
            session, destination=target, reason="", actor=None, compromised=False
        )
        click.echo(f"{target.name} restored")

    await in_transaction(app, body)


# -------------------------------------------------------------------------------- templates


@cli.group()
def template() -> None:
    """Announcement templates."""


@template.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--all", "include_internal", is_flag=True, help="Include internal templates.")
@pass_app
def template_list(app: AppContext, as_json: bool, include_internal: bool) -> None:
    """List the templates and their variables."""
    registry = drafts.registry_for(app.settings)
    specs = registry.list(None if include_internal else "public")
    document = [
        {
            "name": s.name,
            "title": s.title,
            "audience": s.audience,
            "needs_next_update": s.needs_next_update,
            "mentions_everyone": s.mentions_everyone,
            "variables": [
                {
                    "name": v.name,
                    "type": v.type.value,
                    "required": v.required,
                    "help": v.help,
                    "choices": list(v.choices),
                }
                for v in s.variables
            ],
        }
        for s in specs
    ]
    _emit(document, as_json, lambda: "\n".join(f"{d['name']:<24} {d['title']}" for d in document))


@template.command("show")
@click.argument("name")
@pass_app
def template_show(app: AppContext, name: str) -> None:
    """Show a template's variables and source."""
    try:
        spec = drafts.registry_for(app.settings).get(name)
    except NotFound as error:
        _report(error)
    click.echo(f"{spec.name}: {spec.title}\n{spec.description}\n\nvariables:")
    for v in spec.variables:
        need = "required" if v.required else "optional"
        choices = f" [{' | '.join(v.choices)}]" if v.choices else ""
        click.echo(f"  {v.name:<20} {v.type.value:<9} {need:<9} {v.help}{choices}")
    click.echo("\n" + spec.source)


# -------------------------------------------------------------------------------- incidents


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


@incident.command("open")
@click.option("--title", required=True)
@click.option("--severity", required=True, help="P1 (critical) .. P5 (info).")
@click.option("--summary", default="")
@click.option("--by", "by", required=True, help="Who opens it (becomes the Detector).")
@pass_app
@run_async
async def incident_open(app: AppContext, title: str, severity: str, summary: str, by: str) -> None:
    """Open an incident; prints its key."""

    async def body(session: AsyncSession) -> None:
        actor = await users.require_user(session, username=by, field="by")
        created = await incidents.open_incident(
            session,
            title=title,
            severity=incidents.parse_severity(severity),
            summary=summary,
            actor=actor,
        )
        click.echo(created.key)

    await in_transaction(app, body)


@incident.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--open", "open_only", is_flag=True, help="Only incidents not closed.")
@pass_app
@run_async
async def incident_list(app: AppContext, as_json: bool, open_only: bool) -> None:
    """List incidents, newest first."""

    async def body(session: AsyncSession) -> None:
        rows = await incidents.list_incidents(session, open_only=open_only)
        document = [_incident_document(i) for i in rows]
        _emit(
            document,
            as_json,
            lambda: (
                "\n".join(
                    f"{d['key']}  {d['severity']}  {d['status']:<13} {d['title']}" for d in document
                )
                or "(no incidents)"
            ),
        )

    await in_transaction(app, body)


@incident.command("show")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@run_async
async def incident_show(app: AppContext, key: str, as_json: bool) -> None:
    """Show one incident."""

    async def body(session: AsyncSession) -> None:
        inc = await incidents.require_incident(session, key=key)
        document = _incident_document(inc)
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
            lines += [
                f"draft #{d['id']} v{d['version']} {d['template']} {d['status']}"
                for d in document["drafts"]
            ]
            return "\n".join(lines)

        _emit(document, as_json, text)

    await in_transaction(app, body)


@incident.command("log")
@click.argument("key")
@click.option("--markdown", is_flag=True, help="The Incident Log layout, as Markdown.")
@click.option("--json", "as_json", is_flag=True)
@pass_app
@run_async
async def incident_log(app: AppContext, key: str, markdown: bool, as_json: bool) -> None:
    """Print the Incident Log."""

    async def body(session: AsyncSession) -> None:
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
        _emit(
            document,
            as_json,
            lambda: "\n".join(
                f"{e.at:%Y-%m-%d %H:%M:%S} UTC  {e.kind:<8} {e.text}"
                + (f"  (rationale: {e.rationale})" if e.rationale else "")
                for e in rows
            ),
        )

    await in_transaction(app, body)


@incident.command("status")
@click.argument("key")
@click.argument("status")
@click.option("--rationale", default="")
@click.option("--by", "by", required=True)
@pass_app
@run_async
async def incident_status(app: AppContext, key: str, status: str, rationale: str, by: str) -> None:
    """Move an incident to another status (the status machine refuses invalid moves)."""

    async def body(session: AsyncSession) -> None:
        actor = await users.require_user(session, username=by, field="by")
        inc = await incidents.require_incident(session, key=key)
        await incidents.change_status(
            session,
            incident=inc,
            status=incidents.parse_status(status),
            actor=actor,
            rationale=rationale,
        )
        click.echo(f"{inc.key} is now {inc.status}")

    await in_transaction(app, body)


@incident.command("severity")
@click.argument("key")
@click.argument("severity")
@click.option("--rationale", required=True)
@click.option("--by", "by", required=True)
@pass_app
@run_async
async def incident_severity(
    app: AppContext, key: str, severity: str, rationale: str, by: str
) -> None:
    """Change the severity; unsent drafts are re-rendered and need approval again."""

    async def body(session: AsyncSession) -> None:
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

    await in_transaction(app, body)


@incident.command("assign")
@click.argument("key")
@click.option("--role", required=True, help="incident_leader, scribe, comms_manager, ...")
@click.option("--user", "username", required=True)
@click.option("--by", "by", required=True)
@pass_app
@run_async
async def incident_assign(app: AppContext, key: str, role: str, username: str, by: str) -> None:
    """Assign an incident role (a new Incident Leader must acknowledge)."""

    async def body(session: AsyncSession) -> None:
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

    await in_transaction(app, body)


@incident.command("ack")
@click.argument("key")
@click.option("--by", "by", required=True, help="The offered Incident Leader.")
@pass_app
@run_async
async def incident_ack(app: AppContext, key: str, by: str) -> None:
    """Acknowledge the Incident Leader hand-off."""

    async def body(session: AsyncSession) -> None:
        actor = await users.require_user(session, username=by, field="by")
        inc = await incidents.require_incident(session, key=key)
        await incidents.acknowledge_leadership(session, incident=inc, actor=actor)
        click.echo(f"{actor.username} now leads {inc.key}")

    await in_transaction(app, body)


@incident.command("note")
@click.argument("key")
@click.argument("text")
@click.option("--kind", type=click.Choice(["note", "decision", "action"]), default="note")
@click.option("--rationale", default="")
@click.option("--owner", default=None, help="Owner of an action.")
@click.option("--by", "by", required=True)
@pass_app
@run_async
async def incident_note(
    app: AppContext, key: str, text: str, kind: str, rationale: str, owner: str | None, by: str
) -> None:
    """Add a note, a decision (with rationale) or an action (with owner) to the Incident Log."""

    async def body(session: AsyncSession) -> None:
        actor = await users.require_user(session, username=by, field="by")
        inc = await incidents.require_incident(session, key=key)
        owner_user = (
            await users.require_user(session, username=owner, field="owner") if owner else None
        )
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

    await in_transaction(app, body)


# ----------------------------------------------------------------------------------- drafts


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
        publish_at=_parse_when(publish_at, "publish_at"),
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
@pass_app
@run_async
async def draft_new(
    app: AppContext,
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
    values = _pairs(variables, "--var")

    async def body(session: AsyncSession) -> None:
        actor = await users.require_user(session, username=by, field="by")
        inc = await incidents.require_incident(session, key=incident_key)
        chosen = [
            await destinations.require_destination(session, name=n, field="to") for n in targets
        ]
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

    await in_transaction(app, body)


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
@pass_app
@run_async
async def draft_edit(
    app: AppContext,
    draft_id: int,
    variables: tuple[str, ...],
    targets: tuple[str, ...],
    expect_version: int | None,
    by: str,
) -> None:
    """Change variables or destinations: a new version, and earlier approvals stop counting."""
    values = _pairs(variables, "--var")
    if not values and not targets:
        raise click.UsageError("nothing to change: give --var or --to")

    async def body(session: AsyncSession) -> None:
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

    await in_transaction(app, body)


@draft.command("list")
@click.option("--incident", "incident_key", default=None)
@click.option("--json", "as_json", is_flag=True)
@pass_app
@run_async
async def draft_list(app: AppContext, incident_key: str | None, as_json: bool) -> None:
    """List drafts, most recently changed first."""

    async def body(session: AsyncSession) -> None:
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
        _emit(
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

    await in_transaction(app, body)


@draft.command("show")
@click.argument("draft_id", type=ROW_ID)
@click.option("--json", "as_json", is_flag=True)
@pass_app
@run_async
async def draft_show(app: AppContext, draft_id: int, as_json: bool) -> None:
    """Show a draft: rendered text per platform, approvals, quorum, warnings, deliveries."""

    async def body(session: AsyncSession) -> None:
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
            lines += [
                f"delivery to {d['destination']}: {d['state']}" for d in document["deliveries"]
            ]
            return "\n".join(lines)

        _emit(document, as_json, text)

    await in_transaction(app, body)


@draft.command("submit")
@click.argument("draft_id", type=ROW_ID)
@click.option("--by", "by", required=True)
@pass_app
@run_async
async def draft_submit(app: AppContext, draft_id: int, by: str) -> None:
    """Submit a draft for approval."""

    async def body(session: AsyncSession) -> None:
        actor = await users.require_user(session, username=by, field="by")
        found = await drafts.require_draft(session, draft_id=draft_id)
        submitted = await drafts.submit(session, draft=found, actor=actor, settings=app.settings)
        state = drafts.quorum(submitted, settings=app.settings)
        click.echo(
            f"draft #{submitted.id} v{submitted.version} is in review "
            f"(needs {state.needed} approval(s))"
        )

    await in_transaction(app, body)


@draft.command("approve")
@click.argument("draft_id", type=ROW_ID)
@click.option("--expect-hash", default=None, help="Refuse unless this is the current content hash.")
@click.option("--by", "by", required=True)
@pass_app
@run_async
async def draft_approve(app: AppContext, draft_id: int, expect_hash: str | None, by: str) -> None:
    """Approve the current version of a draft."""

    async def body(session: AsyncSession) -> None:
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

    await in_transaction(app, body)


@draft.command("reject")
@click.argument("draft_id", type=ROW_ID)
@click.option("--reason", required=True)
@click.option("--expect-hash", default=None)
@click.option("--by", "by", required=True)
@pass_app
@run_async
async def draft_reject(
    app: AppContext, draft_id: int, reason: str, expect_hash: str | None, by: str
) -> None:
    """Reject a draft, with a reason; it goes back to its author."""

    async def body(session: AsyncSession) -> None:
        actor = await users.require_user(session, username=by, field="by")
        found = await drafts.require_draft(session, draft_id=draft_id)
        rejected = await drafts.reject(
            session, draft=found, actor=actor, reason=reason, expected_hash=expect_hash
        )
        click.echo(f"draft #{rejected.id} v{rejected.version} rejected")

    await in_transaction(app, body)


@draft.command("withdraw")
@click.argument("draft_id", type=ROW_ID)
@click.option("--reason", required=True)
@click.option("--by", "by", required=True)
@pass_app
@run_async
async def draft_withdraw(app: AppContext, draft_id: int, reason: str, by: str) -> None:
    """Withdraw a draft that has not gone out."""

    async def body(session: AsyncSession) -> None:
        actor = await users.require_user(session, username=by, field="by")
        found = await drafts.require_draft(session, draft_id=draft_id)
        await drafts.withdraw(session, draft=found, actor=actor, reason=reason)
        click.echo(f"draft #{found.id} withdrawn")

    await in_transaction(app, body)


# ------------------------------------------------------------------------------------ audit


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
@pass_app
@run_async
async def audit_list(app: AppContext, limit: int, as_json: bool) -> None:
    """Show the newest audit events."""

    async def body(session: AsyncSession) -> None:
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
        _emit(
            document,
            as_json,
            lambda: "\n".join(
                f"#{e.seq:<6} {e.at:%Y-%m-%d %H:%M:%S}  {e.actor:<14} {e.action:<22} {e.target}"
                for e in rows
            ),
        )

    await in_transaction(app, body)


# ------------------------------------------------------------------------------ deliveries


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
@pass_app
@run_async
async def delivery_list(app: AppContext, draft_id: int | None, as_json: bool) -> None:
    """List deliveries: one draft's, or every failed and uncertain one."""
    from comms.outbox import service as outbox

    async def body(session: AsyncSession) -> None:
        rows = (
            await outbox.for_draft(session, draft_id=draft_id)
            if draft_id is not None
            else await outbox.needing_attention(session)
        )
        document = [_delivery_row(d) for d in rows]
        _emit(
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

    await in_transaction(app, body)


@delivery.command("retry")
@click.argument("delivery_id", type=ROW_ID)
@click.option("--by", "by", required=True)
@pass_app
@run_async
async def delivery_retry(app: AppContext, delivery_id: int, by: str) -> None:
    """Send a failed delivery again (the same approved content; audited)."""
    from comms.outbox import service as outbox

    async def body(session: AsyncSession) -> None:
        actor = await users.require_user(session, username=by, field="by")
        found = await outbox.require_delivery(session, delivery_id=delivery_id)
        await outbox.retry(session, delivery=found, actor=actor)
        click.echo(f"delivery #{found.id} queued again")

    await in_transaction(app, body)


@delivery.command("resend")
@click.argument("delivery_id", type=ROW_ID)
@click.option("--by", "by", required=True)
@pass_app
@run_async
async def delivery_resend(app: AppContext, delivery_id: int, by: str) -> None:
    """Resend an uncertain delivery (check the chat first: it may already be there)."""
    from comms.outbox import service as outbox

    async def body(session: AsyncSession) -> None:
        actor = await users.require_user(session, username=by, field="by")
        found = await outbox.require_delivery(session, delivery_id=delivery_id)
        await outbox.resolve_uncertain(session, delivery=found, actor=actor, resend=True)
        click.echo(f"delivery #{found.id} will be sent again")

    await in_transaction(app, body)


@delivery.command("dismiss")
@click.argument("delivery_id", type=ROW_ID)
@click.option("--note", default="", help="Why (e.g. 'checked: it arrived').")
@click.option("--by", "by", required=True)
@pass_app
@run_async
async def delivery_dismiss(app: AppContext, delivery_id: int, note: str, by: str) -> None:
    """Dismiss an uncertain delivery: do not send it again."""
    from comms.outbox import service as outbox

    async def body(session: AsyncSession) -> None:
        actor = await users.require_user(session, username=by, field="by")
        found = await outbox.require_delivery(session, delivery_id=delivery_id)
        await outbox.resolve_uncertain(
            session, delivery=found, actor=actor, resend=False, note=note
        )
        click.echo(f"delivery #{found.id} dismissed")

    await in_transaction(app, body)


# ------------------------------------------------------------------------ worker, sandbox


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
    try:
        await Worker(database=database, settings=settings, publishers=publishers).run(stop)
    finally:
        for publisher in publishers.values():
            await publisher.close()


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


@cli.command("worker")
@pass_app
def worker(app: AppContext) -> None:
    """Run the outbox worker: send approved announcements and internal notifications."""
    from comms.migrate import upgrade

    _configure_logging(app.settings.log_level)
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


@cli.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
def sandbox(host: str, port: int) -> None:
    """Run the Discord and Telegram emulators; the first line printed is their JSON info."""
    from bots.sandbox import run

    run(host=host, port=port)


# ------------------------------------------------------------------------------ panel, tokens


async def _serve_panel_and_worker(
    settings: Settings, host: str, port: int, *, demo: bool, with_worker: bool = True
) -> None:
    """The panel (uvicorn) and the outbox worker in one asyncio process, until interrupted."""
    from approvals.server import server as panel_server

    panel = await asyncio.to_thread(panel_server, settings, host, port, demo=demo)
    stop = asyncio.Event()
    database = Database(settings.database_url)
    await _record_gate(settings, database, "comms demo" if demo else "comms serve")
    worker_task = (
        asyncio.create_task(_run_worker(settings, database, stop)) if with_worker else None
    )
    try:
        await panel.serve()  # returns on Ctrl-C or SIGTERM (uvicorn handles the signals)
    finally:
        stop.set()
        if worker_task is not None:
            await worker_task
        await database.dispose()


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--no-worker", is_flag=True, help="Serve the panel only (run `comms worker` apart).")
@pass_app
def serve(app: AppContext, host: str, port: int, no_worker: bool) -> None:
    """Apply migrations, then serve the panel and JSON API, with the outbox worker."""
    _configure_logging(app.settings.log_level)
    try:
        asyncio.run(
            _serve_panel_and_worker(app.settings, host, port, demo=False, with_worker=not no_worker)
        )
    except ConfigError as error:
        _fail(str(error), EXIT_USAGE)


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

    _configure_logging(logging.WARNING)
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
        _fail(str(error), EXIT_USAGE)


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


def main(prog_name: str = "comms") -> None:
    cli(prog_name=prog_name)
