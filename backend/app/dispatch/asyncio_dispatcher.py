"""Asyncio backend: each job is a task on the API's event loop (in-process, no broker).

The architecture document's ``AsyncioEventDispatcher`` (``asyncio.create_task``, fire and
forget). The task owns the job's deliveries: it awaits each one and sleeps on the loop
until the next one the ledger's policy asks for. The render itself is blocking code
(SQLAlchemy, file writes, reportlab), so the task runs it in a bounded executor with
``run_in_executor``: run on the loop, one 5-second render would stall every request of
the process for 5 seconds. Tasks live in the process: a restart loses them, and the
API's start-up recovery runs their jobs again, as for the inline pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from uuid import UUID

from app.core.logging import job_id_var
from app.dispatch.base import InProcessBackend
from app.domain.errors import BackendUnavailable
from app.domain.jobs import ReportJob
from app.domain.ports import WorkerCount
from app.domain.queues import Backend, Queue

log = logging.getLogger(__name__)


class AsyncioDispatcher(InProcessBackend):
    """Schedules a task per job on ``loop`` (attached at start-up) from any thread."""

    backend = Backend.ASYNCIO

    def __init__(self, size: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__()
        self.size = size
        self._loop = loop
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="asyncio-job")
        self._tasks: set[Future[None]] = set()
        self._lock = threading.Lock()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run jobs on ``loop`` (the API's, captured in its lifespan)."""
        self._loop = loop

    def available(self, queue: Queue) -> bool:
        """Only for ``reports``, while the loop runs and no shutdown has begun."""
        loop = self._loop
        return super().available(queue) and loop is not None and loop.is_running()

    def dispatch(self, job: ReportJob) -> None:
        """Schedule the job's task on the loop and return at once (thread-safe)."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._stopping.is_set():
            raise BackendUnavailable("The asyncio backend has no running event loop.")
        task = asyncio.run_coroutine_threadsafe(self._deliver(job.id), loop)
        with self._lock:
            self._tasks.add(task)
        task.add_done_callback(self._forget)

    def cancel(self, job: ReportJob) -> None:
        """Nothing to do: the claim and the checkpoints read the ledger."""

    def workers(self) -> Sequence[WorkerCount]:
        """``size`` workers on ``reports`` while available, else none."""
        count = self.size if self.available(Queue.REPORTS) else 0
        return [WorkerCount(Backend.ASYNCIO, Queue.REPORTS, count)]

    def shutdown(self) -> None:
        """Cancel waiting tasks; running renders stop at their next checkpoint (requeued)."""
        self._stopping.set()
        with self._lock:
            tasks = list(self._tasks)
        for task in tasks:
            task.cancel()  # a task awaiting its render stops awaiting; the render goes on
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _deliver(self, job_id: UUID) -> None:
        assert self._runner is not None, "AsyncioDispatcher.bind() was not called"
        job_id_var.set(str(job_id))  # the task's own context
        loop = asyncio.get_running_loop()
        deliveries = 0
        while True:
            try:
                context = contextvars.copy_context()  # the job id goes with the render
                delay = await loop.run_in_executor(
                    self._executor, context.run, self._runner, job_id, deliveries
                )
            except Exception:
                log.exception("report_job.asyncio.crashed")
                return
            if delay is None or self._stopping.is_set():
                return
            await asyncio.sleep(delay)
            deliveries += 1

    def _forget(self, task: Future[None]) -> None:
        with self._lock:
            self._tasks.discard(task)
