"""Housekeeping: periodic runs (unique per task and slot), daily figures, re-dispatch mark.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from app.db.models import UTCDateTime

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "periodic_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("scheduled_for", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_periodic_runs")),
        sa.UniqueConstraint("task", "scheduled_for", name=op.f("uq_periodic_runs_task")),
    )
    op.create_table(
        "daily_stats",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_daily_stats")),
    )
    with op.batch_alter_table("report_jobs") as batch:
        batch.add_column(sa.Column("redispatched_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("report_jobs") as batch:
        batch.drop_column("redispatched_at")
    op.drop_table("daily_stats")
    op.drop_table("periodic_runs")
