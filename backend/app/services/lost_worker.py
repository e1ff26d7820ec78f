"""One rule for a running job whose worker is gone: it runs again, or fails ``WORKER_LOST``.

The worker is gone when it was killed, froze past ``HEARTBEAT_TIMEOUT``, or its process did
not come back. While attempts remain the job runs again, else it fails with ``WORKER_LOST``.

Three places meet such a job: a redelivery of its message (``run_report`` claims it
itself), Beat's recovery task (stale heartbeats) and the API's start-up (its own inline
jobs of a process that is gone). Each judges a heartbeat with :func:`stale_before` (or
:func:`is_stale`), takes the job back through :func:`take_back`, and the two recoveries
send it, like a job left waiting, again through :func:`redispatch`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from app.domain.errors import Unavailable
from app.domain.jobs import JobError, ReportJob
from app.domain.states import JobStatus
from app.services.deps import Deps

log = logging.getLogger(__name__)

WORKER_LOST = "WORKER_LOST"

_NONE: frozenset[JobStatus] = frozenset()
_RUNNING = frozenset({JobStatus.RUNNING})
_PENDING = frozenset({JobStatus.PENDING})


def stale_before(now: datetime, timeout: float) -> datetime:
    """A running job whose heartbeat is older than this, at ``now``, lost its worker.

    Args:
        now: The time of the judgement.
        timeout: ``HEARTBEAT_TIMEOUT``, in seconds.

    Returns:
        ``now`` minus ``timeout``: the bound :func:`take_back`'s update re-checks.
    """
    return now - timedelta(seconds=timeout)


def is_stale(job: ReportJob, now: datetime, timeout: float) -> bool:
    """Whether ``job``'s heartbeat (its last write) is older than ``timeout`` at ``now``."""
    return job.updated_at < stale_before(now, timeout)


def stale_at(job: ReportJob, timeout: float) -> datetime:
    """When ``job``'s heartbeat, unless renewed, becomes stale (:func:`is_stale` after it)."""
    return job.updated_at + timedelta(seconds=timeout)


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


def redispatch(
    deps: Deps, job: ReportJob, *, failed_event: str, now: datetime | None = None
) -> bool:
    """Send ``job`` (waiting, or queued again) to its backend once more.

    A ``pending`` job is recorded ``queued`` once its message went (at ``now``, else the
    clock's time then).

    Args:
        deps: The services' ports.
        job: The job as last read.
        failed_event: The warning logged when no backend takes the message.
        now: The time of the ``queued`` record, if not the clock's.

    Returns:
        False when no backend took it: the job stays as it was, for the next recovery.
    """
    try:
        deps.dispatcher.dispatch(job)
    except Unavailable as exc:
        log.warning(failed_event, extra={"job_id": str(job.id), "error": exc.code})
        return False
    if job.status is JobStatus.PENDING:
        at = deps.clock() if now is None else now
        deps.repo.transition(job.id, JobStatus.QUEUED, now=at, expected=_PENDING)
    return True
