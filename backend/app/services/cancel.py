"""Cancel: the ledger decides; the backend's own cancel is only a backstop."""

from __future__ import annotations

import logging
from uuid import UUID

from app.domain.errors import JobAlreadyFinished
from app.domain.jobs import ReportJob
from app.domain.states import JobStatus
from app.services.deps import Deps
from app.services.queries import get_job

log = logging.getLogger(__name__)


def cancel_job(*, deps: Deps, job_id: UUID, owner: str | None = None) -> ReportJob:
    """Cancel an unfinished job.

    A queued job will never run (its claim fails); a running one stops at its next
    checkpoint, which finds the row no longer ``running``.

    Raises:
        JobNotFound: no such job (or not the owner's).
        JobAlreadyFinished: the job is completed, failed or already cancelled.
    """
    job = get_job(deps=deps, job_id=job_id, owner=owner)
    cancelled = deps.repo.transition(job.id, JobStatus.CANCELLED, now=deps.clock())
    if cancelled is None:
        current = deps.repo.get(job.id) or job
        raise JobAlreadyFinished(job.id, current.status)
    try:
        deps.dispatcher.cancel(cancelled)
    except Exception:  # the ledger already says cancelled; the backstop is best effort
        log.warning("report_job.cancel.backstop_failed", exc_info=True)
    deps.observer.job_event("cancelled", cancelled, was=job.status)
    return cancelled
