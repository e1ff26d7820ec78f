"""``GET /metrics``: every API process's metrics plus gauges read from the ledger at scrape time.

With several uvicorn workers, whichever answers serves the same merged figures (multiprocess
mode). Queue depth and workers come from :func:`~app.services.queries.queue_status`, the
hard time limits from the settings (the p95 alert compares run times against them).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from app.api.dependencies import get_container
from app.api.errors import error_response
from app.api.observability import TrackedRoute
from app.bootstrap import Container
from app.core.metrics_export import scrape_registry
from app.domain.queues import ReportType
from app.services.queries import queue_status

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"], route_class=TrackedRoute)


class LedgerCollector:
    """Scrape-time gauges: queue depth and workers per queue and backend, time limits."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def collect(self) -> Iterable[Metric]:
        limits = GaugeMetricFamily(
            "report_jobs_time_limit_seconds",
            "Hard time limit of a report type (a render is killed past it).",
            labels=["job_type"],
        )
        for report_type in ReportType:
            hard = self._container.settings.jobs.hard_time_limit(report_type.value)
            limits.add_metric([report_type.value], hard)
        yield limits
        depth = GaugeMetricFamily(
            "report_queue_depth",
            "Jobs waiting (pending, queued, retrying) per queue and backend, from the ledger.",
            labels=["queue", "backend"],
        )
        workers = GaugeMetricFamily(
            "report_queue_workers",
            "Live workers consuming a queue, per backend.",
            labels=["queue", "backend"],
        )
        try:
            statuses = queue_status(deps=self._container.deps)
        except Exception:  # the ledger is down: the other metrics still go out
            log.warning("metrics.queue_status_failed", exc_info=True)
            return
        for status in statuses:
            labels = [status.queue.value, status.backend.value if status.backend else "none"]
            depth.add_metric(labels, status.waiting)
            if status.workers is not None:
                workers.add_metric(labels, status.workers)
        yield depth
        yield workers


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    container = get_container(request)
    token = container.settings.security.metrics_token
    if token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return error_response(
                401,
                "UNAUTHORIZED",
                "GET /metrics needs the bearer token of METRICS_TOKEN.",
                headers={"WWW-Authenticate": "Bearer"},
            )
    body = generate_latest(scrape_registry([LedgerCollector(container)]))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
