"""The SQL job repository: every query of the ledger lives here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from app.db.models import ReportJobRow
from app.domain.errors import IdempotencyKeyTaken
from app.domain.jobs import (
    TERMINAL,
    Artifact,
    Backend,
    JobError,
    JobStatus,
    Notification,
    NotifyStatus,
    Queue,
    ReportJob,
    ReportType,
    sources_of,
)
from app.domain.ports import Cursor, JobFilter, JobPage, StatusCount

_UNFINISHED = [s.value for s in JobStatus if s not in TERMINAL]


class SqlJobRepository:
    """:class:`~app.domain.ports.JobRepository` over SQLAlchemy; one transaction per call."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def ping(self) -> None:
        with self._sessions() as session:
            session.execute(select(1))

    def add(self, job: ReportJob) -> None:
        try:
            with self._sessions.begin() as session:
                session.add(_to_row(job))
        except IntegrityError as exc:
            key = job.idempotency_key
            earlier = self.find_idempotent(job.owner, key) if key is not None else None
            if earlier is not None:
                raise IdempotencyKeyTaken(earlier) from exc
            raise

    def find_idempotent(self, owner: str | None, idempotency_key: str) -> ReportJob | None:
        t = ReportJobRow
        stmt = select(t).where(t.owner == owner, t.idempotency_key == idempotency_key)
        with self._sessions() as session:
            row = session.scalars(stmt).first()
            return _to_job(row) if row else None

    def get(self, job_id: UUID) -> ReportJob | None:
        with self._sessions() as session:
            row = session.get(ReportJobRow, job_id)
            return _to_job(row) if row else None

    def list_jobs(self, where: JobFilter, *, limit: int, after: Cursor | None) -> JobPage:
        t = ReportJobRow
        stmt = select(t).order_by(t.created_at.desc(), t.id.desc()).limit(limit + 1)
        for column, value in (
            (t.status, where.status),
            (t.report_type, where.report_type),
            (t.backend, where.backend),
            (t.owner, where.owner),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if after is not None:
            stmt = stmt.where(
                or_(
                    t.created_at < after.created_at,
                    and_(t.created_at == after.created_at, t.id < after.id),
                )
            )
        with self._sessions() as session:
            rows = session.scalars(stmt).all()
        items = [_to_job(r) for r in rows[:limit]]
        more = len(rows) > limit
        return JobPage(
            items=items,
            next=Cursor(items[-1].created_at, items[-1].id) if more and items else None,
        )

    def transition(
        self,
        job_id: UUID,
        target: JobStatus,
        *,
        now: datetime,
        expected: frozenset[JobStatus] | None = None,
        worker: str | None = None,
        error: JobError | None = None,
        artifact: Artifact | None = None,
        stale_before: datetime | None = None,
        expected_worker: str | None = None,
    ) -> ReportJob | None:
        t = ReportJobRow
        sources = sources_of(target) if expected is None else expected
        values: dict[str, Any] = {"status": target.value, "updated_at": now}
        if target is JobStatus.QUEUED:
            values["queued_at"] = now
        elif target is JobStatus.RUNNING:
            values.update(
                attempts=t.attempts + 1,
                started_at=now,
                queued_at=func.coalesce(t.queued_at, now),
                worker=worker,
                progress=0,
                stage="starting",
            )
        elif target is JobStatus.COMPLETED:
            values.update(progress=100, stage="done", error_code=None, error_message=None)
        if target in TERMINAL:
            values["finished_at"] = now
        if error is not None:
            values.update(error_code=error.code, error_message=error.message)
        if artifact is not None:
            values.update(
                artifact_key=artifact.key,
                artifact_filename=artifact.filename,
                artifact_content_type=artifact.content_type,
                artifact_size=artifact.size_bytes,
                artifact_sha256=artifact.sha256,
            )
        claimable: ColumnElement[bool] = t.status.in_([s.value for s in sources])
        if stale_before is not None:
            lost = and_(t.status == JobStatus.RUNNING.value, t.updated_at < stale_before)
            claimable = or_(claimable, lost)
        if expected_worker is not None:  # still this worker's: not reclaimed meanwhile
            claimable = and_(claimable, t.worker == expected_worker)
        stmt = (
            update(t)
            .where(t.id == job_id, claimable)
            .values(**values)
            .returning(t)
            .execution_options(synchronize_session=False)
        )
        with self._sessions.begin() as session:
            row = session.scalars(stmt).one_or_none()
            return _to_job(row) if row else None

    def record_progress(
        self,
        job_id: UUID,
        *,
        progress: int,
        stage: str | None,
        now: datetime,
        worker: str | None = None,
    ) -> bool:
        t = ReportJobRow
        mine = [] if worker is None else [t.worker == worker]
        stmt = (
            update(t)
            .where(t.id == job_id, t.status == JobStatus.RUNNING.value, *mine)
            .values(progress=max(0, min(progress, 100)), stage=stage, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        with self._sessions.begin() as session:
            return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]

    def unfinished(self, *, backend: Backend | None = None) -> Sequence[ReportJob]:
        t = ReportJobRow
        stmt = select(t).where(t.status.in_(_UNFINISHED)).order_by(t.created_at)
        if backend is not None:
            stmt = stmt.where(t.backend == backend.value)
        with self._sessions() as session:
            return [_to_job(r) for r in session.scalars(stmt)]

    def status_counts(self) -> Sequence[StatusCount]:
        t = ReportJobRow
        stmt = (
            select(t.queue, t.backend, t.status, func.count())
            .where(t.status.in_(_UNFINISHED))
            .group_by(t.queue, t.backend, t.status)
        )
        with self._sessions() as session:
            return [
                StatusCount(
                    queue=Queue(queue),
                    backend=Backend(backend) if backend else None,
                    status=JobStatus(status),
                    count=count,
                )
                for queue, backend, status, count in session.execute(stmt)
            ]

    def record_document(self, job_id: UUID, document: Artifact, *, now: datetime) -> bool:
        t = ReportJobRow
        stmt = (
            update(t)
            .where(
                t.id == job_id,
                t.status == JobStatus.COMPLETED.value,
                t.document_key.is_(None),
            )
            .values(
                document_key=document.key,
                document_size=document.size_bytes,
                document_sha256=document.sha256,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        with self._sessions.begin() as session:
            return bool(session.execute(stmt).rowcount)  # type: ignore[attr-defined]

    def record_notification(
        self, job_id: UUID, *, status: NotifyStatus, now: datetime, error: str | None = None
    ) -> ReportJob | None:
        t = ReportJobRow
        stmt = (
            update(t)
            .where(
                t.id == job_id,
                or_(t.notify_status.is_(None), t.notify_status == NotifyStatus.RETRYING.value),
            )
            .values(
                notify_status=status.value,
                notify_attempts=t.notify_attempts + 1,
                notify_error=error,
                notified_at=now,
                updated_at=now,
            )
            .returning(t)
            .execution_options(synchronize_session=False)
        )
        with self._sessions.begin() as session:
            row = session.scalars(stmt).one_or_none()
            return _to_job(row) if row else None


def _to_row(job: ReportJob) -> ReportJobRow:
    artifact = job.artifact
    return ReportJobRow(
        id=job.id,
        report_type=job.report_type.value,
        params=job.params,
        status=job.status.value,
        backend=job.backend.value if job.backend else None,
        queue=job.queue.value,
        priority=job.priority,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        progress=job.progress,
        stage=job.stage,
        error_code=job.error.code if job.error else None,
        error_message=job.error.message if job.error else None,
        artifact_key=artifact.key if artifact else None,
        artifact_filename=artifact.filename if artifact else None,
        artifact_content_type=artifact.content_type if artifact else None,
        artifact_size=artifact.size_bytes if artifact else None,
        artifact_sha256=artifact.sha256 if artifact else None,
        owner=job.owner,
        idempotency_key=job.idempotency_key,
        request_hash=job.request_hash,
        worker=job.worker,
        created_at=job.created_at,
        updated_at=job.updated_at,
        queued_at=job.queued_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        callback_url=job.callback_url,
        document_key=job.document.key if job.document else None,
        document_size=job.document.size_bytes if job.document else None,
        document_sha256=job.document.sha256 if job.document else None,
        notify_status=job.notification.status.value if job.notification else None,
        notify_attempts=job.notification.attempts if job.notification else 0,
        notify_error=job.notification.error if job.notification else None,
        notified_at=job.notification.at if job.notification else None,
    )


def _to_job(row: ReportJobRow) -> ReportJob:
    artifact = None
    if row.artifact_key is not None:
        artifact = Artifact(
            key=row.artifact_key,
            filename=row.artifact_filename or "",
            content_type=row.artifact_content_type or "application/octet-stream",
            size_bytes=row.artifact_size or 0,
            sha256=row.artifact_sha256 or "",
        )
    return ReportJob(
        id=row.id,
        report_type=ReportType(row.report_type),
        params=dict(row.params),
        status=JobStatus(row.status),
        queue=Queue(row.queue),
        priority=row.priority,
        backend=Backend(row.backend) if row.backend else None,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        progress=row.progress,
        stage=row.stage,
        error=JobError(row.error_code, row.error_message or "") if row.error_code else None,
        artifact=artifact,
        owner=row.owner,
        idempotency_key=row.idempotency_key,
        request_hash=row.request_hash,
        worker=row.worker,
        created_at=row.created_at,
        updated_at=row.updated_at,
        queued_at=row.queued_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        callback_url=row.callback_url,
        document=_document(row),
        notification=_notification(row),
    )


def _document(row: ReportJobRow) -> Artifact | None:
    if row.document_key is None:
        return None
    return Artifact(
        key=row.document_key,
        filename=row.document_key.rsplit("/", 1)[-1],
        content_type="application/zip",
        size_bytes=row.document_size or 0,
        sha256=row.document_sha256 or "",
    )


def _notification(row: ReportJobRow) -> Notification | None:
    if row.notify_status is None or row.notified_at is None:
        return None
    return Notification(
        status=NotifyStatus(row.notify_status),
        attempts=row.notify_attempts,
        at=row.notified_at,
        error=row.notify_error,
    )
