"""The composition root: the only place that picks adapters from the settings.

:func:`build` (the API), :func:`build_worker` (a Celery or RQ worker) and the CLI's
helpers here; the :class:`~app.bootstrap.container.Container` they return in
``container``; the adapters, each built from its group or policy, in ``adapters``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields, replace
from typing import Any

from app.bootstrap.adapters import (
    artifact_store,
    brokers,
    callbacks,
    celery_app,
    in_process,
    mailer,
    mailing,
)
from app.bootstrap.container import Container, SchemaNotReady
from app.core.celery_app import queue_name
from app.core.config import Settings, get_settings
from app.core.metrics import MetricsObserver, count_fallback
from app.core.observers import FanOut, LoggingObserver
from app.db.api_keys import SqlApiKeyRepository
from app.db.repository import SqlJobRepository
from app.db.session import ledger_engine, make_engine, make_sessions
from app.dispatch.base import InProcessBackend
from app.dispatch.celery_dispatcher import CeleryWorkerInfo, inspect_workers
from app.dispatch.router import Router, set_celery_available
from app.dispatch.rq_dispatcher import RqQueueInfo, inspect_queues, redis_client
from app.domain.errors import LedgerUnavailable
from app.domain.queues import Backend, Queue, worker_name
from app.reports import default_renderers
from app.services.deps import Deps
from app.services.pipeline import run_pipeline

__all__ = [
    "Container",
    "SchemaNotReady",
    "api_key_repository",
    "artifact_store",
    "build",
    "build_worker",
    "celery_app",
    "celery_workers",
    "mailer",
    "rq_queues",
]


@contextmanager
def api_key_repository(settings: Settings) -> Iterator[SqlApiKeyRepository]:
    """The API keys, for the CLI: one connection, no backends."""
    engine = make_engine(settings.ledger.database_url, pool_size=1, max_overflow=0, metered=False)
    try:
        yield SqlApiKeyRepository(make_sessions(engine))
    finally:
        engine.dispose()


def build(
    settings: Settings | None = None,
    *,
    loop: asyncio.AbstractEventLoop | None = None,
    **overrides: Any,
) -> Container:
    """The API's container: the router over every enabled backend, probes started.

    ``loop`` is the API's event loop (the asyncio backend's tasks run on it). ``overrides``
    replace any port of the services' :class:`Deps` (``repo``, ``dispatcher``, ``store``,
    ``renderers``, ``observer``, ``callbacks``, ``clock``), so the API and its wiring run
    on a test's fakes; with ``dispatcher`` given, no broker is built.
    """
    settings = settings or get_settings()
    inline = in_process(settings, loop)
    container = _assemble(
        settings,
        inline=inline,
        worker=worker_name(inline.backend if inline else Backend.INLINE),
        stopping=inline.stopping if inline else (lambda: False),
        overrides=overrides,
        verify_store=True,
    )
    if inline is not None:
        deps = container.deps
        inline.bind(
            lambda job_id, deliveries: run_pipeline(deps=deps, job_id=job_id, deliveries=deliveries)
        )
    for broker in container.brokers:
        broker.start()
    return container


def build_worker(
    backend: Backend,
    settings: Settings | None = None,
    *,
    stopping: Callable[[], bool] = lambda: False,
) -> Container:
    """A Celery or RQ worker process's container: no inline pool, no background probes.

    ``stopping`` says when the worker is shutting down: renders stop at their next
    checkpoint and their jobs go back to the queue.
    """
    container = _assemble(
        settings or get_settings(), inline=None, worker=worker_name(backend), stopping=stopping
    )
    if isinstance(container.deps.repo, SqlJobRepository):
        # Only a head start: if the ledger is down, the first job compiles them instead.
        with contextlib.suppress(LedgerUnavailable):
            container.deps.repo.warm_up()
    return container


def celery_workers(settings: Settings, timeout: float) -> list[CeleryWorkerInfo]:
    """The Celery workers consuming any of our queues, with what they run (``status``).

    Raises:
        Exception: the broker cannot be reached within ``timeout`` (kombu's own errors).
    """
    workers = inspect_workers(celery_app(settings), timeout, details=True)
    ours = {queue_name(settings.brokers, q) for q in Queue}
    return [w for w in workers if ours & set(w.queues)]


def rq_queues(settings: Settings, timeout: float) -> list[RqQueueInfo]:
    """Depth and workers of each of our RQ queues (``status``); raises if Redis does not
    answer within ``timeout``.
    """
    connection = redis_client(settings.brokers.redis_url, timeout)
    try:
        return inspect_queues(connection, settings.brokers)
    finally:
        connection.close()


def _assemble(
    settings: Settings,
    *,
    inline: InProcessBackend | None,
    worker: str,
    stopping: Callable[[], bool],
    overrides: Mapping[str, Any] | None = None,
    verify_store: bool = False,
) -> Container:
    overrides = overrides or {}
    unknown = set(overrides) - {f.name for f in fields(Deps)}
    if unknown:
        raise TypeError(f"not a port of Deps: {', '.join(sorted(unknown))}")
    engine = ledger_engine(settings.ledger)
    policy = settings.jobs.policy(callbacks=settings.callbacks, mail=settings.mail)
    backends = [] if "dispatcher" in overrides else brokers(settings)
    set_celery_available(settings.routing.celery_available)
    router = Router(
        backends,
        inline=inline,
        policy=settings.routing.policy(process=settings.process),
        on_fallback=count_fallback,
    )
    deps = Deps(
        repo=SqlJobRepository(engine),
        dispatcher=router,
        store=overrides.get("store") or artifact_store(settings, verify=verify_store),
        renderers=default_renderers(),
        observer=FanOut([LoggingObserver(), MetricsObserver()]),
        policy=policy,
        worker_id=worker,
        stopping=stopping,
        callbacks=callbacks(settings),
        # a test's own ledger (``repo`` given) has no deliveries table: no emails either
        mail=None if "repo" in overrides else mailing(settings, engine),
    )
    deps = replace(deps, **overrides)
    return Container(settings=settings, engine=engine, deps=deps, inline=inline, brokers=backends)
