"""``manage.py rq-worker [QUEUES...]``: a real RQ worker (fork per job, JSON, scheduler on).

The scheduler is on so that retries with an interval (``Retry(interval=[...])``) come back:
the retry of a failed, interrupted (warm shutdown) or killed attempt waits in RQ's scheduled
registry until a scheduler process moves it to its queue. RQ starts that process (or takes
over the lock of a stopped one) only in a worker's maintenance pass, every 10 minutes by
default; the platform's workers run it every :func:`maintenance_interval` instead.
The container is built before the worker forks, so every work horse starts warm.
"""

from __future__ import annotations

import math
from typing import Any

from rq import Worker
from rq.serializers import JSONSerializer

from app.core.config import Settings, get_settings
from app.dispatch.rq_dispatcher import rq_queue
from app.domain.jobs import Backend, Queue
from app.workers import shutdown, worker_container


def maintenance_interval(settings: Settings) -> int:
    """Seconds between two maintenance passes of a worker: half ``HEARTBEAT_TIMEOUT``.

    A killed work horse's job can be reclaimed once its heartbeat is stale; a scheduler
    killed with it is started again within about that time (two passes at most), so the
    job's retry does not wait for RQ's default 10-minute pass.
    """
    return max(1, math.ceil(settings.heartbeat_timeout / 2))


class ReportWorker(Worker):
    """RQ's worker, telling the running work horse to stop at its next checkpoint on a
    warm shutdown (RQ itself would wait for the job to end), and running its maintenance
    pass on time while idle."""

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
    connection = worker_container(Backend.RQ).rq_connection
    worker = ReportWorker(
        [rq_queue(connection, settings, q) for q in queues],
        connection=connection,
        serializer=JSONSerializer,
        name=name,
        maintenance_interval=maintenance_interval(settings),
    )
    worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level.upper())
    return 0
