"""The job runner and the outbox's limitations fixed with it (issue 10, items 3 and 5): every
write of a worker whose lease ran out is fenced; a newer delivery waits behind an older one that
is failed, uncertain or scheduled until a person resolves it; a 401 pauses the platform with one
notice and resumes when the token works again; scheduled jobs run when due, retry, and survive
their worker. Everything through the sandbox with the real libraries."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from bots.publishers import build_publishers
from bots.telegram_publisher import TelegramPublisher
from comms.clock import FrozenClock, utcnow
from comms.db import Database
from comms.destinations import service as destinations
from comms.drafts.payload import DraftOptions
from comms.enums import Platform
from comms.jobs.leases import Lease
from comms.jobs.models import Job
from comms.jobs.runner import Runner, RunnerConfig, Work
from comms.jobs.scheduled import JobRun, RetryLater, schedule
from comms.outbox import service as outbox
from comms.outbox.deliver import DELIVERIES
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
        platform="telegram", endpoint="sendMessage", kind="timeout", hang_seconds=8, count=1
    )
    # A gives up after 5 s: B has that long to take over, however busy the machine.
    slow = build_publishers(settings.model_copy(update={"platform_timeout_seconds": 5.0}))
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
        # A claims and sends, and nothing renews its leases (its loop is stuck, or cut off from
        # the database): its lease on the delivery, and on sending for Telegram, run out.
        queue = a.queue("deliveries")
        (lease,) = await a.claim_from(queue, limit=10)
        first = asyncio.create_task(queue.process(a.work, lease))
        # Until A's request hangs in the sandbox (the fault is used up) and its lease has run
        # out. Waiting for the lease alone let B claim first on a busy machine: A never sent,
        # B's own send took the fault, and the delivery needed a third attempt.
        while True:
            rows = await _deliveries(db, draft.id)
            on_the_wire = not await control.get("/faults")
            if (
                on_the_wire
                and rows[0].lease_until is not None
                and rows[0].lease_until < utcnow()
            ):
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


async def test_recovery_skips_rows_another_worker_has_locked(
    db: Database, pub_settings: Settings, world: World, worker: Worker, clock: FrozenClock
) -> None:
    """Found with three workers on PostgreSQL: recovery locked expired rows with a plain
    FOR UPDATE, so two workers recovering (or one recovering while another wrote) waited on each
    other's rows and PostgreSQL killed one with "deadlock detected", which ended that worker.
    Recovery now skips the rows someone else has locked, as claiming does."""
    if not worker.work.postgres:
        pytest.skip("row locks: SQLite's transactions are exclusive, nothing to skip")
    draft = await approved_draft(db, world, pub_settings, to=("dc_news", "tg_news"))
    dead = Worker(
        database=db,
        settings=pub_settings,
        publishers={},
        config=WorkerConfig(worker_id="dead", **{**FAST, "lease_seconds": 1.0}),
    )
    assert len(await dead.claim(limit=10)) == 2  # then it is killed
    clock.advance(seconds=5)
    locked = (await _deliveries(db, draft.id))[0].id
    async with db.transaction() as other:  # another worker, busy with that row
        await other.scalar(select(Delivery.id).where(Delivery.id == locked).with_for_update())
        assert await asyncio.wait_for(worker.recover(), timeout=20) == 1
    assert await worker.recover() == 1  # the row the other held, once it let go
    assert {d.state for d in await _deliveries(db, draft.id)} == {"retrying"}


async def test_renewal_skips_rows_another_transaction_has_locked(
    db: Database, pub_settings: Settings, world: World, worker: Worker
) -> None:
    """Found with three workers on PostgreSQL, a 2 s lease and one SIGKILLed: the renewal's
    UPDATE of every held row waited on a row the worker's own group commit had locked while that
    transaction waited on a row the renewal had locked; PostgreSQL broke the deadlock by failing
    the renewal, the leases ran out under a live worker, and recovery flagged Telegram messages
    it had just sent as uncertain. Renewal now skips a row someone else has locked (it is
    renewed on the next round) and never waits."""
    if not worker.work.postgres:
        pytest.skip("row locks: SQLite's transactions are exclusive, nothing to skip")
    draft = await approved_draft(db, world, pub_settings, to=("dc_news", "tg_news"))
    assert len(await worker.claim(limit=10)) == 2
    leases = list(worker.work.alive("deliveries").values())
    busy, free = sorted(lease.id for lease in leases)
    before = {d.id: d.lease_until for d in await _deliveries(db, draft.id)}
    async with db.transaction() as other:  # the worker's own group commit, mid-transaction
        await other.scalar(select(Delivery.id).where(Delivery.id == busy).with_for_update())
        async with db.transaction() as session:
            # Waiting would be the deadlock's first half: fail at once instead of hanging.
            await session.execute(text("SET LOCAL lock_timeout = '2s'"))
            await DELIVERIES.renew(
                session,
                leases=leases,
                worker_id=worker.worker_id,
                now=utcnow() + timedelta(seconds=60),
                lease_seconds=30,
            )
    after = {d.id: d.lease_until for d in await _deliveries(db, draft.id)}
    assert after[busy] == before[busy]  # skipped: renewed on the next round
    assert after[free] is not None and before[free] is not None and after[free] > before[free]


async def test_a_failed_turn_does_not_end_the_worker(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A database error in one turn (a deadlock, a dropped connection) used to propagate out of
    ``Runner.run`` and end the worker process; now the turn is logged and the loop goes on."""
    turns: list[int] = []
    stop = asyncio.Event()

    class Flaky:
        name = "flaky"
        table = DELIVERIES
        batch = 1

        async def claim(self, work: Work, session: AsyncSession, *, limit: int) -> list[Lease]:
            turns.append(len(turns))
            if len(turns) == 1:
                raise DBAPIError("SELECT 1", {}, Exception("deadlock detected"))
            if len(turns) >= 3:
                stop.set()
            return []

        async def process(self, work: Work, lease: Lease) -> None:
            raise AssertionError("nothing was claimed")

        async def recover(self, work: Work) -> int:
            return 0

        async def next_due(self, work: Work, session: AsyncSession, *, now: Any) -> None:
            return None

        async def keep(self, work: Work, session: AsyncSession) -> None:
            return None

        async def release(self, work: Work) -> None:
            return None

    runner = Runner(database=db, queues=[Flaky()], config=RunnerConfig(poll_interval=0.01))
    await asyncio.wait_for(runner.run(stop), timeout=30)
    assert len(turns) >= 3
    assert "deadlock detected" in caplog.text


async def test_a_telegram_delivery_waiting_its_turn_is_not_in_doubt_after_a_crash(
    db: Database, pub_settings: Settings, world: World, control: Control, worker: Worker
) -> None:
    """Found with three workers and one SIGKILLed: every Telegram delivery a worker held was
    marked in flight before it waited its turn under the rate limit, so the kill left 177 of
    them uncertain, each waiting for a person. A delivery now counts as in flight only once its
    request leaves; one still waiting is resumed, and the worker that lost it sends nothing."""
    slow = TelegramPublisher(
        token=world.info["telegram_token"],
        api_base=world.info["telegram_api_base"],
        overall_rate=1 / 3,  # one message every 3 s: the second chat waits its turn
    )
    await slow.start()
    a = Worker(
        database=db,
        settings=pub_settings,
        publishers={Platform.TELEGRAM: slow},
        config=WorkerConfig(worker_id="a", **{**FAST, "lease_seconds": 1.0}),
    )
    b = Worker(
        database=db,
        settings=pub_settings,
        publishers=worker.publishers,
        config=WorkerConfig(worker_id="b", **FAST),
    )
    chats = []
    async with db.transaction() as session:  # two plain channels (a pin is one more request)
        for name in ("one", "two"):
            chat = await control.post(
                "/telegram/chats", {"type": "channel", "title": name, "bot_admin": True}
            )
            chats.append(chat["id"])
            world.dest[name] = await destinations.create(
                session,
                name=f"tg-{name}",
                platform=Platform.TELEGRAM,
                target=str(chat["id"]),
                actor=None,
            )
    draft = await approved_draft(db, world, pub_settings, to=("one", "two"))
    try:
        first = asyncio.create_task(a.run_until_settled(within=30))
        while True:  # A has sent one; the other waits in its limiter, A's lease runs out
            rows = await _deliveries(db, draft.id)
            states = sorted(d.state for d in rows)
            expired = all(d.lease_until and d.lease_until < utcnow() for d in rows if d.lease_until)
            if states == ["sending", "sent"] and expired:
                break
            assert not first.done(), states
            await asyncio.sleep(0.05)
        assert await b.recover() == 1
        rows = await _deliveries(db, draft.id)  # resumed (A may already have claimed it anew)
        assert "uncertain" not in {d.state for d in rows}
        assert [d.uncertain_count for d in rows] == [0, 0]
        await b.run_until_settled(within=20)
        await first  # when A's old attempt got its turn, its on-wire write was fenced
    finally:
        await slow.close()
    rows = await _deliveries(db, draft.id)
    assert [(d.state, d.uncertain_count) for d in rows] == [("sent", 0), ("sent", 0)]
    for chat in chats:
        assert len(await control.telegram_messages(chat)) == 1


async def test_one_worker_sends_for_each_platform_and_another_takes_over(
    db: Database, pub_settings: Settings, world: World, worker: Worker, clock: FrozenClock
) -> None:
    """The platforms' rate limits are per bot: found with three workers, each pacing itself
    to the whole budget, a fan-out drew thousands of 429s and took twice its bound. One worker
    sends per platform; another takes over when it stops, or when its lease runs out."""
    first = await approved_draft(db, world, pub_settings, to=("dc_general", "tg_community"))
    config = {**FAST, "lease_seconds": 5.0}
    a, b = (
        Worker(
            database=db,
            settings=pub_settings,
            publishers=worker.publishers,
            config=WorkerConfig(worker_id=name, **config),
        )
        for name in ("a", "b")
    )
    deliveries = a.queue("deliveries")
    (lease,) = await a.claim_from(deliveries, limit=1)  # A now sends for both platforms
    assert await b.claim(limit=10) == []  # the other delivery is due, but A sends for it
    await deliveries.process(a.work, lease)
    await deliveries.release(a.work)  # A stops
    assert len(await b.claim(limit=10)) == 1
    second = await approved_draft(db, world, pub_settings, to=("dc_general", "tg_community"))
    assert await a.claim(limit=10) == []  # B sends now (and the draft waits behind the first)
    clock.advance(seconds=6)  # B dies: its lease runs out
    await a.recover()
    await a.run_until_settled(within=20)
    for draft in (first, second):
        assert {d.state for d in await _deliveries(db, draft.id)} == {"sent"}
