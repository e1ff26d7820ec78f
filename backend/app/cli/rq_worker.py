"""``manage.py rq-worker [QUEUES...]``: a real RQ worker (fork per job, JSON, scheduler on).

The scheduler is on so that retries with an interval (``Retry(interval=[...])``) come back:
the retry of a failed, interrupted (warm shutdown) or killed attempt waits in RQ's scheduled
registry until a scheduler process moves it to its queue. RQ starts that process (or takes
over the lock of a stopped one) only in a worker's maintenance pass, every 10 minutes by
default; the platform's workers run it every :func:`maintenance_interval` instead.
The container is built before the worker forks, so every work horse starts warm.
"""

from __future__ import annotations

import gc
import logging
import math
import mmap
import time
from typing import Any

from psycopg.pq import TransactionStatus
from rq import Worker
from rq.job import Job
from rq.queue import Queue as RqQueue
from rq.serializers import JSONSerializer
from sqlalchemy import Engine
from sqlalchemy.pool import PoolProxiedConnection

from app.core.config import Settings, get_settings
from app.dispatch.rq_dispatcher import rq_queue
from app.domain.queues import Backend, Queue
from app.workers import lend_to_next_child, shutdown, worker_container
from app.workers.observability import rq_trace

log = logging.getLogger(__name__)


def maintenance_interval(settings: Settings) -> int:
    """Seconds between two maintenance passes of a worker: half ``HEARTBEAT_TIMEOUT``.

    A killed work horse's job can be reclaimed once its heartbeat is stale; a scheduler
    killed with it is started again within about that time (two passes at most), so the
    job's retry does not wait for RQ's default 10-minute pass.
    """
    return max(1, math.ceil(settings.jobs.heartbeat_timeout / 2))


class LentConnection:
    """The one ledger connection an RQ worker lends each of its work horses in turn.

    A work horse is a fork per job. With a connection of its own, every job would pay a
    new PostgreSQL session, its start and its cold catalog caches: more than the job's
    ledger writes themselves (benchmarks/results/pipeline.md). The worker opens one
    session and lends it to each horse; only one horse runs at a time and the worker does
    not use it while one does. A horse says in one byte of shared memory whether it left
    the session idle (no transaction open, no command in flight). If it did not (killed or
    timed out mid-statement), the worker closes that session and opens another for the
    next horse.

    No prepared statements on it: a horse's copy of the driver would not know what an
    earlier horse prepared or deallocated (psycopg deallocates them all after a ROLLBACK),
    and would name a new one as the last horse did.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._idle = mmap.mmap(-1, 1)
        self._raw: PoolProxiedConnection | None = None
        self._since = 0.0

    def lend(self) -> None:
        """In the worker, before it forks a horse. The horse's pool pings the session
        first when it has been idle a while, as it does any connection."""
        if self._raw is None:
            try:
                self._raw = self._open()
            except Exception as exc:  # the pool raises the driver's own errors, unwrapped
                # Never the worker's end: the horse connects itself, or defers its job.
                log.warning("rq.lent_connection.unavailable", extra={"error": str(exc)[:300]})
        self._idle[0] = 0
        lend_to_next_child(self._raw.driver_connection if self._raw else None, self._since)

    def give_back(self) -> None:
        """In the horse, after its job: say whether the session is idle."""
        driver = self._raw.driver_connection if self._raw is not None else None
        if driver is not None and not driver.closed:
            self._idle[0] = driver.info.transaction_status is TransactionStatus.IDLE

    def settle(self) -> None:
        """In the worker, once the horse is gone."""
        if self._raw is not None and not self._idle[0]:
            self._close()
        self._since = time.monotonic()

    def _open(self) -> PoolProxiedConnection:
        """A session out of the pool for good (the worker's warm-up one, when idle)."""
        raw = self._engine.raw_connection()
        raw.driver_connection.prepare_threshold = None  # type: ignore[union-attr]
        self._since = time.monotonic()
        return raw

    def _close(self) -> None:
        if self._raw is not None:
            self._raw.invalidate()  # ends the session, in whatever state the horse left it
            self._raw = None


class ReportWorker(Worker):
    """RQ's worker, telling the running work horse to stop at its next checkpoint on a
    warm shutdown (RQ itself would wait for the job to end), running its maintenance
    pass on time while idle, and lending each work horse its ledger connection
    (:class:`LentConnection`, PostgreSQL only)."""

    loan: LentConnection | None = None

    def fork_work_horse(self, job: Job, queue: RqQueue) -> None:
        if self.loan is not None:
            self.loan.lend()
        super().fork_work_horse(job, queue)

    def perform_job(self, job: Job, queue: RqQueue) -> bool:
        try:
            with rq_trace(job):  # the horse's lines carry the ids of the job's meta
                return super().perform_job(job, queue)
        finally:
            if self.loan is not None:  # in the horse: perform_job runs there
                self.loan.give_back()

    def monitor_work_horse(self, job: Job, queue: RqQueue) -> None:
        try:
            super().monitor_work_horse(job, queue)
        finally:
            if self.loan is not None:
                self.loan.settle()

    @property
    def dequeue_timeout(self) -> int:
        """An idle worker runs its maintenance pass only between two blocking waits for a
        job (``worker_ttl - 15`` = 405 s by default): wait no longer than the pass's interval."""
        return max(1, min(super().dequeue_timeout, self.maintenance_interval))

    def request_stop(self, signum: Any, frame: Any) -> None:
        shutdown.request_stop()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


def run_rq_worker(queues: list[Queue], *, name: str | None = None, burst: bool = False) -> int:
    """Consume ``queues`` (first listed first) until stopped, or until empty with ``burst``."""
    import app.workers.rq_jobs  # noqa: F401  (loaded once, before any fork)

    settings = get_settings()
    container = worker_container(Backend.RQ)
    connection = container.rq_connection
    worker = ReportWorker(
        [rq_queue(connection, settings.brokers, q) for q in queues],
        connection=connection,
        serializer=JSONSerializer,
        name=name,
        maintenance_interval=maintenance_interval(settings),
    )
    if container.engine.dialect.name == "postgresql":
        worker.loan = LentConnection(container.engine)
    # All that start-up built, out of the collector's sight: a collection in a work horse
    # no longer walks (and so copies, page by page) the heap it shares with this process.
    gc.freeze()
    worker.work(burst=burst, with_scheduler=True, logging_level=settings.process.log_level.upper())
    return 0
