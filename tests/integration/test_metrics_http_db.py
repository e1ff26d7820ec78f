"""The production-readiness document's HTTP and database metrics, by name and labels, from
real processes: an API (``manage.py serve``, jobs inline) after a known set of requests,
then a Celery worker and an RQ worker after a job each.

``http_requests_total{method, endpoint, status}``, ``http_request_duration_seconds``,
``http_request_size_bytes``, ``http_response_size_bytes`` (API); ``db_connection_pool_size``,
``db_connection_pool_available`` and ``db_query_duration_seconds{operation}`` (API and
workers).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from app import bootstrap
from app.domain.queues import ReportType
from app.domain.states import JobStatus
from app.services.enqueue import enqueue_report

from tests.e2e.server import free_port
from tests.integration.ops import Samples, scrape, start_api, stop_api, total, value, wait_until
from tests.integration.workers import (
    base_env,
    celery_worker,
    delete_redis_keys,
    rq_worker,
    settings_from,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.timeout(180)

POOL = {"DB_POOL_SIZE": "3", "DB_MAX_OVERFLOW": "2"}
CAPACITY = 5
JOB = "/api/v1/reports/jobs/{job_id}"
HEAVY = "/api/v1/reports/heavy"
#: Each name with the label names of its samples (histograms: of ``_count``).
LABELS = {
    "http_requests_total": {"method", "endpoint", "status"},
    "http_request_duration_seconds_count": {"method", "endpoint"},
    "http_request_size_bytes_count": {"method", "endpoint"},
    "http_response_size_bytes_count": {"method", "endpoint"},
    "db_connection_pool_size": set(),
    "db_connection_pool_available": set(),
    "db_query_duration_seconds_count": {"operation"},
}
DB_NAMES = {k: v for k, v in LABELS.items() if k.startswith("db_")}


def label_names(samples: Samples, name: str) -> set[frozenset[str]]:
    return {frozenset(k for k, _ in labels) for n, labels in samples if n == name}


def assert_named(samples: Samples, names: dict[str, set[str]]) -> None:
    found = {name: label_names(samples, name) for name in names}
    assert found == {name: {frozenset(labels)} for name, labels in names.items()}, found


def assert_pool(samples: Samples) -> None:
    assert value(samples, "db_connection_pool_size") == CAPACITY
    assert 0 <= value(samples, "db_connection_pool_available") <= CAPACITY


@pytest.fixture(scope="module")
def env(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Each master makes its own metrics directory: none is inherited (set, even empty, the
    variable would put the CLI helpers' files, ``api-key create``'s, in the working dir)."""
    prefix = f"h{secrets.token_hex(3)}-"
    data = tmp_path_factory.mktemp("metrics-http-db")
    env = worker_env(base_env(pg_url, data, prefix), **POOL)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    yield env
    delete_redis_keys(prefix)


def test_api_http_and_database_metrics(env: dict[str, str], work_dir: Path) -> None:
    api_env = {**env, "DISPATCH_BACKEND": "inline"}
    server = start_api(api_env, work_dir / "api.log")
    try:
        with server.client() as http:
            body = json.dumps({"report_type": "pdf", "pages": 1}).encode()
            posted = http.post(HEAVY, content=body, headers={"Content-Type": "application/json"})
            assert posted.is_success, posted.text
            job_id = posted.json()["id"]
            gets: list[int] = []  # body sizes of every GET of the job

            def finished() -> bool:
                response = http.get(f"/api/v1/reports/jobs/{job_id}")
                assert response.status_code == 200, response.text
                gets.append(len(response.content))
                return response.json()["status"] in ("completed", "failed")

            wait_until(finished, 60, interval=0.1)
            for _ in range(3):
                finished()
            assert http.get("/no/such/path").status_code == 404
            samples = scrape(f"{server.url}/metrics")
    finally:
        stop_api(server)

    assert_named(samples, LABELS)
    job = {"method": "GET", "endpoint": JOB}
    assert value(samples, "http_requests_total", **job, status="200") == len(gets)
    assert value(samples, "http_request_duration_seconds_count", **job) == len(gets)
    assert value(samples, "http_response_size_bytes_count", **job) == len(gets)
    assert value(samples, "http_response_size_bytes_sum", **job) == sum(gets)
    assert value(samples, "http_request_size_bytes_sum", **job) == 0
    heavy = {"method": "POST", "endpoint": HEAVY}
    assert value(samples, "http_request_size_bytes_count", **heavy) == 1
    assert value(samples, "http_request_size_bytes_sum", **heavy) == len(body)
    assert value(samples, "http_response_size_bytes_sum", **heavy) == len(posted.content)
    unmatched = {"method": "GET", "endpoint": "unmatched", "status": "404"}
    assert value(samples, "http_requests_total", **unmatched) == 1
    endpoints = {dict(labels).get("endpoint") for _, labels in samples} - {None}
    assert not any(job_id in str(e) or "/no/such" in str(e) for e in endpoints), endpoints

    assert_pool(samples)
    assert value(samples, "db_query_duration_seconds_count", operation="select") > 0
    assert value(samples, "db_query_duration_seconds_count", operation="insert") > 0
    assert value(samples, "db_query_duration_seconds_count", operation="update") > 0
    assert value(samples, "db_query_duration_seconds_sum", operation="select") > 0


def _run_one_job(env: dict[str, str], backend: str) -> None:
    container = bootstrap.build(settings_from(env, dispatch_backend=backend))
    try:
        job = enqueue_report(deps=container.deps, report_type=ReportType.DUMMY, params={}).job
        assert wait_for(container.deps.repo, job.id, timeout=40).status is JobStatus.COMPLETED
    finally:
        container.close()


def assert_worker_db_metrics(samples: Samples) -> None:
    assert_named(samples, DB_NAMES)
    assert_pool(samples)
    assert value(samples, "db_query_duration_seconds_count", operation="update") > 0  # claim
    assert total(samples, "db_query_duration_seconds_count") > 0


def test_celery_worker_database_metrics(env: dict[str, str], log_dir: Path) -> None:
    worker_env_ = {**env, "METRICS_PORT": str(free_port())}
    url = f"http://127.0.0.1:{worker_env_['METRICS_PORT']}/metrics"
    for _ in celery_worker(worker_env_, log_dir, concurrency=2):
        assert_pool(scrape(url))  # the main process's pool, before any job
        _run_one_job(worker_env_, "celery")
        wait_until(lambda: value(scrape(url), "report_jobs_total", **_done("celery")) == 1, 10)
        assert_worker_db_metrics(scrape(url))


def test_rq_worker_database_metrics(env: dict[str, str], log_dir: Path) -> None:
    worker_env_ = {**env, "METRICS_PORT": str(free_port())}
    url = f"http://127.0.0.1:{worker_env_['METRICS_PORT']}/metrics"
    for _ in rq_worker(worker_env_, log_dir):
        assert_pool(scrape(url))
        _run_one_job(worker_env_, "rq")
        wait_until(lambda: value(scrape(url), "report_jobs_total", **_done("rq")) == 1, 10)
        assert_worker_db_metrics(scrape(url))


def _done(backend: str) -> dict[str, str]:
    return {"job_type": "dummy", "status": "completed", "queue": "reports", "backend": backend}
