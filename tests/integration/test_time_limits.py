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
from datetime import timedelta
from pathlib import Path

import pytest
from app import bootstrap
from app.domain.jobs import ReportJob, utcnow
from app.domain.queues import ReportType
from app.domain.states import JobStatus
from app.services.enqueue import enqueue_report
from app.services.housekeeping import RECOVER

from tests.integration.ops import wait_until
from tests.integration.workers import (
    WorkerProcess,
    artifact_files,
    delete_redis_keys,
    event_lines,
    logged,
    own_ledger,
    running_with_progress,
    send_task,
    settings_from,
    start_celery_worker,
    start_rq_worker,
    wait_for,
)

#: Hard limit of a dummy report in these tests; the soft limit is 2 s under it (SOFT_LIMIT_GRACE),
#: the soft-limited attempt's time to record its failure and ask for its retry.
LIMIT = 8.0


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


@pytest.mark.timeout(90)
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
        assert final.error.message == f"The render was killed after {LIMIT:g}s."
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


@pytest.mark.timeout(90)
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


@pytest.mark.timeout(90)
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


@pytest.fixture
def reclaim_env(work_dir: Path) -> Iterator[dict[str, str]]:
    """A ledger of the test's own (its recovery slot is free), a 13 s limit, 3 s heartbeats."""
    with own_ledger(
        work_dir,
        "timelimit",
        REPORT_TIME_LIMITS=json.dumps({ReportType.DUMMY.value: 13.0}),
        HEARTBEAT_TIMEOUT="3",
    ) as env:
        yield env


@pytest.mark.timeout(90)
def test_the_hard_limit_of_a_reclaimed_attempt_leaves_the_winners_run_alone(
    reclaim_env: dict[str, str], work_dir: Path
) -> None:
    """A child frozen past the heartbeat timeout loses its job to another worker; when the
    pool kills it at the hard limit, its main process must not fail the job the other
    worker is rendering (the record names the killed attempt's worker)."""
    env = reclaim_env
    container = api_side(env, "celery")
    workers: list[WorkerProcess] = []
    frozen: int | None = None
    try:
        repo = container.deps.repo
        workers.append(start_celery_worker(env, work_dir, queues="reports", concurrency=1))
        a = workers[0]
        job = enqueue_slow(container, 9.5)  # under the soft limit (11 s) of any attempt
        first = wait_for(repo, job.id, running_with_progress, timeout=20)
        frozen = child_pid(first)
        os.kill(frozen, signal.SIGSTOP)
        workers.append(start_celery_worker(env, work_dir, queues="all", concurrency=1))
        b = workers[1]
        stale_in = (first.updated_at + timedelta(seconds=3.5) - utcnow()).total_seconds()
        time.sleep(max(0.0, stale_in))
        send_task(container.settings, RECOVER)  # the job is queued again, B takes it
        second = wait_for(
            repo, job.id, lambda j: running_with_progress(j) and j.worker != first.worker
        )
        assert second.attempts == 2
        # A's child is killed at its hard limit while B still renders.
        wait_until(lambda: "Hard time limit (13.0s) exceeded" in a.logs(), timeout=20)
        final = wait_for(repo, job.id, timeout=20)
        assert (final.status, final.worker, final.attempts, final.error) == (
            JobStatus.COMPLETED,
            second.worker,
            2,
            None,
        ), final
        assert len(logged(b.logs, "report_job.completed", job.id)) == 1
        assert not event_lines(a.logs(), "report_job.failed", job.id)
    finally:
        if frozen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGKILL)
        for worker in workers:
            worker.stop()
        container.close()
