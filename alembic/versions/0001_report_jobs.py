"""Create the report_jobs ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from app.db.models import UTCDateTime

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = "'pending', 'queued', 'running', 'retrying', 'completed', 'failed', 'cancelled'"


def upgrade() -> None:
    op.create_table(
        "report_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("report_type", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("backend", sa.String(16), nullable=True),
        sa.Column("queue", sa.String(32), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("progress", sa.SmallInteger(), nullable=False),
        sa.Column("stage", sa.String(64), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("artifact_key", sa.String(512), nullable=True),
        sa.Column("artifact_filename", sa.String(255), nullable=True),
        sa.Column("artifact_content_type", sa.String(128), nullable=True),
        sa.Column("artifact_size", sa.BigInteger(), nullable=True),
        sa.Column("artifact_sha256", sa.String(64), nullable=True),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        sa.Column("worker", sa.String(255), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("queued_at", UTCDateTime(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_report_jobs_status")),
        sa.CheckConstraint("progress BETWEEN 0 AND 100", name=op.f("ck_report_jobs_progress")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_report_jobs_attempts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_jobs")),
    )
    for name, columns in INDEXES.items():
        op.create_index(name, "report_jobs", columns)


INDEXES = {
    "ix_report_jobs_created": ["created_at", "id"],
    "ix_report_jobs_status_created": ["status", "created_at", "id"],
    "ix_report_jobs_type_created": ["report_type", "created_at", "id"],
    "ix_report_jobs_backend_created": ["backend", "created_at", "id"],
    "ix_report_jobs_owner_created": ["owner", "created_at", "id"],
}


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="report_jobs")
    op.drop_table("report_jobs")
