"""A lost worker's job: reclaimed once its heartbeat is stale, never while it is fresh."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from app.core.config import Settings
from app.domain.jobs import utcnow
from app.domain.queues import ReportType
from app.domain.states import JobStatus
from app.services.deps import Deps
from app.services.enqueue import enqueue_report
from app.services.lost_worker import WORKER_LOST
from app.services.run_report import run_report

from tests.unit.fakes import (
    MemoryRepository,
    memory_deps,
)

TIMEOUT = 30.0


@pytest.fixture
def deps(tmp_path: Path) -> Deps:
    return memory_deps(tmp_path / "artifacts", worker_id="w-new", heartbeat_timeout=TIMEOUT)


def _running(deps: Deps, *, silent_for: float, attempts: int = 1) -> MemoryRepository:
    """A job claimed by a worker ``w-old`` whose last heartbeat was ``silent_for`` ago."""
    repo = deps.repo
    assert isinstance(repo, MemoryRepository)
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    beat = utcnow() - timedelta(seconds=silent_for)
    repo.jobs[job.id] = replace(
        job, status=JobStatus.RUNNING, worker="w-old", attempts=attempts, updated_at=beat
    )
    return repo


def test_stale_heartbeat_is_reclaimed_and_run_once_more(deps: Deps) -> None:
    repo = _running(deps, silent_for=TIMEOUT + 5)
    [job_id] = repo.jobs
    outcome = run_report(deps=deps, job_id=job_id)
    assert outcome.kind == "completed"
    assert outcome.job is not None
    assert (outcome.job.attempts, outcome.job.worker) == (2, "w-new")


def test_fresh_heartbeat_is_skipped_with_a_time_to_look_again(deps: Deps) -> None:
    repo = _running(deps, silent_for=TIMEOUT - 10)
    [job_id] = repo.jobs
    outcome = run_report(deps=deps, job_id=job_id)
    assert outcome.kind == "skipped"
    assert outcome.retry_in is not None
    assert 10 <= outcome.retry_in <= 11
    job = repo.get(job_id)
    assert job is not None
    assert (job.status, job.worker, job.attempts) == (JobStatus.RUNNING, "w-old", 1)


def test_stale_heartbeat_after_the_last_attempt_fails_worker_lost(deps: Deps) -> None:
    repo = _running(deps, silent_for=TIMEOUT + 5, attempts=3)
    [job_id] = repo.jobs
    outcome = run_report(deps=deps, job_id=job_id)
    assert outcome.kind == "failed"
    assert outcome.job is not None
    assert outcome.job.status is JobStatus.FAILED
    assert outcome.job.error is not None
    assert (outcome.job.error.code, outcome.job.attempts) == (WORKER_LOST, 3)


def test_a_reclaimed_job_stops_its_former_worker_at_its_next_heartbeat(deps: Deps) -> None:
    repo = _running(deps, silent_for=TIMEOUT + 5)
    [job_id] = repo.jobs
    repo.transition(
        job_id,
        JobStatus.RUNNING,
        now=utcnow(),
        expected=frozenset(),
        stale_before=utcnow(),
        worker="w-new",
    )
    assert not repo.record_progress(job_id, progress=5, stage="x", now=utcnow(), worker="w-old")
    assert repo.record_progress(job_id, progress=5, stage="x", now=utcnow(), worker="w-new")


def test_heartbeat_timeout_must_be_well_above_the_progress_interval() -> None:
    with pytest.raises(ValueError, match="HEARTBEAT_TIMEOUT"):
        Settings(_env_file=None, progress_interval=1.0, heartbeat_timeout=2.0)  # type: ignore[call-arg]
