"""The job runner and the outbox's limitations fixed with it (issue 10, items 3 and 5): every
write of a worker whose lease ran out is fenced; a newer delivery waits behind an older one that
is failed, uncertain or scheduled until a person resolves it; a 401 pauses the platform with one
notice and resumes when the token works again; scheduled jobs run when due, retry, and survive
their worker. Everything through the sandbox with the real libraries."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from bots.publishers import build_publishers
from comms.clock import FrozenClock, utcnow
from comms.db import Database
from comms.drafts.payload import DraftOptions
from comms.jobs.models import Job
from comms.jobs.scheduled import JobRun, RetryLater, schedule
from comms.outbox import service as outbox
from comms.outbox.models import Delivery, Notification, PlatformPause
from comms.outbox.worker import Worker, WorkerConfig
from comms.settings import Settings
from tests.publishing.conftest import FAST, Control, World, approved_draft


async def _deliveries(db: Database, draft_id: int) -> list[Delivery]:
    async with db.transaction() as session:
        return await outbox.for_draft(session, draft_id=draft_id)


async def test_a_worker_whose_lease_ran_out_writes_nothing(
    db: Database, pub_settings: Settings, world: World, control: Control, worker: Worker
) -> None:
    """Worker A's send hangs past its lease; B takes the delivery over and sends it; when A's
    request finally times out, A's failure is not written (before, it set the delivery back to
    retrying under the resend policy, and the message went out twice)."""
    settings = pub_settings.model_copy(update={"telegram_uncertain": "resend"})
    draft = await approved_draft(db, world, settings, to=("tg_news",))
    chat = world.info["telegram_chats"]["announcements"]
    await control.fault(
        platform="telegram", endpoint="sendMessage", kind="timeout", hang_seconds=3, count=1
    )
    slow = build_publishers(settings)  # the platform timeout is 1.5 s: A gives up after that
    a = Worker(
        database=db,
        settings=settings,
        publishers=slow,
        config=WorkerConfig(worker_id="a", **{**FAST, "lease_seconds": 0.5}),
    )
    b = Worker(
        database=db,
        settings=settings,
        publishers=worker.publishers,
        config=WorkerConfig(worker_id="b", **FAST),
    )
    try:
        first = asyncio.create_task(a.run_until_settled(within=20))
        while True:  # until A's lease (never renewed by run_until_settled) has run out
            rows = await _deliveries(db, draft.id)
            if rows[0].lease_until is not None and rows[0].lease_until < utcnow():
                break
            await asyncio.sleep(0.05)
        await b.run_until_settled(within=20)
        await first
        await b.run_until_settled(within=20)
    finally:
        for publisher in slow.values():
            await publisher.close()
    rows = await _deliveries(db, draft.id)
    assert [(d.state, d.claimed_by) for d in rows] == [("sent", "")]
    assert rows[0].attempts == 2  # A's attempt, then B's: nothing after
    assert len(await control.telegram_messages(chat)) == 1


async def test_a_newer_delivery_waits_behind_a_failed_one_until_a_person_dismisses_it(
    db: Database, pub_settings: Settings, world: World, control: Control, worker: Worker
) -> None:
    chat = world.info["telegram_chats"]["announcements"]
    await control.patch(f"/telegram/chats/{chat}", {"bot_member": False})
    first = await approved_draft(db, world, pub_settings, to=("tg_news",))
    await worker.run_until_settled(within=20)
    assert [d.state for d in await _deliveries(db, first.id)] == ["failed"]
    await control.patch(f"/telegram/chats/{chat}", {"bot_member": True})
    follow_up = await approved_draft(db, world, pub_settings, to=("tg_news",))
    await worker.run_until_settled(within=20)  # settles: the follow-up waits for a person
    assert [d.state for d in await _deliveries(db, follow_up.id)] == ["pending"]
    assert await control.telegram_messages(chat) == []
    async with db.transaction() as session:
        failed = (await outbox.for_draft(session, draft_id=first.id))[0]
        await outbox.resolve_uncertain(
            session, delivery=failed, actor=world.team["cm"], resend=False, note="superseded"
        )
    await worker.run_until_settled(within=20)
    assert [d.state for d in await _deliveries(db, follow_up.id)] == ["sent"]
    assert len(await control.telegram_messages(chat)) == 1


async def test_a_newer_delivery_waits_behind_a_scheduled_one(
    db: Database,
    pub_settings: Settings,
    world: World,
    control: Control,
    worker: Worker,
    clock: FrozenClock,
) -> None:
    """An update approved before the announcement it follows has gone out waits for it, so it
    never lands first (nor outside the announcement's thread)."""
    when = clock.now() + timedelta(hours=1)
    scheduled = await approved_draft(
        db, world, pub_settings, to=("dc_news",), options=DraftOptions(publish_at=when)
    )
    update = await approved_draft(db, world, pub_settings, to=("dc_news",))
    assert await worker.claim(limit=10) == []  # the update is due, but waits
    assert [d.state for d in await _deliveries(db, update.id)] == ["pending"]
    clock.set(when)
    await worker.run_until_settled(within=20)
    news = await control.discord_messages(world.info["discord_channels"]["announcements"])
    (first,) = await _deliveries(db, scheduled.id)
    (second,) = await _deliveries(db, update.id)
    assert (first.state, second.state) == ("sent", "sent")
    assert len(news) == 1  # the update went into the scheduled announcement's thread:
    assert second.platform_thread_id == first.platform_thread_id != ""


async def _count(db: Database, model: Any, *where: Any) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def test_a_revoked_token_pauses_the_platform_once_and_resumes(
    db: Database, pub_settings: Settings, world: World, control: Control, worker: Worker
) -> None:
    """Three announcements to Discord while its token is refused: none fails, the Communication
    Manager is told once, nothing is sent; the token works again and all three go out."""
    await control.patch("/discord/bot", {"token_revoked": True})
    drafts_ = [await approved_draft(db, world, pub_settings, to=("dc_general",)) for _ in range(3)]
    telegram = await approved_draft(db, world, pub_settings, to=("tg_community",))
    await worker.run_until_settled(within=30)
    states = [d.state for draft in drafts_ for d in await _deliveries(db, draft.id)]
    assert states == ["retrying", "pending", "pending"]  # waiting, in order; none failed
    assert [d.state for d in await _deliveries(db, telegram.id)] == ["sent"]  # unaffected
    assert await _count(db, PlatformPause) == 1
    notices = await _count(
        db, Notification, Notification.kind == "platform_status", Notification.text.like("%paused%")
    )
    assert notices == 1
    assert await control.discord_messages(world.info["discord_channels"]["general"]) == []
    await control.patch("/discord/bot", {"token_revoked": False})
    async with db.transaction() as session:  # the check is due (it backs off while refused)
        job = await session.scalar(select(Job).where(Job.kind == "platform.check"))
        assert job is not None and job.state == "pending"
        job.next_attempt_at = utcnow()
    await worker.run_until_settled(within=30)
    states = [d.state for draft in drafts_ for d in await _deliveries(db, draft.id)]
    assert states == ["sent", "sent", "sent"]
    assert await _count(db, PlatformPause) == 0
    assert len(await control.discord_messages(world.info["discord_channels"]["general"])) == 3
    resumed = await _count(
        db,
        Notification,
        Notification.kind == "platform_status",
        Notification.text.like("%resumed%"),
    )
    assert resumed == 1


async def test_scheduled_jobs_run_when_due_retry_and_survive_their_worker(
    db: Database, pub_settings: Settings, worker: Worker, clock: FrozenClock
) -> None:
    runs: list[tuple[str, int]] = []

    async def flaky(run: JobRun) -> None:
        runs.append((run.payload["name"], run.attempt))
        if run.payload["name"] == "flaky" and run.attempt < 3:
            raise RuntimeError("not yet")
        if run.payload["name"] == "later" and run.attempt == 1:
            raise RetryLater(utcnow() + timedelta(minutes=10), "come back in ten minutes")

    jobs = Worker(
        database=db,
        settings=pub_settings,
        publishers={},
        config=WorkerConfig(worker_id="jobs", **FAST),
        jobs={"test.flaky": flaky},
    )
    async with db.transaction() as session:
        for name, due in (("flaky", 0), ("later", 0), ("tomorrow", 24 * 60)):
            await schedule(
                session,
                kind="test.flaky",
                due_at=clock.now() + timedelta(minutes=due),
                payload={"name": name},
                dedup_key=name,
            )
        assert (
            await schedule(session, kind="test.flaky", due_at=clock.now(), dedup_key="flaky")
            is None
        )
    for _ in range(4):
        await jobs.run_until_settled(within=10)
        clock.advance(seconds=5)
    assert ("flaky", 3) in runs and ("later", 1) in runs and ("later", 2) not in runs
    clock.advance(minutes=10)
    await jobs.run_until_settled(within=10)
    assert ("later", 2) in runs and all(name != "tomorrow" for name, _ in runs)
    async with db.transaction() as session:
        states = dict(
            (
                await session.execute(
                    select(Job.dedup_key, Job.state).where(Job.kind == "test.flaky")
                )
            ).all()
        )
    assert states == {"flaky": "done", "later": "done", "tomorrow": "pending"}
    # A worker that dies holding a job: the next one runs it again once the lease is over.
    async with db.transaction() as session:
        await schedule(session, kind="test.flaky", due_at=clock.now(), payload={"name": "x"})
    dead = Worker(
        database=db,
        settings=pub_settings,
        publishers={},
        config=WorkerConfig(worker_id="dead", **{**FAST, "lease_seconds": 5.0}),
        jobs={"test.flaky": flaky},
    )
    assert len(await dead.claim_from(dead.queue("jobs"), limit=10)) == 1  # then it is killed
    await jobs.run_until_settled(within=10)
    assert ("x", 1) not in runs  # its lease still holds
    clock.advance(seconds=6)
    await jobs.run_until_settled(within=10)
    assert ("x", 2) in runs
