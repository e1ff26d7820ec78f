"""The one execution path, whichever backend delivered the job id."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from app.domain.errors import AppError, LedgerUnavailable, RenderError, Unavailable
from app.domain.jobs import Artifact, JobError, ReportJob
from app.domain.ledger import JobRepository
from app.domain.progress import JobCancelled, JobInterrupted
from app.domain.states import JobStatus
from app.services.delivery import Outcome
from app.services.deps import Deps
from app.services.lost_worker import (
    heartbeat_lost,
    is_stale,
    stale_at,
    stale_before,
    take_back,
)

log = logging.getLogger(__name__)

_RUNNING = frozenset({JobStatus.RUNNING})


def run_report(*, deps: Deps, job_id: UUID) -> Outcome:
    """Claim the job, render it, store the artifact and record the outcome.

    A job that is not claimable (already running elsewhere, finished, cancelled, unknown)
    is skipped: that is what makes a duplicate delivery harmless. Every write that takes
    the job out of ``running`` names this worker (:func:`leave_running`): one paused past
    the heartbeat timeout, whose job another worker reclaimed, is refused, discards its own
    artifact (published under its attempt, never the winner's path) and is skipped too.

    Raises:
        LedgerUnavailable: the ledger did not answer (the delivery is deferred).
    """
    job = deps.repo.transition(job_id, JobStatus.RUNNING, now=deps.clock(), worker=deps.worker_id)
    if job is None:
        job, skipped = _reclaim_lost(deps, job_id)
        if job is None:
            return skipped
    deps.observer.job_event("started", job)
    renderer = deps.renderers[job.report_type]
    temp = deps.store.temp_path(job.id, renderer.extension)
    progress = LedgerProgress(
        repo=deps.repo,
        job=job,
        clock=deps.clock,
        interval=deps.policy.progress_interval,
        stopping=deps.stopping,
    )
    try:
        renderer.render(job.typed_params(), temp, progress)
        artifact = deps.store.save(
            temp,
            job_id=job.id,
            filename=f"{job.report_type}-{job.id}.{renderer.extension}",
            content_type=renderer.content_type,
            attempt=job.attempts,
            checkpoint=progress.checkpoint,
        )
    except JobCancelled:  # a checkpoint found the job no longer running under this worker
        deps.store.discard(temp)
        return _let_go(deps, job)
    except JobInterrupted:
        deps.store.discard(temp)
        requeued = leave_running(deps, job.id, JobStatus.QUEUED, worker=deps.worker_id)
        if requeued is None:
            return _let_go(deps, job)
        log.info("report_job.run.interrupted", extra={"requeued": True})
        return Outcome("interrupted", requeued)
    except Exception as exc:
        deps.store.discard(temp)
        return _record_failure(deps, job, exc)
    except BaseException:  # SystemExit: the process is being terminated (revoke backstop)
        deps.store.discard(temp)
        raise
    try:
        done = leave_running(
            deps, job.id, JobStatus.COMPLETED, worker=deps.worker_id, artifact=artifact
        )
    except LedgerUnavailable:  # not recorded: the attempt that completes will publish its own
        deps.store.delete(artifact)
        raise
    if done is None:  # cancelled or reclaimed since the last checkpoint: not ours to publish
        deps.store.delete(artifact)
        return _let_go(deps, job)
    deps.observer.job_event("completed", done)
    return Outcome("completed", done)


def leave_running(
    deps: Deps,
    job_id: UUID,
    status: JobStatus,
    *,
    worker: str | None,
    error: JobError | None = None,
    artifact: Artifact | None = None,
) -> ReportJob | None:
    """Move the job out of ``running``, only while ``worker`` still holds it (None: any).

    Returns the updated job, or None when it was not running under that worker.
    """
    return deps.repo.transition(
        job_id,
        status,
        now=deps.clock(),
        expected=_RUNNING,
        expected_worker=worker,
        error=error,
        artifact=artifact,
    )


def _let_go(deps: Deps, job: ReportJob) -> Outcome:
    """The outcome once the ledger refused this worker's write: ``cancelled`` or ``skipped``.

    The job was cancelled, or another worker reclaimed it (this one was paused past the
    heartbeat timeout). Its outcome is theirs.
    """
    current = deps.repo.get(job.id)
    if current is not None and current.status is JobStatus.CANCELLED:
        log.info("report_job.run.stopped", extra={"reason": "cancelled"})
        return Outcome("cancelled", current)
    log.warning(
        "report_job.run.superseded",
        extra={
            "worker": deps.worker_id,
            "attempt": job.attempts,
            "status": current.status if current else "missing",
            "current_worker": current.worker if current else None,
        },
    )
    return Outcome("skipped", current)


def _reclaim_lost(deps: Deps, job_id: UUID) -> tuple[ReportJob | None, Outcome]:
    """Take over a running job whose heartbeat is stale (its worker is gone), or skip.

    A job with a fresh heartbeat is never taken: the conditional update re-checks it.
    """
    current = deps.repo.get(job_id)
    timeout = deps.policy.heartbeat_timeout
    now = deps.clock()
    if current is not None and current.status is JobStatus.RUNNING:
        if is_stale(current, now, timeout):
            before = stale_before(now, timeout)
            why = heartbeat_lost(timeout)
            taken = take_back(deps, current, why=why, stale_before=before, claim=True)
            if taken is not None and taken.status is JobStatus.FAILED:
                return None, Outcome("failed", taken)
            if taken is not None:
                log.warning(
                    "report_job.run.reclaimed",
                    extra={"lost_worker": current.worker, "worker": deps.worker_id},
                )
                return taken, Outcome("skipped", taken)
        current = deps.repo.get(job_id) or current
    retry_in = None
    running = current is not None and current.status is JobStatus.RUNNING
    if current is not None and running:  # maybe lost (even under this id: a deferred claim)
        retry_in = max((stale_at(current, timeout) - now).total_seconds(), 0.0) + 0.5
    log.info(
        "report_job.run.skipped",
        extra={"status": current.status if current else "missing", "worker": deps.worker_id},
    )
    return None, Outcome("skipped", current, retry_in=retry_in)


def _record_failure(deps: Deps, job: ReportJob, exc: Exception) -> Outcome:
    if isinstance(exc, AppError):
        error = JobError(exc.code, exc.message)
        # A renderer says whether it may succeed next time; an unreachable dependency
        # (the artifact storage) may answer the next attempt.
        retryable = exc.retryable if isinstance(exc, RenderError) else isinstance(exc, Unavailable)
    else:  # an unexpected error: maybe transient (disk, database); retry it
        log.exception("report_job.run.error")
        error = JobError("RENDER_FAILED", f"{type(exc).__name__}: {exc}")
        retryable = True
    delay = deps.policy.retry.after(job.attempts, job.max_attempts) if retryable else None
    status = JobStatus.FAILED if delay is None else JobStatus.RETRYING
    updated = leave_running(deps, job.id, status, worker=deps.worker_id, error=error)
    if updated is None:
        return _let_go(deps, job)
    if delay is not None:
        deps.observer.job_event("retrying", updated, error=error.code, retry_in=delay)
        return Outcome("retry", updated, retry_in=delay)
    deps.observer.job_event("failed", updated, error=error.code)
    return Outcome("failed", updated)


class LedgerProgress:
    """Progress that paces the render to ``processing_time`` and watches the ledger.

    Progress is written at most once per ``interval``; that same write tells whether the
    job is still ``running`` — when it is not, the job was cancelled and the render stops.
    """

    def __init__(
        self,
        *,
        repo: JobRepository,
        job: ReportJob,
        clock: Callable[[], datetime],
        interval: float,
        stopping: Callable[[], bool],
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._repo = repo
        self._job = job
        self._clock = clock
        self._interval = interval
        self._stopping = stopping
        self._monotonic = monotonic
        self._sleep = sleep
        self._processing_time = float(job.params.get("processing_time", 0.0))
        self._started = self._last_write = monotonic()
        self._percent = 0
        self._stage = "starting"

    @property
    def attempt(self) -> int:
        """The attempt this render belongs to (1 for the first)."""
        return self._job.attempts

    def advance(self, fraction: float, stage: str) -> None:
        """Checkpoint: record ``fraction`` done in ``stage``; sleep to pace ``processing_time``.

        Progress stays below 100 until the job completes and is written at most once per
        ``interval``.

        Raises:
            JobInterrupted: the process is stopping.
            JobCancelled: the job is no longer running under this worker (cancelled, or reclaimed).
        """
        fraction = min(max(fraction, 0.0), 1.0)
        self._percent = max(self._percent, min(99, int(fraction * 100)))
        self._stage = stage
        deadline = self._started + fraction * self._processing_time
        while True:
            self._check()
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return
            self._sleep(min(remaining, self._interval / 4))

    def checkpoint(self) -> None:
        """Between the parts of a long upload: raise if the job is no longer this worker's."""
        self._check()

    def _check(self) -> None:
        if self._stopping():
            raise JobInterrupted
        now = self._monotonic()
        if now - self._last_write < self._interval:
            return
        self._last_write = now
        try:
            still_running = self._repo.record_progress(
                self._job.id,
                progress=self._percent,
                stage=self._stage,
                now=self._clock(),
                worker=self._job.worker,
            )
        except LedgerUnavailable:  # a missed heartbeat; the final write decides
            log.warning("report_job.progress.unrecorded", extra={"percent": self._percent})
            return
        if not still_running:
            raise JobCancelled
