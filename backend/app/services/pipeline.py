"""A job's whole pipeline in one process (the inline backend), and lost attempts.

Brokers send each step of :attr:`~app.domain.jobs.ReportJob.pipeline` as its own message;
the inline backend runs the same steps' services in a row. Every step is idempotent, so
a retry may start over from the render: a finished render is skipped by its claim, a
packaged job by its record.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from app.domain.jobs import JobError, JobStatus, ReportJob, Step
from app.services.deps import Deps
from app.services.notify import NotifyOutcome, notify
from app.services.postprocess import PostprocessOutcome, postprocess_report
from app.services.run_report import RunOutcome, run_report

#: The service of each step after the render.
FOLLOW_UPS: dict[Step, Callable[..., PostprocessOutcome | NotifyOutcome]] = {
    Step.DOCUMENT: postprocess_report,
    Step.NOTIFY: notify,
}


def run_pipeline(*, deps: Deps, job_id: UUID) -> RunOutcome:
    """Render the job, then, once it is finished, run the rest of its pipeline."""
    outcome = run_report(deps=deps, job_id=job_id)
    job = outcome.job
    if outcome.kind in ("retry", "interrupted") or job is None or not job.status.terminal:
        return outcome
    for step in job.pipeline[1:]:
        done = FOLLOW_UPS[step](deps=deps, job_id=job_id)
        if isinstance(done, NotifyOutcome) and done.kind == "retry":
            return RunOutcome("retry", done.job or job, retry_in=done.retry_in)
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
