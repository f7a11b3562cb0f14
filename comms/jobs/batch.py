"""Group commit: units of work that arrive while a transaction is busy share the next one.

Infrastructure of the runner, not of any domain: a queue's handler hands it small units (read,
check, write) and resumes once its own unit is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from comms.db import Database

T = TypeVar("T")
Unit = Callable[[AsyncSession], Awaitable[T]]  # a unit of work inside a transaction


class GroupCommit:
    """Group commit: units of work that arrive while a transaction is busy share the next one.

    Each caller resumes only once its unit is committed, so every write-before-send order holds
    exactly as with one transaction per unit; what is shared is the BEGIN/COMMIT and the
    session (a draft loaded by one unit is found by the next). With SQLite every statement is a
    thread round trip in aiosqlite, and one transaction per step per delivery made that the
    whole cost of a fan-out. A unit that raises rolls the batch back; the others are then run
    again, one transaction each, so only the failing one sees its error. A caller cancelled
    before its unit started drops the unit.

    ``urgent`` units (a message id the platform has just accepted) go first: until that id is
    committed, a crash would leave the message to be resent (Telegram) or flagged. Batches are
    kept small for the same reason: an urgent unit waits at most for the batch in progress.
    """

    def __init__(self, db: Database, *, limit: int = 16) -> None:
        self._db = db
        self._limit = limit
        self._urgent: list[tuple[Unit[Any], asyncio.Future[Any]]] = []
        self._queue: list[tuple[Unit[Any], asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def run(self, work: Unit[T], *, urgent: bool = False) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._queue).append((work, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    def _next_batch(self) -> list[tuple[Unit[Any], asyncio.Future[Any]]]:
        taken = self._urgent[: self._limit]
        del self._urgent[: len(taken)]
        room = self._limit - len(taken)
        taken += self._queue[:room]
        del self._queue[:room]
        return [(w, f) for w, f in taken if not f.done()]

    async def _drain(self) -> None:
        batch: list[tuple[Unit[Any], asyncio.Future[Any]]] = []
        try:
            while self._urgent or self._queue:
                batch = self._next_batch()
                if not batch:
                    continue
                try:
                    async with self._db.transaction() as session:
                        results = [await work(session) for work, _ in batch]
                except Exception as exc:
                    if len(batch) == 1:
                        _resolve(batch[0][1], error=exc)
                    else:
                        for work, future in batch:
                            await self._alone(work, future)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    _resolve(future, result=result)
        except BaseException:  # cancelled (shutdown): nobody may wait for ever
            for _, future in batch + self._urgent + self._queue:
                future.cancel()
            self._urgent.clear()
            self._queue.clear()
            raise

    async def _alone(self, work: Unit[Any], future: asyncio.Future[Any]) -> None:
        if future.done():
            return
        try:
            async with self._db.transaction() as session:
                result = await work(session)
        except Exception as exc:
            _resolve(future, error=exc)
        else:
            _resolve(future, result=result)


def _resolve(
    future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None
) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class BatchCommit(Generic[ItemT, ResultT]):
    """Items that arrive while a transaction is busy are handled together, by one call of
    ``handle(session, items)`` in the next transaction (it returns one result per item).

    Unlike ``GroupCommit``, the handler sees the whole batch, so it can read what the batch
    needs once (community reports in a flood: the live clusters) instead of once per item.
    Each caller resumes once its item is committed. A batch that fails is retried one item per
    transaction, so only the failing item's caller sees its error.
    """

    def __init__(
        self,
        db: Database,
        handle: Callable[[AsyncSession, list[ItemT]], Awaitable[list[ResultT]]],
        *,
        limit: int = 200,
    ) -> None:
        self._db = db
        self._handle = handle
        self._limit = limit
        self._queue: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def submit(self, item: ItemT) -> ResultT:
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[ItemT, asyncio.Future[ResultT]]] = []
        try:
            while self._queue:
                batch = [(i, f) for i, f in self._queue[: self._limit] if not f.done()]
                del self._queue[: self._limit]
                if not batch:
                    continue
                try:
                    async with self._db.transaction() as session:
                        results = await self._handle(session, [item for item, _ in batch])
                except Exception as exc:
                    if len(batch) == 1:
                        _resolve(batch[0][1], error=exc)
                        continue
                    for item, future in batch:
                        try:
                            async with self._db.transaction() as session:
                                (result,) = await self._handle(session, [item])
                        except Exception as alone:
                            _resolve(future, error=alone)
                        else:
                            _resolve(future, result=result)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    _resolve(future, result=result)
        except BaseException:  # cancelled (shutdown): nobody may wait for ever
            for _, future in batch + self._queue:
                future.cancel()
            self._queue.clear()
            raise
