"""Taking community reports in (comms/detections/intake.py): what is stored, what is answered,
and how a flood is rationed."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from comms.clock import FrozenClock
from comms.db import Database
from comms.detections.intake import PROMPT, Intake, ack_texts
from comms.detections.models import Detection, DetectionEntity, DetectionSource
from comms.detections.service import Report
from comms.enums import Platform
from comms.settings import Settings


def _report(n: int, *, member: str = "m1", text: str | None = None) -> Report:
    return Report(
        source=DetectionSource.TELEGRAM,
        text=f"bridge drained, see tx 0x{n:064x}" if text is None else text,
        external_id=f"-1001:{n}",
        reporter_id=member,
        reporter_name=f"member {member}",
    )


async def _stored(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Detection)) or 0)


async def test_a_report_is_stored_and_acknowledged_without_its_words(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    intake = Intake(database=db, settings=settings)
    taken = await intake.take(_report(1, text="<b>@everyone</b> drained 0x" + "ab" * 32), chat="c")
    assert taken.detection is not None and taken.reference == f"R-{taken.detection.id}"
    assert taken.ack is not None and taken.prompt is None
    for platform in Platform:
        (text,) = ack_texts(taken.ack, platform)
        assert taken.reference in text and "direct message first" in text
        assert "drained" not in text and "everyone" not in text
    assert [e["type"] for e in taken.detection.entities] == ["tx"]


async def test_an_empty_report_gets_a_prompt_and_nothing_is_stored(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    intake = Intake(database=db, settings=settings)
    taken = await intake.take(_report(1, text="   "), chat="c")
    assert (taken.detection, taken.ack, taken.prompt) == (None, None, PROMPT)
    assert await _stored(db) == 0


async def test_the_same_message_twice_is_one_detection_answered_once(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    intake = Intake(database=db, settings=settings)
    first = await intake.take(_report(1), chat="c")
    again = await intake.take(_report(1), chat="c")
    assert first.detection is not None and again.detection is not None
    assert again.detection.id == first.detection.id and again.ack is None
    assert await _stored(db) == 1


async def test_a_reporter_is_acknowledged_once_per_window_and_limited(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    intake = Intake(database=db, settings=settings)
    answers = [await intake.take(_report(n), chat="c") for n in range(7)]
    assert [a.ack is not None for a in answers] == [True] + [False] * 6
    assert [a.detection is not None for a in answers] == [True] * 5 + [False] * 2
    assert await _stored(db) == 5 and intake.dropped["telegram:m1"] == 2
    clock.advance(minutes=10)  # a new window: stored and answered again
    later = await intake.take(_report(8), chat="c")
    assert later.detection is not None and later.ack is not None


async def test_a_flooded_chat_gets_spread_answers_and_one_combined_answer(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    intake = Intake(database=db, settings=settings, chat_acks_per_minute=3)
    answers = [await intake.take(_report(n, member=f"m{n}"), chat="busy") for n in range(8)]
    # A burst of three at most, then three a minute.
    assert [a.ack is not None for a in answers] == [True] * 3 + [False] * 5
    assert await _stored(db) == 8  # every report is stored
    quiet = await intake.take(_report(99, member="other"), chat="quiet")
    assert quiet.ack is not None  # another chat has its own budget
    clock.advance(seconds=20)  # 60 / 3: one more answer may go, not two
    later = [await intake.take(_report(n, member=f"m{n}"), chat="busy") for n in (20, 21)]
    assert [a.ack is not None for a in later] == [True, False]
    assert intake.combined_due() == []  # the held reports wait a minute
    clock.advance(seconds=41)
    assert intake.combined_due("discord:") == []  # each listener takes its own platform's
    ((chat, text),) = intake.combined_due()
    assert chat == "busy" and "received 6 reports" in text
    assert intake.combined_due() == []


async def test_an_edit_updates_the_detection_and_its_entities(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    intake = Intake(database=db, settings=settings)
    taken = await intake.take(_report(1), chat="c")
    assert taken.detection is not None
    address = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    edited = await intake.edit(DetectionSource.TELEGRAM, "-1001:1", f"it was {address}")
    assert edited is not None and edited.id == taken.detection.id
    assert [e["value"] for e in edited.entities] == [address]
    async with db.transaction() as session:
        values = (await session.scalars(select(DetectionEntity.value))).all()
    assert values == [address]
    assert await _stored(db) == 1
    assert await intake.edit(DetectionSource.TELEGRAM, "-1001:404", "unknown") is None


async def test_stored_text_is_cut_at_the_limit_and_keeps_no_nul(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    intake = Intake(database=db, settings=settings)
    taken = await intake.take(_report(1, text="a\x00b" + "x" * 5000), chat="c")
    assert taken.detection is not None
    assert len(taken.detection.text) == 4000 and taken.detection.text.startswith("a\ufffdb")


async def test_an_edit_that_overtakes_its_report_waits_for_it(
    db: Database, settings: Settings, clock: FrozenClock
) -> None:
    """Platforms' events are handled concurrently: an edit handled while its report is still
    being written (batched with others) must update it, not find nothing."""
    intake = Intake(database=db, settings=settings)
    takes = [asyncio.create_task(intake.take(_report(n), chat="c")) for n in range(1, 4)]
    await asyncio.sleep(0)  # the reports are queued for the writer, not yet committed
    edited = await intake.edit(DetectionSource.TELEGRAM, "-1001:3", "it was a phishing site")
    await asyncio.gather(*takes)
    assert edited is not None and edited.text == "it was a phishing site"
    assert await _stored(db) == 3
