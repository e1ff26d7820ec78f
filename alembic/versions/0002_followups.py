"""Follow-up steps of a job: callback URL, post-processed document, notification.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from app.db.models import UTCDateTime

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("callback_url", sa.String(2048)),
    ("document_key", sa.String(512)),
    ("document_size", sa.BigInteger()),
    ("document_sha256", sa.String(64)),
    ("notify_status", sa.String(16)),
    ("notify_error", sa.Text()),
    ("notified_at", UTCDateTime()),
)


def upgrade() -> None:
    with op.batch_alter_table("report_jobs") as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
        batch.add_column(
            sa.Column("notify_attempts", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("report_jobs") as batch:
        batch.drop_column("notify_attempts")
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
