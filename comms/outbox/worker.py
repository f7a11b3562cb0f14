"""The outbox worker: the job runner with the outbox's queues (deliveries, internal
notifications, scheduled jobs) and the publishers the configuration provides.

``comms worker`` runs one; any number may share a database. The delivery lifecycle and its
crash safety are in ``comms.outbox.deliver``, the loop and the leases in ``comms.jobs``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from comms.db import Database
from comms.detections import alerts
from comms.enums import Platform
from comms.incidents import service as incidents
from comms.incidents.notices import IncidentNotices
from comms.jobs.runner import Runner, RunnerConfig
from comms.jobs.scheduled import JobHandler, JobQueue
from comms.outbox import notify
from comms.outbox.deliver import PLATFORM_CHECK, DeliveryQueue, PlatformCheck
from comms.outbox.notifications import NotificationQueue
from comms.outbox.ports import Publisher
from comms.settings import Settings


@dataclass
class WorkerConfig(RunnerConfig):
    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        return cls(
            lease_seconds=settings.worker_lease_seconds,
            poll_interval=settings.worker_poll_seconds,
            max_attempts=settings.worker_max_attempts,
            backoff_cap=settings.worker_backoff_cap_seconds,
        )


class Worker(Runner):
    """One worker process (or task). ``jobs`` adds handlers for scheduled job kinds."""

    def __init__(
        self,
        *,
        database: Database,
        settings: Settings,
        publishers: Mapping[Platform, Publisher],
        config: RunnerConfig | None = None,
        rng: random.Random | None = None,
        jobs: Mapping[str, JobHandler] | None = None,
    ) -> None:
        chosen = config or WorkerConfig.from_settings(settings)
        self.settings = settings
        self.publishers = dict(publishers)
        self.deliveries = DeliveryQueue(
            settings=settings, publishers=self.publishers, batch=chosen.batch_size
        )
        refresh = alerts.refresher(settings)
        self.notifications = NotificationQueue(
            self.publishers, refreshers=dict.fromkeys(notify.ALERT_KINDS, refresh)
        )
        handlers: dict[str, JobHandler] = {
            PLATFORM_CHECK: PlatformCheck(settings=settings, publishers=self.publishers),
            incidents.INCIDENT_NOTICE: IncidentNotices(settings=settings),
            **(jobs or {}),
        }
        super().__init__(
            database=database,
            queues=[self.deliveries, self.notifications, JobQueue(handlers)],
            config=chosen,
            rng=rng,
        )

    async def claim(self, *, limit: int) -> list[int]:
        """Lease due deliveries for this worker (their ids, in sending order)."""
        return [lease.id for lease in await self.claim_from(self.deliveries, limit=limit)]

    async def claim_notifications(self, *, limit: int) -> list[int]:
        return [lease.id for lease in await self.claim_from(self.notifications, limit=limit)]
