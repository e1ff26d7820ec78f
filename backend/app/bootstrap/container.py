"""What a process built from the settings, and what it builds later on demand."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from typing import Any

import redis
from redis import DriverInfo, Redis
from sqlalchemy import Engine

from app.api.ratelimit import RateLimiter
from app.core.circuit import CircuitBreaker
from app.core.config import Settings
from app.core.metrics import MetricsOpsRecorder, MetricsTrafficRecorder
from app.db.api_keys import SqlApiKeyRepository
from app.db.console import SqlConsoleRepository
from app.db.housekeeping import SqlHousekeepingRepository
from app.db.metrics import silence_pool
from app.db.migrations import current_revision, head_revision
from app.db.repository import SqlJobRepository
from app.db.schedules import SqlScheduleRepository
from app.db.session import adopt_connection, make_sessions
from app.db.traffic import SqlTrafficRepository
from app.dispatch.base import BrokeredBackend, InProcessBackend
from app.dispatch.inline_dispatcher import inline_worker_alive
from app.dispatch.router import Router
from app.domain.errors import AppError
from app.domain.queues import Backend, worker_name
from app.domain.traffic import TrafficSplit
from app.services.deps import Deps
from app.services.health import Check, HealthService
from app.services.housekeeping import Housekeeping
from app.services.recovery import RecoveryReport, recover_unfinished
from app.services.schedules import Scheduling
from app.services.ticker import Ticker
from app.services.traffic import TrafficDial
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
        """The API's limit per caller, in Redis (see :meth:`RateLimiter.of`)."""
        return RateLimiter.of(self.settings.security, self.settings.brokers)

    @cached_property
    def rq_connection(self) -> Redis:
        """An RQ worker's connection: no socket timeout, its dequeue blocks for a while.

        Its driver info is given, not looked up: redis-py otherwise reads its own version
        from the installed package's metadata for every new connection, and each work
        horse opens one (~7 ms a job under cProfile, benchmarks/profiles/rq_horse_before.txt).
        """
        return Redis.from_url(
            self.settings.brokers.redis_url,
            socket_connect_timeout=5,
            driver_info=DriverInfo(lib_version=redis.__version__),
        )

    @cached_property
    def console(self) -> SqlConsoleRepository:
        return SqlConsoleRepository(self.engine, make_sessions(self.engine))

    @cached_property
    def health(self) -> HealthService:
        """The ledger and every enabled broker, and every circuit breaker of this process."""
        timeout = self.settings.operations.health_timeout
        checks: dict[str, Check] = {
            "database": self.deps.repo.ping,
            "storage": self.deps.store.ping,
        }
        for broker in self.brokers:
            checks[f"broker.{broker.backend.value}"] = partial(broker.ping, timeout)
        return HealthService(checks, self._circuit_states, timeout)

    def _circuit_states(self) -> dict[str, str]:
        breakers: list[CircuitBreaker] = [broker.circuit for broker in self.brokers]
        if isinstance(self.deps.callbacks, HttpCallbackSender):
            breakers.extend(self.deps.callbacks.circuits)
        return {breaker.name: breaker.state.value for breaker in breakers}

    @cached_property
    def housekeeping(self) -> Housekeeping:
        """What the Beat tasks (and the daily figures route) need besides the deps."""
        return Housekeeping(
            ops=SqlHousekeepingRepository(make_sessions(self.engine)),
            policy=self.settings.operations.policy(),
            recorder=MetricsOpsRecorder(),
            probe=self.health.components,
        )

    @cached_property
    def scheduling(self) -> Scheduling:
        """The schedules in the ledger, and the floor and default zone of a new one."""
        settings = self.settings
        return Scheduling(
            repo=SqlScheduleRepository(self.engine),
            policy=settings.schedules.policy(operations=settings.operations),
        )

    def ticker(self) -> Ticker | None:
        """The periodic tick on a timer in this process (the API's, see API_TICKER); None on
        a test's ledger (no schema).
        """
        if not isinstance(self.deps.repo, SqlJobRepository):
            return None
        return Ticker(
            deps=self.deps,
            kit=self.housekeeping,
            scheduling=self.scheduling,
            interval=self.settings.schedules.api_ticker_seconds,
        )

    @cached_property
    def traffic(self) -> TrafficDial | None:
        """The runtime traffic dial over the ledger; None on a test's ledger (no schema)."""
        if not isinstance(self.deps.repo, SqlJobRepository):
            return None
        return TrafficDial(
            repo=SqlTrafficRepository(make_sessions(self.engine)),
            initial=self.settings.routing.traffic_split,
            guard=self.settings.traffic.policy(),
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
        head = head_revision(self.settings.ledger.database_url)
        if current != head:
            raise SchemaNotReady(
                f"The database schema is at {current or 'nothing'}, not {head}: "
                "run `python manage.py migrate` (or `make migrate`) first."
            )

    def recover(self) -> RecoveryReport | None:
        """Re-run or fail the jobs a previous process of this host left unfinished on its
        in-process backend (inline, sync or asyncio: whichever this process runs).
        """
        if self.inline is None:
            return None
        return recover_unfinished(
            deps=self.deps, backend=self.inline.backend, worker_alive=inline_worker_alive
        )

    def after_fork(self, backend: Backend, lent: tuple[Any, float] | None = None) -> None:
        """In a forked child: own database connections (starting with ``lent``, a
        connection the parent lends it and since when it is idle), own worker id.
        """
        self.engine.dispose(close=False)
        if backend is Backend.RQ:  # a work horse: one job, then gone
            silence_pool(self.engine)
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
