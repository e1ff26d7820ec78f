"""RQ job functions: parse the id, call the service, map the outcome. Nothing else.

A ``retry`` outcome raises :class:`RetryRequested`, so RQ's ``Retry`` (set at enqueue
time) delivers the job again; every other outcome is already recorded in the ledger.
"""

from __future__ import annotations

import time

from app.domain.errors import AppError
from app.domain.jobs import Backend
from app.services.delivery import next_delivery
from app.services.notify import notify
from app.services.postprocess import postprocess_report
from app.services.run_report import run_report
from app.workers import job_context, worker_deps


class RetryRequested(AppError):
    """Raised so that RQ schedules the job's next attempt; the ledger says ``retrying``."""

    code = "RETRY_REQUESTED"


def run_report_job(job_id: str) -> str:
    """RQ cannot delay one delivery: the work horse waits in place for what the delivery
    policy says (the ledger back, a lost worker's heartbeat gone stale), within
    ``DEFER_BUDGET_SECONDS``; an attempt's retry goes through RQ's ``Retry``."""
    deps = worker_deps(Backend.RQ)
    with job_context(job_id) as uid:
        outcome = run_report(deps=deps, job_id=uid)
        deliveries, waited = 0, 0.0
        while outcome.kind in ("deferred", "skipped"):
            delay = next_delivery(outcome, policy=deps.policy, deliveries=deliveries)
            if delay is None or waited + delay > deps.policy.defer_budget_seconds:
                break
            time.sleep(delay)
            deliveries, waited = deliveries + 1, waited + delay
            outcome = run_report(deps=deps, job_id=uid)
    if outcome.kind in ("retry", "interrupted", "deferred"):
        raise RetryRequested(f"attempt {outcome.job.attempts if outcome.job else '?'} failed")
    return outcome.kind


def postprocess_job(job_id: str) -> str:
    with job_context(job_id) as uid:
        return postprocess_report(deps=worker_deps(Backend.RQ), job_id=uid).kind


def notify_job(job_id: str) -> str:
    with job_context(job_id) as uid:
        outcome = notify(deps=worker_deps(Backend.RQ), job_id=uid)
    if outcome.kind == "retry":
        raise RetryRequested("callback or email delivery failed; RQ retries it")
    return outcome.kind
