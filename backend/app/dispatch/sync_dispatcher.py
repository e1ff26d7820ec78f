"""Sync backend: the job runs in the thread that dispatches it (the enqueue request's).

The architecture document's ``SyncEventDispatcher``: no broker, no pool, the caller waits.
Every delivery the ledger's policy asks for (a retry, a wait for the ledger) is carried out
in place, by sleeping, while the waits add up to no more than ``wait_budget`` seconds;
past it the request answers with the row as the ledger has it, and only the API's next
start-up recovery runs the job again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from uuid import UUID

from app.core.logging import job_id_var
from app.dispatch.base import InProcessBackend
from app.domain.errors import BackendUnavailable
from app.domain.jobs import ReportJob
from app.domain.ports import WorkerCount
from app.domain.queues import Backend, Queue

log = logging.getLogger(__name__)


class SyncDispatcher(InProcessBackend):
    """Runs each job to its end inside ``dispatch``; its callers are its workers."""

    backend = Backend.SYNC

    def __init__(
        self, *, slots: int, wait_budget: float, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._slots = slots
        self._wait_budget = wait_budget
        self._sleep = sleep
        super().__init__()

    def dispatch(self, job: ReportJob) -> None:
        """Run every delivery of the job now; return when none is due within the budget."""
        if self._stopping.is_set():
            raise BackendUnavailable("The sync backend is shutting down.")
        token = job_id_var.set(str(job.id))
        try:
            self._deliver(job.id)
        finally:
            job_id_var.reset(token)

    def cancel(self, job: ReportJob) -> None:
        """Nothing to do: the claim and the checkpoints read the ledger."""

    def workers(self) -> Sequence[WorkerCount]:
        """The enqueue slots: as many jobs run at once as requests run their blocking part."""
        return [WorkerCount(Backend.SYNC, Queue.REPORTS, 0 if self.stopping() else self._slots)]

    def shutdown(self) -> None:
        """Refuse new jobs; running ones stop at their next checkpoint and are requeued."""
        self._stopping.set()

    def _deliver(self, job_id: UUID) -> None:
        assert self._runner is not None, "SyncDispatcher.bind() was not called"
        deliveries, waited = 0, 0.0
        while True:
            try:
                delay = self._runner(job_id, deliveries)
            except Exception:
                log.exception("report_job.sync.crashed")
                return
            if delay is None:
                return
            if waited + delay > self._wait_budget or self._stopping.is_set():
                log.warning(
                    "report_job.sync.left_waiting",
                    extra={"job_id": str(job_id), "next_in_s": round(delay, 3)},
                )
                return
            self._sleep(delay)
            deliveries, waited = deliveries + 1, waited + delay
