"""The resolution checklist's ticks, and when an incident entered monitoring.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import comms.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "incident_checklist",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("item", sa.String(length=40), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("ticked_by_id", sa.Integer(), nullable=False),
        sa.Column("ticked_at", comms.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_checklist_incident_id_incidents"),
        ),
        sa.ForeignKeyConstraint(
            ["ticked_by_id"], ["users.id"], name=op.f("fk_incident_checklist_ticked_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_checklist")),
        sa.UniqueConstraint("incident_id", "item", name=op.f("uq_incident_checklist_incident_id")),
    )
    with op.batch_alter_table("incident_checklist", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_incident_checklist_incident_id"), ["incident_id"], unique=False
        )
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("monitoring_since", comms.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("monitoring_since")
    with op.batch_alter_table("incident_checklist", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_incident_checklist_incident_id"))
    op.drop_table("incident_checklist")
