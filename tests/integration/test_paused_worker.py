"""A worker really paused past the heartbeat timeout: its job is reclaimed, and when it
wakes up, its late writes are refused and its file never replaces the winner's.

Real processes on a ledger of the test's own: worker A renders a job; the process that
renders it (a Celery pool child, an RQ work horse) is frozen with SIGSTOP for longer than
``HEARTBEAT_TIMEOUT``; Beat's recovery task finds the heartbeat stale and queues the job
again; worker B claims it (attempt 2) and renders it. A's process is woken up (SIGCONT)
while B still renders: its next heartbeat names A, the ledger refuses it, and A lets the
job go. B completes it, under ``<job id>/2/<filename>``. Old-style keys (no attempt) still
download.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from app import bootstrap
from app.db.repository import SqlJobRepository
from app.db.session import make_engine
from app.domain.jobs import ReportJob, utcnow
from app.domain.params import parse_params
from app.domain.queues import Backend, ReportType
from app.domain.retry import RetryPolicy
from app.domain.states import JobStatus
from app.reports import default_renderers
from app.services.deps import Deps, JobPolicy
from app.services.enqueue import enqueue_report
from app.services.housekeeping import RECOVER, delete_files
from app.services.queries import artifact_of
from app.storage.local import LocalArtifactStore

from tests.integration.ops import wait_until
from tests.integration.workers import (
    WorkerProcess,
    artifact_files,
    event_lines,
    file_sha256,
    logged,
    own_ledger,
    pid_of,
    running_with_progress,
    send_task,
    settings_from,
    start_celery_worker,
    start_rq_worker,
    wait_for,
)
from tests.unit.fakes import RecordingDispatcher, RecordingObserver

HEARTBEAT_TIMEOUT = 3.0


@pytest.fixture
def env(work_dir: Path) -> Iterator[dict[str, str]]:
    """A ledger of this test's own (its recovery slot is free), own queues, 3 s heartbeats."""
    with own_ledger(work_dir, "paused", HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT)) as env:
        yield env


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", ["celery", "rq"])
def test_a_paused_worker_is_refused_and_its_file_never_replaces_the_winners(
    backend: str, env: dict[str, str], work_dir: Path
) -> None:
    """Celery: A's pool child is frozen. RQ: A's work horse is frozen (its master goes on
    heartbeating RQ's own registry, which the ledger does not trust)."""
    container = bootstrap.build(settings_from(env, dispatch_backend=backend))
    workers: list[WorkerProcess] = []
    frozen: int | None = None
    try:
        repo = container.deps.repo
        artifacts = container.settings.artifacts
        if backend == "celery":
            workers.append(start_celery_worker(env, work_dir, queues="reports", concurrency=1))
        else:
            workers.append(start_rq_worker(env, work_dir, "reports"))
        a = workers[0]
        job = enqueue_report(
            deps=container.deps,
            report_type=ReportType.DUMMY,
            params={"processing_time": 6, "seed": 21},
        ).job
        first = wait_for(repo, job.id, running_with_progress, timeout=20)
        frozen = pid_of(first)
        assert a.process is not None
        assert frozen != a.process.pid
        os.kill(frozen, signal.SIGSTOP)

        # B takes the job once recovery has queued it again; Beat's tasks run on Celery
        # (B itself for Celery: A's only child is frozen with the message).
        if backend == "celery":
            workers.append(start_celery_worker(env, work_dir, queues="all", concurrency=1))
        else:
            workers.append(start_rq_worker(env, work_dir, "reports"))
            workers.append(start_celery_worker(env, work_dir, queues="celery", concurrency=1))
        b = workers[1]
        stale_at = first.updated_at + timedelta(seconds=HEARTBEAT_TIMEOUT + 0.5)
        time.sleep(max(0.0, (stale_at - datetime.now(UTC)).total_seconds()))
        send_task(settings_from(env), RECOVER)

        def under_b(j: ReportJob) -> bool:
            return running_with_progress(j) and j.worker != first.worker

        second = wait_for(repo, job.id, under_b, timeout=20)
        assert second.attempts == 2
        os.kill(frozen, signal.SIGCONT)  # A wakes up while B renders

        def refused() -> list[str]:
            return event_lines(a.logs(), "report_job.run.superseded", job.id)

        wait_until(refused, timeout=15)
        during = repo.get(job.id)
        assert during is not None
        assert (during.status, during.worker, during.attempts) == (
            JobStatus.RUNNING,
            second.worker,
            2,
        )
        assert f"current_worker={second.worker}" in refused()[0]
        assert f"worker={first.worker}" in refused()[0]

        final = wait_for(repo, job.id, timeout=30)
        assert (final.status, final.worker, final.attempts) == (
            JobStatus.COMPLETED,
            second.worker,
            2,
        )
        assert final.artifact is not None
        assert final.artifact.key == f"{job.id}/2/{final.artifact.filename}"
        path = artifacts / final.artifact.key
        assert artifact_files(artifacts, job.id) == [path]
        assert file_sha256(path) == final.artifact.sha256
        # A's task ended without an outcome of its own; later, nothing has moved.
        ended = f"reports.run_report[{job.id}] succeeded" if backend == "celery" else "Job OK"
        wait_until(lambda: ended in a.logs(), timeout=10)
        assert not event_lines(a.logs(), "report_job.completed", job.id)
        assert not event_lines(a.logs(), "report_job.failed", job.id)
        assert len(logged(b.logs, "report_job.completed", job.id)) == 1
        time.sleep(1)
        assert repo.get(job.id) == final
        assert artifact_files(artifacts, job.id) == [path]
        assert file_sha256(path) == final.artifact.sha256
    finally:
        if frozen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGCONT)
        for worker in workers:
            worker.stop()
        container.close()


@pytest.fixture
def old(pg_url: str, tmp_path: Path) -> Iterator[Deps]:
    """A worker's dependencies on the session's ledger and a store of the test's own."""
    engine = make_engine(pg_url)
    yield Deps(
        repo=SqlJobRepository(engine),
        dispatcher=RecordingDispatcher(Backend.CELERY),
        store=LocalArtifactStore(tmp_path / "artifacts"),
        renderers=default_renderers(),
        observer=RecordingObserver(),
        policy=JobPolicy(
            max_attempts=3,
            retry=RetryPolicy(1, 10, random.Random(1)),
            progress_interval=5.0,
            heartbeat_timeout=30.0,
        ),
        worker_id="celery@old:101",
    )
    engine.dispose()


def test_an_old_style_key_still_downloads_and_is_cleaned_up(old: Deps) -> None:
    """Artifacts published before attempts were part of the key keep working."""
    job = ReportJob.new(
        report_type=ReportType.DUMMY,
        params=parse_params(ReportType.DUMMY, {"seed": 5}),
        max_attempts=3,
        now=utcnow(),
        owner="paused-worker",
    ).with_backend(Backend.CELERY)
    old.repo.add(job)
    assert old.repo.transition(job.id, JobStatus.QUEUED, now=utcnow()) is not None
    claimed = old.repo.transition(job.id, JobStatus.RUNNING, now=utcnow(), worker=old.worker_id)
    assert claimed is not None
    temp = old.store.temp_path(job.id, "json")
    temp.write_text("{}\n")
    legacy = old.store.save(
        temp, job_id=job.id, filename="dummy-legacy.json", content_type="application/json"
    )
    assert legacy.key == f"{job.id}/dummy-legacy.json"  # no attempt: the former layout
    done = old.repo.transition(
        job.id,
        JobStatus.COMPLETED,
        now=utcnow(),
        expected_worker=old.worker_id,
        artifact=legacy,
    )
    assert done is not None
    artifact = artifact_of(deps=old, job_id=job.id)
    path = old.store.local_path(artifact)  # type: ignore[attr-defined]
    assert artifact == legacy
    assert path.read_text() == "{}\n"
    assert delete_files(old.store, done) == 1
    assert not path.exists()
    assert not path.parent.exists()
