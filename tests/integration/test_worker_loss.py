"""``kill -9`` of the process rendering a report (a Celery pool child, an RQ work horse, the
RQ work horse together with the RQ scheduler process): the job is reclaimed once its
heartbeat is stale and completes once, ``attempts=2``, with one artifact."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from app import bootstrap
from app.domain.jobs import ReportJob
from app.domain.params import parse_params
from app.domain.progress import NullProgress
from app.domain.queues import ReportType
from app.domain.states import JobStatus
from app.reports import default_renderers
from app.services.enqueue import enqueue_report

from tests.integration.workers import (
    WorkerProcess,
    celery_worker,
    delete_redis_keys,
    file_sha256,
    rq_scheduler_pid,
    rq_worker,
    running_with_progress,
    settings_from,
    wait_for,
)

PARAMS = {"pages": 3, "seed": 11, "processing_time": 4}


@pytest.fixture
def env(backend_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Own queues (no session worker there) and a 3 s heartbeat timeout."""
    prefix = f"k{secrets.token_hex(3)}-"
    yield {**backend_env, "QUEUE_PREFIX": prefix, "HEARTBEAT_TIMEOUT": "3"}
    delete_redis_keys(prefix)


def kill_renderer(job: ReportJob, worker: WorkerProcess) -> int:
    """SIGKILL the process named by the job's ``worker`` (``backend@host:pid``)."""
    assert job.worker is not None
    pid = int(job.worker.rsplit(":", 1)[1])
    assert worker.process is not None
    assert pid != worker.process.pid  # the child, never the worker's main process
    os.kill(pid, signal.SIGKILL)
    return pid


def render_and_kill(
    env: dict[str, str],
    worker: WorkerProcess,
    backend: str,
    *,
    also_kill: int | None = None,
    timeout: float = 30,
) -> ReportJob:
    """Render a report, SIGKILL its renderer (and the process ``also_kill`` first) mid-render;
    the final row, after checking that only the last attempt's artifact was published."""
    container = bootstrap.build(settings_from(env, dispatch_backend=backend))
    try:
        deps = container.deps
        job = enqueue_report(deps=deps, report_type=ReportType.PDF, params=PARAMS).job
        running = wait_for(deps.repo, job.id, running_with_progress, timeout=20)
        if also_kill is not None:
            os.kill(also_kill, signal.SIGKILL)
        killed = kill_renderer(running, worker)
        final = wait_for(deps.repo, job.id, timeout=timeout)
        assert final.worker != running.worker, f"pid {killed} still named"
        if final.artifact is not None:  # the killed attempt's folder left nothing behind
            folder = container.settings.artifacts / str(job.id)
            published = [p for p in folder.rglob("*") if p.is_file()]
            assert published == [deps.store.local_path(final.artifact)]
            assert final.artifact.key.startswith(f"{job.id}/{final.attempts}/")
            assert final.artifact.sha256 == file_sha256(published[0])
        return final
    finally:
        container.close()


def reference_sha256(tmp_path: Path) -> str:
    renderer = default_renderers()[ReportType.PDF]
    target = tmp_path / "reference.pdf"
    renderer.render(parse_params(ReportType.PDF, PARAMS), target, NullProgress())
    return file_sha256(target)


@pytest.mark.timeout(90)
def test_killed_celery_child_job_runs_again_and_completes_once(
    env: dict[str, str], log_dir: Path, tmp_path: Path
) -> None:
    for worker in celery_worker(env, log_dir, queues="reports", concurrency=2):
        final = render_and_kill(env, worker, "celery")
        assert (final.status, final.attempts) == (JobStatus.COMPLETED, 2)
        assert final.artifact is not None
        assert final.artifact.sha256 == reference_sha256(tmp_path)


def assert_completed_on_second_attempt(final: ReportJob, tmp_path: Path) -> None:
    assert (final.status, final.attempts, final.error) == (JobStatus.COMPLETED, 2, None), final
    assert final.artifact is not None
    assert final.artifact.sha256 == reference_sha256(tmp_path)


@pytest.mark.timeout(90)
def test_killed_rq_work_horse_job_runs_again_and_completes_once(
    env: dict[str, str], log_dir: Path, tmp_path: Path
) -> None:
    for worker in rq_worker(env, log_dir, "reports"):
        assert_completed_on_second_attempt(render_and_kill(env, worker, "rq"), tmp_path)


@pytest.mark.timeout(60)
def test_killed_rq_scheduler_and_work_horse_job_runs_again_and_completes_once(
    env: dict[str, str], log_dir: Path, tmp_path: Path
) -> None:
    """The retry of a killed horse's job waits in RQ's scheduled registry; with its scheduler
    killed too, the worker must start a new scheduler soon (not in 10 minutes)."""
    for worker in rq_worker(env, log_dir, "reports"):
        scheduler = rq_scheduler_pid(env, worker)
        started = time.monotonic()
        final = render_and_kill(env, worker, "rq", also_kill=scheduler, timeout=30)
        assert_completed_on_second_attempt(final, tmp_path)
        print(f"scheduler and horse killed: completed {time.monotonic() - started:.1f}s after")
