"""Fixtures for the panel tests: an app on the test database, and a client that behaves like
a browser (cookies, CSRF token from the page, same-origin fetch metadata)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI

from approvals.app import create_app
from comms.db import Database
from comms.enums import Role
from comms.settings import Settings
from tests.factories import PASSWORD, make_destinations, make_incident, make_user

SECRET = "test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


@pytest.fixture
def panel_settings(settings: Settings) -> Settings:
    """Quorum 2 for P1 (as the issue's journey), 2FA enforcement off unless a test turns it on."""
    return settings.model_copy(
        update={
            "secret_key": __import__("pydantic").SecretStr(SECRET),
            "approval_quorum": {**settings.approval_quorum, "P1": 2},
            "require_2fa_for": [],
        }
    )


@pytest.fixture
def app(panel_settings: Settings, db: Database) -> FastAPI:
    return create_app(settings=panel_settings, database=db)


class PanelClient:
    """A logged-in (or not) browser: keeps cookies and the page's CSRF token."""

    def __init__(self, app: FastAPI) -> None:
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            follow_redirects=False,
        )
        self.csrf = ""

    async def aclose(self) -> None:
        await self.http.aclose()

    def _remember(self, response: httpx.Response) -> None:
        match = (
            _CSRF_META.search(response.text)
            if "text/html" in response.headers.get("content-type", "")
            else None
        )
        if match:
            self.csrf = match.group(1)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.get(path, **kwargs)
        self._remember(response)
        return response

    async def post(
        self,
        path: str,
        data: dict[str, Any] | list[tuple[str, str]] | None = None,
        *,
        csrf: bool = True,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        items: list[tuple[str, str]] = (
            list(data.items()) if isinstance(data, dict) else list(data or [])
        )
        if csrf:
            items.append(("csrf_token", self.csrf))
        sent = {
            "Sec-Fetch-Site": "same-origin",
            "Content-Type": "application/x-www-form-urlencoded",
            **(headers or {}),
        }
        response = await self.http.post(path, content=urlencode(items), headers=sent)
        self._remember(response)
        return response

    async def login(self, username: str, password: str = PASSWORD) -> httpx.Response:
        await self.get("/login")
        response = await self.post("/login", {"username": username, "password": password})
        if response.status_code == 303:
            await self.get(response.headers["location"])
        return response


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[PanelClient]:
    browser = PanelClient(app)
    yield browser
    await browser.aclose()


@pytest.fixture
async def make_client(app: FastAPI) -> AsyncIterator[Any]:
    """Several people at once (each their own cookies)."""
    made: list[PanelClient] = []

    def factory() -> PanelClient:
        made.append(PanelClient(app))
        return made[-1]

    yield factory
    for browser in made:
        await browser.aclose()


@pytest.fixture
async def world(db: Database) -> dict[str, Any]:
    """The team, destinations and one P1 incident, through the real services."""
    async with db.transaction() as session:
        team = {
            "cm": await make_user(session, "carol", Role.COMMS_MANAGER),
            "dm1": await make_user(session, "dave", Role.DECISION_MAKER),
            "dm2": await make_user(session, "erin", Role.DECISION_MAKER),
            "lead": await make_user(session, "leo", Role.INCIDENT_LEADER),
            "scribe": await make_user(session, "sam", Role.SCRIBE),
            "responder": await make_user(session, "rita", Role.RESPONDER),
            "admin": await make_user(session, "ada", Role.ADMIN),
        }
        dests = await make_destinations(session)
        incident = await make_incident(session, team["lead"])
    return {"users": team, "destinations": dests, "incident": incident}


EXPLOIT_VARS = {
    "summary": "An attacker is draining the bridge pool.",
    "affected": "The ETH bridge",
    "funds_status": "at_risk",
    "user_action": "Do not interact with the bridge contracts.",
    "next_update": "2030-01-01T13:00Z",
}


def keys_of(app: FastAPI) -> Any:
    return app.state.panel.keys


async def enrol_totp(db: Database, app: FastAPI, username: str) -> str:
    """Set up TOTP for a user through the real service; returns the secret (the 'phone')."""
    from comms.auth import totp
    from comms.clock import utcnow
    from comms.users import service as users

    async with db.transaction() as session:
        user = await users.require_user(session, username=username)
        secret = await totp.begin_enrolment(session, user=user, keys=keys_of(app))
        # Confirm with the previous step's code so the current step is still unused.
        code = totp.code_at(secret, totp.step_of(utcnow()) - 1)
        await totp.confirm_enrolment(session, user=user, keys=keys_of(app), code=code)
    return secret


def current_code(secret: str) -> str:
    from comms.auth import totp
    from comms.clock import utcnow

    return totp.code_at(secret, totp.step_of(utcnow()))


async def _draft_id_for(
    db: Database,
    world: dict[str, Any],
    settings: Settings,
    *,
    submit: bool,
    variables: dict[str, str] | None = None,
) -> int:
    """A draft by carol for the world's incident, through the real services."""
    from comms.destinations import service as destinations
    from comms.drafts import service as drafts
    from comms.incidents import service as incidents
    from comms.users import service as users

    async with db.transaction() as session:
        cm = await users.require_user(session, username="carol")
        incident = await incidents.require_incident(session, key=world["incident"].key)
        chosen = [
            await destinations.require_destination(session, name=n)
            for n in ("discord-announcements", "telegram-announcements")
        ]
        draft = await drafts.create(
            session,
            incident=incident,
            template="active-exploit-initial",
            variables=variables or EXPLOIT_VARS,
            destinations=chosen,
            actor=cm,
            settings=settings,
        )
        if submit:
            await drafts.submit(session, draft=draft, actor=cm, settings=settings)
        return draft.id
