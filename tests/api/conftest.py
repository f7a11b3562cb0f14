"""API fixtures: the panel's app and world, and bearer tokens made through the real service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from comms.auth import tokens
from comms.db import Database
from comms.users import service as users
from tests.panel.conftest import (  # noqa: F401 - shared fixtures
    app,
    make_client,
    panel_settings,
    world,
)


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


@pytest.fixture
def token_for(db: Database) -> Any:
    async def make(username: str, *scopes: str) -> dict[str, str]:
        async with db.transaction() as session:
            user = await users.require_user(session, username=username)
            raw, _t = await tokens.create(
                session,
                user=user,
                name="test",
                scopes=tokens.parse_scopes(scopes or ["read"]),
                actor=None,
            )
        return {"Authorization": f"Bearer {raw}"}

    return make
