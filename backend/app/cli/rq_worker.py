"""``manage.py rq-worker [QUEUES...]``: a real RQ worker (fork per job, JSON, scheduler on).

The scheduler is on so that retries with an interval (``Retry(interval=[...])``) come back.
The container is built before the worker forks, so every work horse starts warm.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from rq import Worker
from rq.serializers import JSONSerializer

from app.core.config import get_settings
from app.dispatch.rq_dispatcher import rq_queue
from app.domain.jobs import Backend, Queue
from app.workers import shutdown, worker_container


class ReportWorker(Worker):
    """RQ's worker, telling the running work horse to stop at its next checkpoint on a
    warm shutdown (RQ itself would wait for the job to end)."""

    def request_stop(self, signum: Any, frame: Any) -> None:
        shutdown.request_stop()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


def run_rq_worker(queues: list[Queue], *, name: str | None = None, burst: bool = False) -> int:
    """Consume ``queues`` (first listed first) until stopped, or until empty with ``burst``."""
    import app.workers.rq_jobs  # noqa: F401  (loaded once, before any fork)

    settings = get_settings()
    worker_container(Backend.RQ)
    connection = Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    worker = ReportWorker(
        [rq_queue(connection, settings, q) for q in queues],
        connection=connection,
        serializer=JSONSerializer,
        name=name,
    )
    worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level.upper())
    return 0
