"""Celery backend: publish job ids to the dedicated queues by explicit task names.

The API never imports the task functions: it sends each step of the job's pipeline by
task name (:data:`TASKS`), chained, with the job id as the only argument.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery, chain
from celery.canvas import Signature
from kombu import Connection
from kombu.exceptions import LimitExceeded

from app.core.celery_app import NOTIFY, POSTPROCESS, RUN_REPORT, message_priority, queue_name
from app.core.circuit import CircuitBreaker
from app.core.logging import Trace
from app.core.settings.jobs import JobSettings
from app.core.settings.routing import RoutingSettings
from app.core.settings.runtime import BrokerSettings
from app.dispatch.availability import Availability
from app.dispatch.base import BrokeredBackend
from app.domain.jobs import ReportJob
from app.domain.queues import Backend, Queue, Step

#: The task that runs each pipeline step.
TASKS = {Step.RENDER: RUN_REPORT, Step.DOCUMENT: POSTPROCESS, Step.NOTIFY: NOTIFY}


@dataclass(frozen=True, slots=True)
class CeleryWorkerInfo:
    """One Celery worker as ``inspect`` sees it."""

    name: str
    queues: tuple[str, ...]
    active: int
    reserved: int


def inspect_workers(
    app: Celery, timeout: float, *, details: bool = False, connection: Connection | None = None
) -> list[CeleryWorkerInfo]:
    """Ask every worker which queues it consumes (and, with ``details``, what it runs).

    Raises:
        Exception: the broker cannot be reached within ``timeout`` (kombu's own errors).
    """
    if connection is None:
        with app.connection_for_write() as conn:
            return inspect_workers(app, timeout, details=details, connection=conn)
    _connect(connection, timeout)
    inspect = app.control.inspect(timeout=timeout, connection=connection)
    queues: Mapping[str, Any] = inspect.active_queues() or {}
    active: Mapping[str, Any] = (inspect.active() or {}) if details and queues else {}
    reserved: Mapping[str, Any] = (inspect.reserved() or {}) if details and queues else {}
    return [
        CeleryWorkerInfo(
            name=name,
            queues=tuple(sorted(q["name"] for q in consumed or ())),
            active=len(active.get(name) or ()),
            reserved=len(reserved.get(name) or ()),
        )
        for name, consumed in sorted(queues.items())
    ]


def _connect(connection: Connection, timeout: float) -> None:
    """Connect once, retrying at most once, within ``timeout``; raise on failure."""
    retry: dict[str, Any] = {"interval_step": 0.1, "timeout": timeout}  # stubs say int
    connection.ensure_connection(max_retries=1, interval_start=0, **retry)


def _release_later(connection: Connection) -> None:
    """Closing a Redis connection waits out its pending BRPOP: do it off the clock."""
    threading.Thread(target=connection.release, daemon=True).start()


class CeleryDispatcher(BrokeredBackend):
    """:class:`~app.dispatch.base.BrokeredBackend` over a Celery app."""

    backend = Backend.CELERY

    def __init__(
        self,
        app: Celery,
        brokers: BrokerSettings,
        *,
        jobs: JobSettings,
        routing: RoutingSettings,
        breaker: CircuitBreaker,
    ) -> None:
        """Publish on ``app``.

        ``brokers``: queue names, priorities, timeouts; ``jobs``: the time limits and the
        stop backstop's grace; ``routing``: how often the workers are probed.
        """
        self.app = app
        # Celery imports its control module (kombu.pidbox, kombu.matcher) on first use; two
        # threads doing so at once (the availability probe, a cancel) can fail the import
        # (KeyError: 'kombu.matcher', seen as "broker unreachable"): import it once, here.
        _ = app.control
        self._brokers = brokers
        self._jobs = jobs
        self._names = {queue_name(brokers, q): q for q in Queue}
        super().__init__(
            breaker=breaker,
            probe_interval=routing.availability_cache_seconds,
            probe_wait=routing.first_probe_wait,
            cancel_grace=jobs.cancel_grace_seconds,
        )

    def probe(self) -> Availability:
        """Inspect the workers: how many consume each of our queues.

        While every producer of the publish pool is busy, the last answer stands (the
        broker is taking our messages, so it is not called unreachable).
        """
        connection = self.app.connection_for_write()
        try:
            workers = inspect_workers(self.app, self._brokers.broker_timeout, connection=connection)
        except LimitExceeded:
            # kombu's broadcast takes a producer from the pool the publishes use (shared by
            # broker URL) without waiting: every producer busy means the broker is taking
            # our messages. Keep the last answer rather than call it unreachable.
            return self.monitor.get()
        finally:
            _release_later(connection)
        consumers: Counter[Queue] = Counter()
        for worker in workers:
            consumers.update(self._names[n] for n in worker.queues if n in self._names)
        return Availability(True, dict(consumers))

    def ping(self, timeout: float) -> None:
        """Raise unless a connection to the broker opens within ``timeout`` seconds."""
        connection = self.app.connection_for_write()
        try:
            _connect(connection, timeout)
        finally:
            _release_later(connection)

    def publish(self, job: ReportJob) -> None:
        """The job's :attr:`~ReportJob.pipeline` as one message, or a chain of its steps."""
        steps = [self._signature(step, job) for step in job.pipeline]
        (steps[0] if len(steps) == 1 else chain(*steps)).apply_async()

    def withdraw(self, job: ReportJob) -> None:
        """Add the id to the workers' revoked lists; the ledger claim is the real guarantee."""
        self.app.control.revoke(str(job.id))

    def stop_running(self, job: ReportJob) -> None:
        """The job did not stop at its checkpoint: terminate its worker process."""
        self.app.control.revoke(str(job.id), terminate=True, signal="SIGTERM")

    def _signature(self, step: Step, job: ReportJob) -> Signature[Any]:
        queue = queue_name(self._brokers, step.queue(job))
        options: dict[str, Any] = {
            "task_id": step.message_id(job),
            "queue": queue,
            "routing_key": queue,
            "priority": message_priority(self._brokers, step.queue(job)),
            # every step's message carries the ids; a retry's message copies them
            "headers": Trace.current(job.id).fields(),
        }
        if step is Step.RENDER:
            options["time_limit"] = self._jobs.hard_time_limit(job.report_type.value)
            options["soft_time_limit"] = self._jobs.soft_time_limit(job.report_type.value)
        return self.app.signature(TASKS[step], args=(str(job.id),), immutable=True, options=options)
