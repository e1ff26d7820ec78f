"""Worker entrypoints share one container per process, built on first use.

Prefork (Celery) and fork-per-job (RQ) children inherit their parent's container, if it
built one: the first call in a new process gives it its own database connections.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from app import bootstrap
from app.core.logging import job_id_var
from app.domain.queues import Backend
from app.services.deps import Deps
from app.workers import shutdown

_lock = threading.Lock()
_container: bootstrap.Container | None = None
#: The database connection the next forked child adopts, and since when it is idle.
_lent: tuple[Any, float] | None = None


def lend_to_next_child(driver: Any | None, idle_since: float = 0.0) -> None:
    """The next child forked from this process adopts ``driver`` as its first connection
    (an RQ worker lends its work horses one warm connection, see ``cli.rq_worker``)."""
    global _lent
    _lent = None if driver is None else (driver, idle_since)


def worker_container(backend: Backend) -> bootstrap.Container:
    """This process's container (built once; refreshed after a fork)."""
    global _container
    with _lock:
        if _container is None:
            _container = bootstrap.build_worker(backend, stopping=shutdown.stopping)
        elif _container.pid != os.getpid():
            _container.after_fork(backend, _lent)
        return _container


def worker_deps(backend: Backend) -> Deps:
    return worker_container(backend).deps


def close_worker_container() -> None:
    global _container
    with _lock:
        if _container is not None and _container.pid == os.getpid():
            _container.close()
        _container = None


@contextmanager
def job_context(job_id: str) -> Iterator[UUID]:
    """Parse the id a broker carried and tag every log line with it."""
    token = job_id_var.set(job_id)
    try:
        yield UUID(job_id)
    finally:
        job_id_var.reset(token)
