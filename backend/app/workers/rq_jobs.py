"""RQ job functions: parse the id, call the service, map the outcome. Nothing else.

A ``retry`` outcome raises :class:`RetryRequested`, so RQ's ``Retry`` (set at enqueue
time) delivers the job again; every other outcome is already recorded in the ledger.
"""

from __future__ import annotations

import time

from app.domain.errors import AppError
from app.domain.jobs import Backend
from app.services.notify import notify_callback
from app.services.postprocess import postprocess_report
from app.services.run_report import run_report
from app.workers import deferral_delay, job_context, worker_deps


class RetryRequested(AppError):
    """Raised so that RQ schedules the job's next attempt; the ledger says ``retrying``."""

    code = "RETRY_REQUESTED"


#: How many times a delivery finding its job running elsewhere waits to check it again.
LOST_WORKER_CHECKS = 2
#: How long a work horse waits for the ledger to answer again before RQ's retry takes over.
DEFER_BUDGET_SECONDS = 600.0


def run_report_job(job_id: str) -> str:
    with job_context(job_id) as uid:
        outcome = run_report(deps=worker_deps(Backend.RQ), job_id=uid)
        # The ledger is down: wait here (RQ's Retry budget is the job's attempts, not this).
        waited, deferrals = 0.0, 0
        while outcome.kind == "deferred" and waited < DEFER_BUDGET_SECONDS:
            pause = deferral_delay(outcome.retry_in, deferrals)
            time.sleep(pause)
            waited, deferrals = waited + pause, deferrals + 1
            outcome = run_report(deps=worker_deps(Backend.RQ), job_id=uid)
        # RQ retries a killed work horse's job within seconds, while the ledger still says
        # running: wait (bounded) until the lost horse's heartbeat is stale, then reclaim.
        for _ in range(LOST_WORKER_CHECKS):
            if outcome.kind != "skipped" or outcome.retry_in is None:
                break
            time.sleep(outcome.retry_in)
            outcome = run_report(deps=worker_deps(Backend.RQ), job_id=uid)
    if outcome.kind in ("retry", "interrupted", "deferred"):
        raise RetryRequested(f"attempt {outcome.job.attempts if outcome.job else '?'} failed")
    return outcome.kind


def postprocess_job(job_id: str) -> str:
    with job_context(job_id) as uid:
        return postprocess_report(deps=worker_deps(Backend.RQ), job_id=uid).kind


def notify_job(job_id: str) -> str:
    with job_context(job_id) as uid:
        outcome = notify_callback(deps=worker_deps(Backend.RQ), job_id=uid)
    if outcome.kind == "retry":
        raise RetryRequested("callback delivery failed; RQ retries it")
    return outcome.kind
