"""Per-type time limits on real workers (``REPORT_TIME_LIMITS`` of a few seconds).

- Celery, hard limit: a render that does not answer its soft limit (here: its pool child
  frozen with SIGSTOP, as a render stuck in a C call or an uninterruptible read would be)
  is killed by the pool at the hard limit, and the worker's main process records the job
  ``failed`` with ``TIME_LIMIT_EXCEEDED``, once: the message is not run again.
- Celery, soft limit: the render gets ``SoftTimeLimitExceeded`` at 90 % of the limit; the
  attempt fails (retryable) and the job is retried until ``MAX_ATTEMPTS``.
- RQ, ``job_timeout``: the work horse's render is stopped at the limit, each attempt is
  recorded and the job ends in a terminal row.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from app import bootstrap
from app.domain.jobs import JobStatus, ReportJob, ReportType
from app.services.enqueue import enqueue_report

from tests.integration.workers import (
    WorkerProcess,
    artifact_files,
    delete_redis_keys,
    event_lines,
    running_with_progress,
    settings_from,
    start_celery_worker,
    start_rq_worker,
    wait_for,
)

#: Hard limit of a dummy report in these tests; the soft limit is 90 % of it.
LIMIT = 4.0


@pytest.fixture
def env(backend_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Own queues, a 4 s hard limit for dummy reports, two attempts per job."""
    prefix = f"tl{secrets.token_hex(3)}-"
    yield {
        **backend_env,
        "QUEUE_PREFIX": prefix,
        "REPORT_TIME_LIMITS": json.dumps({ReportType.DUMMY.value: LIMIT}),
        "MAX_ATTEMPTS": "2",
        "METRICS_PORT": "0",
    }
    delete_redis_keys(prefix)


def api_side(env: dict[str, str], backend: str) -> bootstrap.Container:
    """The publisher: it stamps each message with the limits (Celery, RQ ``job_timeout``)."""
    limits = json.loads(env["REPORT_TIME_LIMITS"])
    return bootstrap.build(settings_from(env, dispatch_backend=backend, report_time_limits=limits))


def enqueue_slow(container: bootstrap.Container, seconds: float) -> ReportJob:
    return enqueue_report(
        deps=container.deps,
        report_type=ReportType.DUMMY,
        params={"processing_time": seconds, "seed": 3},
    ).job


def child_pid(job: ReportJob) -> int:
    """The pid in the job's ``worker`` (``backend@host:pid``): the process rendering it."""
    assert job.worker is not None
    return int(job.worker.rsplit(":", 1)[1])


@pytest.mark.timeout(60)
def test_celery_render_killed_at_the_hard_limit_is_failed_time_limit_exceeded(
    env: dict[str, str], log_dir: Path
) -> None:
    container = api_side(env, "celery")
    worker = start_celery_worker(env, log_dir, queues="reports", concurrency=1)
    frozen: int | None = None
    try:
        repo = container.deps.repo
        job = enqueue_slow(container, 20)
        running = wait_for(repo, job.id, running_with_progress, timeout=20)
        assert running.started_at is not None
        frozen = child_pid(running)
        assert worker.process is not None
        assert frozen != worker.process.pid
        os.kill(frozen, signal.SIGSTOP)  # deaf to the soft limit's signal from now on
        stopped_at = time.monotonic()
        final = wait_for(repo, job.id, timeout=LIMIT + 15)
        took = time.monotonic() - stopped_at
        assert final.status is JobStatus.FAILED, final
        assert final.error is not None
        assert final.error.code == "TIME_LIMIT_EXCEEDED", final.error
        assert final.attempts == 1
        assert final.artifact is None
        assert took < LIMIT + 10, took
        logs = worker.logs()
        assert f"Hard time limit ({LIMIT}s) exceeded" in logs, logs[-3000:]
        # Recorded once, by the main process; the message is not delivered again.
        time.sleep(2)
        again = repo.get(job.id)
        assert again is not None
        assert (again.status, again.attempts, again.updated_at) == (
            JobStatus.FAILED,
            1,
            final.updated_at,
        )
        assert len(event_lines(worker.logs(), "report_job.started", job.id)) == 1
        assert len(event_lines(worker.logs(), "report_job.failed", job.id)) == 1
        assert artifact_files(container.settings.artifacts, job.id) == []
    finally:
        if frozen is not None:  # normally killed by the pool already
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGKILL)
        worker.stop()
        container.close()


@pytest.mark.timeout(60)
def test_celery_soft_limit_fails_the_attempt_and_retries(
    env: dict[str, str], log_dir: Path
) -> None:
    container = api_side(env, "celery")
    worker = start_celery_worker(env, log_dir, queues="reports", concurrency=1)
    try:
        repo = container.deps.repo
        job = enqueue_slow(container, 20)
        final = wait_for(repo, job.id, timeout=2 * LIMIT + 20)
        logs = worker.logs()
        assert final.status is JobStatus.FAILED, final
        assert final.attempts == 2  # MAX_ATTEMPTS: the first attempt was retried
        assert final.error is not None
        assert final.error.code == "RENDER_FAILED", final.error
        assert "SoftTimeLimitExceeded" in final.error.message
        assert len(event_lines(logs, "report_job.started", job.id)) == 2
        assert len(event_lines(logs, "report_job.retrying", job.id)) == 1
        assert "Hard time limit" not in logs  # the render stopped at the soft limit
        assert artifact_files(container.settings.artifacts, job.id) == []
    finally:
        worker.stop()
        container.close()


@pytest.mark.timeout(60)
def test_rq_job_timeout_ends_in_a_terminal_row(env: dict[str, str], log_dir: Path) -> None:
    container = api_side(env, "rq")
    worker: WorkerProcess = start_rq_worker(env, log_dir, "reports")
    try:
        repo = container.deps.repo
        job = enqueue_slow(container, 20)
        final = wait_for(repo, job.id, timeout=2 * LIMIT + 25)
        logs = worker.logs()
        assert final.status is JobStatus.FAILED, final
        assert final.attempts == 2
        assert final.error is not None
        assert "JobTimeoutException" in final.error.message, final.error
        assert len(event_lines(logs, "report_job.started", job.id)) == 2
        assert artifact_files(container.settings.artifacts, job.id) == []
        time.sleep(1.5)  # and nothing runs it again
        again = repo.get(job.id)
        assert again is not None
        assert (again.status, again.attempts) == (JobStatus.FAILED, 2)
    finally:
        worker.stop()
        container.close()
