"""Notifications queue: a finished job's callback and emails; :func:`notify` is the step.

The callback POSTs the job to its ``callback_url``, retried with backoff; the emails go
to its recipients (:mod:`app.services.emails`).

Callbacks go out for jobs that ended ``completed`` or ``failed`` (a cancel is the
caller's own act). The ledger counts attempts and records the last status, so a
duplicate delivery of the notification step does nothing once the callback was sent.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from uuid import UUID

from app.domain.errors import AppError, CallbackFailed
from app.domain.jobs import NotifyStatus, ReportJob
from app.domain.states import JobStatus
from app.services.delivery import Outcome, OutcomeKind
from app.services.deps import Deps
from app.services.emails import send_emails

log = logging.getLogger(__name__)

NOTIFIED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED})


def notify(*, deps: Deps, job_id: UUID) -> Outcome:
    """The notify step, on every backend: the callback (if any), then the emails (if any).

    Each part keeps its own ledger, so a retried step redoes only what is left. The step
    is delivered again (``retry``) when either part asks, at the sooner of the two;
    otherwise it is ``failed`` if a part failed now, ``sent`` if one sent now, else
    ``skipped``.
    """
    parts = (
        notify_callback(deps=deps, job_id=job_id),
        send_emails(deps=deps, job_id=job_id),
    )
    job = parts[1].job or parts[0].job  # the emails' read came after the callback's write
    waits = [p.retry_in or 1.0 for p in parts if p.kind == "retry"]
    if waits:
        return Outcome("retry", job, retry_in=min(waits))
    kinds = {p.kind for p in parts}
    kind: OutcomeKind = next((k for k in ("failed", "sent") if k in kinds), "skipped")
    return Outcome(kind, job)


def notify_callback(*, deps: Deps, job_id: UUID) -> Outcome:
    """Send the job's callback once; on a retryable failure, say when to try again."""
    job = deps.repo.get(job_id)
    if job is None or job.callback_url is None or job.status not in NOTIFIED:
        return Outcome("skipped", job)
    if job.notification is not None and job.notification.status is not NotifyStatus.RETRYING:
        return Outcome("skipped", job)
    attempt = (job.notification.attempts if job.notification else 0) + 1
    try:
        if deps.callbacks is None:
            raise CallbackFailed("Callbacks are not enabled on this platform.", retryable=False)
        deps.callbacks.send(job.callback_url, payload(job), delivery_id=str(job.id))
    except AppError as exc:
        retryable = isinstance(exc, CallbackFailed) and exc.retryable
        limit = deps.policy.callback_attempts
        delay = deps.policy.retry.after(attempt, limit) if retryable else None
        if delay is not None:
            updated = deps.repo.record_notification(
                job.id, status=NotifyStatus.RETRYING, now=deps.clock(), error=exc.message
            )
            log.info("report_job.notify.retrying", extra={"attempt": attempt, "retry_in": delay})
            return Outcome("retry", updated, retry_in=delay)
        updated = deps.repo.record_notification(
            job.id, status=NotifyStatus.FAILED, now=deps.clock(), error=exc.message
        )
        deps.observer.job_event("notify_failed", updated or job, error=exc.code)
        return Outcome("failed", updated)
    updated = deps.repo.record_notification(job.id, status=NotifyStatus.SENT, now=deps.clock())
    deps.observer.job_event("notified", updated or job, attempt=attempt)
    return Outcome("sent", updated)


def payload(job: ReportJob) -> bytes:
    """The callback body: the finished job as JSON (keys sorted, so signatures are stable)."""
    body: dict[str, Any] = {
        "event": f"report_job.{job.status.value}",
        "job": {
            "id": str(job.id),
            "report_type": job.report_type.value,
            "status": job.status.value,
            "params": job.params,
            "attempts": job.attempts,
            "error": {"code": job.error.code, "message": job.error.message} if job.error else None,
            "artifact": job.artifact.as_dict() if job.artifact else None,
            "document": job.document.as_dict() if job.document else None,
            "created_at": job.created_at.isoformat(),
            "started_at": job.started_at.isoformat() if job.started_at else None,
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        },
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
