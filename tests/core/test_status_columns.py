"""Statuses are enum columns: the same strings in the same VARCHARs as before, members in Python,
and a value outside the enum refused before it reaches the database."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pytest
from sqlalchemy import Enum, String, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import InstrumentedAttribute

from comms.db import Database
from comms.detections.models import (
    Cluster,
    ClusterKind,
    ClusterStatus,
    Detection,
    DetectionSeverity,
    DetectionSource,
    DetectionStatus,
)
from comms.drafts.models import Approval, Decision, Draft, DraftStatus
from comms.incidents import service as incidents
from comms.incidents.models import Incident, IncidentStatus, IncidentTask, TaskStatus
from comms.jobs.models import Job, JobState
from comms.models import Base
from comms.outbox.models import Delivery, DeliveryState, Notification, NotificationState
from comms.users.models import GrantStatus, RoleGrant
from tests.factories import make_incident, make_team

# Each status column, its enum, and the VARCHAR length the migrations create for it.
STATUS_COLUMNS: list[tuple[InstrumentedAttribute[Any], type[StrEnum], int]] = [
    (Delivery.state, DeliveryState, 12),
    (Notification.state, NotificationState, 12),
    (Job.state, JobState, 12),
    (Draft.status, DraftStatus, 20),
    (Incident.status, IncidentStatus, 16),
    (Approval.decision, Decision, 8),
    (RoleGrant.status, GrantStatus, 12),
    (Detection.source, DetectionSource, 16),
    (Detection.severity, DetectionSeverity, 16),
    (Detection.status, DetectionStatus, 16),
    (Cluster.kind, ClusterKind, 16),
    (Cluster.status, ClusterStatus, 16),
    (IncidentTask.status, TaskStatus, 16),
]


@pytest.mark.parametrize(
    ("column", "enum", "length"),
    STATUS_COLUMNS,
    ids=[f"{c.class_.__name__}.{c.key}" for c, _, _ in STATUS_COLUMNS],
)
def test_status_columns_store_their_enum_values_in_the_same_varchar(
    column: InstrumentedAttribute[Any], enum: type[StrEnum], length: int
) -> None:
    column_type = column.expression.type
    # A non-native Enum is a VARCHAR(length) without a CHECK: the schema the migrations made.
    assert isinstance(column_type, Enum) and isinstance(column_type, String)
    assert column_type.enum_class is enum
    assert not column_type.native_enum and not column_type.create_constraint
    assert column_type.length == length
    assert column_type.enums == [member.value for member in enum]


def test_every_enum_column_is_listed_here() -> None:
    enum_columns = {
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, Enum)
    }
    assert enum_columns == {f"{c.class_.__tablename__}.{c.key}" for c, _, _ in STATUS_COLUMNS}


async def test_a_status_is_stored_as_before_and_read_back_as_a_member(db: Database) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        incident = await make_incident(session, team["lead"])
        await incidents.change_status(
            session, incident=incident, status=IncidentStatus.COORDINATING, actor=team["lead"]
        )
    async with db.transaction() as session:
        stored = await session.scalar(
            text("SELECT status FROM incidents WHERE id = :id"), {"id": incident.id}
        )
        assert type(stored) is str and stored == "coordinating"
        # A row written as plain text (by a release before this one) reads back as a member.
        await session.execute(
            text("UPDATE incidents SET status = 'post_incident' WHERE id = :id"),
            {"id": incident.id},
        )
        status = await session.scalar(select(Incident.status).where(Incident.id == incident.id))
        assert status is IncidentStatus.POST_INCIDENT


async def test_a_value_outside_the_enum_is_refused_before_it_is_written(db: Database) -> None:
    async with db.transaction() as session:
        team = await make_team(session)
        incident = await make_incident(session, team["lead"])
    with pytest.raises(StatementError, match="is not among the defined enum values"):
        async with db.transaction() as session:
            row = await session.get(Incident, incident.id)
            assert row is not None
            row.status = "paused"  # type: ignore[assignment]
            await session.flush()
    async with db.transaction() as session:
        assert (
            await session.scalar(
                text("SELECT status FROM incidents WHERE id = :id"), {"id": incident.id}
            )
            == IncidentStatus.DETECTED.value
        )


def test_the_enums_are_str_enums() -> None:
    # Code and templates compare and format statuses as text ("sent", f"{state}"): that holds
    # only while each enum is a StrEnum.
    assert all(issubclass(enum, StrEnum) for _, enum, _ in STATUS_COLUMNS)
    assert f"{DeliveryState.SENT}" == str(DeliveryState.SENT) == "sent"
