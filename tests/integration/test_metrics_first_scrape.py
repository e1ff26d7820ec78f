"""Metrics from the first scrape: every series the alert rules and the dashboards read
exists, at 0, in the very first scrape of a freshly started API, Celery worker and RQ
worker (real processes, started by the project's CLIs, before any job ran).

The selectors are read from the shipped files (``deploy/prometheus/alerts.yml``,
``deploy/grafana/dashboards/*.json``): each metric name with its matchers, and the labels
its query groups by. For a label with a known vocabulary (report types, backends, final
statuses, fallback reasons, Beat tasks, ...) every value the matchers allow must be there,
so ``sum by (job_type, backend) (rate(report_jobs_retries_total[5m]))`` has a series for
each report type and backend before the first retry.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from app.db.migrations import upgrade
from app.domain.queues import Backend, Queue, ReportType
from app.services.housekeeping import CLEANUP, DAILY, HEALTH, RECOVER

from tests.conftest import fresh_pg_database
from tests.e2e.server import free_port
from tests.integration.ops import Samples, scrape, start_api, stop_api
from tests.integration.workers import (
    ROOT,
    base_env,
    celery_worker,
    delete_redis_keys,
    rq_worker,
    worker_env,
)

pytestmark = pytest.mark.timeout(180)

_SELECTOR = re.compile(r"\b((?:report|http|db)_[a-z_]+)(?:\{([^}]*)\})?")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|on|ignoring)\s*\(([^)]*)\)")
_SUFFIXES = ("_bucket", "_count", "_sum")

#: Every value a label can take before anything ran (the queue of report jobs: reports).
VOCABULARY: dict[str, set[str]] = {
    "job_type": {t.value for t in ReportType},
    "backend": {b.value for b in Backend},
    "queue": {Queue.REPORTS.value},
    "status": {"completed", "failed", "cancelled"},
    "from": {Backend.CELERY.value, Backend.RQ.value},
    "to": {b.value for b in Backend},
    "reason": {"circuit_open", "broker_unreachable", "no_worker", "not_enabled", "other"},
    "task": {CLEANUP, HEALTH, RECOVER, DAILY},
    "outcome": {"done", "skipped", "failed"},
    "operation": {"select", "insert", "update", "delete", "other"},
}
#: The API's queue gauges: every queue, for each broker enabled here (no inline: it is off).
QUEUE_GAUGES: dict[str, set[str]] = {
    "queue": {q.value for q in Queue},
    "backend": {Backend.CELERY.value, Backend.RQ.value},
}
#: Series the API computes when it is scraped, from the ledger and its settings.
API_ONLY = {
    "report_jobs_time_limit_seconds",
    "report_queue_depth",
    "report_queue_workers",
    "report_circuit_state",
}
#: Made by requests (the endpoint and status are the request's): present from the second
#: scrape, the first one being a request; rate() needs two samples anyway.
PER_REQUEST = {
    "http_requests_total",
    "http_request_duration_seconds",
    "http_request_size_bytes",
    "http_response_size_bytes",
    "http_requests_in_progress",
}
#: Set by the 5-minute health check only: a 0 before it would read "down".
NOT_BEFORE_A_CHECK = {"report_component_up"}


def shipped_queries() -> list[str]:
    rules = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    for path in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            exprs.extend(target["expr"] for target in panel.get("targets", []))
    return exprs


def selectors() -> list[tuple[str, str, dict[str, tuple[str, str]], set[str]]]:
    """(expr, metric, matchers, grouping labels) of every metric selector of every query."""
    found = []
    for expr in shipped_queries():
        grouping = {
            label.strip()
            for labels in _GROUPING.findall(expr)
            for label in labels.split(",")
            if label.strip() and label.strip() != "le"
        }
        for metric, inside in _SELECTOR.findall(expr):
            matchers = {m[0]: (m[1], m[2]) for m in _MATCHER.findall(inside or "")}
            found.append((expr, metric, matchers, grouping))
    return found


def family(name: str) -> str:
    return next((name.removesuffix(s) for s in _SUFFIXES if name.endswith(s)), name)


def _allowed(value: str, matcher: tuple[str, str] | None) -> bool:
    if matcher is None:
        return True
    op, pattern = matcher
    hit = re.fullmatch(pattern, value) is not None if "~" in op else value == pattern
    return hit if op in ("=", "=~") else not hit


def missing_series(
    samples: Samples, metric: str, matchers: dict[str, tuple[str, str]], grouping: set[str]
) -> list[str]:
    """What the query would not find in ``samples``: the metric, or label combinations."""
    rows = [dict(labels) for name, labels in samples if name == metric]
    if not rows:
        return [metric]
    if family(metric) in PER_REQUEST:  # which routes and statuses: the requests decide
        return []
    vocabulary = {**VOCABULARY, **(QUEUE_GAUGES if metric.startswith("report_queue_") else {})}
    rows = [r for r in rows if all(_allowed(r.get(k, ""), m) for k, m in matchers.items())]
    grouped = sorted(label for label in grouping if any(label in r for r in rows))
    checked = [label for label in grouped if label in vocabulary]
    present = {tuple(r.get(label, "") for label in checked) for r in rows}
    wanted = [
        combo
        for combo in itertools.product(*(sorted(vocabulary[label]) for label in checked))
        if all(_allowed(v, matchers.get(label)) for label, v in zip(checked, combo, strict=True))
        and not (
            "from" in checked
            and "to" in checked
            and combo[checked.index("from")] == combo[checked.index("to")]
        )
    ]
    return [f"{metric}{dict(zip(checked, c, strict=True))}" for c in wanted if c not in present]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    prefix = f"f{secrets.token_hex(3)}-"
    data = tmp_path_factory.mktemp("first-scrape")
    with fresh_pg_database("first_scrape") as url:
        upgrade(url)
        env = worker_env(base_env(url, data, prefix), INLINE_FALLBACK="false")
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each master makes its own
        yield env
        delete_redis_keys(prefix)


def test_the_shipped_queries_read_these_series() -> None:
    """The parser sees what the files use (a query it could not read would check nothing)."""
    metrics = {family(metric) for _, metric, _, _ in selectors()}
    assert "report_jobs_retries_total" in metrics
    assert len(metrics) >= 12, metrics
    known = (
        API_ONLY
        | PER_REQUEST
        | NOT_BEFORE_A_CHECK
        | {
            "report_jobs_total",
            "report_jobs_duration_seconds",
            "report_jobs_active",
            "report_jobs_retries_total",
            "report_jobs_queue_wait_seconds",
            "report_dispatch_fallbacks_total",
            "report_periodic_runs_total",
            "report_traffic_rollbacks_total",
            "db_query_duration_seconds",
            "db_connection_pool_size",
            "db_connection_pool_available",
        }
    )
    assert metrics <= known, metrics - known  # a new metric in a query: say where it lives


@pytest.mark.timeout(180)
def test_every_series_of_the_alerts_and_dashboards_is_in_the_first_scrape(
    env: dict[str, str], work_dir: Path
) -> None:
    api_env = {**env, "DISPATCH_BACKEND": "auto"}
    celery_env = {**env, "METRICS_PORT": str(free_port())}
    rq_env = {**env, "METRICS_PORT": str(free_port())}
    server = start_api(api_env, work_dir / "api.log")
    try:
        first = {"api": scrape(f"{server.url}/metrics")}
        second_api = scrape(f"{server.url}/metrics")
    finally:
        stop_api(server)
    for _ in celery_worker(celery_env, work_dir, concurrency=1):
        first["celery worker"] = scrape(f"http://127.0.0.1:{celery_env['METRICS_PORT']}/metrics")
    for _ in rq_worker(rq_env, work_dir):
        first["rq worker"] = scrape(f"http://127.0.0.1:{rq_env['METRICS_PORT']}/metrics")

    missing: dict[str, set[str]] = {}
    for process, samples in first.items():
        for expr, metric, matchers, grouping in selectors():
            name = family(metric)
            if name in NOT_BEFORE_A_CHECK or (process != "api" and name in API_ONLY | PER_REQUEST):
                continue
            view = second_api if name in PER_REQUEST else samples
            for gap in missing_series(view, metric, matchers, grouping):
                missing.setdefault(process, set()).add(f"{gap}  <- {expr}")
    assert not missing, json.dumps({k: sorted(v) for k, v in missing.items()}, indent=1)
    # Created, not just present: every job series starts at 0.
    for process, samples in first.items():
        jobs = {k: v for k, v in samples.items() if k[0].startswith("report_jobs_total")}
        assert jobs, process
        assert set(jobs.values()) == {0.0}, (process, jobs)
