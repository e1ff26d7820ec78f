"""A job's whole pipeline in one process (the inline backend), and lost attempts.

Brokers chain render → document → notify as three messages; the inline backend runs the
same three services in a row. Every step is idempotent, so a retry may start over from
the render: a finished render is skipped by its claim, a packaged job by its record.
"""

from __future__ import annotations

from uuid import UUID

from app.domain.jobs import JobError, JobStatus, ReportJob
from app.services.deps import Deps
from app.services.notify import notify_callback
from app.services.postprocess import postprocess_report
from app.services.run_report import RunOutcome, run_report


def run_pipeline(*, deps: Deps, job_id: UUID) -> RunOutcome:
    """Render the job, then, when it has a callback and finished, package and notify."""
    outcome = run_report(deps=deps, job_id=job_id)
    job = outcome.job
    if outcome.kind in ("retry", "interrupted") or job is None or job.callback_url is None:
        return outcome
    if not job.status.terminal:
        return outcome
    postprocess_report(deps=deps, job_id=job_id)
    sent = notify_callback(deps=deps, job_id=job_id)
    if sent.kind == "retry":
        return RunOutcome("retry", sent.job or job, retry_in=sent.retry_in)
    return outcome


def fail_lost_attempt(
    *, deps: Deps, job_id: UUID, error: JobError, worker: str | None = None
) -> ReportJob | None:
    """Record ``failed`` for a running job whose worker killed the attempt (hard time limit).

    ``worker`` names the process that ran the killed attempt: if another worker has
    reclaimed the job since (the attempt stopped heartbeating), the job is theirs and stays
    as it is.
    """
    failed = deps.repo.transition(
        job_id,
        JobStatus.FAILED,
        now=deps.clock(),
        expected=frozenset({JobStatus.RUNNING}),
        error=error,
        expected_worker=worker,
    )
    if failed is not None:
        deps.observer.job_event("failed", failed, error=error.code)
    return failed
