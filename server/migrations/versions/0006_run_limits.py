"""Run limits: deadlines, resource requests, sandbox options and terminal reasons of runs;
allocatable and requested resources of nodes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cpu_millis", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("cpu_millis_override", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("memory_mb", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("memory_mb_override", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("requested_cpu_millis", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(
            sa.Column("requested_memory_mb", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cpu_millis", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("memory_mb", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("deadline_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("sandbox", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))
        batch_op.add_column(sa.Column("reason", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        for column in ("reason", "sandbox", "deadline_at", "deadline_seconds", "memory_mb", "cpu_millis"):
            batch_op.drop_column(column)
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        for column in (
            "requested_memory_mb",
            "requested_cpu_millis",
            "memory_mb_override",
            "memory_mb",
            "cpu_millis_override",
            "cpu_millis",
        ):
            batch_op.drop_column(column)
