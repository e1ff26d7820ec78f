"""The Prometheus instruments: every metric family the platform records, with its buckets.

Defined once, at import (the pool gauges on first use, see :func:`pool_gauges`); what feeds
them lives in :mod:`app.core.metrics`, which re-exports them.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

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

_pool_gauges: tuple[Gauge, Gauge] | None = None
_pool_lock = threading.Lock()


def pool_gauges() -> tuple[Gauge, Gauge]:
    """``db_connection_pool_size`` and ``db_connection_pool_available``, made on first use.

    Both are per process: a pool belongs to one process (each uvicorn worker, Celery child
    and RQ worker has its own; an RQ work horse publishes none, see
    :func:`app.db.metrics.silence_pool`). Merged, the size is the largest pool of a live process
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
