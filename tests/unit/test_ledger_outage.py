"""A ledger that stops answering: deliveries are deferred, never decided or lost."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from app.domain.errors import LedgerUnavailable
from app.domain.queues import ReportType, Step
from app.domain.states import JobStatus
from app.services.deps import Deps
from app.services.enqueue import enqueue_report
from app.services.pipeline import deliver
from app.services.run_report import run_report
from app.storage.local import LocalArtifactStore

from tests.unit.fakes import (
    MemoryRepository,
    memory_deps,
)


class FlakyRepository(MemoryRepository):
    """Raises LedgerUnavailable from the named methods while ``down`` names them."""

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()
        self.completion_down = False

    def _check(self, name: str) -> None:
        if name in self.down:
            raise LedgerUnavailable("the ledger is down")

    def record_progress(self, *args: Any, **kwargs: Any) -> bool:
        self._check("record_progress")
        return super().record_progress(*args, **kwargs)

    def transition(self, job_id: Any, target: JobStatus, **kwargs: Any) -> Any:
        self._check("transition")
        if target is JobStatus.COMPLETED and self.completion_down:
            raise LedgerUnavailable("the ledger is down")
        return super().transition(job_id, target, **kwargs)


@pytest.fixture
def deps(tmp_path: Path) -> Deps:
    return memory_deps(
        tmp_path / "artifacts", repo=FlakyRepository(), progress_interval=0.0, heartbeat_timeout=4.0
    )


def flaky(deps: Deps) -> FlakyRepository:
    assert isinstance(deps.repo, FlakyRepository)
    return deps.repo


def files(deps: Deps) -> list[Path]:
    assert isinstance(deps.store, LocalArtifactStore)
    return [p for p in deps.store.root.rglob("*") if p.is_file()]


def test_a_claim_the_ledger_cannot_record_is_deferred(deps: Deps) -> None:
    job = enqueue_report(deps=deps, report_type=ReportType.PDF, params={}).job
    flaky(deps).down = {"transition"}
    outcome = deliver(Step.RENDER, deps=deps, job_id=job.id, deliveries=0).outcome
    assert (outcome.kind, outcome.job) == ("deferred", None)
    assert outcome.retry_in is not None
    assert outcome.retry_in > 0
    flaky(deps).down = set()
    assert deps.repo.get(job.id).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert run_report(deps=deps, job_id=job.id).kind == "completed"


def test_missed_heartbeats_do_not_stop_the_render(deps: Deps) -> None:
    job = enqueue_report(deps=deps, report_type=ReportType.PDF, params={}).job
    flaky(deps).down = {"record_progress"}
    outcome = run_report(deps=deps, job_id=job.id)
    assert outcome.kind == "completed"
    assert len(files(deps)) == 1


def test_an_unrecorded_completion_leaves_no_file_and_the_next_delivery_reclaims(
    deps: Deps,
) -> None:
    job = enqueue_report(deps=deps, report_type=ReportType.PDF, params={}).job
    flaky(deps).completion_down = True
    outcome = deliver(Step.RENDER, deps=deps, job_id=job.id, deliveries=0).outcome
    assert outcome.kind == "deferred"
    assert files(deps) == []  # the unrecorded attempt's report is not left behind
    running = deps.repo.get(job.id)
    assert running is not None
    assert running.status is JobStatus.RUNNING
    flaky(deps).completion_down = False
    # Redelivered to the same process (same worker id): it waits for the heartbeat...
    early = run_report(deps=deps, job_id=job.id)
    assert early.kind == "skipped"
    assert early.retry_in is not None
    # ...and takes the job back once it is stale: attempt 2 completes, one file.
    later = running.updated_at + timedelta(seconds=5)
    retried = run_report(deps=replace(deps, clock=lambda: later), job_id=job.id)
    assert retried.kind == "completed"
    assert retried.job is not None
    assert retried.job.attempts == 2
    assert len(files(deps)) == 1
