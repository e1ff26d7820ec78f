"""Services driven through in-memory adapters: enqueue, run, retry, cancel, recover."""

from __future__ import annotations

from pathlib import Path

import pytest
from app.domain.errors import (
    BackendUnavailable,
    InvalidParams,
    JobAlreadyFinished,
    JobNotCompleted,
    JobNotFound,
    RenderError,
)
from app.domain.progress import JobCancelled
from app.domain.queues import Backend, ReportType
from app.domain.states import JobStatus
from app.services.cancel import cancel_job
from app.services.deps import Deps
from app.services.enqueue import enqueue_report
from app.services.queries import artifact_of, queue_status
from app.services.recovery import recover_unfinished
from app.services.run_report import LedgerProgress, run_report

from tests.unit.fakes import (
    MemoryRepository,
    ScriptedRenderer,
    memory_deps,
)


@pytest.fixture
def renderer() -> ScriptedRenderer:
    return ScriptedRenderer()


@pytest.fixture
def deps(tmp_path: Path, renderer: ScriptedRenderer) -> Deps:
    return memory_deps(tmp_path / "artifacts", renderer=renderer)


def _repo(deps: Deps) -> MemoryRepository:
    assert isinstance(deps.repo, MemoryRepository)
    return deps.repo


def test_enqueue_commits_then_dispatches_and_marks_queued(deps: Deps) -> None:
    job = enqueue_report(deps=deps, report_type=ReportType.PDF, params={"pages": 2}).job
    assert job.status is JobStatus.QUEUED
    assert job.backend is Backend.INLINE
    assert job.queued_at is not None
    assert deps.dispatcher.dispatched == [job.id]  # type: ignore[attr-defined]
    assert _repo(deps).get(job.id) == job


def test_invalid_params_write_nothing(deps: Deps) -> None:
    with pytest.raises(InvalidParams):
        enqueue_report(deps=deps, report_type=ReportType.PDF, params={"pages": -1})
    assert _repo(deps).jobs == {}
    assert deps.dispatcher.dispatched == []  # type: ignore[attr-defined]


def test_no_backend_answers_503_and_writes_nothing(deps: Deps) -> None:
    deps.dispatcher.is_available = False  # type: ignore[attr-defined]
    with pytest.raises(BackendUnavailable):
        enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={})
    assert _repo(deps).jobs == {}


def test_lost_dispatch_leaves_a_failed_row_not_a_pending_one(deps: Deps) -> None:
    deps.dispatcher.fail = True  # type: ignore[attr-defined]
    with pytest.raises(BackendUnavailable):
        enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={})
    (job,) = _repo(deps).jobs.values()
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert job.error.code == "BACKEND_UNAVAILABLE"


def test_run_completes_and_stores_the_artifact(deps: Deps) -> None:
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    outcome = run_report(deps=deps, job_id=job.id)
    assert outcome.kind == "completed"
    done = _repo(deps).get(job.id)
    assert done is not None
    assert done.status is JobStatus.COMPLETED
    assert (done.progress, done.attempts, done.worker) == (100, 1, "test-worker")
    assert done.artifact is not None
    assert done.artifact.filename == f"dummy-{job.id}.txt"
    artifact = artifact_of(deps=deps, job_id=job.id)
    path = deps.store.local_path(artifact)  # type: ignore[attr-defined]
    assert path.read_text().count("line") == 4
    assert artifact.size_bytes == path.stat().st_size
    assert deps.observer.names() == ["enqueued", "started", "completed"]  # type: ignore[attr-defined]


def test_duplicate_delivery_is_a_no_op(deps: Deps, renderer: ScriptedRenderer) -> None:
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    run_report(deps=deps, job_id=job.id)
    again = run_report(deps=deps, job_id=job.id)
    assert again.kind == "skipped"
    assert renderer.calls == 1
    assert _repo(deps).jobs[job.id].attempts == 1


def test_transient_failure_retries_then_completes(deps: Deps, renderer: ScriptedRenderer) -> None:
    renderer.fail_on = {1, 2}
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    first = run_report(deps=deps, job_id=job.id)
    assert first.kind == "retry"
    assert first.retry_in is not None
    assert 1 <= first.retry_in <= 1.1  # the backoff (base 1 s) plus up to 10 % jitter
    assert _repo(deps).jobs[job.id].status is JobStatus.RETRYING
    assert run_report(deps=deps, job_id=job.id).kind == "retry"
    assert run_report(deps=deps, job_id=job.id).kind == "completed"
    done = _repo(deps).jobs[job.id]
    assert (done.status, done.attempts, done.error) == (JobStatus.COMPLETED, 3, None)
    assert list(Path(deps.store.root / ".tmp").iterdir()) == []  # type: ignore[attr-defined]


def test_failure_after_last_attempt_is_final(deps: Deps, renderer: ScriptedRenderer) -> None:
    renderer.fail_on = {1, 2, 3}
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    kinds = [run_report(deps=deps, job_id=job.id).kind for _ in range(3)]
    assert kinds == ["retry", "retry", "failed"]
    failed = _repo(deps).jobs[job.id]
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert failed.error.code == "RENDER_FAILED"
    assert "disk full" in failed.error.message


def test_non_retryable_render_error_fails_at_once(deps: Deps, renderer: ScriptedRenderer) -> None:
    renderer.fail_on = {1}
    renderer.error = RenderError("template broken", code="BAD_TEMPLATE", retryable=False)
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    assert run_report(deps=deps, job_id=job.id).kind == "failed"
    assert _repo(deps).jobs[job.id].error.code == "BAD_TEMPLATE"  # type: ignore[union-attr]


def test_cancel_queued_job_never_runs(deps: Deps, renderer: ScriptedRenderer) -> None:
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    cancelled = cancel_job(deps=deps, job_id=job.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert deps.dispatcher.cancelled == [job.id]  # type: ignore[attr-defined]
    assert run_report(deps=deps, job_id=job.id).kind == "skipped"
    assert renderer.calls == 0


def test_cancel_twice_is_a_conflict(deps: Deps) -> None:
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    cancel_job(deps=deps, job_id=job.id)
    with pytest.raises(JobAlreadyFinished) as err:
        cancel_job(deps=deps, job_id=job.id)
    assert err.value.code == "JOB_ALREADY_FINISHED"


def test_cancel_unknown_job_is_not_found(deps: Deps) -> None:
    from uuid import uuid4

    with pytest.raises(JobNotFound):
        cancel_job(deps=deps, job_id=uuid4())


def test_download_before_completion_is_a_conflict(deps: Deps) -> None:
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    with pytest.raises(JobNotCompleted):
        artifact_of(deps=deps, job_id=job.id)


def test_running_job_stops_at_checkpoint_once_cancelled(deps: Deps) -> None:
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    claimed = _repo(deps).transition(job.id, JobStatus.RUNNING, now=deps.clock())
    assert claimed is not None
    clock = [0.0]
    progress = LedgerProgress(
        repo=deps.repo,
        job=claimed,
        clock=deps.clock,
        interval=1.0,
        stopping=lambda: False,
        monotonic=lambda: clock[0],
        sleep=lambda s: None,
    )
    clock[0] = 1.5
    progress.advance(0.3, "page 3")
    assert _repo(deps).progress_writes == [(30, "page 3")]
    cancel_job(deps=deps, job_id=job.id)
    clock[0] = 3.0
    with pytest.raises(JobCancelled):
        progress.advance(0.4, "page 4")


def test_progress_is_written_at_a_bounded_rate_and_paces_processing_time(deps: Deps) -> None:
    job = enqueue_report(
        deps=deps, report_type=ReportType.DUMMY, params={"processing_time": 10}
    ).job
    claimed = _repo(deps).transition(job.id, JobStatus.RUNNING, now=deps.clock())
    assert claimed is not None
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    progress = LedgerProgress(
        repo=deps.repo,
        job=claimed,
        clock=deps.clock,
        interval=1.0,
        stopping=lambda: False,
        monotonic=lambda: clock[0],
        sleep=sleep,
    )
    for i in range(1, 101):
        progress.advance(i / 100, f"chunk {i}")
    assert clock[0] == pytest.approx(10.0, abs=0.01)  # paced to processing_time
    writes = _repo(deps).progress_writes
    assert 8 <= len(writes) <= 11  # about one per second, not one per checkpoint
    assert [p for p, _ in writes] == sorted(p for p, _ in writes)
    assert max(p for p, _ in writes) <= 99  # 100 only on completion


def test_queue_status_merges_ledger_counts_and_workers(deps: Deps) -> None:
    enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={})
    second = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    _repo(deps).transition(second.id, JobStatus.RUNNING, now=deps.clock())
    (status,) = queue_status(deps=deps)
    assert (status.queue.value, status.backend, status.waiting, status.running, status.workers) == (
        "reports",
        Backend.INLINE,
        1,
        1,
        2,
    )


def test_recovery_redispatches_waiting_and_reruns_or_fails_lost_jobs(deps: Deps) -> None:
    repo = _repo(deps)
    waiting = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    lost = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    repo.transition(lost.id, JobStatus.RUNNING, now=deps.clock(), worker="inline@h:1")
    exhausted = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    for attempt in range(1, 4):
        repo.transition(exhausted.id, JobStatus.RUNNING, now=deps.clock(), worker="inline@h:1")
        if attempt < 3:
            repo.transition(exhausted.id, JobStatus.RETRYING, now=deps.clock())
    alive = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    repo.transition(alive.id, JobStatus.RUNNING, now=deps.clock(), worker="inline@h:2")
    deps.dispatcher.dispatched.clear()  # type: ignore[attr-defined]

    report = recover_unfinished(
        deps=deps, backend=Backend.INLINE, worker_alive=lambda w: w == "inline@h:2"
    )

    assert (report.redispatched, report.failed, report.left_alone) == (2, 1, 1)
    assert set(deps.dispatcher.dispatched) == {waiting.id, lost.id}  # type: ignore[attr-defined]
    assert repo.jobs[lost.id].status is JobStatus.QUEUED
    assert repo.jobs[exhausted.id].status is JobStatus.FAILED
    assert repo.jobs[exhausted.id].error.code == "WORKER_LOST"  # type: ignore[union-attr]
    assert ("failed", exhausted.id) in deps.observer.events  # type: ignore[attr-defined]
    assert repo.jobs[alive.id].status is JobStatus.RUNNING
