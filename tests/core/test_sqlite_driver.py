"""The SQLite driver adapter (comms/sqlite_driver.py): what SQLAlchemy reads after a statement
is what aiosqlite's own cursor would have given, errors are SQLAlchemy's usual ones, and a
statement costs one trip to the connection's thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from comms.db import Database


@pytest.fixture
async def scratch(tmp_path: Path) -> Any:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with database.transaction() as session:
        await session.execute(
            text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE)")
        )
    yield database
    await database.dispose()


async def test_results_rowcounts_and_ids(scratch: Database) -> None:
    async with scratch.transaction() as session:
        returned = await session.execute(text("INSERT INTO t (v) VALUES ('a') RETURNING id"))
        assert returned.all() == [(1,)]
        inserted = await session.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": "b"})
        assert (inserted.rowcount, inserted.lastrowid) == (1, 2)  # type: ignore[attr-defined]
        many = await session.execute(
            text("INSERT INTO t (v) VALUES (:v)"), [{"v": "c"}, {"v": "d"}]
        )
        assert many.rowcount == 2  # type: ignore[attr-defined]
        updated = await session.execute(text("UPDATE t SET v = v || '!' WHERE id > 2"))
        assert updated.rowcount == 2  # type: ignore[attr-defined]
        rows = await session.execute(text("SELECT id, v FROM t ORDER BY id"))
        assert list(rows.keys()) == ["id", "v"]
        assert rows.all() == [(1, "a"), (2, "b"), (3, "c!"), (4, "d!")]
        assert (await session.execute(text("SELECT v FROM t WHERE id = 99"))).first() is None


async def test_errors_are_sqlalchemys_and_the_transaction_rolls_back(scratch: Database) -> None:
    with pytest.raises(IntegrityError, match="UNIQUE"):
        async with scratch.transaction() as session:
            await session.execute(text("INSERT INTO t (v) VALUES ('x')"))
            await session.execute(text("INSERT INTO t (v) VALUES ('x')"))
    with pytest.raises(OperationalError, match="no such table"):
        async with scratch.transaction() as session:
            await session.execute(text("SELECT * FROM missing"))
    async with scratch.read() as session:
        assert (await session.execute(text("SELECT count(*) FROM t"))).scalar() == 0
        with pytest.raises(OperationalError, match=r"readonly|read-only|query_only"):
            await session.execute(text("INSERT INTO t (v) VALUES ('y')"))


async def test_a_statement_is_one_trip_to_the_connections_thread(
    scratch: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reason the adapter exists: SQLAlchemy's own made four (cursor, execute, fetch,
    close). ``aiosqlite.Connection._execute`` is the private call it relies on."""
    trips: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    async with scratch.transaction() as session:
        await session.execute(text("SELECT 1"))  # the connection is checked out and begun
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        await session.execute(text("INSERT INTO t (v) VALUES ('z')"))
        assert (await session.execute(text("SELECT v FROM t"))).all() == [("z",)]
        assert len(trips) == 2
