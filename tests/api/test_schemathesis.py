"""Schemathesis against /openapi.json: every operation, every built-in check (including the
one that replays requests without authentication), a bounded number of examples."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from approvals.app import create_app
from comms.auth import tokens
from comms.db import Database
from comms.enums import Role
from comms.migrate import upgrade
from comms.settings import load_settings
from tests.factories import make_destinations, make_incident, make_user
from tests.panel.conftest import SECRET

TOKEN: dict[str, str] = {}
EXAMPLES = 20  # per operation and generation mode: the whole run stays well under 2 minutes
load_all_checks()
ALL_CHECKS = list(CHECKS.get_all())


async def _seed(url: str) -> str:
    database = Database(url)
    try:
        async with database.transaction() as session:
            omni = await make_user(session, "omni", *Role)
            await make_destinations(session)
            await make_incident(session, omni)
            raw, _t = await tokens.create(
                session, user=omni, name="schemathesis", scopes=list(tokens.Scope), actor=None
            )
    finally:
        await database.dispose()
    return raw


@schemathesis.auth(refresh_interval=None)
class BearerToken:
    """Supplies the API token the way a client would (the ignored-auth check removes it)."""

    def get(self, case: schemathesis.Case, context: Any) -> str:
        return TOKEN["value"]

    def set(self, case: schemathesis.Case, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _build(tmp: Path) -> Any:
    url = f"sqlite+aiosqlite:///{tmp / 'comms.db'}"
    upgrade(url)
    TOKEN["value"] = asyncio.run(_seed(url))
    app_settings = load_settings(database_url=url, secret_key=SecretStr(SECRET), require_2fa_for=[])
    app = create_app(settings=app_settings, database=Database(url))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_api_conforms_to_its_schema(tmp_path: Path) -> None:
    """Runs in its own thread and event loop (the ASGI client has one), hence not async."""
    api_schema = _build(tmp_path)
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1

        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=ALL_CHECKS)

            try:
                run()
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert operations >= 15
    assert not failures, "\n\n".join(failures)
