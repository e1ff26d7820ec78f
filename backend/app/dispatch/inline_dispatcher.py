"""Inline backend: a bounded thread pool inside the API process (the embedded default)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID

from app.core.logging import Trace, job_id_var
from app.dispatch.base import InProcessBackend
from app.domain.errors import BackendUnavailable
from app.domain.jobs import ReportJob
from app.domain.ports import WorkerCount
from app.domain.queues import HOST, Backend, Queue

log = logging.getLogger(__name__)

#: Names that in-process workers sign their claims with.
IN_PROCESS = frozenset(b.value for b in Backend if b.in_process)


def inline_worker_alive(worker: str) -> bool:
    """Whether the in-process worker (inline, sync, asyncio) that claimed a job still runs.

    Unknown hosts count as alive, and so does any other worker name.
    """
    name, _, rest = worker.partition("@")
    host, _, pid = rest.rpartition(":")
    if name not in IN_PROCESS or host != HOST or not pid.isdigit():
        return True
    if int(pid) == os.getpid():
        return False  # we are a new process with the same pid: the old one is gone
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class InlineDispatcher(InProcessBackend):
    """Runs jobs on ``size`` threads; retries are re-submitted after their backoff."""

    backend = Backend.INLINE

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self._pool = ThreadPoolExecutor(size, thread_name_prefix="inline-job")
        self._timers: set[threading.Timer] = set()
        self._lock = threading.Lock()

    def dispatch(self, job: ReportJob) -> None:
        """Submit the job to the pool and return at once.

        Raises:
            BackendUnavailable: the pool is shutting down.
        """
        self._submit(job.id, Trace.current(job.id))

    def cancel(self, job: ReportJob) -> None:
        """Nothing to do: the claim and the checkpoints read the ledger."""

    def workers(self) -> Sequence[WorkerCount]:
        """``size`` workers on ``reports``, none once shutdown began."""
        return [WorkerCount(Backend.INLINE, Queue.REPORTS, 0 if self.stopping() else self.size)]

    def shutdown(self) -> None:
        """Stop taking jobs; running ones stop at their next checkpoint and are requeued."""
        self._stopping.set()
        with self._lock:
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, job_id: UUID, trace: Trace, deliveries: int = 0) -> None:
        if self._stopping.is_set():
            raise BackendUnavailable("The inline backend is shutting down.")
        try:
            self._pool.submit(self._run, job_id, trace, deliveries)
        except RuntimeError as exc:  # pool already shut down
            raise BackendUnavailable("The inline backend is shutting down.") from exc

    def _run(self, job_id: UUID, trace: Trace, deliveries: int = 0) -> None:
        assert self._runner is not None, "InlineDispatcher.bind() was not called"
        token = job_id_var.set(str(job_id))
        try:
            with trace.bound():  # the pool's threads do not inherit the request's context
                delay = self._runner(job_id, deliveries)
        except Exception:
            with trace.bound():
                log.exception("report_job.inline.crashed")
            return
        finally:
            job_id_var.reset(token)
        if delay is not None:
            self._later(delay, job_id, trace, deliveries + 1)

    def _later(self, delay: float, job_id: UUID, trace: Trace, deliveries: int) -> None:
        def fire() -> None:
            with self._lock:
                self._timers.discard(timer)
            try:
                self._submit(job_id, trace, deliveries)
            except BackendUnavailable:
                log.info("report_job.inline.retry_dropped", extra={"job_id": str(job_id)})

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        with self._lock:
            if self._stopping.is_set():
                return
            self._timers.add(timer)
        timer.start()
