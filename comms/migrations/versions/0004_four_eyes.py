"""Four eyes stay four eyes: who wrote a draft, void approvals, role grants awaiting approval.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import comms.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("drafts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("contributor_ids", sa.JSON(), nullable=False, server_default="[]")
        )
    # Everyone who wrote a version so far: the author and every version's editor.
    connection = op.get_bind()
    drafts = sa.table(
        "drafts",
        sa.column("id", sa.Integer()),
        sa.column("author_id", sa.Integer()),
        sa.column("contributor_ids", sa.JSON()),
    )
    versions = sa.table(
        "draft_versions", sa.column("draft_id", sa.Integer()), sa.column("editor_id", sa.Integer())
    )
    editors: dict[int, list[int]] = {}
    for draft_id, author_id in connection.execute(sa.select(drafts.c.id, drafts.c.author_id)):
        editors[draft_id] = [author_id]
    for draft_id, editor_id in connection.execute(
        sa.select(versions.c.draft_id, versions.c.editor_id).order_by(versions.c.draft_id)
    ):
        if editor_id not in editors.setdefault(draft_id, []):
            editors[draft_id].append(editor_id)
    for draft_id, ids in editors.items():
        connection.execute(
            drafts.update().where(drafts.c.id == draft_id).values(contributor_ids=ids)
        )

    op.create_table(
        "approval_voids",
        sa.Column("approval_id", sa.Integer(), nullable=False),
        sa.Column("at", comms.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["approval_id"],
            ["approvals.id"],
            name=op.f("fk_approval_voids_approval_id_approvals"),
        ),
        sa.PrimaryKeyConstraint("approval_id", name=op.f("pk_approval_voids")),
    )
    _append_only("approval_voids")
    op.create_table(
        "role_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("requested_by_id", sa.Integer(), nullable=False),
        sa.Column("requested_at", comms.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("decided_at", comms.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["requested_by_id"], ["users.id"], name=op.f("fk_role_grants_requested_by_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_role_grants_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_grants")),
    )
    with op.batch_alter_table("role_grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_role_grants_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_role_grants_user_id"), ["user_id"], unique=False)
    op.create_table(
        "role_grant_approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("grant_id", sa.Integer(), nullable=False),
        sa.Column("approver_id", sa.Integer(), nullable=False),
        sa.Column("at", comms.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["approver_id"], ["users.id"], name=op.f("fk_role_grant_approvals_approver_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["role_grants.id"],
            name=op.f("fk_role_grant_approvals_grant_id_role_grants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_grant_approvals")),
        sa.UniqueConstraint(
            "grant_id", "approver_id", name=op.f("uq_role_grant_approvals_grant_id")
        ),
    )
    with op.batch_alter_table("role_grant_approvals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_role_grant_approvals_grant_id"), ["grant_id"], unique=False
        )


def _append_only(table: str) -> None:
    """As in 0001: the table refuses UPDATE and DELETE."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION comms_append_only()"
        )
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'append-only table {table}: {verb} refused'); END"
        )


def downgrade() -> None:
    op.drop_table("role_grant_approvals")
    op.drop_table("role_grants")
    op.drop_table("approval_voids")
    with op.batch_alter_table("drafts", schema=None) as batch_op:
        batch_op.drop_column("contributor_ids")
