"""Raw no-op job bodies shared by raw Celery and raw RQ (imports only redis: cheap to fork).

Each job records (sent, started, finished) wall-clock times in the Redis list
``<RAW_QUEUE>:results``. :func:`rq_worker` runs raw RQ jobs in the platform's own worker.
"""

from __future__ import annotations

import json
import os
import time

from redis import Redis

REDIS_URL = os.environ.get("RAW_REDIS_URL", "redis://127.0.0.1:6379/10")
QUEUE = os.environ.get("RAW_QUEUE", "raw")
_redis: Redis | None = None


def record(sent: float) -> None:
    global _redis
    started = time.time()
    if _redis is None:
        _redis = Redis.from_url(REDIS_URL)
    _redis.rpush(f"{QUEUE}:results", json.dumps([sent, started, time.time()]))


def rq_noop(sent: float) -> None:
    record(sent)


def rq_worker() -> None:
    """Consume ``RAW_QUEUE`` with the platform's RQ worker class, as ``manage.py rq-worker``
    runs it (fork per job, JSON, scheduler on, ``LOG_LEVEL``), without the platform's
    container: only the job differs. Needs ``backend/`` on ``PYTHONPATH``; start it as
    ``python -c "import raw_jobs; raw_jobs.rq_worker()"`` so the work horses inherit this
    module.
    """
    from app.cli.rq_worker import ReportWorker
    from rq import Queue
    from rq.serializers import JSONSerializer

    connection = Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    worker = ReportWorker(
        [Queue(QUEUE, connection=connection, serializer=JSONSerializer)],
        connection=connection,
        serializer=JSONSerializer,
    )
    worker.work(with_scheduler=True, logging_level=os.environ.get("LOG_LEVEL", "WARNING").upper())
