"""The traffic dial and its audit trail; the console's sessions.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from app.db.models import UTCDateTime

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "traffic_dial",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("split", sa.JSON(), nullable=False),
        sa.Column("healthy", sa.JSON(), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.Column("changed_by", sa.String(160), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_traffic_dial_singleton")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traffic_dial")),
    )
    op.create_table(
        "traffic_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traffic_changes")),
    )
    op.create_index("ix_traffic_changes_at", "traffic_changes", ["at"])
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_console_sessions")),
    )
    op.create_index("ix_console_sessions_last_seen", "console_sessions", ["last_seen"])


def downgrade() -> None:
    op.drop_index("ix_console_sessions_last_seen", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_index("ix_traffic_changes_at", table_name="traffic_changes")
    op.drop_table("traffic_changes")
    op.drop_table("traffic_dial")
