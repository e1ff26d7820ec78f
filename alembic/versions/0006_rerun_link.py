"""A job started by the console's "Run again" names the job it runs again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("report_jobs") as batch:
        batch.add_column(sa.Column("rerun_of", sa.Uuid(), nullable=True))
        batch.create_index("ix_report_jobs_rerun_of", ["rerun_of"])


def downgrade() -> None:
    with op.batch_alter_table("report_jobs") as batch:
        batch.drop_index("ix_report_jobs_rerun_of")
        batch.drop_column("rerun_of")
