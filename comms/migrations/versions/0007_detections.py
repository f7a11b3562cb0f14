"""Detections: community reports and monitoring alerts, their entities by value, and clusters.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import comms.db

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("reports", "phishing", name="clusterkind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "open",
                "alerted",
                "dismissed",
                "escalated",
                "merged",
                name="clusterstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("reporters", sa.Integer(), nullable=False),
        sa.Column("first_seen", comms.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", comms.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("merged_into_id", sa.Integer(), nullable=True),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("alerted_at", comms.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_clusters_incident_id_incidents")
        ),
        sa.ForeignKeyConstraint(
            ["merged_into_id"], ["clusters.id"], name=op.f("fk_clusters_merged_into_id_clusters")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clusters")),
    )
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_clusters_last_seen"), ["last_seen"], unique=False)
        batch_op.create_index(batch_op.f("ix_clusters_status"), ["status"], unique=False)

    op.create_table(
        "detections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "source",
            sa.Enum(
                "discord",
                "telegram",
                "webhook",
                "alertmanager",
                "panel",
                name="detectionsource",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("external_id", sa.String(length=300), nullable=True),
        sa.Column("origin", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "severity",
            sa.Enum(
                "critical",
                "high",
                "warning",
                "info",
                name="detectionseverity",
                native_enum=False,
                length=16,
            ),
            nullable=True,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "new",
                "resolved",
                "dismissed",
                "escalated",
                name="detectionstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("reporter_id", sa.String(length=64), nullable=False),
        sa.Column("reporter_name", sa.String(length=128), nullable=False),
        sa.Column("reporter_created_at", comms.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("location", sa.JSON(), nullable=False),
        sa.Column("message_url", sa.String(length=500), nullable=False),
        sa.Column("entities", sa.JSON(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("submitted_by_id", sa.Integer(), nullable=True),
        sa.Column("cluster_id", sa.Integer(), nullable=True),
        sa.Column("received_at", comms.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", comms.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"], ["clusters.id"], name=op.f("fk_detections_cluster_id_clusters")
        ),
        sa.ForeignKeyConstraint(
            ["submitted_by_id"], ["users.id"], name=op.f("fk_detections_submitted_by_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detections")),
        sa.UniqueConstraint("source", "external_id", name=op.f("uq_detections_source")),
    )
    with op.batch_alter_table("detections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_detections_cluster_id"), ["cluster_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_detections_received_at"), ["received_at"], unique=False
        )

    op.create_table(
        "detection_entities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("detection_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=500), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["detection_id"],
            ["detections.id"],
            name=op.f("fk_detection_entities_detection_id_detections"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_detection_entities")),
    )
    with op.batch_alter_table("detection_entities", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_detection_entities_detection_id"), ["detection_id"], unique=False
        )
        batch_op.create_index("ix_detection_entities_type_value", ["type", "value"], unique=False)

    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("detected_at", comms.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("first_public_update_at", comms.db.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("edit_of_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_notifications_edit_of_id_notifications"),
            "notifications",
            ["edit_of_id"],
            ["id"],
        )


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_notifications_edit_of_id_notifications"), type_="foreignkey"
        )
        batch_op.drop_column("edit_of_id")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("first_public_update_at")
        batch_op.drop_column("detected_at")
    with op.batch_alter_table("detection_entities", schema=None) as batch_op:
        batch_op.drop_index("ix_detection_entities_type_value")
        batch_op.drop_index(batch_op.f("ix_detection_entities_detection_id"))

    op.drop_table("detection_entities")
    with op.batch_alter_table("detections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_detections_received_at"))
        batch_op.drop_index(batch_op.f("ix_detections_cluster_id"))

    op.drop_table("detections")
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clusters_status"))
        batch_op.drop_index(batch_op.f("ix_clusters_last_seen"))

    op.drop_table("clusters")
