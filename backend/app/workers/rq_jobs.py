"""RQ job functions: parse the id, deliver the step, carry out the decision. Nothing else.

A step to be delivered again returns RQ's ``Retry`` with the decided interval: RQ
schedules the same RQ job (its dependents keep waiting for it), and its count of retries
is only the count of deliveries; the ledger counts the attempts and decides the last.
"""

from __future__ import annotations

import math

from rq import Retry, get_current_job

from app.domain.queues import Backend, Step
from app.services.pipeline import deliver
from app.workers import job_context, worker_deps


def run_report_job(job_id: str) -> str | Retry:
    """The render step."""
    return _deliver(Step.RENDER, job_id)


def postprocess_job(job_id: str) -> str | Retry:
    """The document step."""
    return _deliver(Step.DOCUMENT, job_id)


def notify_job(job_id: str) -> str | Retry:
    """The notify step."""
    return _deliver(Step.NOTIFY, job_id)


def _deliver(step: Step, job_id: str) -> str | Retry:
    current = get_current_job()
    deliveries = (current.number_of_retries or 0) if current is not None else 0
    with job_context(job_id) as uid:
        done = deliver(step, deps=worker_deps(Backend.RQ), job_id=uid, deliveries=deliveries)
    if done.again is None:
        return done.outcome.kind
    # one more delivery, after the decided wait (RQ schedules in whole seconds)
    return Retry(max=deliveries + 1, interval=math.ceil(done.again))
