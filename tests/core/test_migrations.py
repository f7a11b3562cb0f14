"""The Alembic migrations produce exactly the schema the models describe, and go both ways."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from comms.db import Database
from comms.migrate import upgrade
from comms.models import Base


def _differences(connection: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrations_match_the_models(db: Database) -> None:
    async with db.engine.connect() as conn:
        assert await conn.run_sync(_differences) == []


def test_downgrade_to_base_and_up_again(tmp_path: Any) -> None:
    from alembic import command

    from comms.migrate import alembic_config

    url = f"sqlite+aiosqlite:///{tmp_path}/cycle.db"
    upgrade(url)
    command.downgrade(alembic_config(url), "base")
    upgrade(url)
