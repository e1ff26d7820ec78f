"""Each attempt's run in a job's timeline (the console's job page).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Jobs that started before this revision get one entry, their last attempt, from the
columns that already held it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LAST_ATTEMPT = """
UPDATE report_jobs SET attempt_log = {array}({object}(
    'number', attempts, 'worker', worker, 'started_at', started_at,
    'ended_at', CASE WHEN status <> 'running' THEN COALESCE(finished_at, updated_at) END,
    'outcome', CASE WHEN status <> 'running' THEN status END,
    'error_code', error_code))
WHERE started_at IS NOT NULL
"""


def upgrade() -> None:
    json_type = sa.JSON().with_variant(JSONB(), "postgresql")
    with op.batch_alter_table("report_jobs") as batch:
        batch.add_column(sa.Column("attempt_log", json_type, nullable=False, server_default="[]"))
    postgres = op.get_bind().dialect.name == "postgresql"
    functions = (
        ("jsonb_build_array", "jsonb_build_object") if postgres else ("json_array", "json_object")
    )
    op.execute(_LAST_ATTEMPT.format(array=functions[0], object=functions[1]))


def downgrade() -> None:
    with op.batch_alter_table("report_jobs") as batch:
        batch.drop_column("attempt_log")
