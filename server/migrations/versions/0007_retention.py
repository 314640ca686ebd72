"""Retention: an index on runs.finished_at, so the sweep finds the runs past RUN_RETENTION with a
range scan instead of reading every finished run.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_runs_finished_at", "runs", ["finished_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_runs_finished_at", table_name="runs")
