"""When panel sessions and API tokens were last used: noted in memory, written in batches.

A page view writes nothing on its request path: a write there took SQLite's write lock (every
page view queued behind the others and behind every edit) or a row lock on PostgreSQL, for a
timestamp that only has to be right to within a minute. The panel's guard notes the moment
here; ``flush`` writes what is due, from a background task every few seconds and at the start
of any request that writes anyway. Until then, ``last_seen`` answers for this process (the idle
timeout counts from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, delete, or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from comms.auth.models import ApiToken, WebSession
from comms.auth.sessions import TOUCH_EVERY, Timeouts

TOKEN_TOUCH_EVERY = timedelta(seconds=60)
SESSIONS = cast(Table, WebSession.__table__)
TOKENS = cast(Table, ApiToken.__table__)


@dataclass
class Touches:
    """Pending ``last_seen_at`` / ``last_used_at`` writes of one process."""

    sessions: dict[str, datetime] = field(default_factory=dict)
    tokens: dict[int, datetime] = field(default_factory=dict)

    def last_seen(self, row: WebSession) -> datetime:
        noted = self.sessions.get(row.id_hash)
        return max(row.last_seen_at, noted) if noted is not None else row.last_seen_at

    def session_seen(self, row: WebSession, moment: datetime) -> None:
        if moment - self.last_seen(row) >= TOUCH_EVERY:
            self.sessions[row.id_hash] = moment

    def token_used(self, token: ApiToken, moment: datetime) -> None:
        last = self.tokens.get(token.id, token.last_used_at)
        if last is None or moment - last >= TOKEN_TOUCH_EVERY:
            self.tokens[token.id] = moment

    @property
    def pending(self) -> bool:
        return bool(self.sessions or self.tokens)

    async def flush(self, session: AsyncSession) -> None:
        """Write what was noted, in one statement per table (never moving a time back)."""
        seen, self.sessions = self.sessions, {}
        used, self.tokens = self.tokens, {}
        table = SESSIONS
        if seen:
            await session.execute(
                update(table)
                .where(table.c.id_hash == bindparam("h"), table.c.last_seen_at < bindparam("m"))
                .values(last_seen_at=bindparam("m")),
                [{"h": key, "m": moment} for key, moment in seen.items()],
                execution_options={"synchronize_session": False},
            )
        if used:
            tokens = TOKENS
            await session.execute(
                update(tokens)
                .where(
                    tokens.c.id == bindparam("i"),
                    or_(tokens.c.last_used_at.is_(None), tokens.c.last_used_at < bindparam("m")),
                )
                .values(last_used_at=bindparam("m")),
                [{"i": key, "m": moment} for key, moment in used.items()],
                execution_options={"synchronize_session": False},
            )


async def purge_expired(session: AsyncSession, *, timeouts: Timeouts, now: datetime) -> int:
    """Delete sessions past their idle or absolute timeout (a page view only ignores them)."""
    table = SESSIONS
    result = await session.execute(
        delete(table).where(
            or_(
                table.c.last_seen_at <= now - timeouts.idle,
                table.c.created_at <= now - timeouts.absolute,
            )
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
