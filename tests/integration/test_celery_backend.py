"""The Celery backend with real prefork workers: Redis broker (session worker), RabbitMQ
broker (its own worker), cancellation of queued and running jobs, the revoke backstop."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from app import bootstrap
from app.core.celery_app import RUN_REPORT
from app.dispatch.celery_dispatcher import CeleryDispatcher
from app.domain.jobs import ReportJob
from app.domain.queues import ReportType
from app.domain.states import JobStatus
from app.services.cancel import cancel_job
from app.services.enqueue import enqueue_report
from app.services.queries import queue_status

from tests.integration.ops import wait_until
from tests.integration.workers import (
    AMQP_URL,
    WorkerProcess,
    celery_worker,
    delete_redis_keys,
    leftovers,
    on_rabbitmq,
    parent_pid,
    running_with_progress,
    settings_from,
    wait_for,
)


def celery_of(container: bootstrap.Container) -> CeleryDispatcher:
    [broker] = container.brokers
    assert isinstance(broker, CeleryDispatcher)
    return broker


def wait_log(worker: WorkerProcess, pattern: str, timeout: float = 10) -> float:
    """Seconds until ``pattern`` appears in the worker's log."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if re.search(pattern, worker.logs()):
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{pattern!r} not in {worker.name} log:\n{worker.logs()[-3000:]}")


def assert_cancel_running_stops(container: bootstrap.Container, worker: WorkerProcess) -> None:
    """A running job stops within 2 s, leaves no file, and the worker takes the next job."""
    deps = container.deps
    job = enqueue_report(
        deps=deps, report_type=ReportType.DUMMY, params={"processing_time": 30}
    ).job
    wait_for(deps.repo, job.id, running_with_progress, timeout=20)
    cancelled = cancel_job(deps=deps, job_id=job.id)
    assert cancelled.status is JobStatus.CANCELLED
    stopped_in = wait_log(worker, rf"{RUN_REPORT}\[{job.id}\] succeeded in .*'cancelled'", 5)
    assert stopped_in < 2.0
    assert leftovers(container, job.id) == []
    final = deps.repo.get(job.id)
    assert final is not None
    assert (final.status, final.artifact, final.attempts) == (JobStatus.CANCELLED, None, 1)
    after = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={"seed": 2}).job
    assert wait_for(deps.repo, after.id, timeout=20).status is JobStatus.COMPLETED


# --------------------------------------------------------------------------- Redis broker


def test_running_job_cancelled_stops_fast_and_worker_keeps_serving(
    celery_session_worker: WorkerProcess, containers: dict[str, bootstrap.Container]
) -> None:
    assert_cancel_running_stops(containers["celery"], celery_session_worker)


@pytest.mark.timeout(90)
def test_cancelled_queued_job_never_runs_even_after_a_worker_restart(
    backend_env: dict[str, str], log_dir: Path
) -> None:
    env = {**backend_env, "QUEUE_PREFIX": f"q{secrets.token_hex(3)}-"}  # no worker there yet
    container = bootstrap.build(settings_from(env, dispatch_backend="celery"))
    try:
        deps = container.deps
        job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
        assert (job.backend, job.status) == ("celery", JobStatus.QUEUED)  # waits durably
        assert cancel_job(deps=deps, job_id=job.id).status is JobStatus.CANCELLED
        # Every worker restarted: nobody to sync revoked ids with (mingle) and an empty
        # revoke list; only the ledger claim protects the job.
        restarted = celery_worker(
            env, log_dir, queues="reports", concurrency=1, extra=("--without-mingle",)
        )
        for worker in restarted:
            wait_log(worker, rf"{RUN_REPORT}\[{job.id}\] succeeded in .*'skipped'", 20)
            final = deps.repo.get(job.id)
            assert final is not None
            assert (final.status, final.attempts, final.started_at) == (
                JobStatus.CANCELLED,
                0,
                None,
            )
            served = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={"seed": 3}).job
            assert wait_for(deps.repo, served.id, timeout=20).status is JobStatus.COMPLETED
    finally:
        container.close()
        delete_redis_keys(env["QUEUE_PREFIX"])


@contextmanager
def stuck_render(
    worker: WorkerProcess, container: bootstrap.Container
) -> Iterator[tuple[ReportJob, Path]]:
    """A cancelled job whose render does not reach its next checkpoint: an Excel report
    frozen (SIGSTOP of its pool child) while it writes its file, then cancelled; the revoke
    backstop (``CANCEL_GRACE_SECONDS`` later) terminates it. Yields the final row once the
    child has exited, and the partial file it had written."""
    deps = container.deps
    params = {"rows": 20000, "sheets": 1, "processing_time": 8}
    job = enqueue_report(deps=deps, report_type=ReportType.EXCEL, params=params).job
    writing = wait_for(deps.repo, job.id, lambda j: j.stage == "writing sheet 1/1", timeout=30)
    assert writing.worker is not None
    pid = int(writing.worker.rsplit(":", 1)[1])
    assert worker.process is not None
    assert parent_pid(pid) == worker.process.pid  # a pool child, never the main process
    os.kill(pid, signal.SIGSTOP)
    exited = False
    try:
        [partial] = leftovers(container, job.id)  # written up to here, not yet published
        assert partial.name.endswith(".xlsx.part"), partial
        assert cancel_job(deps=deps, job_id=job.id).status is JobStatus.CANCELLED
        wait_log(worker, rf"Terminating {job.id} \(15\)", 10)
        # Frozen, the child holds the SIGTERM pending, as a render stuck in a long C call
        # would; it takes it (billiard's handler: SystemExit) as soon as it runs again.
        os.kill(pid, signal.SIGCONT)

        def gone() -> bool:  # exited and reaped by the pool
            return not Path(f"/proc/{pid}").exists()

        wait_until(gone, timeout=10)
        exited = True
        final = deps.repo.get(job.id)
        assert final is not None
        yield final, partial
    finally:  # never leave a frozen child behind (and never signal a pid reused since)
        with contextlib.suppress(OSError):  # gone meanwhile
            if not exited and parent_pid(pid) == worker.process.pid:
                os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(90)
def test_revoke_terminate_backstop_kills_the_render_and_worker_keeps_serving(
    celery_session_worker: WorkerProcess, containers: dict[str, bootstrap.Container]
) -> None:
    container = containers["celery"]
    deps = container.deps
    with stuck_render(celery_session_worker, container) as (final, partial):
        assert (final.status, final.error, final.artifact) == (JobStatus.CANCELLED, None, None)
        assert final.attempts == 1
        # The terminated render's temp file goes with it (SystemExit in the pool child).
        deadline = time.monotonic() + 5
        while partial.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert leftovers(container, final.id) == []
        served = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={"seed": 4}).job
        assert wait_for(deps.repo, served.id, timeout=20).status is JobStatus.COMPLETED
        assert deps.repo.get(final.id) == final  # nothing wrote to the killed job since


def test_queue_status_counts_live_celery_workers(
    celery_session_worker: WorkerProcess, containers: dict[str, bootstrap.Container]
) -> None:
    rows = {(s.queue.value, s.backend): s for s in queue_status(deps=containers["celery"].deps)}
    for queue in ("reports", "documents", "notifications", "celery"):
        assert rows[(queue, "celery")].workers == 1


# --------------------------------------------------------------------------- RabbitMQ broker


@pytest.fixture(scope="module")
def amqp_env(backend_env: dict[str, str]) -> Iterator[dict[str, str]]:
    with on_rabbitmq(backend_env) as env:
        yield env


@pytest.fixture(scope="module")
def amqp_worker(amqp_env: dict[str, str], log_dir: Path) -> Iterator[WorkerProcess]:
    yield from celery_worker(amqp_env, log_dir, concurrency=2)


@pytest.fixture(scope="module")
def amqp_container(amqp_env: dict[str, str]) -> Iterator[bootstrap.Container]:
    container = bootstrap.build(settings_from(amqp_env, dispatch_backend="celery"))
    yield container
    container.close()


@pytest.mark.timeout(90)
def test_rabbitmq_broker_runs_retries_and_cancels(
    amqp_worker: WorkerProcess, amqp_container: bootstrap.Container
) -> None:
    deps = amqp_container.deps
    assert AMQP_URL.replace(":guest@", ":**@") in amqp_worker.logs()  # on RabbitMQ, hidden
    ok = enqueue_report(deps=deps, report_type=ReportType.PDF, params={"pages": 1}).job
    retried = enqueue_report(
        deps=deps, report_type=ReportType.DUMMY, params={"simulate_failures": 2}
    ).job
    doomed = enqueue_report(
        deps=deps, report_type=ReportType.DUMMY, params={"simulate_failures": 5}
    ).job
    assert ok.backend == "celery"
    done = wait_for(deps.repo, ok.id, timeout=30)
    assert (done.status, done.attempts, done.progress) == (JobStatus.COMPLETED, 1, 100)
    done = wait_for(deps.repo, retried.id, timeout=30)
    assert (done.status, done.attempts) == (JobStatus.COMPLETED, 3)
    done = wait_for(deps.repo, doomed.id, timeout=30)
    assert (done.status, done.attempts) == (JobStatus.FAILED, 4)  # MAX_ATTEMPTS's default
    assert done.error is not None
    assert done.error.code == "SIMULATED_FAILURE"
    assert_cancel_running_stops(amqp_container, amqp_worker)
