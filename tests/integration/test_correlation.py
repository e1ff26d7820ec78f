"""A request's ``X-Correlation-ID`` follows the job it creates on every backend: into each
log line of its render (a failed attempt and its retry), package and notify steps (a
refused callback and its retry), and onto the callback and the email it delivers.

A live API (``manage.py serve``) sends the job to the inline pool, to the session's Celery
worker or to its RQ worker; those log in text format (``job_id=… correlation_id=…``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.server import wait_for
from tests.integration.ops import start_api, stop_api
from tests.integration.workers import CallbackReceiver, WorkerProcess, logged, wait_until
from tests.smtp import SmtpServer

CORRELATION = "abc-123"
RECIPIENT = "correlated@example.com"
#: One line of each step of the job, the retried ones included.
EVENTS = (
    "report_job.started",
    "report_job.retrying",
    "report_job.completed",
    "report_job.packaged",
    "report_job.notify.retrying",
    "report_job.notified",
    "report_job.email_sent",
)


@pytest.fixture
def refusing_once() -> Iterator[CallbackReceiver]:
    """A callback endpoint that answers 503 first: the notify step is delivered again."""
    receiver = CallbackReceiver(fail_first=1).start()
    yield receiver
    receiver.stop()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("backend", ["inline", "celery", "rq"])
def test_a_request_s_correlation_id_follows_its_job_everywhere(
    backend: str,
    request: pytest.FixtureRequest,
    backend_env: dict[str, str],
    work_dir: Path,
    smtp_server: SmtpServer,
    refusing_once: CallbackReceiver,
) -> None:
    worker: WorkerProcess | None = None
    if backend != "inline":
        worker = request.getfixturevalue(f"{backend}_session_worker")
    if not smtp_server.running:
        smtp_server.start()
    env = {**backend_env, "DISPATCH_BACKEND": backend, "METRICS_PORT": "0"}
    api = start_api(env, work_dir / "api.log")
    logs: Callable[[], str] = api.logs if worker is None else worker.logs
    try:
        with api.client() as client:
            answer = client.post(
                "/api/v1/reports/dummy",
                headers={"X-Correlation-ID": CORRELATION},
                json={
                    "processing_time": 0.2,
                    "simulate_failures": 1,
                    "callback_url": refusing_once.url,
                    "recipients": [RECIPIENT],
                },
            )
            assert answer.status_code in (200, 202), answer.text
            assert answer.headers["x-correlation-id"] == CORRELATION
            assert answer.headers["x-request-id"] != CORRELATION  # one per request
            job = answer.json()
            assert job["backend"] == backend, job
            done = wait_for(client, job["id"], timeout=60)
            assert (done["status"], done["attempts"]) == ("completed", 2), done

        [mail] = smtp_server.wait_for_job(job["id"], 1)
        assert mail.message["X-Correlation-ID"] == CORRELATION
        wait_until(lambda: len(refusing_once.for_job(job["id"])) >= 2, timeout=30)
        calls = refusing_once.for_job(job["id"])
        assert [h.get("x-correlation-id") for h, _, _ in calls] == [CORRELATION] * len(calls)

        for event in EVENTS:
            lines = logged(logs, event, job["id"])
            assert all(f"correlation_id={CORRELATION}" in line for line in lines), lines
        about = [line for line in logs().splitlines() if f"job_id={job['id']}" in line]
        untagged = [line for line in about if f"correlation_id={CORRELATION}" not in line]
        assert not untagged, untagged
    finally:
        stop_api(api)
