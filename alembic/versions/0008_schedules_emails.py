"""Report schedules, the jobs they run (one per schedule and slot), and email deliveries.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "report_schedules",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("report_type", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("cron", sa.String(120), nullable=False),
        sa.Column("preset", sa.String(16), nullable=True),
        sa.Column("at", sa.String(5), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("attach", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.Column("next_run_at", _UTC, nullable=True),
        sa.Column("last_slot", _UTC, nullable=True),
        sa.Column("last_job_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_report_schedules"),
    )
    op.create_index("ix_report_schedules_due", "report_schedules", ["active", "next_run_at"])
    op.create_index(
        "ix_report_schedules_owner_created", "report_schedules", ["owner", "created_at", "id"]
    )
    with op.batch_alter_table("report_jobs") as batch:
        batch.add_column(sa.Column("recipients", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("attach_file", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("schedule_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("scheduled_for", _UTC, nullable=True))
        batch.create_index(
            "uq_report_jobs_schedule_slot", ["schedule_id", "scheduled_for"], unique=True
        )
    op.create_table(
        "email_deliveries",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_reply", sa.Text(), nullable=True),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.Column("sent_at", _UTC, nullable=True),
        sa.PrimaryKeyConstraint("job_id", "recipient", name="pk_email_deliveries"),
    )


def downgrade() -> None:
    op.drop_table("email_deliveries")
    with op.batch_alter_table("report_jobs") as batch:
        batch.drop_index("uq_report_jobs_schedule_slot")
        batch.drop_column("scheduled_for")
        batch.drop_column("schedule_id")
        batch.drop_column("attach_file")
        batch.drop_column("recipients")
    op.drop_index("ix_report_schedules_owner_created", "report_schedules")
    op.drop_index("ix_report_schedules_due", "report_schedules")
    op.drop_table("report_schedules")
