"""One sending worker per platform bot.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import comms.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "platform_senders",
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("worker_id", sa.String(length=64), nullable=False),
        sa.Column("lease_until", comms.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("platform", name=op.f("pk_platform_senders")),
    )


def downgrade() -> None:
    op.drop_table("platform_senders")
