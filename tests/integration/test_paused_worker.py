"""A worker paused past the heartbeat timeout, on the real PostgreSQL ledger and the local
store: each attempt publishes under its own key, the former worker's completion is refused
and only the reclaiming worker's file remains. Old-style keys still download."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from app.db.repository import SqlJobRepository
from app.db.session import make_engine
from app.domain.jobs import (
    Backend,
    JobStatus,
    ReportJob,
    ReportParams,
    ReportType,
    RetryPolicy,
    parse_params,
    utcnow,
)
from app.domain.progress import Progress
from app.reports import default_renderers
from app.services.deps import Deps, JobPolicy
from app.services.housekeeping import delete_files
from app.services.queries import artifact_of
from app.services.run_report import RunOutcome, run_report
from app.storage.local import LocalArtifactStore

from tests.unit.fakes import RecordingDispatcher, RecordingObserver

TIMEOUT = 30.0


class PausedOnce:
    """The real dummy renderer; its first render, once done, runs ``pause`` before the
    worker gets to record the outcome (what happened while that worker was frozen)."""

    def __init__(self) -> None:
        self.inner = default_renderers()[ReportType.DUMMY]
        self.content_type = self.inner.content_type
        self.extension = self.inner.extension
        self.pause: Callable[[], None] = lambda: None
        self.calls = 0

    def render(self, params: ReportParams, target: Path, progress: Progress) -> None:
        self.calls += 1
        self.inner.render(params, target, progress)
        if self.calls == 1:
            self.pause()


@pytest.fixture
def repo(pg_url: str) -> Iterator[SqlJobRepository]:
    engine = make_engine(pg_url)
    yield SqlJobRepository(engine)
    engine.dispose()


@pytest.fixture
def renderer() -> PausedOnce:
    return PausedOnce()


@pytest.fixture
def old(repo: SqlJobRepository, renderer: PausedOnce, tmp_path: Path) -> Deps:
    return Deps(
        repo=repo,
        dispatcher=RecordingDispatcher(Backend.CELERY),
        store=LocalArtifactStore(tmp_path / "artifacts"),
        renderers=dict.fromkeys(ReportType, renderer),
        observer=RecordingObserver(),
        policy=JobPolicy(
            max_attempts=3,
            retry=RetryPolicy(1, 10, random.Random(1)),
            progress_interval=5.0,
            heartbeat_timeout=TIMEOUT,
        ),
        worker_id="celery@old:101",
    )


def _new(old: Deps) -> Deps:
    """Another worker, later: the old worker's heartbeat is stale by its clock."""
    return replace(
        old, worker_id="celery@new:202", clock=lambda: utcnow() + timedelta(seconds=TIMEOUT + 5)
    )


def _queued(deps: Deps) -> ReportJob:
    job = ReportJob.new(
        report_type=ReportType.DUMMY,
        params=parse_params(ReportType.DUMMY, {"seed": 5}),
        max_attempts=3,
        now=utcnow(),
        owner="paused-worker",
    ).with_backend(Backend.CELERY)
    deps.repo.add(job)
    queued = deps.repo.transition(job.id, JobStatus.QUEUED, now=utcnow())
    assert queued is not None
    return queued


def _published(deps: Deps, job_id: UUID) -> list[Path]:
    root: Path = deps.store.root  # type: ignore[attr-defined]
    return sorted(p for p in (root / str(job_id)).rglob("*") if p.is_file())


def test_only_the_reclaiming_workers_artifact_remains(old: Deps, renderer: PausedOnce) -> None:
    job = _queued(old)
    won: list[RunOutcome] = []
    renderer.pause = lambda: won.append(run_report(deps=_new(old), job_id=job.id))

    lost = run_report(deps=old, job_id=job.id)

    [winner] = won
    assert winner.kind == "completed"
    assert lost.kind == "skipped"
    done = old.repo.get(job.id)
    assert done is not None
    assert (done.status, done.worker, done.attempts) == (JobStatus.COMPLETED, "celery@new:202", 2)
    assert done.artifact is not None
    assert done.artifact.key == f"{job.id}/2/{done.artifact.filename}"
    _, artifact, path = artifact_of(deps=old, job_id=job.id)
    assert _published(old, job.id) == [path]  # attempt 1's file was discarded, not this one
    assert hashlib.sha256(path.read_bytes()).hexdigest() == artifact.sha256
    assert not (path.parent.parent / "1").exists()
    assert renderer.calls == 2
    assert [name for name, _ in old.observer.events].count("completed") == 1  # type: ignore[attr-defined]


def test_attempts_publish_under_distinct_keys(old: Deps, renderer: PausedOnce) -> None:
    """Attempt 1 loses its claim mid-render; both files exist until the loser cleans up."""
    job = _queued(old)
    seen: dict[str, set[Path]] = {}

    def pause() -> None:
        run_report(deps=_new(old), job_id=job.id)
        seen["winner done"] = set(_published(old, job.id))

    renderer.pause = pause
    store: LocalArtifactStore = old.store  # type: ignore[assignment]
    save = store.save
    keys: list[str] = []

    def recording_save(temp: Path, **kwargs: object) -> object:
        artifact = save(temp, **kwargs)  # type: ignore[arg-type]
        keys.append(artifact.key)
        seen.setdefault("after save", set()).update(_published(old, job.id))
        return artifact

    store.save = recording_save  # type: ignore[assignment,method-assign]

    assert run_report(deps=old, job_id=job.id).kind == "skipped"

    assert len(keys) == 2
    assert len(set(keys)) == 2  # attempt 2 (the winner) first, then attempt 1
    assert keys[0].startswith(f"{job.id}/2/")
    assert keys[1].startswith(f"{job.id}/1/")
    assert len(seen["after save"]) == 2  # for a moment, both files side by side
    done = old.repo.get(job.id)
    assert done is not None
    assert done.artifact is not None
    assert done.artifact.key == keys[0]
    assert _published(old, job.id) == [store.local_path(done.artifact)]


def test_an_old_style_key_still_downloads_and_is_cleaned_up(old: Deps) -> None:
    job = _queued(old)
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
    _, artifact, path = artifact_of(deps=old, job_id=job.id)
    assert artifact == legacy
    assert path.read_text() == "{}\n"
    assert delete_files(old.store, done) == 1
    assert not path.exists()
    assert not path.parent.exists()
