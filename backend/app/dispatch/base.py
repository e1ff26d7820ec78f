"""What the router needs from each backend adapter, and what Celery and RQ adapters share."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Protocol
from uuid import UUID

from app.core.circuit import CircuitBreaker
from app.dispatch.availability import Availability, AvailabilityMonitor, BackendState
from app.domain.errors import BackendUnavailable
from app.domain.jobs import ReportJob
from app.domain.ports import WorkerCount
from app.domain.queues import Backend, Queue

log = logging.getLogger(__name__)

#: Runs one delivery of a job (its ``deliveries`` earlier ones counted); returns the
#: seconds until it is delivered again, or None (the delivery policy of the services).
Runner = Callable[[UUID, int], float | None]


class BackendAdapter(Protocol):
    """One backend as the router sees it: whether it can take a job, and the job's sending."""

    backend: Backend

    def available(self, queue: Queue) -> bool:
        """Fast (cached) answer: can this backend run a job of ``queue`` now?"""
        ...

    def dispatch(self, job: ReportJob) -> None:
        """Hand the (committed) job to this backend.

        Raises:
            BackendUnavailable: the backend did not take the job.
        """
        ...

    def cancel(self, job: ReportJob) -> None:
        """Best-effort backstop after the ledger says cancelled (revoke, stop command)."""
        ...

    def workers(self) -> Sequence[WorkerCount]:
        """Live workers per queue, as far as this backend can tell."""
        ...


class InProcessBackend(ABC):
    """A backend that runs jobs inside the API process (inline pool, sync, asyncio).

    It is bound to the runner of one delivery (:func:`bind`), takes ``reports`` jobs
    until :func:`shutdown` begins, and tells renders when it is stopping.
    """

    backend: Backend

    def __init__(self) -> None:
        self._runner: Runner | None = None
        self._stopping = threading.Event()

    def bind(self, runner: Runner) -> None:
        """Give it the service that runs one delivery of a job."""
        self._runner = runner

    def stopping(self) -> bool:
        """Whether it is shutting down (renders stop at their next checkpoint)."""
        return self._stopping.is_set()

    def available(self, queue: Queue) -> bool:
        """Only for ``reports``, until shutdown begins."""
        return queue is Queue.REPORTS and not self._stopping.is_set()

    @abstractmethod
    def dispatch(self, job: ReportJob) -> None:
        """Start the job's deliveries (see :meth:`BackendAdapter.dispatch`)."""

    @abstractmethod
    def cancel(self, job: ReportJob) -> None:
        """Best-effort backstop after the ledger says cancelled."""

    @abstractmethod
    def workers(self) -> Sequence[WorkerCount]:
        """Live workers per queue, as far as this backend can tell."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop taking jobs; wait for running ones to stop."""


class BrokeredBackend(ABC):
    """A backend behind a broker (Celery, RQ): cached probes, a circuit breaker, a backstop.

    Subclasses say how to probe, publish and stop; this class makes sure none of it ever
    blocks a request: probes run in a monitor thread, publishes are refused at once while
    the circuit is open, and cancellation backstops run on timers.
    """

    backend: Backend

    def __init__(
        self,
        *,
        breaker: CircuitBreaker,
        probe_interval: float,
        probe_wait: float,
        cancel_grace: float,
    ) -> None:
        self._breaker = breaker
        self._probe_wait = probe_wait
        self._cancel_grace = cancel_grace
        self.monitor = AvailabilityMonitor(
            self.backend.value, self.probe, probe_interval, first_wait=probe_wait
        )

    @property
    def circuit(self) -> CircuitBreaker:
        """The breaker guarding this backend's publishes (read it; do not drive it)."""
        return self._breaker

    # -- what subclasses provide

    @abstractmethod
    def probe(self) -> Availability:
        """Ask the broker, now, whether it answers and who consumes which queue."""

    @abstractmethod
    def ping(self, timeout: float) -> None:
        """Raise unless the broker answers within ``timeout`` seconds (readiness)."""

    @abstractmethod
    def publish(self, job: ReportJob) -> None:
        """Send the job id (and its follow-ups) to the broker; raise on failure."""

    @abstractmethod
    def withdraw(self, job: ReportJob) -> None:
        """Remove a cancelled job's waiting messages, if the broker can (best effort)."""

    @abstractmethod
    def stop_running(self, job: ReportJob) -> None:
        """Stop a cancelled job still running after the grace period (best effort)."""

    # -- the adapter interface

    def state(self, queue: Queue, wait: float | None = None) -> BackendState:
        """Broker reachability and live workers for ``queue``, from the cache."""
        if not self._breaker.available():
            return BackendState(False, 0, "circuit open after failed publishes")
        seen = self.monitor.get(self._probe_wait if wait is None else wait)
        if not seen.reachable:
            return BackendState(False, 0, f"broker unreachable ({seen.error})")
        workers = seen.workers.get(queue, 0)
        return BackendState(True, workers, "" if workers else f"no worker consumes {queue}")

    def available(self, queue: Queue) -> bool:
        """Whether the circuit lets publishes through and a worker consumes ``queue`` (cached)."""
        return self.state(queue).ready

    def dispatch(self, job: ReportJob) -> None:
        """Publish the job, unless the circuit is open.

        Raises:
            BackendUnavailable: the circuit is open, or the publish failed (the breaker
                counts the failure and the broker is probed again).
        """
        if not self._breaker.allow():
            raise BackendUnavailable(f"The {self.backend} broker is failing; try again shortly.")
        try:
            self.publish(job)
        except Exception as exc:
            self._breaker.failure()
            self.monitor.refresh()
            log.warning(
                "report_job.dispatch.publish_failed",
                extra={"job_id": str(job.id), "backend": self.backend.value, "error": repr(exc)},
            )
            raise BackendUnavailable(
                f"The {self.backend} broker did not take the job: {type(exc).__name__}."
            ) from exc
        self._breaker.success()

    def cancel(self, job: ReportJob) -> None:
        """Withdraw waiting messages now; stop a still-running attempt after the grace."""
        self._later(0.0, self.withdraw, job)
        if job.started_at is not None:
            self._later(self._cancel_grace, self.stop_running, job)

    def workers(self) -> Sequence[WorkerCount]:
        """Live workers per queue, from the last probe."""
        seen = self.monitor.get(self._probe_wait)
        return [WorkerCount(self.backend, q, seen.workers.get(q, 0)) for q in Queue]

    def start(self) -> None:
        """Start probing the broker in the background."""
        self.monitor.start()

    def close(self) -> None:
        """Stop probing the broker."""
        self.monitor.stop()

    def _later(self, delay: float, action: Callable[[ReportJob], None], job: ReportJob) -> None:
        def run() -> None:
            try:
                action(job)
            except Exception:
                log.warning(
                    "report_job.cancel.backstop_failed",
                    extra={"job_id": str(job.id), "backend": self.backend.value},
                    exc_info=True,
                )

        timer = threading.Timer(delay, run)
        timer.daemon = True
        timer.start()
