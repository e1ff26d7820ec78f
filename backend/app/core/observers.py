"""Job lifecycle observers: dotted log events (metrics plug in beside them)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from app.domain.jobs import ReportJob
from app.domain.ports import JobObserver

log = logging.getLogger("app.jobs")


class LoggingObserver:
    """Logs ``report_job.<event>`` with the job's id, type, backend and queue."""

    def job_event(self, event: str, job: ReportJob, **fields: Any) -> None:
        duration = None
        if job.started_at and job.finished_at:
            duration = round((job.finished_at - job.started_at).total_seconds(), 3)
        log.info(
            f"report_job.{event}",
            extra={
                "job_id": str(job.id),
                "report_type": job.report_type.value,
                "status": job.status.value,
                "backend": job.backend.value if job.backend else None,
                "queue": job.queue.value,
                "attempts": job.attempts,
                **({"duration_s": duration} if duration is not None else {}),
                **fields,
            },
        )


class FanOut:
    """Sends each event to several observers; one failing observer never breaks a job."""

    def __init__(self, observers: Sequence[JobObserver]) -> None:
        self._observers = list(observers)

    def job_event(self, event: str, job: ReportJob, **fields: Any) -> None:
        for observer in self._observers:
            try:
                observer.job_event(event, job, **fields)
            except Exception:
                log.exception("observer.failed")
