"""A worker paused past the heartbeat timeout wakes after another worker reclaimed its job:
its writes out of ``running`` are refused, its artifact discarded, the winner's kept.
Beat's recovery judges running jobs by the same heartbeat."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from app.domain.jobs import ReportJob, utcnow
from app.domain.params import ReportParams
from app.domain.progress import Progress
from app.domain.queues import Backend, ReportType
from app.domain.states import JobStatus
from app.services.deps import Deps
from app.services.enqueue import enqueue_report
from app.services.housekeeping import Housekeeping, HousekeepingPolicy, recover_stuck
from app.services.lost_worker import WORKER_LOST
from app.services.queries import artifact_of
from app.services.run_report import run_report
from app.storage.local import LocalArtifactStore

from tests.unit.fakes import (
    MemoryRepository,
    RecordingDispatcher,
    ScriptedRenderer,
    memory_deps,
)

TIMEOUT = 30.0
LATER = timedelta(seconds=TIMEOUT + 5)  # the new worker's clock: the old heartbeat is stale


class PausingRenderer(ScriptedRenderer):
    """On its first render, after its last checkpoint, runs ``pause`` (what happened while
    this worker was frozen), then raises ``raise_after_pause`` or, with ``check_after_pause``,
    reaches one more checkpoint."""

    def __init__(self) -> None:
        super().__init__(steps=3)
        self.pause: Callable[[], None] = lambda: None
        self.raise_after_pause: Exception | None = None
        self.check_after_pause = False

    def render(self, params: ReportParams, target: Path, progress: Progress) -> None:
        first = self.calls == 0
        super().render(params, target, progress)
        if first:
            self.pause()
            if self.raise_after_pause is not None:
                raise self.raise_after_pause
            if self.check_after_pause:
                progress.advance(1.0, "finishing")


@pytest.fixture
def renderer() -> PausingRenderer:
    return PausingRenderer()


@pytest.fixture
def old(tmp_path: Path, renderer: PausingRenderer) -> Deps:
    """The worker that claims first, then is paused."""
    return memory_deps(
        tmp_path / "artifacts",
        renderer=renderer,
        dispatcher=RecordingDispatcher(Backend.CELERY),
        worker_id="w-old",
        heartbeat_timeout=TIMEOUT,
    )


def _new(old: Deps) -> Deps:
    """Another worker on the same ledger and store, whose clock is past the timeout."""
    return replace(old, worker_id="w-new", clock=lambda: utcnow() + LATER)


def _repo(deps: Deps) -> MemoryRepository:
    assert isinstance(deps.repo, MemoryRepository)
    return deps.repo


def _files(deps: Deps, job_id: UUID) -> list[Path]:
    root: Path = deps.store.root  # type: ignore[attr-defined]
    return sorted(p for p in (root / str(job_id)).rglob("*") if p.is_file())


def _reclaim(old: Deps, job_id: UUID) -> Callable[[], None]:
    """While ``old`` is frozen, ``w-new`` takes the job over (and is still rendering)."""

    def pause() -> None:
        new = _new(old)
        now = new.clock()
        taken = new.repo.transition(
            job_id,
            JobStatus.RUNNING,
            now=now,
            expected=frozenset(),
            stale_before=now - timedelta(seconds=TIMEOUT),
            worker=new.worker_id,
        )
        assert taken is not None

    return pause


def test_a_reclaimed_job_refuses_its_former_workers_completion(
    old: Deps, renderer: PausingRenderer
) -> None:
    job = enqueue_report(deps=old, report_type=ReportType.DUMMY, params={}).job
    renderer.pause = _reclaim(old, job.id)

    outcome = run_report(deps=old, job_id=job.id)

    # The row still says running (under w-new): only the worker condition refuses it.
    assert outcome.kind == "skipped"
    assert outcome.retry_in is None  # nothing to deliver again: the job is in good hands
    current = _repo(old).jobs[job.id]
    assert (current.status, current.worker, current.attempts) == (JobStatus.RUNNING, "w-new", 2)
    assert current.artifact is None
    assert _files(old, job.id) == []  # the loser's file is gone
    assert not (old.store.root / str(job.id)).exists()  # type: ignore[attr-defined]
    assert "completed" not in old.observer.names()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("error", "max_attempts"),
    [(RuntimeError("disk full"), 3), (RuntimeError("disk full"), 1)],
    ids=["retry", "final-failure"],
)
def test_a_reclaimed_job_refuses_its_former_workers_failure(
    old: Deps, renderer: PausingRenderer, error: Exception, max_attempts: int
) -> None:
    job = enqueue_report(deps=old, report_type=ReportType.DUMMY, params={}).job
    _repo(old).jobs[job.id] = replace(job, max_attempts=max_attempts)
    renderer.pause = _reclaim(old, job.id)
    renderer.raise_after_pause = error

    outcome = run_report(deps=old, job_id=job.id)

    assert outcome.kind == "skipped"
    current = _repo(old).jobs[job.id]
    assert (current.status, current.worker, current.error) == (JobStatus.RUNNING, "w-new", None)
    names = old.observer.names()  # type: ignore[attr-defined]
    assert "retrying" not in names
    assert "failed" not in names


def test_a_reclaimed_job_refuses_its_former_workers_requeue_on_shutdown(
    old: Deps, renderer: PausingRenderer
) -> None:
    stopping = [False]
    deps = replace(old, stopping=lambda: stopping[0])
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    reclaim = _reclaim(deps, job.id)

    def pause_then_stop() -> None:  # it wakes into a warm shutdown: requeue, not finish
        reclaim()
        stopping[0] = True

    renderer.pause = pause_then_stop
    renderer.check_after_pause = True

    outcome = run_report(deps=deps, job_id=job.id)

    assert outcome.kind == "skipped"
    current = _repo(deps).jobs[job.id]
    assert (current.status, current.worker) == (JobStatus.RUNNING, "w-new")


def test_the_reclaiming_workers_artifact_survives_the_former_workers_clean_up(
    old: Deps, renderer: PausingRenderer
) -> None:
    job = enqueue_report(deps=old, report_type=ReportType.DUMMY, params={}).job
    won: list[ReportJob | None] = []

    def pause() -> None:  # w-new reclaims the job and completes it meanwhile
        won.append(run_report(deps=_new(old), job_id=job.id).job)

    renderer.pause = pause

    outcome = run_report(deps=old, job_id=job.id)

    assert outcome.kind == "skipped"
    [winner] = won
    assert winner is not None
    assert (winner.status, winner.worker, winner.attempts) == (JobStatus.COMPLETED, "w-new", 2)
    assert winner.artifact is not None
    assert winner.artifact.key == f"{job.id}/2/dummy-{job.id}.txt"
    done = _repo(old).jobs[job.id]
    assert done == winner  # the refused write changed nothing
    artifact = artifact_of(deps=old, job_id=job.id)
    path = old.store.local_path(artifact)  # type: ignore[attr-defined]
    assert artifact == winner.artifact
    assert _files(old, job.id) == [path]  # the winner's, and only it
    assert path.read_text().count("line") == 3
    assert artifact.size_bytes == path.stat().st_size


def test_two_attempts_never_share_an_artifact_path(old: Deps, renderer: PausingRenderer) -> None:
    renderer.fail_on = {1}
    job = enqueue_report(deps=old, report_type=ReportType.DUMMY, params={}).job
    assert run_report(deps=old, job_id=job.id).kind == "retry"
    done = run_report(deps=old, job_id=job.id).job
    assert done is not None
    assert done.artifact is not None
    assert done.artifact.key == f"{job.id}/2/dummy-{job.id}.txt"
    store: LocalArtifactStore = old.store  # type: ignore[assignment]
    first = store.save(
        _temp(store, job.id), job_id=job.id, filename="dummy.txt", content_type="x", attempt=1
    )
    assert first.key == f"{job.id}/1/dummy.txt"
    assert store.local_path(first) != store.local_path(done.artifact)


def test_deleting_an_artifact_removes_its_empty_folders_only(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    job_id = UUID(int=7)
    one = store.save(
        _temp(store, job_id), job_id=job_id, filename="r.txt", content_type="x", attempt=1
    )
    two = store.save(
        _temp(store, job_id), job_id=job_id, filename="r.txt", content_type="x", attempt=2
    )
    package = store.save(_temp(store, job_id), job_id=job_id, filename="p.zip", content_type="x")
    legacy_key = f"{job_id}/r.txt"  # a row written before attempts had their own folder
    assert package.key == f"{job_id}/p.zip"
    store.delete(one)
    assert not store.local_path(one).parent.exists()
    assert store.local_path(two).exists()
    store.delete(two)
    assert store.local_path(package).exists()
    store.delete(package)
    assert not (store.root / str(job_id)).exists()
    assert store.root.exists()
    assert (store.root / ".tmp").exists()
    legacy = replace(package, key=legacy_key)
    assert store.local_path(legacy) == store.root / str(job_id) / "r.txt"


def _temp(store: LocalArtifactStore, job_id: UUID) -> Path:
    temp = store.temp_path(job_id, "txt")
    temp.write_text("x")
    return temp


# --------------------------------------------------------------------------- Beat recovery


class MemoryOps:
    """The part of the housekeeping repository recovery reads, over the in-memory ledger."""

    def __init__(self, repo: MemoryRepository) -> None:
        self.repo = repo
        self.slots: set[tuple[str, datetime]] = set()

    def claim_run(self, task: str, slot: datetime, *, now: datetime) -> bool:
        if (task, slot) in self.slots:
            return False
        self.slots.add((task, slot))
        return True

    def finish_run(
        self, task: str, slot: datetime, *, now: datetime, status: str, result: Mapping[str, Any]
    ) -> None:
        return None

    def stale_waiting(self, before: datetime, *, limit: int) -> Sequence[ReportJob]:
        return []

    def running_since(self, before: datetime) -> Sequence[ReportJob]:
        return [
            j
            for j in self.repo.jobs.values()
            if j.status is JobStatus.RUNNING and j.started_at is not None and j.started_at < before
        ]


class NullRecorder:
    def periodic_run(self, task: str, outcome: str) -> None:
        return None

    def component(self, name: str, *, ok: bool, latency_s: float) -> None:
        return None


def _running(deps: Deps, *, started_ago: float, beat_ago: float, attempts: int = 1) -> UUID:
    job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params={}).job
    now = utcnow()
    _repo(deps).jobs[job.id] = replace(
        job,
        status=JobStatus.RUNNING,
        worker="celery@gone:1",
        attempts=attempts,
        started_at=now - timedelta(seconds=started_ago),
        updated_at=now - timedelta(seconds=beat_ago),
    )
    return job.id


def test_beat_recovery_follows_the_heartbeat_not_the_time_limit(old: Deps) -> None:
    repo = _repo(old)
    # Started long ago but heartbeating: alive, even past any time limit.
    alive = _running(old, started_ago=3600, beat_ago=TIMEOUT - 10)
    # Started a minute ago, silent for longer than the timeout: lost, far below any limit.
    lost = _running(old, started_ago=60, beat_ago=TIMEOUT + 5)
    spent = _running(old, started_ago=60, beat_ago=TIMEOUT + 5, attempts=3)
    old.dispatcher.dispatched.clear()  # type: ignore[attr-defined]
    kit = Housekeeping(
        ops=MemoryOps(repo),  # type: ignore[arg-type]
        policy=HousekeepingPolicy(),
        recorder=NullRecorder(),
        probe=lambda: [],
    )

    outcome = recover_stuck(deps=old, kit=kit)

    assert outcome.result == {"redispatched": 0, "requeued": 1, "failed": 1}
    assert repo.jobs[alive].status is JobStatus.RUNNING
    requeued = repo.jobs[lost]
    assert requeued.status is JobStatus.QUEUED
    assert old.dispatcher.dispatched == [lost]  # type: ignore[attr-defined]
    failed = repo.jobs[spent]
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert failed.error.code == WORKER_LOST
    # The lost worker, should it wake, can no longer finish either job.
    for job_id in (lost, spent):
        refused = repo.transition(
            job_id,
            JobStatus.COMPLETED,
            now=utcnow(),
            expected=frozenset({JobStatus.RUNNING}),
            expected_worker="celery@gone:1",
        )
        assert refused is None


def test_beat_recovery_leaves_a_job_another_worker_reclaimed_meanwhile(old: Deps) -> None:
    repo = _repo(old)
    job_id = _running(old, started_ago=60, beat_ago=TIMEOUT + 5)
    stale = repo.jobs[job_id]

    class RacingOps(MemoryOps):
        def running_since(self, before: datetime) -> Sequence[ReportJob]:
            seen = super().running_since(before)
            # Between the read and the update, a redelivery reclaims the job.
            repo.jobs[job_id] = replace(stale, worker="w-new", attempts=2, updated_at=utcnow())
            return seen

    kit = Housekeeping(
        ops=RacingOps(repo),  # type: ignore[arg-type]
        policy=HousekeepingPolicy(),
        recorder=NullRecorder(),
        probe=lambda: [],
    )
    outcome = recover_stuck(deps=old, kit=kit)
    assert outcome.result == {"redispatched": 0, "requeued": 0, "failed": 0}
    current = repo.jobs[job_id]
    assert (current.status, current.worker) == (JobStatus.RUNNING, "w-new")


def test_the_local_store_reads_byte_ranges(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    job_id = uuid4()
    temp = store.temp_path(job_id, "bin")
    temp.write_bytes(bytes(range(256)) * 8192)  # 2 MiB: more than one chunk
    artifact = store.save(temp, job_id=job_id, filename="r.bin", content_type="x", attempt=1)
    whole = store.local_path(artifact).read_bytes()
    assert b"".join(store.read(artifact)) == whole
    assert b"".join(store.read(artifact, 10, 19)) == whole[10:20]
    assert (
        b"".join(store.read(artifact, (1 << 20) - 3, (1 << 20) + 2)) == whole[(1 << 20) - 3 :][:6]
    )
    assert b"".join(store.read(artifact, len(whole) - 5)) == whole[-5:]
    assert store.url_for(artifact, expires=60) is None
    store.ping()
