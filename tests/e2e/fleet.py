"""A migration stack of its own for the control-room tests: a fresh PostgreSQL ledger, a
real Celery and a real RQ worker, and API processes whose dial and guard act within a
second (jobs prefer RQ until a test moves the dial)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from app.db.migrations import upgrade

from tests.conftest import fresh_pg_database
from tests.e2e.server import LiveServer
from tests.integration.ops import start_api, stop_api
from tests.integration.workers import (
    base_env,
    celery_worker,
    delete_redis_keys,
    rq_worker,
    worker_env,
)


@contextmanager
def migration_fleet(
    data: Path, *, apis: int, **settings: str
) -> Iterator[tuple[list[LiveServer], str]]:
    """``apis`` API processes (and the ledger's URL); ``settings`` add to the shared ones."""
    prefix = f"f{secrets.token_hex(3)}-"
    with ExitStack() as stack:
        url = stack.enter_context(fresh_pg_database(data.name))
        upgrade(url)
        env = worker_env(
            base_env(url, data, prefix),
            CELERY_TRAFFIC_PERCENT="0",
            MAX_ATTEMPTS="1",
            INLINE_FALLBACK="false",
            DISPATCH_BACKEND="auto",
            TRAFFIC_POLL_SECONDS="0.5",
            TRAFFIC_GUARD_INTERVAL="0.5",
            TRAFFIC_GUARD_MAX_FAILURE_DELTA="0.3",
            RATE_LIMIT_REQUESTS="1000000",
            LOG_FORMAT="json",
            **settings,
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        stack.enter_context(contextmanager(celery_worker)(env, data, concurrency=1))
        stack.enter_context(contextmanager(rq_worker)(env, data))
        servers = []
        for n in range(apis):
            server = start_api(env, data / f"api-{n}.log")
            stack.callback(stop_api, server)
            servers.append(server)
        stack.callback(delete_redis_keys, prefix)
        yield servers, url
