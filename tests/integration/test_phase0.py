"""Phase 0 of the migration (``CELERY_ENABLED=false``): RQ only, as before Celery.

A real API (``manage.py serve``) and a real RQ worker, no Celery anywhere: the Celery
broker URL points at a port where nothing listens, so any use of it would show (a slow or
failed publish, a fallback, a 503 readiness). Jobs are enqueued in the RQ-era query form,
run on RQ, download with the recorded sha256, and a job with a callback goes through the
whole RQ chain (render, package, signed notification).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from app.db.migrations import upgrade
from app.webhooks import signature

from tests.conftest import fresh_pg_database
from tests.e2e.server import LiveServer, wait_for
from tests.integration.ops import clean_env, scrape, start_api, stop_api, total, wait_until
from tests.integration.workers import (
    CALLBACK_SECRET,
    DEAD_URL,
    REDIS_URL,
    CallbackReceiver,
    WorkerProcess,
    delete_redis_keys,
    start_rq_worker,
)

API = "/api/v1/reports"


@pytest.fixture
def env(work_dir: Path) -> Iterator[dict[str, str]]:
    prefix = f"p0{secrets.token_hex(3)}-"
    with fresh_pg_database("phase0") as url:
        upgrade(url)
        yield clean_env(
            DATABASE_URL=url,
            DATA_DIR=str(work_dir / "data"),
            ENVIRONMENT="test",
            REDIS_URL=REDIS_URL,
            CELERY_BROKER_URL=DEAD_URL,  # nothing listens: phase 0 must never need it
            CELERY_ENABLED="false",
            DISPATCH_BACKEND="auto",
            INLINE_FALLBACK="false",
            QUEUE_PREFIX=prefix,
            PROGRESS_INTERVAL="0.25",
            RETRY_BACKOFF_BASE="0.2",
            RETRY_BACKOFF_MAX="2",
            CALLBACK_ALLOWED_HOSTS="127.0.0.1",
            CALLBACK_SECRET=CALLBACK_SECRET,
            METRICS_PORT="0",
            RATE_LIMIT_REQUESTS="100000",
            LOG_FORMAT="text",
        )
    delete_redis_keys(prefix)


@pytest.mark.timeout(120)
def test_phase0_rq_only_runs_jobs_end_to_end(
    env: dict[str, str], work_dir: Path, receiver: CallbackReceiver
) -> None:
    worker: WorkerProcess = start_rq_worker(env, work_dir)
    api: LiveServer | None = None
    try:
        api = start_api(env, work_dir / "api.log")
        with api.client() as client:
            ready = client.get("/health/ready")
            assert ready.status_code == 200, ready.text
            health = client.get("/health").json()
            assert "broker.celery" not in str(health), health
            assert "broker.rq" in str(health), health

            started = time.monotonic()
            dummy = client.post(f"{API}/dummy?processing_time=0.5&seed=7")
            assert time.monotonic() - started < 1.5
            assert dummy.status_code == 200, dummy.text
            pdf = client.post(
                f"{API}/heavy",
                json={
                    "report_type": "pdf",
                    "pages": 3,
                    "seed": 2,
                    "callback_url": receiver.url,
                },
            )
            assert pdf.status_code == 200, pdf.text
            for job in (dummy.json(), pdf.json()):
                assert (job["backend"], job["queue"]) == ("rq", "reports"), job

            for job in (dummy.json(), pdf.json()):
                done = wait_for(client, job["id"], timeout=40)
                assert (done["status"], done["backend"], done["attempts"]) == (
                    "completed",
                    "rq",
                    1,
                ), done
                download = client.get(f"{API}/jobs/{job['id']}/download")
                assert download.status_code == 200
                assert done["artifact"]["sha256"] == hashlib.sha256(download.content).hexdigest()

            pdf_id = pdf.json()["id"]
            wait_until(lambda: receiver.for_job(pdf_id), timeout=30)
            [(headers, payload, body)] = receiver.for_job(pdf_id)
            assert payload["job"]["status"] == "completed"
            assert headers["x-report-signature"] == signature(
                CALLBACK_SECRET, headers["x-report-timestamp"], body
            )

            queues = client.get(f"{API}/queues/status").json()["queues"]
            reports = [q for q in queues if q["queue"] == "reports"]
            assert {q["backend"] for q in reports} <= {"rq", None}, reports
            assert any(q["backend"] == "rq" and q["workers"] for q in reports), reports
            samples = scrape(api.url + "/metrics")
            assert total(samples, "report_dispatch_fallbacks_total") == 0
            assert total(samples, "report_jobs_total", backend="celery") == 0
        logs = worker.logs()
        assert f"job_id={dummy.json()['id']}" in logs
        assert "Traceback" not in api.logs()
    finally:
        if api is not None:
            stop_api(api)
        worker.stop()
