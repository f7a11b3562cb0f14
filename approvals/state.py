"""Everything a request needs from the app, built once by ``create_app`` (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession

from comms.auth.crypto import Keys
from comms.auth.sessions import Timeouts
from comms.auth.touches import Touches
from comms.db import Database
from comms.detections import service as detections
from comms.detections.clusters import TextIndex
from comms.jobs.batch import BatchCommit
from comms.settings import Settings


@dataclass
class PanelState:
    settings: Settings
    database: Database
    keys: Keys
    templates: Jinja2Templates
    # Sessions and tokens seen by this process, written in batches (page views write nothing).
    touches: Touches = field(default_factory=Touches)
    # Recent report texts for clustering, read incrementally by this process's API requests.
    report_texts: TextIndex = field(default_factory=TextIndex)
    # Monitoring's single-detection POSTs, written together: one transaction per batch instead
    # of one per request (each request would hold SQLite's write lock for its whole length).
    detection_writer: BatchCommit[detections.Report, tuple[dict[str, Any], bool]] = field(
        init=False
    )

    def __post_init__(self) -> None:
        self.detection_writer = BatchCommit(self.database, self._record_detections)

    async def _record_detections(
        self, session: AsyncSession, reports: list[detections.Report]
    ) -> list[tuple[dict[str, Any], bool]]:
        return await detections.record_documents(
            session, reports, settings=self.settings, index=self.report_texts
        )

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(
            idle=timedelta(minutes=self.settings.session_idle_minutes),
            absolute=timedelta(hours=self.settings.session_absolute_hours),
        )

    @property
    def stepup_window(self) -> timedelta:
        return timedelta(minutes=self.settings.stepup_minutes)
