"""Node conditions and quarantine, nodes a run avoids, and Idempotency-Keys of run creation.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("conditions", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.add_column(
            sa.Column("healthy", sa.Boolean(), nullable=False, server_default=sa.text("true"))
        )
        batch_op.add_column(
            sa.Column("start_failures", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("quarantined_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("quarantine_level", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("avoid_nodes", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("avoid_nodes")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("quarantine_level")
        batch_op.drop_column("quarantined_until")
        batch_op.drop_column("quarantined_at")
        batch_op.drop_column("start_failures")
        batch_op.drop_column("healthy")
        batch_op.drop_column("conditions")
