"""The job ledger's port: the repository every service records jobs through, and its pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from app.domain.jobs import Artifact, JobError, NotifyStatus, ReportJob
from app.domain.queues import Backend, Queue, ReportType
from app.domain.states import JobStatus


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing returns: each field set narrows it, None leaves it open."""

    status: JobStatus | None = None
    report_type: ReportType | None = None
    backend: Backend | None = None
    owner: str | None = None
    schedule_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class Cursor:
    """Keyset position: the last item seen, ordered by (created_at, id) descending."""

    created_at: datetime
    id: UUID


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of jobs, and the cursor of the next one (None on the last page)."""

    items: Sequence[ReportJob]
    next: Cursor | None


@dataclass(frozen=True, slots=True)
class StatusCount:
    """How many unfinished jobs are in ``status`` on ``queue`` and ``backend``."""

    queue: Queue
    backend: Backend | None
    status: JobStatus
    count: int


class JobRepository(Protocol):
    """The ledger. Every query lives behind it; each call is one committed transaction."""

    def ping(self) -> None:
        """Raise unless the ledger answers."""
        ...

    def add(self, job: ReportJob) -> None:
        """Insert a new job.

        Raises:
            IdempotencyKeyTaken: its owner already used its Idempotency-Key (carries that
                job).
            SlotTaken: its schedule's slot already has a job (carries that job).
        """
        ...

    def get(self, job_id: UUID) -> ReportJob | None:
        """The job, whoever owns it; None when no row has this id."""
        ...

    def find_idempotent(self, owner: str | None, idempotency_key: str) -> ReportJob | None:
        """The job ``owner`` created with this Idempotency-Key, if any."""
        ...

    def list_jobs(self, where: JobFilter, *, limit: int, after: Cursor | None) -> JobPage:
        """One page of the jobs matching ``where``, newest first, starting after ``after``."""
        ...

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
        """Move the job to ``target`` if its status is in ``expected``.

        ``expected`` defaults to every status ``target`` may legally follow; with
        ``stale_before``, a ``running`` row whose heartbeat (``updated_at``) is older also
        qualifies: its worker is gone. With ``expected_worker``, the row must also still
        name that worker: a worker leaving ``running`` passes its own id, so that once
        another worker has reclaimed the job, the former one's write is refused. Returns
        the updated job, or None when the row did not qualify (someone else got there
        first): the conditional update is what makes delivery idempotent.
        Entering ``running`` counts an attempt and records ``worker``; a terminal status
        records ``finished_at``.
        """
        ...

    def record_progress(
        self,
        job_id: UUID,
        *,
        progress: int,
        stage: str | None,
        now: datetime,
        worker: str | None = None,
    ) -> bool:
        """Store progress (the heartbeat) of a running job.

        Returns:
            False when the job is no longer running, or no longer run by ``worker`` when
            given (another worker reclaimed it).
        """
        ...

    def unfinished(self, *, backend: Backend | None = None) -> Sequence[ReportJob]:
        """Jobs not in a terminal status, oldest first."""
        ...

    def status_counts(self) -> Sequence[StatusCount]:
        """Count of unfinished jobs per (queue, backend, status)."""
        ...

    def record_document(self, job_id: UUID, document: Artifact, *, now: datetime) -> bool:
        """Attach the post-processed package to a completed job that has none yet."""
        ...

    def record_notification(
        self, job_id: UUID, *, status: NotifyStatus, now: datetime, error: str | None = None
    ) -> ReportJob | None:
        """Count one callback attempt, unless the callback is already sent or given up."""
        ...
