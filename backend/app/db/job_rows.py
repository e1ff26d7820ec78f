"""The ledger's row and the domain's job: one into the other, column by column.

:func:`to_job` reads a row (a Core row or an ORM one) into a :class:`ReportJob`;
:func:`to_values` gives the columns of a job to insert. The attempt timeline is stored as
JSON (:func:`attempt_json`), its times as ISO 8601 text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Row, Table

from app.db.models import ReportJobRow
from app.domain.jobs import Artifact, JobError, Notification, NotifyStatus, ReportJob, Slot
from app.domain.queues import Backend, Queue, ReportType
from app.domain.states import Attempt, JobStatus

#: The ledger's table, for SQLAlchemy Core statements.
JOBS = cast(Table, ReportJobRow.__table__)
#: Domain fields stored in several columns.
ARTIFACT_COLUMNS = (
    "artifact_key",
    "artifact_filename",
    "artifact_content_type",
    "artifact_size",
    "artifact_sha256",
)


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    """One attempt as the ``attempt_log`` column's JSON holds it."""
    return {
        "number": attempt.number,
        "worker": attempt.worker,
        "started_at": attempt.started_at.isoformat(),
        "ended_at": attempt.ended_at.isoformat() if attempt.ended_at else None,
        "outcome": attempt.outcome,
        "error_code": attempt.error_code,
    }


def _attempt(value: dict[str, Any]) -> Attempt:
    ended = value.get("ended_at")
    return Attempt(
        number=value.get("number", 0),
        worker=value.get("worker"),
        started_at=_utc(value["started_at"]),
        ended_at=_utc(ended) if ended else None,
        outcome=value.get("outcome"),
        error_code=value.get("error_code"),
    )


def _utc(text_: str) -> datetime:
    """A time the database wrote into JSON, as an aware UTC datetime.

    The text is ISO 8601, with an offset (PostgreSQL, per its session's TimeZone) or
    without one (SQLite, UTC).
    """
    moment = datetime.fromisoformat(text_)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def artifact_columns(artifact: Artifact | None) -> dict[str, Any]:
    """The artifact's columns (all None without one)."""
    if artifact is None:
        return dict.fromkeys(ARTIFACT_COLUMNS)
    return dict(zip(ARTIFACT_COLUMNS, artifact.as_dict(key=True).values(), strict=True))


def to_values(job: ReportJob) -> dict[str, Any]:
    """The columns of ``job``'s row, for its insert."""
    return {
        "id": job.id,
        "report_type": job.report_type.value,
        "params": job.params,
        "status": job.status.value,
        "backend": job.backend.value if job.backend else None,
        "queue": job.queue.value,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "progress": job.progress,
        "stage": job.stage,
        "error_code": job.error.code if job.error else None,
        "error_message": job.error.message if job.error else None,
        **artifact_columns(job.artifact),
        "owner": job.owner,
        "idempotency_key": job.idempotency_key,
        "request_hash": job.request_hash,
        "worker": job.worker,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "queued_at": job.queued_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "callback_url": job.callback_url,
        "rerun_of": job.rerun_of,
        "recipients": list(job.recipients) or None,
        "attach_file": job.attach_file,
        "schedule_id": job.slot.schedule_id if job.slot else None,
        "scheduled_for": job.slot.at if job.slot else None,
        "attempt_log": [attempt_json(a) for a in job.attempt_log],
        "document_key": job.document.key if job.document else None,
        "document_size": job.document.size_bytes if job.document else None,
        "document_sha256": job.document.sha256 if job.document else None,
        "notify_status": job.notification.status.value if job.notification else None,
        "notify_attempts": job.notification.attempts if job.notification else 0,
        "notify_error": job.notification.error if job.notification else None,
        "notified_at": job.notification.at if job.notification else None,
    }


def to_job(row: Row[Any] | ReportJobRow) -> ReportJob:
    """The domain snapshot of a ledger row (a Core row or an ORM one)."""
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
        rerun_of=row.rerun_of,
        attempt_log=tuple(_attempt(a) for a in row.attempt_log or ()),
        recipients=tuple(row.recipients or ()),
        attach_file=row.attach_file,
        slot=Slot(row.schedule_id, row.scheduled_for)
        if row.schedule_id is not None and row.scheduled_for is not None
        else None,
        document=_document(row),
        notification=_notification(row),
    )


def _document(row: Row[Any] | ReportJobRow) -> Artifact | None:
    if row.document_key is None:
        return None
    return Artifact(
        key=row.document_key,
        filename=row.document_key.rsplit("/", 1)[-1],
        content_type="application/zip",
        size_bytes=row.document_size or 0,
        sha256=row.document_sha256 or "",
    )


def _notification(row: Row[Any] | ReportJobRow) -> Notification | None:
    if row.notify_status is None or row.notified_at is None:
        return None
    return Notification(
        status=NotifyStatus(row.notify_status),
        attempts=row.notify_attempts,
        at=row.notified_at,
        error=row.notify_error,
    )
