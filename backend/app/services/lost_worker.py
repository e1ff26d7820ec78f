"""One rule for a running job whose worker is gone: it runs again, or fails ``WORKER_LOST``.

The worker is gone when it was killed, froze past ``HEARTBEAT_TIMEOUT``, or its process did
not come back. While attempts remain the job runs again, else it fails with ``WORKER_LOST``.

Three places meet such a job: a redelivery of its message (``run_report`` claims it
itself), Beat's recovery task (stale heartbeats) and the API's start-up (its own inline
jobs of a process that is gone). Each takes it back through :func:`take_back`.
"""

from __future__ import annotations

from datetime import datetime

from app.domain.jobs import JobError, JobStatus, ReportJob
from app.services.deps import Deps

WORKER_LOST = "WORKER_LOST"

_NONE: frozenset[JobStatus] = frozenset()
_RUNNING = frozenset({JobStatus.RUNNING})


def heartbeat_lost(timeout: float) -> str:
    """Why a job whose heartbeat is older than ``timeout`` seconds was taken back."""
    return f"No heartbeat for {timeout:g}s: its worker was lost."


def take_back(
    deps: Deps,
    job: ReportJob,
    *,
    why: str,
    stale_before: datetime | None = None,
    claim: bool = False,
) -> ReportJob | None:
    """Take ``job`` from its lost worker; ``None`` when the ledger says otherwise.

    The update applies only while the job still runs under ``job.worker`` (and, with
    ``stale_before``, while its heartbeat is older than that), so a live worker, or one
    that took it over meanwhile, always wins. Then:

    - attempts spent: ``failed`` with ``WORKER_LOST`` (``why`` as the message);
    - with ``claim``: ``running`` under this process (a redelivery runs it at once);
    - otherwise: ``queued`` with the ``WORKER_LOST`` error of the lost attempt, for the
      caller to dispatch.
    """
    error = JobError(WORKER_LOST, why)
    spent = job.attempts >= job.max_attempts
    target = JobStatus.FAILED if spent else JobStatus.RUNNING if claim else JobStatus.QUEUED
    moved = deps.repo.transition(
        job.id,
        target,
        now=deps.clock(),
        expected=_RUNNING if stale_before is None else _NONE,
        stale_before=stale_before,
        expected_worker=job.worker,
        worker=deps.worker_id if target is JobStatus.RUNNING else None,
        error=None if target is JobStatus.RUNNING else error,
    )
    if moved is not None and target is not JobStatus.RUNNING:
        event = "failed" if spent else "retrying"
        deps.observer.job_event(event, moved, error=WORKER_LOST)
    return moved
