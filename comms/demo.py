"""``comms demo``: the whole service on one machine with no accounts anywhere.

A fresh SQLite database, the platform sandbox standing in for Discord and Telegram, a team with
random passwords (printed once), destinations mapped onto the sandbox's channels and chats, one
sample incident, then the panel and the worker. The sandbox and the panel are passed in by the
CLI (the composition root), so this module depends on neither.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr

from comms.db import Database
from comms.destinations import service as destinations
from comms.destinations.models import InternalUse, Visibility
from comms.enums import Platform, Role, Severity
from comms.incidents import service as incidents
from comms.incidents.models import IncidentRole, IncidentStatus, LogKind
from comms.migrate import upgrade_async
from comms.settings import Settings
from comms.users import service as users


class SandboxLike(Protocol):
    info: dict[str, Any]


SandboxFactory = Callable[..., AbstractAsyncContextManager[SandboxLike]]
ServeFunction = Callable[..., Awaitable[None]]

TEAM: list[tuple[str, str, tuple[Role, ...]]] = [
    ("carol", "Carol (Communication Manager)", (Role.COMMS_MANAGER,)),
    ("dave", "Dave (Decision Maker)", (Role.DECISION_MAKER,)),
    ("erin", "Erin (Decision Maker)", (Role.DECISION_MAKER,)),
    ("leo", "Leo (Incident Leader)", (Role.INCIDENT_LEADER, Role.SCRIBE)),
    ("ada", "Ada (admin)", (Role.ADMIN,)),
]


@dataclass
class DemoSeed:
    passwords: dict[str, str]
    incident_key: str


def demo_settings(settings: Settings, info: dict[str, Any], database_url: str) -> Settings:
    """Point everything at the sandbox; keep what the operator configured explicitly."""
    configured = {key for key in os.environ if key.startswith("COMMS_")}
    update: dict[str, Any] = {
        "database_url": database_url,
        "discord_api_base": info["discord_api_base"],
        "discord_token": SecretStr(info["discord_token"]),
        "telegram_api_base": info["telegram_api_base"],
        "telegram_token": SecretStr(info["telegram_token"]),
        # Links to sent messages open the sandbox viewer on that channel or chat.
        "discord_message_url": info["viewer_url"] + "#discord/{channel_id}",
        "telegram_message_url": info["viewer_url"] + "#telegram/{chat_id}",
    }
    if settings.secret_key is None:
        update["secret_key"] = SecretStr(secrets.token_urlsafe(48))
    if "COMMS_REQUIRE_2FA_FOR" not in configured:
        update["require_2fa_for"] = []  # nobody needs an authenticator app to try the demo
    if "COMMS_APPROVAL_QUORUM" not in configured:
        update["approval_quorum"] = {**settings.approval_quorum, Severity.P1: 2}
    if "COMMS_OFFICIAL_DOMAINS" not in configured:
        update["official_domains"] = ["example.org"]
    if "COMMS_OFFICIAL_LINKS" not in configured:
        update["official_links"] = {
            "Discord": "https://discord.gg/example",
            "Telegram": "https://t.me/example_announcements",
            "Status page": "https://status.example.org",
        }
    return settings.model_copy(update=update)


async def seed(database: Database, info: dict[str, Any]) -> DemoSeed:
    """The team, destinations on the sandbox's default world, and one incident in progress."""
    channels, chats = info["discord_channels"], info["telegram_chats"]
    guild = str(info["discord_guild_id"])
    passwords = {name: secrets.token_urlsafe(12) for name, _, _ in TEAM}
    async with database.transaction() as session:
        people = {
            name: await users.create(
                session, username=name, password=passwords[name], roles=roles, display_name=display
            )
            for name, display, roles in TEAM
        }
        await destinations.create(
            session,
            name="discord-announcements",
            platform=Platform.DISCORD,
            guild_id=guild,
            target=str(channels["announcements"]),
            actor=None,
            pin=True,
            crosspost=True,
            allow_everyone=True,
            thread_updates=True,
        )
        await destinations.create(
            session,
            name="discord-general",
            platform=Platform.DISCORD,
            guild_id=guild,
            target=str(channels["general"]),
            actor=None,
            silent=True,
        )
        await destinations.create(
            session,
            name="telegram-announcements",
            platform=Platform.TELEGRAM,
            target=str(chats["announcements"]),
            actor=None,
            pin=True,
        )
        await destinations.create(
            session,
            name="telegram-community",
            platform=Platform.TELEGRAM,
            target=str(chats["community"]),
            actor=None,
        )
        await destinations.create(
            session,
            name="discord-responders",
            platform=Platform.DISCORD,
            guild_id=guild,
            target=str(channels["responders"]),
            actor=None,
            visibility=Visibility.PRIVATE,
            internal_uses=list(InternalUse),
            responders_role_id=str(info.get("discord_roles", {}).get("responders", "")),
        )
        await destinations.create(
            session,
            name="telegram-responders",
            platform=Platform.TELEGRAM,
            target=str(chats["responders"]),
            actor=None,
            visibility=Visibility.PRIVATE,
            internal_uses=[InternalUse.APPROVERS, InternalUse.COMMS],
        )
        leader = people["leo"]
        incident = await incidents.open_incident(
            session,
            title="Unusual withdrawals from the ETH bridge",
            severity=Severity.P1,
            actor=leader,
            summary="Monitoring flagged large withdrawals from the bridge contract; "
            "community members report failed transactions.",
        )
        await incidents.assign(
            session, incident=incident, role=IncidentRole.INCIDENT_LEADER, user=leader, actor=leader
        )
        await incidents.assign(
            session,
            incident=incident,
            role=IncidentRole.COMMS_MANAGER,
            user=people["carol"],
            actor=leader,
        )
        await incidents.assign(
            session, incident=incident, role=IncidentRole.SCRIBE, user=leader, actor=leader
        )
        await incidents.change_status(
            session, incident=incident, status=IncidentStatus.INVESTIGATING, actor=leader
        )
        await incidents.add_entry(
            session,
            incident=incident,
            kind=LogKind.NOTE,
            actor=leader,
            text="Three withdrawals of about 400 ETH each in ten minutes; checking signers.",
        )
    return DemoSeed(passwords=passwords, incident_key=incident.key)


def banner(seed_: DemoSeed, panel_url: str, info: dict[str, Any], settings: Settings) -> str:
    width = max(len(name) for name in seed_.passwords)
    lines = [
        "",
        "Incident comms demo is running (everything stays on this machine).",
        "",
        f"  Panel:    {panel_url}",
        f"  Sandbox:  {info['viewer_url']}   (the fake Discord and Telegram, as members see them)",
        "",
        "  Sign in as (passwords are shown only now):",
    ]
    for name, display, _roles in TEAM:
        lines.append(f"    {name:<{width}}  {seed_.passwords[name]}   {display}")
    lines += [
        "",
        "  Try it: in the sandbox viewer's Telegram community group, send",
        "  '/report@sandbox_comms_bot the bridge is draining' as a member; as leo, open",
        "  Reports and escalate the cluster; as carol, draft the first alert from it (or open",
        f"  {seed_.incident_key} (P1), the sample incident); sign in as dave, then erin, to",
        "  approve (P1 needs two Decision Makers); then watch the sandbox viewer.",
        "",
    ]
    if settings.require_2fa_for:
        roles = ", ".join(sorted(settings.require_2fa_for))
        lines.append(f"  Two-factor is required for: {roles} (they enrol at first sign-in).")
    else:
        lines += [
            "  In the demo two-factor is off, so nobody needs an authenticator app; to try it,",
            "  start with COMMS_REQUIRE_2FA_FOR=decision_maker,admin (the production default).",
        ]
    lines += ["  Stop with Ctrl-C. Every start begins with a fresh database.", ""]
    return "\n".join(lines)


def fresh_data_dir(data_dir: Path) -> str:
    """Empty the demo's directory; returns the database URL inside it."""
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    return f"sqlite+aiosqlite:///{(data_dir / 'comms.db').resolve()}"


async def run_demo(
    settings: Settings,
    *,
    host: str,
    port: int,
    sandbox_port: int,
    data_dir: Path,
    serve: ServeFunction,
    sandbox_factory: SandboxFactory,
    echo: Callable[[str], None] = print,
) -> None:
    """Start the sandbox, seed a fresh database, print the logins, then serve until Ctrl-C."""
    database_url = fresh_data_dir(data_dir)
    async with sandbox_factory(host="127.0.0.1", port=sandbox_port) as sandbox:
        info = sandbox.info
        chosen = demo_settings(settings, info, database_url)
        await upgrade_async(database_url)
        database = Database(database_url)
        try:
            seeded = await seed(database, info)
        finally:
            await database.dispose()
        echo(banner(seeded, f"http://{host}:{port}/", info, chosen))
        await serve(chosen, host, port, demo=True)
