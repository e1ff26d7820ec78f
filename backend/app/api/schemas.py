"""HTTP request and response bodies (the public contract, shown in OpenAPI)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from app.api.cursor import encode_cursor
from app.domain.jobs import ReportJob
from app.domain.ledger import JobPage
from app.domain.mail import DeliveryStatus, EmailDelivery
from app.domain.queues import Backend, Queue, ReportType
from app.domain.states import JobStatus
from app.services.queries import QueueStatus


class ErrorBody(BaseModel):
    error: str = Field(examples=["JOB_NOT_FOUND"], description="Stable error code.")
    message: str = Field(examples=["No report job with id 3f0c…"])
    timestamp: datetime
    correlation_id: str | None = Field(
        None,
        examples=["abc-123"],
        description="The request's correlation id (X-Correlation-ID): quote it to find its logs.",
    )


class JobErrorOut(BaseModel):
    code: str
    message: str


class ArtifactOut(BaseModel):
    filename: str = Field(examples=["pdf-3f0c5a8e-1d2b-4c1e-9a57-0f1e2d3c4b5a.pdf"])
    content_type: str = Field(examples=["application/pdf"])
    size_bytes: int
    sha256: str


class EmailOut(BaseModel):
    """The job's email to one recipient (read from the ledger's delivery)."""

    model_config = ConfigDict(from_attributes=True)

    recipient: str = Field(examples=["claims@example.com"])
    status: DeliveryStatus = Field(
        description="pending, sending, retrying (a temporary failure), sent or failed."
    )
    attempts: int
    last_reply: str | None = Field(
        description="The mail server's last reply (or error).", examples=["250 OK queued"]
    )
    sent_at: datetime | None


_JOB_EXAMPLE: dict[str, Any] = {
    "id": "5f0c3a8e-1d2b-4c1e-9a57-0f1e2d3c4b5a",
    "report_type": "pdf",
    "status": "completed",
    "backend": "celery",
    "queue": "reports",
    "priority": 5,
    "params": {"pages": 50, "processing_time": 30.0, "seed": 0},
    "progress": 100,
    "stage": "done",
    "attempts": 1,
    "max_attempts": 4,
    "error": None,
    "artifact": {
        "filename": "pdf-5f0c3a8e-1d2b-4c1e-9a57-0f1e2d3c4b5a.pdf",
        "content_type": "application/pdf",
        "size_bytes": 183201,
        "sha256": "9b1d0c5e6f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c",
    },
    "created_at": "2026-11-22T09:00:00.000000Z",
    "queued_at": "2026-11-22T09:00:00.004000Z",
    "started_at": "2026-11-22T09:00:00.020000Z",
    "finished_at": "2026-11-22T09:00:30.900000Z",
    "updated_at": "2026-11-22T09:00:30.900000Z",
}


class JobOut(BaseModel):
    """A report job as the ledger has it."""

    model_config = ConfigDict(json_schema_extra={"examples": [_JOB_EXAMPLE]})

    id: UUID
    report_type: ReportType
    status: JobStatus
    backend: Backend | None = Field(description="Where the job was dispatched.")
    queue: Queue
    priority: int
    params: dict[str, Any]
    progress: int = Field(ge=0, le=100)
    stage: str | None
    attempts: int
    max_attempts: int
    error: JobErrorOut | None
    artifact: ArtifactOut | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    emails: list[EmailOut] = Field(
        default_factory=list,
        description="One per recipient once the job is notified; given by GET of the job "
        "alone (empty in lists).",
    )

    @classmethod
    def of(cls, job: ReportJob, emails: Sequence[EmailDelivery] = ()) -> JobOut:
        return cls(
            id=job.id,
            report_type=job.report_type,
            status=job.status,
            backend=job.backend,
            queue=job.queue,
            priority=job.priority,
            params=job.params,
            progress=job.progress,
            stage=job.stage,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            error=JobErrorOut(code=job.error.code, message=job.error.message)
            if job.error
            else None,
            artifact=ArtifactOut(**job.artifact.as_dict()) if job.artifact else None,
            created_at=job.created_at,
            queued_at=job.queued_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
            emails=[EmailOut.model_validate(row) for row in emails],
        )


class JobList(BaseModel):
    items: list[JobOut]
    next: str | None = Field(description="Cursor for the next page; null on the last page.")

    @classmethod
    def of(cls, page: JobPage) -> JobList:
        return cls(
            items=[JobOut.of(j) for j in page.items],
            next=encode_cursor(page.next) if page.next else None,
        )


class QueueStatusOut(BaseModel):
    queue: Queue
    backend: Backend | None
    waiting: int = Field(description="Jobs pending, queued or waiting for a retry.")
    running: int
    workers: int | None = Field(description="Live workers; null when the backend cannot tell.")

    @classmethod
    def of(cls, status: QueueStatus) -> QueueStatusOut:
        return cls(
            queue=status.queue,
            backend=status.backend,
            waiting=status.waiting,
            running=status.running,
            workers=status.workers,
        )


class QueuesOut(BaseModel):
    queues: list[QueueStatusOut]
    generated_at: datetime
