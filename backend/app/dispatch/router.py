"""The router: the one :class:`~app.domain.ports.JobDispatcher`, choosing among backends."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from app.dispatch.base import BackendAdapter
from app.domain.errors import BackendUnavailable
from app.domain.jobs import Backend, ReportJob
from app.domain.ports import WorkerCount

log = logging.getLogger(__name__)


class Router:
    """Picks the first available backend in preference order (or the forced one)."""

    def __init__(self, adapters: Sequence[BackendAdapter], *, forced: Backend | None = None):
        self._adapters = list(adapters)
        self._by_backend = {a.backend: a for a in self._adapters}
        self._forced = forced

    def choose(self, job: ReportJob) -> Backend:
        for adapter in self._adapters:
            if self._forced not in (None, adapter.backend):
                continue
            if adapter.available(job.queue):
                return adapter.backend
        wanted = f"the {self._forced} backend" if self._forced else "any backend"
        raise BackendUnavailable(f"No worker can take a {job.queue} job: {wanted} is unavailable.")

    def dispatch(self, job: ReportJob) -> None:
        adapter = self._by_backend.get(job.backend) if job.backend else None
        if adapter is None:
            raise BackendUnavailable(f"The {job.backend} backend is not enabled here.")
        adapter.dispatch(job)
        log.info(
            "report_job.dispatched",
            extra={"job_id": str(job.id), "backend": job.backend, "queue": job.queue.value},
        )

    def cancel(self, job: ReportJob) -> None:
        adapter = self._by_backend.get(job.backend) if job.backend else None
        if adapter is not None:
            adapter.cancel(job)

    def workers(self) -> Sequence[WorkerCount]:
        return [count for adapter in self._adapters for count in adapter.workers()]
