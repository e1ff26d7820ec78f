"""Celery backend: publish job ids to the dedicated queues by explicit task names.

The API never imports the task functions: it sends ``reports.run_report`` (and, for a
job with a callback, the chain render → ``documents.postprocess`` →
``notifications.notify``) by name, with the job id as the only argument.
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
from app.core.config import Settings
from app.dispatch.availability import Availability
from app.dispatch.base import BrokeredBackend
from app.domain.jobs import Backend, Queue, ReportJob


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

    def __init__(self, app: Celery, settings: Settings, *, breaker: CircuitBreaker) -> None:
        self.app = app
        self._settings = settings
        self._names = {queue_name(settings, q): q for q in Queue}
        super().__init__(
            breaker=breaker,
            probe_interval=settings.availability_cache_seconds,
            probe_wait=1.0,
            cancel_grace=settings.cancel_grace_seconds,
        )

    def probe(self) -> Availability:
        connection = self.app.connection_for_write()
        try:
            workers = inspect_workers(
                self.app, self._settings.broker_timeout, connection=connection
            )
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
        connection = self.app.connection_for_write()
        try:
            _connect(connection, timeout)
        finally:
            _release_later(connection)

    def publish(self, job: ReportJob) -> None:
        limit = self._settings.hard_time_limit(job.report_type.value)
        render = self._step(
            RUN_REPORT,
            job,
            job.queue,
            time_limit=limit,
            soft_time_limit=self._settings.soft_time_limit(job.report_type.value),
        )
        if job.callback_url is None:
            render.apply_async()
            return
        chain(
            render,
            self._step(POSTPROCESS, job, Queue.DOCUMENTS, suffix="_document"),
            self._step(NOTIFY, job, Queue.NOTIFICATIONS, suffix="_notify"),
        ).apply_async()

    def withdraw(self, job: ReportJob) -> None:
        """Add the id to the workers' revoked lists; the ledger claim is the real guarantee."""
        self.app.control.revoke(str(job.id))

    def stop_running(self, job: ReportJob) -> None:
        """The job did not stop at its checkpoint: terminate its worker process."""
        self.app.control.revoke(str(job.id), terminate=True, signal="SIGTERM")

    def _step(
        self, task: str, job: ReportJob, queue: Queue, *, suffix: str = "", **options: Any
    ) -> Signature[Any]:
        return self.app.signature(
            task,
            args=(str(job.id),),
            immutable=True,
            options={
                "task_id": f"{job.id}{suffix}",
                "queue": queue_name(self._settings, queue),
                "routing_key": queue_name(self._settings, queue),
                "priority": message_priority(self._settings, queue),
                **options,
            },
        )
