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

from prometheus_client import Counter, Gauge, Histogram

from app.domain.jobs import Backend, ReportJob, ReportType
from app.domain.traffic import GUARD_CAUSES, ChangeKind, TrafficSplit

JOB_LABELS = ("job_type", "queue", "backend")

#: Run time buckets: fine up to the 30 minutes a heavy report takes, then up to the hard
#: time limits (about an hour), so the "p95 above 80 % of the limit" alert can fire.
DURATION_BUCKETS = (
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1200,
    1800,
    2700,
    3600,
    5400,
)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Body sizes, 64 B to 64 MiB by factors of 4: a JSON request is under the body limit (64 KiB
#: by default), a report download may weigh tens of MiB.
SIZE_BUCKETS = tuple(float(64 * 4**i) for i in range(11))
#: One ledger statement: well under a millisecond warm, up to seconds for a big cleanup.
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

JOBS_TOTAL = Counter(
    "report_jobs_total",
    "Jobs that reached a final status (completed, failed, cancelled).",
    ["job_type", "status", "queue", "backend"],
)
JOB_DURATION = Histogram(
    "report_jobs_duration_seconds",
    "Run time (started to finished) of completed and failed jobs.",
    JOB_LABELS,
    buckets=DURATION_BUCKETS,
)
JOBS_ACTIVE = Gauge(
    "report_jobs_active", "Jobs running now.", JOB_LABELS, multiprocess_mode="livesum"
)
JOB_RETRIES = Counter("report_jobs_retries_total", "Attempts that will be retried.", JOB_LABELS)
QUEUE_WAIT = Histogram(
    "report_jobs_queue_wait_seconds",
    "Time from enqueue to the start of the first attempt.",
    JOB_LABELS,
    buckets=WAIT_BUCKETS,
)
FALLBACKS = Counter(
    "report_dispatch_fallbacks_total",
    "Jobs sent to another backend than the preferred one.",
    ["from", "to", "reason"],
)
#: ``endpoint`` is the route template (``/api/v1/reports/jobs/{job_id}``), never the path.
HTTP_LABELS = ("method", "endpoint")
HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests answered.", [*HTTP_LABELS, "status"])
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency.",
    HTTP_LABELS,
    buckets=HTTP_BUCKETS,
)
HTTP_REQUEST_SIZE = Histogram(
    "http_request_size_bytes",
    "HTTP request body size: its Content-Length, or the bytes read of a chunked body.",
    HTTP_LABELS,
    buckets=SIZE_BUCKETS,
)
HTTP_RESPONSE_SIZE = Histogram(
    "http_response_size_bytes",
    "HTTP response body size: the bytes sent.",
    HTTP_LABELS,
    buckets=SIZE_BUCKETS,
)
HTTP_IN_PROGRESS = Gauge(
    "http_requests_in_progress",
    "HTTP requests being served.",
    HTTP_LABELS,
    multiprocess_mode="livesum",
)
DB_OPERATIONS = ("select", "insert", "update", "delete", "other")
DB_QUERY_DURATION = Histogram(
    "db_query_duration_seconds",
    "Time of one database statement (a cursor execute), by operation.",
    ["operation"],
    buckets=QUERY_BUCKETS,
)
PERIODIC_RUNS = Counter(
    "report_periodic_runs_total",
    "Periodic (Beat) task runs: done, skipped (another run had the slot) or failed.",
    ["task", "outcome"],
)
COMPONENT_UP = Gauge(
    "report_component_up",
    "1 when the last health check found the component answering, else 0.",
    ["component"],
    multiprocess_mode="mostrecent",
)
COMPONENT_LATENCY = Gauge(
    "report_component_latency_seconds",
    "Latency of the component in the last health check.",
    ["component"],
    multiprocess_mode="mostrecent",
)
CIRCUIT_STATE = Gauge(
    "report_circuit_state",
    "Circuit breaker state: 0 closed, 1 half-open, 2 open (the worst of the live processes).",
    ["circuit"],
    multiprocess_mode="livemax",
)
CIRCUIT_OPENED = Counter(
    "report_circuit_opened_total",
    "Transitions of a circuit breaker to open (publishes or callbacks refused at once).",
    ["circuit"],
)
CIRCUIT_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
TRAFFIC_SHARE = Gauge(
    "report_traffic_celery_percent",
    "Share of jobs (percent) preferring Celery over RQ, per report type, as applied.",
    ["job_type"],
    multiprocess_mode="mostrecent",
)
TRAFFIC_CHANGES = Counter(
    "report_traffic_changes_total",
    "Changes of the traffic dial: seed, operator, rollback (counted by the process that made it).",
    ["kind"],
)
TRAFFIC_ROLLBACKS = Counter(
    "report_traffic_rollbacks_total",
    "Automatic rollbacks of the traffic dial by the guard, by cause.",
    ["cause"],
)
EMAILS = Counter(
    "report_emails_total",
    "Emails of finished jobs, one per recipient and attempt: sent, retrying (a temporary "
    "failure, tried again) or failed (refused for good, or out of attempts).",
    ["status"],
)
EMAIL_STATUSES = ("sent", "retrying", "failed")

_FINAL = {"completed", "failed", "cancelled", "dispatch_failed"}

_pool_gauges: tuple[Gauge, Gauge] | None = None
_pool_lock = threading.Lock()


def pool_gauges() -> tuple[Gauge, Gauge]:
    """``db_connection_pool_size`` and ``db_connection_pool_available``, made on first use.

    Both are per process: a pool belongs to one process (each uvicorn worker, Celery child
    and RQ work horse has its own). Merged, the size is the largest pool of a live process
    (``livemax``) and the available connections the fewest any live process has left
    (``livemin``): 0 means some process waits for a connection. Unlabelled, a metric makes
    its value when it is made, so these are made by the first engine, once the CLIs have
    switched multiprocess mode on, never at import.
    """
    global _pool_gauges
    with _pool_lock:
        if _pool_gauges is None:
            size = Gauge(
                "db_connection_pool_size",
                "Connections the database pool may hold at once (pool size + max overflow).",
                multiprocess_mode="livemax",
            )
            available = Gauge(
                "db_connection_pool_available",
                "Connections the pool can hand out without waiting (size - checked out).",
                multiprocess_mode="livemin",
            )
            _pool_gauges = (size, available)
        return _pool_gauges


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
    """:class:`~app.domain.ports.TrafficRecorder`: the applied split and the dial's changes."""

    def applied(self, split: TrafficSplit) -> None:
        for job_type in ReportType:
            TRAFFIC_SHARE.labels(job_type.value).set(split.share(job_type))

    def changed(self, kind: ChangeKind, cause: str | None = None) -> None:
        TRAFFIC_CHANGES.labels(kind.value).inc()
        if cause is not None:
            TRAFFIC_ROLLBACKS.labels(cause).inc()


class MetricsOpsRecorder:
    """:class:`~app.domain.ports.OpsRecorder`: periodic runs and component health as metrics."""

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
