"""The router: the one :class:`~app.domain.ports.JobDispatcher`, choosing among backends.

For each job, in order:

1. the preferred broker backend (Celery or RQ, by the traffic split) when its broker
   answers and a worker consumes the job's queue; then the other one;
2. inline, where the settings allow it (the development default), or the in-process
   backend forced (``sync``, ``asyncio``: never chosen otherwise);
3. the preferred broker that answers, even with no worker: the job waits durably and
   queue status shows the missing worker;
4. otherwise :class:`~app.domain.errors.BackendUnavailable` (503).

:data:`CELERY_AVAILABLE` is the operator's Celery switch, read at each choice: ``None``
detects (the probes), ``False`` takes Celery out of routing, ``True`` assumes it ready.

Every answer comes from cached probes: choosing never waits on a broker for more than
the first probe (about a second), and never hangs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from app.dispatch.availability import BackendState
from app.dispatch.base import BackendAdapter, BrokeredBackend
from app.domain.errors import BackendUnavailable
from app.domain.jobs import ReportJob
from app.domain.ports import WorkerCount
from app.domain.queues import Backend
from app.domain.traffic import TrafficSplit

log = logging.getLogger(__name__)

#: The Celery switch, seeded from ``CELERY_AVAILABLE`` (:func:`set_celery_available`) and
#: read at every choice, so patching it in-process reroutes the next job: ``None``: detected
#: by the probes; ``False``: Celery takes no new job (it keeps running what it holds);
#: ``True``: Celery is taken as ready without a probe (an open circuit still counts).
CELERY_AVAILABLE: bool | None = None

_ASSUMED = BackendState(True, 1, "")
_SWITCHED_OFF = BackendState(False, 0, "switched off (CELERY_AVAILABLE=false)")


def set_celery_available(value: bool | None) -> None:
    """Seed the Celery switch (the ``CELERY_AVAILABLE`` setting; unset: detection)."""
    global CELERY_AVAILABLE
    CELERY_AVAILABLE = value


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """Settings of the choice: the traffic split (the dial's value), inline, forcing."""

    split: TrafficSplit = field(default_factory=lambda: TrafficSplit(100))
    inline_allowed: bool = False
    forced: Backend | None = None
    first_probe_wait: float = 1.0  # seconds one choice may wait for the brokers' first probes

    def prefers_celery(self, job: ReportJob) -> bool:
        """Deterministic by job id: the same job always lands on the same side."""
        return job.id.int % 100 < self.split.share(job.report_type)


@dataclass(frozen=True, slots=True)
class Fallback:
    """A job that did not go to its preferred backend, and why."""

    preferred: Backend
    chosen: Backend
    reason: str


FallbackListener = Callable[[Fallback], None]


class Router:
    """Picks a backend per job and hands the job to it."""

    def __init__(
        self,
        brokers: Sequence[BrokeredBackend],
        *,
        inline: BackendAdapter | None = None,
        policy: RoutingPolicy | None = None,
        on_fallback: FallbackListener | None = None,
    ) -> None:
        self._brokers = {b.backend: b for b in brokers}
        self._inline = inline
        self.policy = policy or RoutingPolicy(inline_allowed=inline is not None)
        self._listeners: list[FallbackListener] = [on_fallback] if on_fallback else []
        self._fallbacks: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    # -- observability hooks

    def add_fallback_listener(self, listener: FallbackListener) -> None:
        """Called on every fallback (the metrics layer counts them)."""
        self._listeners.append(listener)

    def fallback_counts(self) -> dict[tuple[str, str, str], int]:
        """Fallbacks so far, by (from, to, reason kind)."""
        with self._lock:
            return dict(self._fallbacks)

    # -- JobDispatcher

    def choose(self, job: ReportJob) -> Backend:
        """The backend for ``job``, in the module's order; a fallback is logged and counted.

        Raises:
            BackendUnavailable: no backend can take the job now (each one's reason named).
        """
        switch = CELERY_AVAILABLE
        order = self._order(job)
        for broker in order:  # probes run concurrently: the first wait bounds them all
            broker.monitor.start()
        local = self._inline.backend if self._inline is not None else Backend.INLINE
        preferred = order[0].backend if order else local
        states: dict[Backend, BackendState] = {}
        deadline = time.monotonic() + self.policy.first_probe_wait
        for broker in order:
            wait = max(0.0, deadline - time.monotonic())
            states[broker.backend] = self._state(broker, job, wait, switch)
            if states[broker.backend].ready:
                return self._chosen(job, preferred, broker.backend, states)
        inline = self._inline if self._inline_allowed() else None
        if inline is not None and inline.available(job.queue):
            return self._chosen(job, preferred, inline.backend, states)
        for broker in order:
            if states[broker.backend].reachable:
                return self._chosen(job, preferred, broker.backend, states)
        reasons = "; ".join(f"{b}: {s.reason}" for b, s in states.items()) or "none enabled"
        log.warning(
            "report_job.dispatch.unavailable",
            extra={"job_id": str(job.id), "queue": job.queue.value, "reasons": reasons},
        )
        raise BackendUnavailable(f"No backend can take a {job.queue} job now ({reasons}).")

    def dispatch(self, job: ReportJob) -> None:
        """Hand the (committed) job to the adapter of ``job.backend``.

        Raises:
            BackendUnavailable: that backend is not enabled here, or did not take the job.
        """
        adapter = self._adapter(job.backend)
        if adapter is None:
            raise BackendUnavailable(f"The {job.backend} backend is not enabled here.")
        adapter.dispatch(job)
        log.info(
            "report_job.dispatched",
            extra={"job_id": str(job.id), "backend": job.backend, "queue": job.queue.value},
        )

    def cancel(self, job: ReportJob) -> None:
        """The best-effort backstop of the job's backend; nothing if it is not enabled here."""
        adapter = self._adapter(job.backend)
        if adapter is not None:
            adapter.cancel(job)

    def workers(self) -> Sequence[WorkerCount]:
        """Live workers of every enabled backend, per queue."""
        adapters: list[BackendAdapter] = list(self._brokers.values())
        if self._inline is not None:
            adapters.append(self._inline)
        return [count for adapter in adapters for count in adapter.workers()]

    # -- internals

    def _adapter(self, backend: Backend | None) -> BackendAdapter | None:
        if self._inline is not None and backend is self._inline.backend:
            return self._inline
        return self._brokers.get(backend) if backend else None

    def _inline_allowed(self) -> bool:
        forced = self.policy.forced
        if forced is not None:  # forced onto the in-process backend (inline, sync, asyncio)
            return self._inline is not None and forced is self._inline.backend
        return self.policy.inline_allowed

    @staticmethod
    def _state(
        broker: BrokeredBackend, job: ReportJob, wait: float, switch: bool | None
    ) -> BackendState:
        """The broker's cached state, unless the Celery switch decides without a probe."""
        if broker.backend is Backend.CELERY and switch is not None:
            if switch is False:
                return _SWITCHED_OFF
            if broker.circuit.available():
                return _ASSUMED
        return broker.state(job.queue, wait=wait)

    def _order(self, job: ReportJob) -> list[BrokeredBackend]:
        forced = self.policy.forced
        if forced is not None:
            return [self._brokers[forced]] if forced in self._brokers else []
        first, second = (
            (Backend.CELERY, Backend.RQ)
            if self.policy.prefers_celery(job)
            else (Backend.RQ, Backend.CELERY)
        )
        return [self._brokers[b] for b in (first, second) if b in self._brokers]

    def _chosen(
        self,
        job: ReportJob,
        preferred: Backend,
        chosen: Backend,
        states: Mapping[Backend, BackendState],
    ) -> Backend:
        if chosen is not preferred:
            state = states.get(preferred)
            reason = state.reason if state else "not enabled"
            if chosen in states and not states[chosen].ready:
                reason += f"; no worker on {chosen} either: the job waits in its queue"
            self._record_fallback(job, Fallback(preferred, chosen, reason))
        elif chosen in states and not states[chosen].ready:
            log.warning(
                "report_job.dispatch.no_worker",
                extra={"job_id": str(job.id), "backend": chosen.value, "queue": job.queue.value},
            )
        return chosen

    def _record_fallback(self, job: ReportJob, fallback: Fallback) -> None:
        kind = fallback.reason.split(" (", 1)[0].split(";", 1)[0]
        with self._lock:
            self._fallbacks[(fallback.preferred.value, fallback.chosen.value, kind)] += 1
        log.warning(
            "report_job.dispatch.fallback",
            extra={
                "job_id": str(job.id),
                "from": fallback.preferred.value,
                "to": fallback.chosen.value,
                "reason": fallback.reason,
            },
        )
        for listener in self._listeners:
            try:
                listener(fallback)
            except Exception:
                log.exception("report_job.dispatch.fallback_listener_failed")
