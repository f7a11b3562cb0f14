"""One job runner: notifications leased like deliveries, scheduled jobs, platform pauses.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import comms.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("claimed_by", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("lease_until", comms.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "updated_at",
                comms.db.UTCDateTime(timezone=True),
                nullable=False,
                server_default=sa.text("CURRENT_TIMESTAMP"),
            )
        )
    # A notification a worker was sending under the old protocol kept its lease in
    # next_attempt_at: make it due again (an internal ping sent twice beats one never sent).
    op.execute("UPDATE notifications SET state = 'pending' WHERE state = 'sending'")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("edited", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(
            sa.Column("recorded_at", comms.db.UTCDateTime(timezone=True), nullable=True)
        )
    # Deliveries sent before this release were recorded as they were sent.
    op.execute("UPDATE deliveries SET recorded_at = sent_at WHERE state = 'sent'")
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", comms.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=False),
        sa.Column("lease_until", comms.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", comms.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", comms.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("done_at", comms.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_jobs_dedup_key")),
    )
    op.create_index("ix_jobs_due", "jobs", ["state", "next_attempt_at"], unique=False)
    op.create_table(
        "platform_pauses",
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("since", comms.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("platform", name=op.f("pk_platform_pauses")),
    )


def downgrade() -> None:
    op.drop_table("platform_pauses")
    op.drop_index("ix_jobs_due", table_name="jobs")
    op.drop_table("jobs")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("recorded_at")
        batch_op.drop_column("edited")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_column("updated_at")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("claimed_by")
