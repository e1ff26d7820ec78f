"""Prometheus metrics: jobs (fed by the observer port), fallbacks, HTTP, database, circuits.

Every process that runs jobs or serves HTTP records into these module-level metrics. In a
process started by the CLIs, prometheus-client runs in multiprocess mode (see
:mod:`app.core.metrics_export`): each process writes its own files and whichever process
serves the scrape merges them, so counts stay exact across prefork children, RQ work
horses and uvicorn workers.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Protocol
from uuid import UUID

from app.core.instruments import (
    CIRCUIT_OPENED,
    CIRCUIT_STATE,
    CIRCUIT_VALUES,
    COMPONENT_LATENCY,
    COMPONENT_UP,
    DB_OPERATIONS,
    DB_QUERY_DURATION,
    DURATION_BUCKETS,
    EMAIL_STATUSES,
    EMAILS,
    FALLBACKS,
    HTTP_BUCKETS,
    HTTP_DURATION,
    HTTP_IN_PROGRESS,
    HTTP_LABELS,
    HTTP_REQUEST_SIZE,
    HTTP_REQUESTS,
    HTTP_RESPONSE_SIZE,
    JOB_DURATION,
    JOB_LABELS,
    JOB_RETRIES,
    JOBS_ACTIVE,
    JOBS_TOTAL,
    PERIODIC_RUNS,
    QUERY_BUCKETS,
    QUEUE_WAIT,
    SIZE_BUCKETS,
    TRAFFIC_CHANGES,
    TRAFFIC_ROLLBACKS,
    TRAFFIC_SHARE,
    WAIT_BUCKETS,
    pool_gauges,
)
from app.domain.jobs import ReportJob
from app.domain.queues import Backend, ReportType
from app.domain.traffic import GUARD_CAUSES, ChangeKind, TrafficSplit

#: The instruments stay importable from here, as before they moved.
__all__ = [
    "CIRCUIT_OPENED",
    "CIRCUIT_STATE",
    "CIRCUIT_VALUES",
    "COMPONENT_LATENCY",
    "COMPONENT_UP",
    "DB_OPERATIONS",
    "DB_QUERY_DURATION",
    "DURATION_BUCKETS",
    "EMAILS",
    "EMAIL_STATUSES",
    "FALLBACKS",
    "HTTP_BUCKETS",
    "HTTP_DURATION",
    "HTTP_IN_PROGRESS",
    "HTTP_LABELS",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_SIZE",
    "HTTP_RESPONSE_SIZE",
    "JOBS_ACTIVE",
    "JOBS_TOTAL",
    "JOB_DURATION",
    "JOB_LABELS",
    "JOB_RETRIES",
    "PERIODIC_RUNS",
    "QUERY_BUCKETS",
    "QUEUE_WAIT",
    "SIZE_BUCKETS",
    "TRAFFIC_CHANGES",
    "TRAFFIC_ROLLBACKS",
    "TRAFFIC_SHARE",
    "WAIT_BUCKETS",
    "pool_gauges",
]

_FINAL = {"completed", "failed", "cancelled", "dispatch_failed"}


def job_labels(job: ReportJob) -> tuple[str, str, str]:
    return job.report_type.value, job.queue.value, job.backend.value if job.backend else "none"


class _ActiveRuns:
    """The jobs this process counted as running: only the process that counted one uncounts it.

    A job cancelled while it runs, or killed by a time limit, ends without an event in the
    process that ran it; :func:`end_run` (called after each task) and the removal of dead
    processes' files keep the gauge exact.
    """

    def __init__(self) -> None:
        self._runs: dict[UUID, tuple[str, str, str]] = {}
        self._lock = threading.Lock()

    def start(self, job_id: UUID, labels: tuple[str, str, str]) -> bool:
        """Count ``job_id`` as running; False when it already was (a duplicate event)."""
        with self._lock:
            if job_id in self._runs:
                return False
            self._runs[job_id] = labels
        JOBS_ACTIVE.labels(*labels).inc()
        return True

    def end(self, job_id: UUID) -> None:
        with self._lock:
            labels = self._runs.pop(job_id, None)
        if labels is not None:
            JOBS_ACTIVE.labels(*labels).dec()


_ACTIVE = _ActiveRuns()


def end_run(job_id: UUID) -> None:
    """Stop counting ``job_id`` as running in this process (no-op when it was not)."""
    _ACTIVE.end(job_id)


class MetricsObserver:
    """:class:`~app.domain.ports.JobObserver` feeding the job metrics."""

    def job_event(self, event: str, job: ReportJob, **fields: Any) -> None:
        if event.startswith("email_"):  # one recipient's email (services.emails)
            EMAILS.labels(event.removeprefix("email_")).inc()
            return
        labels = job_labels(job)
        if event == "started":
            first = _ACTIVE.start(job.id, labels) and job.attempts == 1
            if first and job.started_at is not None:
                enqueued = job.queued_at or job.created_at
                wait = (job.started_at - enqueued).total_seconds()
                QUEUE_WAIT.labels(*labels).observe(max(wait, 0.0))
            return
        _ACTIVE.end(job.id)
        if event == "retrying":
            JOB_RETRIES.labels(*labels).inc()
        elif event in _FINAL:
            status = "failed" if event == "dispatch_failed" else event
            job_type, queue, backend = labels
            JOBS_TOTAL.labels(job_type, status, queue, backend).inc()
            if status != "cancelled" and job.started_at and job.finished_at:
                run_time = (job.finished_at - job.started_at).total_seconds()
                JOB_DURATION.labels(*labels).observe(max(run_time, 0.0))


class FallbackLike(Protocol):
    """What the router reports about a fallback (see ``app.dispatch.router.Fallback``)."""

    @property
    def preferred(self) -> Any: ...

    @property
    def chosen(self) -> Any: ...

    @property
    def reason(self) -> str: ...


_REASONS = (
    ("circuit open", "circuit_open"),
    ("broker unreachable", "broker_unreachable"),
    ("no worker", "no_worker"),
    ("not enabled", "not_enabled"),
)
FALLBACK_REASONS = (*(kind for _, kind in _REASONS), "other")


def reason_kind(reason: str) -> str:
    """A bounded label value for a router's free-text fallback reason."""
    return next((kind for prefix, kind in _REASONS if reason.startswith(prefix)), "other")


def count_fallback(fallback: FallbackLike) -> None:
    """Router fallback listener: one increment per job sent elsewhere than preferred."""
    FALLBACKS.labels(
        str(getattr(fallback.preferred, "value", fallback.preferred)),
        str(getattr(fallback.chosen, "value", fallback.chosen)),
        reason_kind(fallback.reason),
    ).inc()


def record_circuit(name: str, state: str) -> None:
    """Circuit breaker listener: the state gauge, and a count of each opening.

    Each process sets its own value; ``livemax`` shows the worst state among live
    processes (an open circuit in any uvicorn worker or Celery child reads 2) and forgets
    the values of processes that died. The breaker reports its initial state, so both
    series exist (at 0) from the moment the breaker does.
    """
    CIRCUIT_STATE.labels(name).set(CIRCUIT_VALUES[str(state)])
    opened = CIRCUIT_OPENED.labels(name)
    if state == "open":
        opened.inc()


class MetricsTrafficRecorder:
    """:class:`~app.domain.traffic.TrafficRecorder`: the applied split and the dial's changes."""

    def applied(self, split: TrafficSplit) -> None:
        for job_type in ReportType:
            TRAFFIC_SHARE.labels(job_type.value).set(split.share(job_type))

    def changed(self, kind: ChangeKind, cause: str | None = None) -> None:
        TRAFFIC_CHANGES.labels(kind.value).inc()
        if cause is not None:
            TRAFFIC_ROLLBACKS.labels(cause).inc()


class MetricsOpsRecorder:
    """:class:`~app.domain.operations.OpsRecorder`: periodic runs and health as metrics."""

    def periodic_run(self, task: str, outcome: str) -> None:
        PERIODIC_RUNS.labels(task, outcome).inc()

    def component(self, name: str, *, ok: bool, latency_s: float) -> None:
        COMPONENT_UP.labels(name).set(1.0 if ok else 0.0)
        COMPONENT_LATENCY.labels(name).set(latency_s)


#: Label values known before anything runs (see :func:`initialise_series`).
JOB_STATUSES = ("completed", "failed", "cancelled")
PERIODIC_OUTCOMES = ("done", "skipped", "failed")
#: The Beat tasks (named in ``app.services.housekeeping``, which core does not import).
PERIODIC_TASKS = (
    "system.cleanup_jobs",
    "system.health_check",
    "system.recover_jobs",
    "system.daily_stats",
)

_initialised_in: int | None = None


def initialise_series() -> None:
    """Create at 0, once per process, every labelled series the dashboards and alerts read.

    A labelled series exists only once something touched it: without this, a rate() on
    ``report_jobs_retries_total`` had no series until the first retry, and an alert or a
    panel on it showed nothing rather than 0. Created here: the job metrics for every
    report type x backend (and final status), the fallbacks for every preferred → chosen
    backend and reason, the periodic runs for every task and outcome, the traffic dial's
    changes and rollbacks, the emails by status, the statement times by operation. Not the
    health gauges (``report_component_*``): 0 would read "down" before the first check; nor
    the applied traffic share: 0 would read "all RQ"; nor the pool gauges (see
    :func:`pool_gauges`), which a process has once it has an engine.

    Call it once the value class is final (:func:`app.core.metrics_export.enable_multiprocess`
    does): a series created before multiprocess mode is on would never reach the files.
    """
    global _initialised_in
    if _initialised_in == os.getpid():
        return
    _initialised_in = os.getpid()
    queue = ReportJob.QUEUE_FOR_TYPE.value
    for job_type in ReportType:
        for backend in Backend:
            labels = (job_type.value, queue, backend.value)
            JOB_DURATION.labels(*labels)
            JOBS_ACTIVE.labels(*labels)
            JOB_RETRIES.labels(*labels)
            QUEUE_WAIT.labels(*labels)
            for status in JOB_STATUSES:
                JOBS_TOTAL.labels(job_type.value, status, queue, backend.value)
    for preferred in (Backend.CELERY, Backend.RQ):
        for chosen in Backend:
            if chosen is not preferred:
                for reason in FALLBACK_REASONS:
                    FALLBACKS.labels(preferred.value, chosen.value, reason)
    for task in PERIODIC_TASKS:
        for outcome in PERIODIC_OUTCOMES:
            PERIODIC_RUNS.labels(task, outcome)
    for kind in ChangeKind:
        TRAFFIC_CHANGES.labels(kind.value)
    for status in EMAIL_STATUSES:
        EMAILS.labels(status)
    for cause in GUARD_CAUSES:
        TRAFFIC_ROLLBACKS.labels(cause)
    for operation in DB_OPERATIONS:
        DB_QUERY_DURATION.labels(operation)
