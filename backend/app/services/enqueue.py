"""Enqueue: validate, write the ledger row, then hand the id to a backend."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.domain.errors import CallbackNotAllowed, Unavailable
from app.domain.jobs import JobError, JobStatus, ReportJob, ReportType, parse_params
from app.services.deps import Deps


def enqueue_report(
    *,
    deps: Deps,
    report_type: ReportType,
    params: Mapping[str, Any],
    owner: str | None = None,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
) -> ReportJob:
    """Create a job and dispatch it: commit first, then send (the row exists before the message).

    Raises:
        InvalidParams: the parameters do not fit the report type; nothing is written.
        CallbackNotAllowed: ``callback_url`` is not an allowed target; nothing is written.
        Unavailable: no backend can take the job; the row is recorded ``failed`` with the code.
    """
    typed = parse_params(report_type, dict(params))
    if callback_url is not None:
        if deps.callbacks is None:
            raise CallbackNotAllowed("Callbacks are not enabled on this platform.")
        deps.callbacks.validate(callback_url)
    job = ReportJob.new(
        report_type=report_type,
        params=typed,
        max_attempts=deps.policy.max_attempts,
        now=deps.clock(),
        owner=owner,
        idempotency_key=idempotency_key,
        callback_url=callback_url,
    )
    job = job.with_backend(deps.dispatcher.choose(job))
    deps.repo.add(job)
    try:
        deps.dispatcher.dispatch(job)
    except Unavailable as exc:
        failed = deps.repo.transition(
            job.id,
            JobStatus.FAILED,
            now=deps.clock(),
            expected=frozenset({JobStatus.PENDING}),
            error=JobError(exc.code, exc.message),
        )
        deps.observer.job_event("dispatch_failed", failed or job, error=exc.code)
        raise
    # A fast worker may have claimed the job already: then "queued" is history, not news.
    queued = deps.repo.transition(
        job.id, JobStatus.QUEUED, now=deps.clock(), expected=frozenset({JobStatus.PENDING})
    )
    current = queued or deps.repo.get(job.id) or job
    deps.observer.job_event("enqueued", current)
    return current
