"""The composition root: the only place that picks adapters from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from functools import cached_property, partial
from typing import Any

import redis
from celery import Celery
from redis import DriverInfo, Redis
from sqlalchemy import Engine

from app.api.ratelimit import RateLimiter
from app.core.celery_app import create_celery_app
from app.core.circuit import CircuitBreaker
from app.core.config import Environment, Settings, get_settings
from app.core.metrics import (
    MetricsObserver,
    MetricsOpsRecorder,
    MetricsTrafficRecorder,
    count_fallback,
    record_circuit,
)
from app.core.observers import FanOut, LoggingObserver
from app.db.api_keys import SqlApiKeyRepository
from app.db.console import SqlConsoleRepository
from app.db.emails import SqlEmailDeliveryRepository
from app.db.housekeeping import SqlHousekeepingRepository
from app.db.migrations import current_revision, head_revision
from app.db.repository import SqlJobRepository
from app.db.schedules import SqlScheduleRepository
from app.db.session import adopt_connection, make_engine, make_sessions
from app.db.traffic import SqlTrafficRepository
from app.dispatch.asyncio_dispatcher import AsyncioDispatcher
from app.dispatch.base import BrokeredBackend, InProcessBackend
from app.dispatch.celery_dispatcher import CeleryDispatcher
from app.dispatch.inline_dispatcher import InlineDispatcher, inline_worker_alive
from app.dispatch.router import Router, RoutingPolicy, set_celery_available
from app.dispatch.rq_dispatcher import RqDispatcher, redis_client
from app.dispatch.sync_dispatcher import SyncDispatcher
from app.domain.errors import AppError, LedgerUnavailable, Misconfigured
from app.domain.jobs import Backend, RetryPolicy, worker_name
from app.domain.mail import Mailer
from app.domain.ports import ArtifactStore
from app.domain.traffic import GuardPolicy, TrafficSplit
from app.mail.files import FileMailer
from app.mail.smtp import SmtpMailer
from app.reports import default_renderers
from app.services.deps import Deps, JobPolicy, Mailing, MailPolicy
from app.services.health import Check, HealthService
from app.services.housekeeping import Housekeeping, HousekeepingPolicy
from app.services.pipeline import run_pipeline
from app.services.recovery import RecoveryReport, recover_unfinished
from app.services.schedules import SchedulePolicy, Scheduling
from app.services.ticker import Ticker
from app.services.traffic import TrafficDial
from app.storage.local import LocalArtifactStore
from app.webhooks import HttpCallbackSender


class SchemaNotReady(AppError):
    code = "SCHEMA_NOT_READY"


@dataclass
class Container:
    """Everything a process built from the settings; ``close()`` releases it."""

    settings: Settings
    engine: Engine
    deps: Deps
    inline: InProcessBackend | None  # the inline pool, or the sync or asyncio backend
    brokers: list[BrokeredBackend] = field(default_factory=list)
    pid: int = field(default_factory=os.getpid)

    @cached_property
    def api_keys(self) -> SqlApiKeyRepository:
        return SqlApiKeyRepository(make_sessions(self.engine))

    @cached_property
    def rate_limiter(self) -> RateLimiter:
        """The API's limit per caller: RATE_LIMIT_REQUESTS per RATE_LIMIT_WINDOW, in Redis
        (under QUEUE_PREFIX, as the queues: environments sharing a Redis keep apart)."""
        return RateLimiter(
            capacity=self.settings.rate_limit_requests,
            window=self.settings.rate_limit_window,
            redis_url=self.settings.redis_url or None,
            prefix=f"ratelimit:{self.settings.queue_prefix}",
        )

    @cached_property
    def rq_connection(self) -> Redis:
        """An RQ worker's connection: no socket timeout, its dequeue blocks for a while.

        Its driver info is given, not looked up: redis-py otherwise reads its own version
        from the installed package's metadata for every new connection, and each work
        horse opens one (~7 ms a job under cProfile, benchmarks/profiles/rq_horse_before.txt).
        """
        return Redis.from_url(
            self.settings.redis_url,
            socket_connect_timeout=5,
            driver_info=DriverInfo(lib_version=redis.__version__),
        )

    @cached_property
    def console(self) -> SqlConsoleRepository:
        return SqlConsoleRepository(self.engine, make_sessions(self.engine))

    @cached_property
    def health(self) -> HealthService:
        """The ledger and every enabled broker, and every circuit breaker of this process."""
        checks: dict[str, Check] = {
            "database": self.deps.repo.ping,
            "storage": self.deps.store.ping,
        }
        for broker in self.brokers:
            checks[f"broker.{broker.backend.value}"] = partial(
                broker.ping, self.settings.health_timeout
            )
        return HealthService(checks, self._circuit_states, self.settings.health_timeout)

    def _circuit_states(self) -> dict[str, str]:
        breakers: list[CircuitBreaker] = [broker.circuit for broker in self.brokers]
        if isinstance(self.deps.callbacks, HttpCallbackSender):
            breakers.extend(self.deps.callbacks.circuits)
        return {breaker.name: breaker.state.value for breaker in breakers}

    @cached_property
    def housekeeping(self) -> Housekeeping:
        """What the Beat tasks (and the daily figures route) need besides the deps."""
        settings = self.settings
        return Housekeeping(
            ops=SqlHousekeepingRepository(make_sessions(self.engine)),
            policy=HousekeepingPolicy(
                retention=timedelta(days=settings.retention_days),
                queued_after=timedelta(seconds=settings.recovery_queued_after),
                zone=settings.stats_timezone,
            ),
            recorder=MetricsOpsRecorder(),
            probe=self.health.components,
        )

    @cached_property
    def scheduling(self) -> Scheduling:
        """The schedules in the ledger, and the floor and default zone of a new one."""
        return Scheduling(
            repo=SqlScheduleRepository(self.engine),
            policy=SchedulePolicy(
                min_interval=timedelta(seconds=self.settings.schedule_min_interval_seconds),
                default_zone=self.settings.stats_timezone,
            ),
        )

    def ticker(self) -> Ticker | None:
        """The periodic tick on a timer in this process (the API's, see API_TICKER); None on
        a test's ledger (no schema)."""
        if not isinstance(self.deps.repo, SqlJobRepository):
            return None
        return Ticker(
            deps=self.deps,
            kit=self.housekeeping,
            scheduling=self.scheduling,
            interval=self.settings.api_ticker_seconds,
        )

    @cached_property
    def traffic(self) -> TrafficDial | None:
        """The runtime traffic dial over the ledger; None on a test's ledger (no schema)."""
        if not isinstance(self.deps.repo, SqlJobRepository):
            return None
        settings = self.settings
        return TrafficDial(
            repo=SqlTrafficRepository(make_sessions(self.engine)),
            initial=settings.traffic_split,
            guard=GuardPolicy(
                enabled=settings.traffic_guard_enabled,
                window=timedelta(seconds=settings.traffic_guard_window),
                min_jobs=settings.traffic_guard_min_jobs,
                max_failure_delta=settings.traffic_guard_max_failure_delta,
                max_wait_ratio=settings.traffic_guard_max_wait_ratio,
                min_wait_seconds=settings.traffic_guard_min_wait_seconds,
            ),
            apply=self._route_by,
            recorder=MetricsTrafficRecorder(),
            clock=self.deps.clock,
        )

    def _route_by(self, split: TrafficSplit) -> None:
        """Make the router prefer Celery by ``split`` from the next job on."""
        if isinstance(self.deps.dispatcher, Router):
            router = self.deps.dispatcher
            router.policy = replace(router.policy, split=split)

    @property
    def router(self) -> Router:
        assert isinstance(self.deps.dispatcher, Router)
        return self.deps.dispatcher

    def check_schema(self) -> None:
        """Refuse to run against a database whose schema is not at the migrations' head."""
        if not isinstance(self.deps.repo, SqlJobRepository):
            return  # a test's ledger: no schema
        current = current_revision(self.engine)
        head = head_revision(self.settings.database_url)
        if current != head:
            raise SchemaNotReady(
                f"The database schema is at {current or 'nothing'}, not {head}: "
                "run `python manage.py migrate` (or `make migrate`) first."
            )

    def recover(self) -> RecoveryReport | None:
        """Re-run or fail the jobs a previous process of this host left unfinished on its
        in-process backend (inline, sync or asyncio: whichever this process runs)."""
        if self.inline is None:
            return None
        return recover_unfinished(
            deps=self.deps, backend=self.inline.backend, worker_alive=inline_worker_alive
        )

    def after_fork(self, backend: Backend, lent: tuple[Any, float] | None = None) -> None:
        """In a forked child: own database connections (starting with ``lent``, a
        connection the parent lends it and since when it is idle), own worker id."""
        self.engine.dispose(close=False)
        if lent is not None:
            adopt_connection(self.engine, *lent)
        self.deps = replace(self.deps, worker_id=worker_name(backend))
        self.pid = os.getpid()

    def close(self) -> None:
        if self.inline is not None:
            self.inline.shutdown()
        for broker in self.brokers:
            broker.close()
        if "rq_connection" in self.__dict__:  # built by an RQ worker only
            self.rq_connection.close()
        self.engine.dispose()


@contextmanager
def api_key_repository(settings: Settings) -> Iterator[SqlApiKeyRepository]:
    """The API keys, for the CLI: one connection, no backends."""
    engine = make_engine(settings.database_url, pool_size=1, max_overflow=0, metered=False)
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
    inline = _in_process(settings, loop)
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


def celery_worker_app(settings: Settings | None = None) -> Celery:
    """The Celery app of the workers, Beat and Flower: every task and the Beat schedule."""
    from app.workers.beat_schedule import BEAT_SCHEDULE, register_system_tasks
    from app.workers.celery_tasks import register_report_tasks

    settings = settings or get_settings()
    app = create_celery_app(settings, role="worker")
    app.conf.beat_schedule = BEAT_SCHEDULE
    register_report_tasks(app)
    register_system_tasks(app)
    return app


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
    engine = make_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
    )
    retry = RetryPolicy(settings.retry_backoff_base, settings.retry_backoff_max)
    brokers = [] if "dispatcher" in overrides else _brokers(settings)
    forced = None if settings.dispatch_backend == "auto" else Backend(settings.dispatch_backend)
    set_celery_available(settings.celery_available)
    policy = RoutingPolicy(
        split=settings.traffic_split,
        inline_allowed=settings.inline_allowed,
        forced=forced,
        first_probe_wait=settings.first_probe_wait,
    )
    deps = Deps(
        repo=SqlJobRepository(engine),
        dispatcher=Router(brokers, inline=inline, policy=policy, on_fallback=count_fallback),
        store=overrides.get("store") or artifact_store(settings, verify=verify_store),
        renderers=default_renderers(),
        observer=FanOut([LoggingObserver(), MetricsObserver()]),
        policy=JobPolicy(
            max_attempts=settings.max_attempts,
            retry=retry,
            progress_interval=settings.progress_interval,
            heartbeat_timeout=settings.heartbeat_timeout,
            callback_attempts=settings.callback_max_attempts,
            lost_worker_checks=settings.lost_worker_checks,
            defer_max_seconds=settings.defer_max_seconds,
            defer_budget_seconds=settings.defer_budget_seconds,
            max_recipients=settings.email_max_recipients,
        ),
        worker_id=worker,
        stopping=stopping,
        callbacks=_callbacks(settings),
        # a test's own ledger (``repo`` given) has no deliveries table: no emails either
        mail=None if "repo" in overrides else _mailing(settings, engine),
    )
    deps = replace(deps, **overrides)
    return Container(settings=settings, engine=engine, deps=deps, inline=inline, brokers=brokers)


def artifact_store(settings: Settings, *, verify: bool = False) -> ArtifactStore:
    """The local directory, or the S3 bucket.

    With ``verify`` (the API's start-up, and the CLI's before a worker starts), the bucket
    is asked for now: a missing one or refused credentials raise ``Misconfigured``. A
    worker's own container, built at its first job, does not ask: a storage outage then
    is the attempt's to retry (``StorageUnavailable``), not a configuration error.
    """
    if settings.storage_backend == "local":
        return LocalArtifactStore(settings.artifacts)
    from app.storage.s3 import S3ArtifactStore, s3_client  # boto3: only where it is used

    if not settings.s3_bucket:
        raise Misconfigured("STORAGE_BACKEND=s3 needs S3_BUCKET.")
    client = partial(
        s3_client,
        region=settings.s3_region,
        path_style=settings.s3_path_style,
        timeout=settings.s3_timeout,
    )
    store = S3ArtifactStore(
        client(endpoint_url=settings.s3_endpoint_url),
        bucket=settings.s3_bucket,
        scratch=settings.data_dir / "scratch",
        multipart_threshold=settings.s3_multipart_threshold,
        signer=client(endpoint_url=settings.s3_public_url) if settings.s3_public_url else None,
    )
    if verify:
        store.verify()
    return store


def _in_process(
    settings: Settings, loop: asyncio.AbstractEventLoop | None
) -> InProcessBackend | None:
    """The backend running jobs in the API process: forced sync or asyncio, else the
    inline pool where allowed."""
    if settings.dispatch_backend == "sync":
        return SyncDispatcher(
            slots=settings.enqueue_slots, wait_budget=settings.defer_budget_seconds
        )
    if settings.dispatch_backend == "asyncio":
        return AsyncioDispatcher(settings.inline_workers, loop)
    return InlineDispatcher(settings.inline_workers) if settings.inline_allowed else None


def _brokers(settings: Settings) -> list[BrokeredBackend]:
    mode = settings.dispatch_backend
    brokers: list[BrokeredBackend] = []
    if mode == "celery" or (mode == "auto" and settings.celery_enabled):
        brokers.append(
            CeleryDispatcher(
                create_celery_app(settings), settings, breaker=_breaker(settings, "broker.celery")
            )
        )
    if mode == "rq" or (mode == "auto" and settings.rq_enabled):
        connection = redis_client(settings.redis_url, settings.broker_timeout)
        breaker = _breaker(settings, "broker.rq")
        brokers.append(RqDispatcher(connection, settings, breaker=breaker))
    return brokers


def _breaker(settings: Settings, name: str) -> CircuitBreaker:
    """A breaker named ``name`` whose state feeds the circuit metrics."""
    return CircuitBreaker(
        settings.circuit_failures,
        settings.circuit_reset_seconds,
        name=name,
        listener=record_circuit,
    )


def mailer(settings: Settings) -> Mailer:
    """MAIL_BACKEND: the SMTP server, or ``.eml`` files in the outbox."""
    if settings.mail_backend == "files":
        return FileMailer(settings.outbox)
    return SmtpMailer(
        settings.smtp_host,
        settings.smtp_port,
        security=settings.smtp_security,
        user=settings.smtp_user,
        password=settings.smtp_password,
        timeout=settings.smtp_timeout,
    )


def _mailing(settings: Settings, engine: Engine) -> Mailing:
    return Mailing(
        mailer=mailer(settings),
        deliveries=SqlEmailDeliveryRepository(engine),
        policy=MailPolicy(
            sender=settings.mail_from,
            base_url=settings.base_url,
            max_attempts=settings.email_max_attempts,
            attach_max_bytes=settings.email_attach_max_bytes,
            # a sender is presumed dead once its exchanges (each SMTP_TIMEOUT) are long over
            lease=timedelta(seconds=max(60.0, 10 * settings.smtp_timeout)),
        ),
    )


def _callbacks(settings: Settings) -> HttpCallbackSender | None:
    if not settings.callback_allowed_hosts:
        return None
    if settings.environment is Environment.PRODUCTION and not settings.callback_secret:
        raise Misconfigured("CALLBACK_SECRET is required in production when callbacks are on.")
    return HttpCallbackSender(
        allowed_hosts=settings.callback_allowed_hosts,
        secret=settings.callback_secret,
        timeout=settings.callback_timeout,
        circuit_failures=settings.circuit_failures,
        circuit_reset_seconds=settings.circuit_reset_seconds,
        on_circuit=record_circuit,
    )
