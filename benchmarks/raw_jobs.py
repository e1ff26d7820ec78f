"""Raw no-op job bodies shared by raw Celery and raw RQ (imports only redis: cheap to fork).

Each job records (sent, started, finished) wall-clock times in the Redis list
``<RAW_QUEUE>:results``.
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
