"""Everything a request needs from the app, built once by ``create_app`` (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from fastapi.templating import Jinja2Templates

from comms.auth.crypto import Keys
from comms.auth.sessions import Timeouts
from comms.auth.touches import Touches
from comms.db import Database
from comms.detections.clusters import TextIndex
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

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(
            idle=timedelta(minutes=self.settings.session_idle_minutes),
            absolute=timedelta(hours=self.settings.session_absolute_hours),
        )

    @property
    def stepup_window(self) -> timedelta:
        return timedelta(minutes=self.settings.stepup_minutes)
