"""A job's steps as services: one delivery of a step, the whole pipeline, lost attempts.

:func:`deliver` runs one delivery of a step (every backend); :func:`run_pipeline` runs
the whole pipeline in one process (the in-process backends).

Brokers send each step of :attr:`~app.domain.jobs.ReportJob.pipeline` as its own message
and call :func:`deliver` for it; the in-process backends run the steps in a row
(:func:`run_pipeline`). Every step is idempotent, so a redelivery may start over from the
render: a finished render is skipped by its claim, a packaged job by its record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from app.domain.errors import LedgerUnavailable
from app.domain.jobs import JobError, ReportJob
from app.domain.queues import Step
from app.domain.states import JobStatus
from app.services.delivery import Outcome, deferred, next_delivery
from app.services.deps import Deps
from app.services.notify import notify
from app.services.postprocess import postprocess_report
from app.services.run_report import leave_running, run_report

#: The service of each step.
STEPS: dict[Step, Callable[..., Outcome]] = {
    Step.RENDER: run_report,
    Step.DOCUMENT: postprocess_report,
    Step.NOTIFY: notify,
}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a step: its outcome, and when it is delivered again (None: never)."""

    outcome: Outcome
    again: float | None


def deliver(step: Step, *, deps: Deps, job_id: UUID, deliveries: int) -> Delivery:
    """Run one delivery of ``step`` and decide its next one (see :func:`next_delivery`).

    ``deliveries`` counts the earlier re-deliveries of this message. A ledger that does
    not answer makes the delivery ``deferred``, whichever step it is.
    """
    try:
        outcome = STEPS[step](deps=deps, job_id=job_id)
    except LedgerUnavailable:
        outcome = deferred(deps.policy, step.value)
    return Delivery(outcome, next_delivery(outcome, policy=deps.policy, deliveries=deliveries))


def run_pipeline(*, deps: Deps, job_id: UUID, deliveries: int = 0) -> float | None:
    """Every step of the job in a row; returns when the pipeline is delivered again.

    The follow-ups run once the render has ended (completed, failed or cancelled), and the
    first step that asks to come back stops the row: its redelivery starts over.
    """
    render = deliver(Step.RENDER, deps=deps, job_id=job_id, deliveries=deliveries)
    job = render.outcome.job
    if render.again is not None or job is None or not job.status.terminal:
        return render.again
    for step in job.pipeline[1:]:
        again = deliver(step, deps=deps, job_id=job_id, deliveries=deliveries).again
        if again is not None:
            return again
    return None


def fail_lost_attempt(
    *, deps: Deps, job_id: UUID, error: JobError, worker: str | None = None
) -> ReportJob | None:
    """Record ``failed`` for a running job whose worker killed the attempt (hard time limit).

    ``worker`` names the process that ran the killed attempt: if another worker has
    reclaimed the job since (the attempt stopped heartbeating), the job is theirs and stays
    as it is.
    """
    failed = leave_running(deps, job_id, JobStatus.FAILED, worker=worker, error=error)
    if failed is not None:
        deps.observer.job_event("failed", failed, error=error.code)
    return failed
