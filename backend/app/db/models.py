"""The ledger schema: one row per report job, and the operations tables beside it."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.domain.auth import Role
from app.domain.states import JobStatus

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always returns them aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The value to store: in UTC, naive for SQLite.

        Raises:
            ValueError: ``value`` is naive (a bug: the ledger only takes aware times).
        """
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The stored value as an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """The declarative base; its metadata names constraints and indexes by ``NAMING``."""

    metadata = MetaData(naming_convention=NAMING)


ATTEMPT_LOG_TYPE = JSON().with_variant(JSONB(), "postgresql")
_STATUSES = ", ".join(f"'{s.value}'" for s in JobStatus)


class ReportJobRow(Base):
    """One report job: the ledger's row, source of truth for its status and artifacts."""

    __tablename__ = "report_jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    report_type: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    backend: Mapped[str | None] = mapped_column(String(16))
    queue: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(SmallInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    progress: Mapped[int] = mapped_column(SmallInteger, default=0)
    stage: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    artifact_key: Mapped[str | None] = mapped_column(String(512))
    artifact_filename: Mapped[str | None] = mapped_column(String(255))
    artifact_content_type: Mapped[str | None] = mapped_column(String(128))
    artifact_size: Mapped[int | None] = mapped_column(BigInteger)
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    document_key: Mapped[str | None] = mapped_column(String(512))
    document_size: Mapped[int | None] = mapped_column(BigInteger)
    document_sha256: Mapped[str | None] = mapped_column(String(64))
    notify_status: Mapped[str | None] = mapped_column(String(16))
    notify_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    notify_error: Mapped[str | None] = mapped_column(Text)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    redispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rerun_of: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Each attempt's run (number, worker, started_at, ended_at, outcome, error_code), written
    # by the transitions' UPDATE itself; JSONB on PostgreSQL for its operators.
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(
        ATTEMPT_LOG_TYPE, default=list, server_default="[]"
    )
    recipients: Mapped[list[str] | None] = mapped_column(JSON)
    attach_file: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    schedule_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUSES})", name="status"),
        CheckConstraint("progress BETWEEN 0 AND 100", name="progress"),
        CheckConstraint("attempts >= 0", name="attempts"),
        # Keyset pagination: newest first, optionally filtered by one column.
        Index("ix_report_jobs_created", "created_at", "id"),
        Index("ix_report_jobs_status_created", "status", "created_at", "id"),
        Index("ix_report_jobs_type_created", "report_type", "created_at", "id"),
        Index("ix_report_jobs_backend_created", "backend", "created_at", "id"),
        Index("ix_report_jobs_owner_created", "owner", "created_at", "id"),
        Index("ix_report_jobs_rerun_of", "rerun_of"),
        # One job per (owner, Idempotency-Key): a replayed POST finds it, never makes another.
        Index("uq_report_jobs_owner_idempotency", "owner", "idempotency_key", unique=True),
        # One job per slot of a schedule, whichever ticker fired it and however many did.
        Index("uq_report_jobs_schedule_slot", "schedule_id", "scheduled_for", unique=True),
    )


class ScheduleRow(Base):
    """A report on a calendar: what to run, when (cron in a time zone), who gets it."""

    __tablename__ = "report_schedules"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    report_type: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    cron: Mapped[str] = mapped_column(String(120))
    preset: Mapped[str | None] = mapped_column(String(16))
    at: Mapped[str | None] = mapped_column(String(5))
    timezone: Mapped[str] = mapped_column(String(64))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    attach: Mapped[bool] = mapped_column(Boolean)
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_slot: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    __table_args__ = (
        Index("ix_report_schedules_due", "active", "next_run_at"),
        Index("ix_report_schedules_owner_created", "owner", "created_at", "id"),
    )


class EmailDeliveryRow(Base):
    """One email of a finished job to one recipient: sent once, whatever redelivers the step."""

    __tablename__ = "email_deliveries"

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(320), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_reply: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PeriodicRunRow(Base):
    """One run of a periodic task; a second run for the same (task, scheduled_for) is refused."""

    __tablename__ = "periodic_runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    task: Mapped[str] = mapped_column(String(64))
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (UniqueConstraint("task", "scheduled_for"),)


class DailyStatsRow(Base):
    """The figures of one day (in the statistics time zone), computed by Beat at midnight."""

    __tablename__ = "daily_stats"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    figures: Mapped[dict[str, Any]] = mapped_column(JSON)


_ROLES = ", ".join(f"'{r.value}'" for r in Role)


class ApiKeyRow(Base):
    """An API key: the public id, the SHA-256 of the whole key, its owner and role."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint(f"role IN ({_ROLES})", name="role"),)


class TrafficDialRow(Base):
    """The traffic dial: one row (id 1), moved at run time, read by every API process."""

    __tablename__ = "traffic_dial"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    split: Mapped[dict[str, Any]] = mapped_column(JSON)
    healthy: Mapped[dict[str, Any]] = mapped_column(JSON)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    version: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    changed_by: Mapped[str] = mapped_column(String(160))

    __table_args__ = (CheckConstraint("id = 1", name="singleton"),)


class TrafficChangeRow(Base):
    """One audited change of the dial: who, when, from, to, why."""

    __tablename__ = "traffic_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(160))
    kind: Mapped[str] = mapped_column(String(16))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any]] = mapped_column(JSON)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_traffic_changes_at", "at"),)


class ConsoleSessionRow(Base):
    """A signed-in console browser: the SHA-256 of its cookie, its caller and CSRF token."""

    __tablename__ = "console_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(32))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_console_sessions_last_seen", "last_seen"),)
