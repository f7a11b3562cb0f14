"""Taking a community report in: the flood limits, storing it, and what the bot answers.

The listeners (``bots/``) hand every report here and send whatever answer comes back. During an
exploit hundreds of members report within minutes, and the platforms limit what a bot may post
(Telegram: 20 messages a minute in one group), so the answers are rationed:

- a reporter's first ``reports_per_window`` reports in ``window`` are stored; the rest are
  counted (``dropped``) but neither stored nor answered;
- a reporter gets at most one acknowledgement per ``window`` (the later reports are stored);
- a chat gets at most ``chat_burst`` answers at once and ``chat_acks_per_minute`` a minute
  (a token bucket: Telegram also limits a chat to about one message a second, so a minute's
  answers must not go out together); the reports that find no token are answered together, a
  minute after the first of them, by one "we have received N reports" message
  (``combined_due``).

The counters live in the listening process (``comms bots``): they ration a bot's own posts, and
a restart that forgets them costs at most a few extra acknowledgements. Nothing here holds a
database transaction across a network call: ``take`` commits before the listener answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from comms.clock import utcnow
from comms.db import Database
from comms.detections import service
from comms.detections.clusters import TextIndex
from comms.detections.entities import extract
from comms.detections.models import TEXT_LIMIT, Detection, DetectionEntity, DetectionSource
from comms.detections.service import ENTITY_INDEX_LIMIT, Report, existing
from comms.enums import Platform
from comms.jobs.batch import BatchCommit
from comms.rendering import Rendered, registry_for, render, render_context, validate_values
from comms.settings import Settings

log = logging.getLogger("comms.intake")

ACK_TEMPLATE = "internal-report-ack"
PROMPT = (
    "What happened? Reply with what you saw (an address, a transaction, a link), "
    "or use /report followed by a description."
)


def combined_text(count: int) -> str:
    """The one message that answers a flood of reports in a chat (plain text on both
    platforms: nothing from any reporter is in it)."""
    return (
        f"We have received {count} reports in the last minute. The team is on it. "
        "Our team will never send you a direct message first, and never asks for your seed "
        "phrase, keys or a signature."
    )


def received_text(text: str) -> str:
    """A report's text as it may be stored: cut at the limit, and without NUL, which
    PostgreSQL cannot store. Everything else is kept as received and only ever shown inert."""
    return text.replace("\x00", "\ufffd")[:TEXT_LIMIT]


@dataclass(frozen=True)
class Taken:
    """What became of one report, and what to answer (``None``: stay silent)."""

    detection: Detection | None  # None: empty, or over the reporter's limit
    ack: Rendered | None = None  # the acknowledgement, per platform
    prompt: str | None = None  # the report said nothing: ask what happened

    @property
    def reference(self) -> str | None:
        return self.detection.reference if self.detection is not None else None


@dataclass
class _Chat:
    tokens: float  # answers the chat's bucket allows now
    checked: datetime  # when ``tokens`` was last brought up to date
    held: int = 0  # reports not answered one by one, answered together
    held_since: datetime | None = None


@dataclass
class Intake:
    """One per listening process, shared by its Discord and Telegram listeners."""

    database: Database
    settings: Settings
    reports_per_window: int = 5
    window: timedelta = timedelta(minutes=10)
    chat_acks_per_minute: int = 10
    chat_burst: int = 3
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _stored: dict[str, deque[datetime]] = field(default_factory=lambda: defaultdict(deque))
    _acked: dict[str, datetime] = field(default_factory=dict)
    _chats: dict[str, _Chat] = field(default_factory=dict)
    _writer: BatchCommit[Report, tuple[Detection, bool]] = field(init=False)
    _texts: TextIndex = field(default_factory=TextIndex)
    _writing: dict[tuple[DetectionSource, str], asyncio.Future[tuple[Detection, bool]]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        # Reports that arrive while one batch is being written share the next transaction
        # and one read of the live clusters: a flood costs per batch, not per report.
        self._writer = BatchCommit(self.database, self._record)

    async def _record(
        self, session: AsyncSession, reports: list[Report]
    ) -> list[tuple[Detection, bool]]:
        return await service.record_many(
            session, reports, settings=self.settings, index=self._texts
        )

    async def take(self, report: Report, *, chat: str) -> Taken:
        """Store ``report`` (unless empty or over its reporter's limit) and decide the answer.

        ``chat`` names where an answer would be posted (e.g. ``telegram:-100123``); the
        reporter is ``report.source`` and ``report.reporter_id``. A report the source already
        sent (same ``external_id``) is not stored again and not answered again.
        """
        if not report.text.strip() and not report.hidden_urls:
            return Taken(detection=None, prompt=PROMPT)
        now = utcnow()
        reporter = f"{report.source.value}:{report.reporter_id}"
        stored = self._stored[reporter]
        while stored and now - stored[0] >= self.window:
            stored.popleft()
        if len(stored) >= self.reports_per_window:
            self.dropped[reporter] += 1
            log.info("report from %s over the limit (%d dropped)", reporter, self.dropped[reporter])
            return Taken(detection=None)
        clean = Report(**{**report.__dict__, "text": received_text(report.text)})
        stored.append(now)  # reserved before the write: concurrent reports count too
        key = (report.source, report.external_id or "")
        writing = asyncio.ensure_future(self._writer.submit(clean))
        if report.external_id is not None:
            self._writing[key] = writing
        try:
            detection, created = await writing
        except BaseException:
            stored.remove(now)
            raise
        finally:
            if self._writing.get(key) is writing:
                del self._writing[key]
        if not created:
            stored.remove(now)
            return Taken(detection=detection)
        if not self._may_ack(reporter, chat, now):
            return Taken(detection=detection)
        return Taken(detection=detection, ack=self.ack_for(detection.reference))

    def _may_ack(self, reporter: str, chat: str, now: datetime) -> bool:
        last = self._acked.get(reporter)
        if last is not None and now - last < self.window:
            return False
        state = self._chats.setdefault(chat, _Chat(tokens=self.chat_burst, checked=now))
        if not self._spend(state, now):
            if not state.held:
                state.held_since = now
            state.held += 1
            return False
        self._acked[reporter] = now
        return True

    def _spend(self, state: _Chat, now: datetime) -> bool:
        """A token bucket per chat: ``chat_burst`` answers at once at most, refilled at
        ``chat_acks_per_minute``. The platforms count per second as well as per minute
        (Telegram: about one message a second in a chat, with a short burst), so a minute's
        answers are spread out rather than sent together."""
        elapsed = (now - state.checked).total_seconds()
        state.tokens = min(
            float(self.chat_burst), state.tokens + elapsed * self.chat_acks_per_minute / 60
        )
        state.checked = now
        if state.tokens < 1:
            return False
        state.tokens -= 1
        return True

    def combined_due(self, prefix: str = "") -> list[tuple[str, str]]:
        """``(chat, text)`` for every chat (whose name starts with ``prefix``: each listener
        takes its own platform's) whose held reports are due their combined answer (a minute
        after the first was held); the listener posts them. Call it every few seconds."""
        now = utcnow()
        due = []
        for chat, state in self._chats.items():
            if not chat.startswith(prefix) or not state.held or state.held_since is None:
                continue
            waited = now - state.held_since >= timedelta(minutes=1)
            if waited and self._spend(state, now):
                due.append((chat, combined_text(state.held)))
                state.held, state.held_since = 0, None
        return due

    def ack_for(self, reference: str) -> Rendered:
        """The fixed acknowledgement (``templates/internal-report-ack.j2``): the reference and
        the safety notice, never the reporter's words."""
        spec = registry_for(self.settings).get(ACK_TEMPLATE)
        values = validate_values(spec, {"reference": reference})
        return render(spec, values, render_context(self.settings))

    async def edit(
        self,
        source: DetectionSource,
        external_id: str,
        text: str,
        *,
        hidden_urls: tuple[str, ...] = (),
    ) -> Detection | None:
        """An edited report updates its detection (text and entities); never a new one.
        ``None``: the original was never stored (empty, or over the limit)."""
        writing = self._writing.get((source, external_id))
        if writing is not None:  # the edit overtook its report: let the report land first
            await asyncio.wait([writing])
        async with self.database.transaction() as session:
            detection = await existing(session, source, external_id)
            if detection is None:
                return None
            detection.text = received_text(text)
            found = extract(
                "\n".join(part for part in (detection.title, detection.text) if part),
                official_domains=self.settings.official_domains,
                known_contracts=self.settings.known_contracts,
                hidden_urls=hidden_urls,
            )
            detection.entities = [entity.as_json() for entity in found]
            detection.updated_at = utcnow()
            await session.execute(
                delete(DetectionEntity).where(DetectionEntity.detection_id == detection.id)
            )
            session.add_all(
                DetectionEntity(
                    detection_id=detection.id,
                    type=entity.type.value,
                    value=entity.value[:ENTITY_INDEX_LIMIT],
                    flags=list(entity.flags),
                )
                for entity in found
            )
        return detection


def ack_texts(rendered: Rendered, platform: Platform) -> tuple[str, ...]:
    """The acknowledgement's messages for ``platform`` (Discord Markdown, Telegram HTML)."""
    return rendered.discord if platform is Platform.DISCORD else rendered.telegram
