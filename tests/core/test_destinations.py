"""Destinations are validated once, when they are added."""

from __future__ import annotations

import pytest

from comms.db import Database
from comms.destinations import service as destinations
from comms.destinations.models import InternalUse, Visibility
from comms.enums import Platform
from comms.errors import Conflict, InvalidInput, RuleViolation


async def test_add_and_list(db: Database) -> None:
    async with db.transaction() as session:
        await destinations.create(
            session,
            name="tg",
            platform=Platform.TELEGRAM,
            target="@protocol_news",
            actor=None,
            pin=True,
        )
        await destinations.create(
            session,
            name="dc",
            platform=Platform.DISCORD,
            target="123456789012345678",
            actor=None,
            crosspost=True,
        )
    async with db.transaction() as session:
        rows = await destinations.list_destinations(session)
    assert [(d.name, d.platform, d.pin, d.crosspost) for d in rows] == [
        ("dc", "discord", False, True),
        ("tg", "telegram", True, False),
    ]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "Bad Name", "platform": Platform.DISCORD, "target": "123456789012"}, "name"),
        ({"name": "d", "platform": Platform.DISCORD, "target": "general"}, "target"),
        ({"name": "t", "platform": Platform.TELEGRAM, "target": "chat"}, "target"),
        (
            {"name": "t", "platform": Platform.TELEGRAM, "target": "-100123", "crosspost": True},
            "crosspost",
        ),
        (
            {
                "name": "d",
                "platform": Platform.DISCORD,
                "target": "123456789012",
                "internal_uses": [InternalUse.APPROVERS],
            },
            "internal_uses",
        ),
        (
            {
                "name": "d",
                "platform": Platform.DISCORD,
                "target": "123456789012",
                "visibility": Visibility.PRIVATE,
                "allow_everyone": True,
            },
            "allow_everyone",
        ),
    ],
)
async def test_bad_destination_names_the_field(db: Database, kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        async with db.transaction() as session:
            await destinations.create(session, actor=None, **kwargs)
    assert field in {p.field for p in caught.value.problems}


async def test_duplicate_name(db: Database) -> None:
    async with db.transaction() as session:
        await destinations.create(
            session, name="dc", platform=Platform.DISCORD, target="123456789012", actor=None
        )
    with pytest.raises(Conflict):
        async with db.transaction() as session:
            await destinations.create(
                session, name="dc", platform=Platform.DISCORD, target="123456789013", actor=None
            )


async def test_compromised_needs_a_reason_and_toggles(db: Database) -> None:
    async with db.transaction() as session:
        dest = await destinations.create(
            session, name="dc", platform=Platform.DISCORD, target="123456789012", actor=None
        )
        with pytest.raises(InvalidInput, match="reason"):
            await destinations.mark_compromised(session, destination=dest, reason=" ", actor=None)
        await destinations.mark_compromised(
            session, destination=dest, reason="admin phished", actor=None
        )
        assert not dest.can_receive
        with pytest.raises(RuleViolation):
            await destinations.mark_compromised(
                session, destination=dest, reason="again", actor=None
            )
        await destinations.mark_compromised(
            session, destination=dest, reason="", actor=None, compromised=False
        )
        assert dest.can_receive
