"""Security: API keys, and one job per (owner, Idempotency-Key).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from app.db.models import UTCDateTime

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint("role IN ('submitter', 'operator')", name=op.f("ck_api_keys_role")),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
    )
    with op.batch_alter_table("report_jobs") as batch:
        batch.add_column(sa.Column("request_hash", sa.String(64), nullable=True))
    op.create_index(
        "uq_report_jobs_owner_idempotency",
        "report_jobs",
        ["owner", "idempotency_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_report_jobs_owner_idempotency", table_name="report_jobs")
    with op.batch_alter_table("report_jobs") as batch:
        batch.drop_column("request_hash")
    op.drop_table("api_keys")
