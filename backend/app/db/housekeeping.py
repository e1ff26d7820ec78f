"""The SQL side of housekeeping: periodic runs, retention, recovery and daily figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.db.job_rows import to_job
from app.db.models import DailyStatsRow, EmailDeliveryRow, PeriodicRunRow, ReportJobRow
from app.domain.jobs import ReportJob
from app.domain.operations import DailyStats, JobTiming
from app.domain.queues import Backend, ReportType
from app.domain.states import TERMINAL, JobStatus

_FINISHED = [s.value for s in TERMINAL]
_WAITING = [JobStatus.PENDING.value, JobStatus.QUEUED.value]
#: Backends a worker process can re-dispatch to (inline jobs are their API's business).
_BROKERED = [Backend.CELERY.value, Backend.RQ.value]


class SqlHousekeepingRepository:
    """:class:`~app.domain.operations.HousekeepingRepository` in SQLAlchemy: a transaction each."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def claim_run(self, task: str, slot: datetime, *, now: datetime) -> bool:
        """Record the run of ``task`` for ``slot``; False when it was already recorded."""
        try:
            with self._sessions.begin() as session:
                session.add(
                    PeriodicRunRow(task=task, scheduled_for=slot, status="running", started_at=now)
                )
        except IntegrityError:
            return False
        return True

    def finish_run(
        self, task: str, slot: datetime, *, now: datetime, status: str, result: Mapping[str, Any]
    ) -> None:
        """Record how the run of ``task`` for ``slot`` ended: its status and result."""
        t = PeriodicRunRow
        stmt = (
            update(t)
            .where(t.task == task, t.scheduled_for == slot)
            .values(status=status, finished_at=now, result=dict(result))
        )
        with self._sessions.begin() as session:
            session.execute(stmt)

    def runs(self, task: str) -> list[tuple[datetime, str, dict[str, Any] | None]]:
        """(slot, status, result) of ``task``'s recorded runs, oldest first."""
        t = PeriodicRunRow
        stmt = select(t.scheduled_for, t.status, t.result).where(t.task == task)
        with self._sessions() as session:
            rows = session.execute(stmt.order_by(t.scheduled_for)).all()
        return [(slot, status, result) for slot, status, result in rows]

    def expired(self, before: datetime, *, limit: int) -> Sequence[ReportJob]:
        """Finished jobs created before ``before``, oldest first, at most ``limit``."""
        t = ReportJobRow
        stmt = (
            select(t)
            .where(t.status.in_(_FINISHED), t.created_at < before)
            .order_by(t.created_at, t.id)
            .limit(limit)
        )
        with self._sessions() as session:
            return [to_job(row) for row in session.scalars(stmt)]

    def delete_finished(self, job_ids: Sequence[UUID]) -> int:
        """Delete those of ``job_ids`` that are finished, with their email rows.

        Returns:
            How many jobs were deleted.
        """
        if not job_ids:
            return 0
        t, e = ReportJobRow, EmailDeliveryRow
        finished = select(t.id).where(t.id.in_(list(job_ids)), t.status.in_(_FINISHED))
        emails = (
            delete(e).where(e.job_id.in_(finished)).execution_options(synchronize_session=False)
        )
        stmt = (
            delete(t)
            .where(t.id.in_(list(job_ids)), t.status.in_(_FINISHED))
            .execution_options(synchronize_session=False)
        )
        with self._sessions.begin() as session:  # the job's email ledger goes with it
            session.execute(emails)
            return int(session.execute(stmt).rowcount)  # type: ignore[attr-defined]

    def stale_waiting(self, before: datetime, *, limit: int) -> Sequence[ReportJob]:
        """Celery/RQ jobs pending or queued since before ``before``, never re-dispatched."""
        t = ReportJobRow
        stmt = (
            select(t)
            .where(
                t.status.in_(_WAITING),
                t.backend.in_(_BROKERED),
                t.redispatched_at.is_(None),
                func.coalesce(t.queued_at, t.created_at) < before,
            )
            .order_by(t.created_at, t.id)
            .limit(limit)
        )
        with self._sessions() as session:
            return [to_job(row) for row in session.scalars(stmt)]

    def mark_redispatched(self, job_id: UUID, *, now: datetime) -> bool:
        """Stamp ``redispatched_at``; False when it was already set (one re-dispatch a job)."""
        t = ReportJobRow
        stmt = (
            update(t)
            .where(t.id == job_id, t.redispatched_at.is_(None))
            .values(redispatched_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        with self._sessions.begin() as session:
            return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]

    def running_since(self, before: datetime) -> Sequence[ReportJob]:
        """Celery/RQ jobs running since before ``before``, longest running first."""
        t = ReportJobRow
        stmt = (
            select(t)
            .where(
                t.status == JobStatus.RUNNING.value,
                t.backend.in_(_BROKERED),
                t.started_at < before,
            )
            .order_by(t.started_at)
        )
        with self._sessions() as session:
            return [to_job(row) for row in session.scalars(stmt)]

    def timings(self, start: datetime, end: datetime) -> Sequence[JobTiming]:
        """What the daily figures need of each job created in ``[start, end)``."""
        t = ReportJobRow
        stmt = select(t.report_type, t.backend, t.status, t.started_at, t.finished_at).where(
            t.created_at >= start, t.created_at < end
        )
        with self._sessions() as session:
            return [
                JobTiming(
                    report_type=ReportType(report_type),
                    backend=Backend(backend) if backend else None,
                    status=JobStatus(status),
                    started_at=started,
                    finished_at=finished,
                )
                for report_type, backend, status, started, finished in session.execute(stmt)
            ]

    def save_daily_stats(self, day: date, figures: Mapping[str, Any], *, now: datetime) -> None:
        """Store (or replace) the figures of ``day``."""
        with self._sessions.begin() as session:
            session.merge(DailyStatsRow(day=day, computed_at=now, figures=dict(figures)))

    def daily_stats(self, day: date | None = None) -> DailyStats | None:
        """The figures of ``day``, or the latest stored when ``day`` is None; None if absent."""
        t = DailyStatsRow
        stmt = select(t).order_by(t.day.desc()).limit(1)
        if day is not None:
            stmt = select(t).where(t.day == day)
        with self._sessions() as session:
            row = session.scalars(stmt).one_or_none()
            if row is None:
                return None
            return DailyStats(day=row.day, computed_at=row.computed_at, figures=dict(row.figures))
