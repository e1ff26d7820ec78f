"""The job record and what it holds: its artifact, error, notification and slot."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID, uuid4

from app.domain.params import ReportParams, parse_params
from app.domain.queues import Backend, Queue, ReportType, Step
from app.domain.states import Attempt, JobStatus


def utcnow() -> datetime:
    """Timezone-aware current UTC time: the only clock format the platform stores."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Artifact:
    """A stored file: its key in the artifact store, download name, type, size and SHA-256."""

    key: str
    filename: str
    content_type: str
    size_bytes: int
    sha256: str

    def as_dict(self, *, key: bool = False) -> dict[str, Any]:
        """The file as the API, the callback and the package describe it.

        Args:
            key: Also give the store's key, first (the ledger's columns, in their order).

        Returns:
            ``filename``, ``content_type``, ``size_bytes`` and ``sha256``, in that order.
        """
        described = {
            "filename": self.filename,
            "content_type": self.content_type,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
        }
        return {"key": self.key, **described} if key else described


@dataclass(frozen=True, slots=True)
class JobError:
    """Why a job failed: a stable error code and a message for people."""

    code: str
    message: str


class NotifyStatus(StrEnum):
    """Where the callback of a finished job stands."""

    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Notification:
    """The last callback attempt: its status, how many were made, and why it failed."""

    status: NotifyStatus
    attempts: int
    at: datetime
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Slot:
    """The run of a schedule a job is: the ledger holds one job per (schedule, slot)."""

    schedule_id: UUID
    at: datetime


@dataclass(frozen=True, slots=True)
class ReportJob:
    """A snapshot of one job's ledger row. Changes go through the repository."""

    id: UUID
    report_type: ReportType
    params: dict[str, Any]
    status: JobStatus
    queue: Queue
    priority: int
    created_at: datetime
    updated_at: datetime
    backend: Backend | None = None
    attempts: int = 0
    max_attempts: int = 4
    progress: int = 0
    stage: str | None = None
    error: JobError | None = None
    artifact: Artifact | None = None
    owner: str | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    worker: str | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    callback_url: str | None = None
    document: Artifact | None = None
    notification: Notification | None = None
    rerun_of: UUID | None = None  # the job this one runs again (the console's "Run again")
    attempt_log: tuple[Attempt, ...] = ()  # each attempt's run, oldest first
    recipients: tuple[str, ...] = ()  # emailed once the job ends (the notify step)
    attach_file: bool = True  # the email carries the report (under the size limit) or a link
    slot: Slot | None = None  # the schedule and slot this job runs, if a schedule made it

    QUEUE_FOR_TYPE: ClassVar[Queue] = Queue.REPORTS

    @classmethod
    def new(
        cls,
        *,
        report_type: ReportType,
        params: ReportParams,
        max_attempts: int,
        now: datetime,
        owner: str | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
        rerun_of: UUID | None = None,
        recipients: tuple[str, ...] = (),
        attach_file: bool = True,
        slot: Slot | None = None,
    ) -> ReportJob:
        """A new ``pending`` job with a fresh id, on :attr:`QUEUE_FOR_TYPE` at its priority."""
        queue = cls.QUEUE_FOR_TYPE
        return cls(
            id=uuid4(),
            report_type=report_type,
            params=params.model_dump(mode="json"),
            status=JobStatus.PENDING,
            queue=queue,
            priority=queue.priority,
            max_attempts=max_attempts,
            owner=owner,
            idempotency_key=idempotency_key,
            created_at=now,
            updated_at=now,
            callback_url=callback_url,
            rerun_of=rerun_of,
            recipients=recipients,
            attach_file=attach_file,
            slot=slot,
        )

    def typed_params(self) -> ReportParams:
        """The stored parameters, validated into their report type's model."""
        return parse_params(self.report_type, self.params)

    def with_backend(self, backend: Backend) -> ReportJob:
        """This snapshot with ``backend`` set; the ledger row is not changed."""
        return replace(self, backend=backend)

    @property
    def pipeline(self) -> tuple[Step, ...]:
        """The steps its backend runs, in order.

        The render; with a callback, then the package and the notification; with
        recipients (and no callback), then the notification.
        """
        if self.callback_url is not None:
            return tuple(Step)
        return (Step.RENDER, Step.NOTIFY) if self.recipients else (Step.RENDER,)
