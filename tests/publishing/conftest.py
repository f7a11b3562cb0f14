"""Publishing fixtures: the sandbox on a free port, the real publishers pointed at it, a worker,
and a team with destinations mapped onto the sandbox's default world."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bots.publishers import build_publishers
from bots.sandbox import Sandbox
from comms.db import Database
from comms.destinations import service as destinations
from comms.destinations.models import Destination, InternalUse, Visibility
from comms.drafts import service as drafts
from comms.drafts.models import Draft
from comms.drafts.payload import DraftOptions
from comms.enums import Platform, Severity
from comms.incidents import service as incidents
from comms.incidents.models import Incident
from comms.outbox.ports import Publisher
from comms.outbox.worker import Worker, WorkerConfig
from comms.settings import Settings
from comms.users.models import User
from tests.factories import make_team
from tests.sandbox import spec_check


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    """Every request our publishers make, and every answer, must match the platform specs."""
    async with Sandbox(record_exchanges=True, seed=7) as sb:
        yield sb
        problems = spec_check.check_exchanges(sb.core.exchanges, requests=True)
        assert not problems, "requests that do not match the published specs:\n" + "\n".join(
            problems
        )


@pytest.fixture
def pub_settings(settings: Settings, sandbox: Sandbox) -> Settings:
    info = sandbox.info
    return settings.model_copy(
        update={
            "discord_api_base": info["discord_api_base"],
            "discord_token": SecretStr(info["discord_token"]),
            "telegram_api_base": info["telegram_api_base"],
            "telegram_token": SecretStr(info["telegram_token"]),
            "platform_timeout_seconds": 1.5,
        }
    )


@pytest.fixture
async def publishers(pub_settings: Settings) -> AsyncIterator[dict[Platform, Publisher]]:
    built = build_publishers(pub_settings)
    for publisher in built.values():
        await publisher.start()
    yield built
    for publisher in built.values():
        await publisher.close()


FAST = dict(backoff_base=0.05, backoff_cap=0.5, poll_interval=0.02, lease_seconds=10.0)


@pytest.fixture
def worker(db: Database, pub_settings: Settings, publishers: dict[Platform, Publisher]) -> Worker:
    return Worker(
        database=db, settings=pub_settings, publishers=publishers, config=WorkerConfig(**FAST)
    )  # type: ignore[arg-type]


@pytest.fixture
async def control(sandbox: Sandbox) -> AsyncIterator[Control]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield Control(sandbox, client)


class Control:
    """The sandbox's control API: what members see, faults, limits."""

    def __init__(self, sandbox: Sandbox, client: httpx.AsyncClient) -> None:
        self.sandbox = sandbox
        self.http = client
        self.url = sandbox.control_url

    async def get(self, path: str) -> Any:
        response = await self.http.get(self.url + path)
        assert response.status_code == 200, response.text
        return response.json()

    async def post(self, path: str, body: Any) -> Any:
        response = await self.http.post(self.url + path, json=body)
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def patch(self, path: str, body: Any) -> Any:
        response = await self.http.patch(self.url + path, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    async def discord_messages(self, channel_id: str | int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.get(f"/discord/channels/{channel_id}/messages")
        return result

    async def telegram_messages(self, chat_id: str | int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.get(f"/telegram/chats/{chat_id}/messages")
        return result

    async def fault(self, **body: Any) -> Any:
        return await self.post("/faults", body)


@dataclass
class World:
    team: dict[str, User]
    incident: Incident
    dest: dict[str, Destination]
    info: dict[str, Any]


@pytest.fixture
async def world(db: Database, sandbox: Sandbox) -> World:
    info = sandbox.info
    channels, chats = info["discord_channels"], info["telegram_chats"]
    async with db.transaction() as session:
        team = await make_team(session)
        dest = {
            "dc_news": await destinations.create(
                session,
                name="dc-announcements",
                platform=Platform.DISCORD,
                target=str(channels["announcements"]),
                actor=None,
                pin=True,
                crosspost=True,
                allow_everyone=True,
                thread_updates=True,
            ),
            "dc_general": await destinations.create(
                session,
                name="dc-general",
                platform=Platform.DISCORD,
                target=str(channels["general"]),
                actor=None,
                silent=True,
            ),
            "tg_news": await destinations.create(
                session,
                name="tg-announcements",
                platform=Platform.TELEGRAM,
                target=str(chats["announcements"]),
                actor=None,
                pin=True,
            ),
            "tg_community": await destinations.create(
                session,
                name="tg-community",
                platform=Platform.TELEGRAM,
                target=str(chats["community"]),
                actor=None,
                silent=True,
            ),
            "dc_responders": await destinations.create(
                session,
                name="dc-responders",
                platform=Platform.DISCORD,
                target=str(channels["responders"]),
                actor=None,
                visibility=Visibility.PRIVATE,
                internal_uses=[InternalUse.APPROVERS, InternalUse.COMMS],
            ),
        }
        incident = await incidents.open_incident(
            session, title="Bridge exploit", severity=Severity.P1, actor=team["lead"]
        )
    return World(team=team, incident=incident, dest=dest, info=info)


EXPLOIT_VARS = {
    "summary": "An attacker is draining the ETH bridge.",
    "affected": "Bridge contracts on mainnet",
    "funds_status": "at_risk",
    "next_update": "2026-01-01T13:00Z",
}


async def approved_draft(
    db: Database,
    world: World,
    settings: Settings,
    *,
    template: str = "active-exploit-initial",
    variables: dict[str, str] | None = None,
    to: tuple[str, ...] = ("dc_news", "tg_news"),
    options: DraftOptions | None = None,
    correction_of: Draft | None = None,
) -> Draft:
    """Write, submit and approve a draft (quorum 1) through the real services."""
    async with db.transaction() as session:
        incident = await incidents.require_incident(session, key=world.incident.key)
        chosen = [
            await destinations.require_destination(session, name=world.dest[k].name) for k in to
        ]
        original = (
            await drafts.require_draft(session, draft_id=correction_of.id)
            if correction_of
            else None
        )
        draft = await drafts.create(
            session,
            incident=incident,
            template=template,
            variables=variables if variables is not None else EXPLOIT_VARS,
            destinations=chosen,
            actor=world.team["cm"],
            settings=settings,
            options=options,
            correction_of=original,
        )
        await drafts.submit(session, draft=draft, actor=world.team["cm"], settings=settings)
        return await drafts.approve(
            session, draft=draft, actor=world.team["dm1"], settings=settings
        )
