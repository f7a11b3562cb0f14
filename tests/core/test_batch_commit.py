"""``BatchCommit`` (comms/jobs/batch.py): what arrives during a transaction shares the next one,
and one failing item fails only its own caller."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from comms.db import Database
from comms.jobs.batch import BatchCommit

pytestmark = pytest.mark.db


async def test_items_arriving_together_share_one_transaction(db: Database) -> None:
    calls: list[list[int]] = []

    async def handle(session: AsyncSession, items: list[int]) -> list[int]:
        calls.append(items)
        await session.execute(text("SELECT 1"))
        return [item * 10 for item in items]

    writer: BatchCommit[int, int] = BatchCommit(db, handle, limit=4)
    results = await asyncio.gather(*(writer.submit(n) for n in range(10)))
    assert results == [n * 10 for n in range(10)]
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # in order, at most ``limit`` each


async def test_a_failing_item_fails_only_its_caller(db: Database) -> None:
    calls: list[list[int]] = []

    async def handle(session: AsyncSession, items: list[int]) -> list[int]:
        calls.append(items)
        await session.execute(text("SELECT 1"))
        if 3 in items:
            raise ValueError("item 3 is bad")
        return items

    writer: BatchCommit[int, int] = BatchCommit(db, handle)
    outcomes = await asyncio.gather(*(writer.submit(n) for n in range(5)), return_exceptions=True)
    assert outcomes[:3] == [0, 1, 2] and outcomes[4] == 4
    assert isinstance(outcomes[3], ValueError)
    # The batch failed as a whole, then every item was tried alone.
    assert calls == [[0, 1, 2, 3, 4], [0], [1], [2], [3], [4]]
