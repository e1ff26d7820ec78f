"""Metric values, not just names: after N jobs of known types and outcomes, the scraped
counters and histogram counts equal N per label set — across the children of a prefork
Celery worker (recycled every 2 tasks) and across 2 uvicorn workers (one of them killed)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from app import bootstrap
from app.core.logging import request_id_var
from app.db.repository import SqlJobRepository
from app.db.session import make_engine
from app.domain.queues import ReportType
from app.domain.states import JobStatus
from app.services.cancel import cancel_job
from app.services.enqueue import enqueue_report
from prometheus_client import REGISTRY

from tests.conftest import fresh_pg_database
from tests.e2e.server import free_port
from tests.integration.ops import (
    clean_env,
    migrate,
    scrape,
    start_api,
    stop_api,
    total,
    value,
    wait_until,
)
from tests.integration.workers import (
    WorkerProcess,
    base_env,
    celery_worker,
    delete_redis_keys,
    rq_worker,
    running_with_progress,
    settings_from,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.timeout(180)

DUMMY = {"job_type": "dummy", "queue": "reports", "backend": "celery"}
PDF = {"job_type": "pdf", "queue": "reports", "backend": "celery"}


@pytest.fixture(scope="module")
def celery_env(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    prefix = f"m{secrets.token_hex(3)}-"
    data = tmp_path_factory.mktemp("metrics-celery")
    multiproc = data / "prometheus"
    multiproc.mkdir()
    (multiproc / "counter_999999.db").write_bytes(b"stale")  # a previous run's file
    env = worker_env(
        base_env(pg_url, data, prefix),
        METRICS_PORT=str(free_port()),
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
        MAX_ATTEMPTS="2",
        LOG_FORMAT="json",
    )
    yield env
    delete_redis_keys(prefix)


@pytest.fixture(scope="module")
def prefork(celery_env: dict[str, str], log_dir: Path) -> Iterator[WorkerProcess]:
    yield from celery_worker(
        celery_env, log_dir, concurrency=2, extra=("--max-tasks-per-child", "2")
    )


def test_prefork_worker_metrics_are_exact(
    celery_env: dict[str, str], prefork: WorkerProcess
) -> None:
    assert not (Path(celery_env["PROMETHEUS_MULTIPROC_DIR"]) / "counter_999999.db").exists()
    container = bootstrap.build(settings_from(celery_env, dispatch_backend="celery"))
    cancelled_before = REGISTRY.get_sample_value("report_jobs_total", _cancelled()) or 0.0
    token = request_id_var.set("req-metrics-1")
    try:
        plan = [
            *[(ReportType.DUMMY, {}, "completed")] * 4,
            *[(ReportType.PDF, {"pages": 1}, "completed")] * 2,
            *[(ReportType.DUMMY, {"simulate_failures": 5}, "failed")] * 2,
            (ReportType.DUMMY, {"simulate_failures": 1}, "completed"),
        ]
        jobs = [
            (enqueue_report(deps=container.deps, report_type=t, params=p).job.id, outcome)
            for t, p, outcome in plan
        ]
        slow = enqueue_report(
            deps=container.deps, report_type=ReportType.DUMMY, params={"processing_time": 20}
        ).job
        wait_for(container.deps.repo, slow.id, running_with_progress, timeout=30)
        cancel_job(deps=container.deps, job_id=slow.id)
        finished = [wait_for(container.deps.repo, job_id, timeout=40) for job_id, _ in jobs]
        assert [j.status.value for j in finished] == [outcome for _, outcome in jobs]
        wait_for(container.deps.repo, slow.id, lambda j: j.progress > 0 and not _running(j))
    finally:
        request_id_var.reset(token)
        container.close()

    url = f"http://127.0.0.1:{celery_env['METRICS_PORT']}/metrics"

    def settled() -> bool:
        return total(scrape(url), "report_jobs_active") == 0

    wait_until(settled, 15, interval=0.2)  # the cancelled render stops at its next checkpoint
    samples = scrape(url)
    assert value(samples, "report_jobs_total", status="completed", **DUMMY) == 5
    assert value(samples, "report_jobs_total", status="completed", **PDF) == 2
    assert value(samples, "report_jobs_total", status="failed", **DUMMY) == 2
    assert total(samples, "report_jobs_total") == 9  # the cancel is counted by the API side
    assert value(samples, "report_jobs_retries_total", **DUMMY) == 3
    assert value(samples, "report_jobs_duration_seconds_count", **DUMMY) == 7
    assert value(samples, "report_jobs_duration_seconds_count", **PDF) == 2
    assert value(samples, "report_jobs_duration_seconds_bucket", le="1800.0", **PDF) == 2
    assert value(samples, "report_jobs_queue_wait_seconds_count", **DUMMY) == 8
    assert value(samples, "report_jobs_queue_wait_seconds_count", **PDF) == 2
    cancelled_after = REGISTRY.get_sample_value("report_jobs_total", _cancelled()) or 0.0
    assert cancelled_after - cancelled_before == 1

    workers = {j.worker for j in finished}
    assert len(workers) >= 3, workers  # children were replaced: their counts survived them
    _assert_log_context(prefork, finished[0].id)


def _cancelled() -> dict[str, str]:
    return {"status": "cancelled", **DUMMY}


def _running(job: object) -> bool:
    return getattr(job, "status", None) is JobStatus.RUNNING


def _assert_log_context(worker: WorkerProcess, job_id: UUID) -> None:
    lines = [json.loads(x) for x in worker.logs().splitlines() if x.startswith("{")]
    started = [
        line
        for line in lines
        if line.get("event") == "report_job.started" and line.get("job_id") == str(job_id)
    ]
    assert started, "no report_job.started line for the job"
    line = started[0]
    assert line["request_id"] == "req-metrics-1"
    assert line["task_id"] == str(job_id)
    assert line["backend"] == "celery"
    assert line["queue"] == "reports"


# --------------------------------------------------------------------------- uvicorn


@pytest.fixture(scope="module")
def api_two_workers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, str, dict[str, str]]]:
    data = tmp_path_factory.mktemp("metrics-api")
    with fresh_pg_database("metrics_api") as url:
        env = clean_env(
            DATABASE_URL=url,
            DATA_DIR=str(data),
            ENVIRONMENT="test",
            DISPATCH_BACKEND="inline",
            INLINE_WORKERS="2",
            MAX_ATTEMPTS="1",
            LOG_FORMAT="json",
        )
        migrate(env)
        server = start_api(env, data / "api.log", "--workers", "2", "--grace", "5")
        try:
            yield server.url, url, {"X-API-Key": server.api_key or ""}
        finally:
            stop_api(server)


def test_two_uvicorn_workers_add_up(api_two_workers: tuple[str, str, dict[str, str]]) -> None:
    base, database_url, key = api_two_workers
    engine = make_engine(database_url)
    repo = SqlJobRepository(engine)
    ids: dict[str, bool] = {}
    pids: set[str] = set()
    while len(pids) < 2 or len(ids) < 12:
        assert len(ids) < 60, f"the kernel never spread connections: {pids}"
        failing = len(ids) % 4 == 3
        query = "?simulate_failures=1" if failing else ""
        # A new connection per request: the two processes share the listening socket.
        response = httpx.post(f"{base}/api/v1/reports/dummy{query}", headers=key, timeout=10)
        assert response.status_code == 200, response.text
        ids[response.json()["id"]] = failing
        pids.add(_worker_pid(repo, list(ids)[-1]))
    polls = 0

    def finished(job_id: str) -> bool:
        nonlocal polls
        polls += 1
        body = httpx.get(f"{base}/api/v1/reports/jobs/{job_id}", headers=key, timeout=10)
        return body.json()["status"] in ("completed", "failed")

    for job_id in ids:
        wait_until(lambda job_id=job_id: finished(job_id), 30, interval=0.05)
    assert len({_worker_pid(repo, job_id) for job_id in ids}) == 2
    engine.dispose()

    labels = {"job_type": "dummy", "queue": "reports", "backend": "inline"}
    failed = sum(ids.values())
    completed = len(ids) - failed
    views = [scrape(f"{base}/metrics") for _ in range(4)]
    for samples in views:  # whichever process answers, the same figures
        assert (
            value(samples, "report_jobs_total", status="completed", **labels) == len(ids) - failed
        )
        assert value(samples, "report_jobs_total", status="failed", **labels) == failed
        assert value(samples, "report_jobs_duration_seconds_count", **labels) == len(ids)
        assert value(samples, "report_jobs_queue_wait_seconds_count", **labels) == len(ids)
        endpoint = "/api/v1/reports/dummy"
        assert value(
            samples, "http_requests_total", method="POST", endpoint=endpoint, status="200"
        ) == len(ids)
        endpoint = "/api/v1/reports/jobs/{job_id}"
        assert (
            value(samples, "http_requests_total", method="GET", endpoint=endpoint, status="200")
            >= polls
        )
        assert value(samples, "report_queue_workers", queue="reports", backend="inline") == 2
    assert httpx.get(f"{base}/no/such/route", timeout=5).status_code == 404
    samples = scrape(f"{base}/metrics")
    unmatched = {"method": "GET", "endpoint": "unmatched", "status": "404"}
    assert value(samples, "http_requests_total", **unmatched) == 1
    assert not any("/no/such" in dict(labels).get("endpoint", "") for _, labels in samples)

    victim = int(sorted(pids)[0])
    os.kill(victim, signal.SIGKILL)  # uvicorn's supervisor starts another one
    wait_until(lambda: _answers(base), 30, interval=0.2)
    samples = scrape(f"{base}/metrics")
    assert value(samples, "report_jobs_total", status="completed", **labels) == completed
    assert value(samples, "report_jobs_duration_seconds_count", **labels) == len(ids)


def _worker_pid(repo: SqlJobRepository, job_id: str) -> str:
    """The uvicorn worker that ran the job: its inline worker id ends with the pid."""
    job = wait_for(repo, UUID(job_id), lambda j: j.worker is not None, timeout=20)
    assert job.worker is not None
    return job.worker.rsplit(":", 1)[-1]


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health/live", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


# --------------------------------------------------------------------------- RQ


def test_rq_work_horses_add_up(celery_env: dict[str, str], log_dir: Path) -> None:
    """Every RQ job runs in a forked work horse that exits; the worker serves their sum."""
    env = {
        **celery_env,
        "QUEUE_PREFIX": f"r{secrets.token_hex(3)}-",
        "METRICS_PORT": str(free_port()),
        "PROMETHEUS_MULTIPROC_DIR": "",
    }
    container = bootstrap.build(settings_from(env, dispatch_backend="rq"))
    token = request_id_var.set("req-rq-1")
    try:
        for worker in rq_worker(env, log_dir):
            jobs = [
                enqueue_report(deps=container.deps, report_type=ReportType.DUMMY, params=p).job.id
                for p in ({}, {}, {"simulate_failures": 5})
            ]
            finished = [wait_for(container.deps.repo, job_id, timeout=40) for job_id in jobs]
            assert [j.status for j in finished] == [
                JobStatus.COMPLETED,
                JobStatus.COMPLETED,
                JobStatus.FAILED,
            ]
            samples = scrape(f"http://127.0.0.1:{env['METRICS_PORT']}/metrics")
            rq = {"job_type": "dummy", "queue": "reports", "backend": "rq"}
            assert value(samples, "report_jobs_total", status="completed", **rq) == 2
            assert value(samples, "report_jobs_total", status="failed", **rq) == 1
            assert value(samples, "report_jobs_retries_total", **rq) == 1
            assert value(samples, "report_jobs_duration_seconds_count", **rq) == 3
            assert total(samples, "report_jobs_active") == 0
            # Four work horses (the failed job ran twice), one set of counter and histogram
            # files beside the worker's own: the directory does not grow with the jobs.
            assert worker.process is not None
            [folder] = Path(tempfile.gettempdir()).glob(
                f"report-jobs-metrics-{worker.process.pid}-*"
            )
            for kind in ("counter", "histogram"):
                files = sorted(f.name for f in folder.glob(f"{kind}_*.db"))
                assert files == [
                    f"{kind}_{worker.process.pid}.db",
                    f"{kind}_{worker.process.pid}h.db",
                ]
            lines = [json.loads(x) for x in worker.logs().splitlines() if x.startswith("{")]
            started = [
                x
                for x in lines
                if x.get("event") == "report_job.started" and x.get("job_id") == str(jobs[0])
            ]
            assert started, worker.logs()[-3000:]
            assert started[0]["request_id"] == "req-rq-1"
            assert started[0]["task_id"] == str(jobs[0])
            assert started[0]["backend"] == "rq"
    finally:
        request_id_var.reset(token)
        container.close()
        delete_redis_keys(env["QUEUE_PREFIX"])
