"""Read side: one job, a page of jobs, an artifact to download, queue status."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from app.domain.errors import JobNotCompleted, JobNotFound
from app.domain.jobs import Artifact, ReportJob
from app.domain.ledger import Cursor, JobFilter, JobPage
from app.domain.mail import EmailDelivery
from app.domain.queues import Backend, Queue
from app.domain.states import JobStatus
from app.services.deps import Deps

MAX_PAGE = 100


def get_job(*, deps: Deps, job_id: UUID, owner: str | None = None) -> ReportJob:
    """The job, if it exists and ``owner`` (when given) owns it; else JobNotFound."""
    job = deps.repo.get(job_id)
    if job is None or (owner is not None and job.owner != owner):
        raise JobNotFound(job_id)
    return job


def get_job_with_emails(
    *, deps: Deps, job_id: UUID, owner: str | None = None
) -> tuple[ReportJob, Sequence[EmailDelivery]]:
    """The job (as :func:`get_job`) and its emails' deliveries, by recipient.

    There are none yet before its notify step, and none at all without recipients.
    """
    job = get_job(deps=deps, job_id=job_id, owner=owner)
    if not job.recipients or deps.mail is None:
        return job, ()
    return job, deps.mail.deliveries.for_job(job.id)


def list_jobs(*, deps: Deps, where: JobFilter, limit: int, after: Cursor | None) -> JobPage:
    """A page of the jobs matching ``where``, newest first; ``limit`` is kept to 1..MAX_PAGE."""
    return deps.repo.list_jobs(where, limit=max(1, min(limit, MAX_PAGE)), after=after)


def artifact_of(*, deps: Deps, job_id: UUID, owner: str | None = None) -> Artifact:
    """The finished report of a completed job; read it with ``deps.store.read``.

    Raises:
        JobNotFound: no such job, or another owner's.
        JobNotCompleted: the job has not completed (or has no report).
    """
    job = get_job(deps=deps, job_id=job_id, owner=owner)
    if job.status is not JobStatus.COMPLETED or job.artifact is None:
        raise JobNotCompleted(job.id, job.status)
    return job.artifact


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """One queue on one backend: jobs waiting and running, per the ledger.

    ``workers`` is the backend's count of live workers; None when it named none there.
    """

    queue: Queue
    backend: Backend | None
    waiting: int
    running: int
    workers: int | None


_WAITING = frozenset({JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RETRYING})


def queue_status(*, deps: Deps) -> list[QueueStatus]:
    """Per queue and backend: jobs waiting and running (ledger), live workers (backend)."""
    waiting: dict[tuple[Queue, Backend | None], int] = defaultdict(int)
    running: dict[tuple[Queue, Backend | None], int] = defaultdict(int)
    workers: dict[tuple[Queue, Backend | None], int] = {}
    for count in deps.repo.status_counts():
        key = (count.queue, count.backend)
        if count.status in _WAITING:
            waiting[key] += count.count
        elif count.status is JobStatus.RUNNING:
            running[key] += count.count
    for worker in deps.dispatcher.workers():
        workers[(worker.queue, worker.backend)] = worker.workers
    keys = sorted(
        set(waiting) | set(running) | set(workers),
        key=lambda k: (k[0].value, k[1].value if k[1] else ""),
    )
    return [
        QueueStatus(q, b, waiting.get((q, b), 0), running.get((q, b), 0), workers.get((q, b)))
        for q, b in keys
    ]
