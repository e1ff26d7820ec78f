"""Beat housekeeping on the real ledger, store and workers, with the clock under control.

Controlled times are in January 2020, so that nothing another test wrote (created now)
is old enough to be touched, and every periodic slot used here is this module's own.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from app import bootstrap
from app.bootstrap import celery_app
from app.db.housekeeping import SqlHousekeepingRepository
from app.domain.jobs import ReportJob
from app.domain.params import parse_params
from app.domain.queues import Backend, ReportType
from app.domain.states import JobStatus
from app.services.daily_stats import compute_daily_stats
from app.services.deps import Deps
from app.services.housekeeping import (
    CLEANUP,
    HEALTH,
    RECOVER,
    Housekeeping,
    cleanup_expired,
    recover_stuck,
)
from app.services.lost_worker import WORKER_LOST
from app.services.postprocess import postprocess_report
from app.services.run_report import run_report

from tests.e2e.server import running
from tests.integration.workers import (
    WorkerProcess,
    celery_worker,
    delete_redis_keys,
    event_lines,
    settings_from,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)

T0 = datetime(2020, 1, 10, 12, 0, tzinfo=UTC)


def at(deps: Deps, moment: datetime, step: float = 0.0) -> Deps:
    """``deps`` whose clock reads ``moment``, advancing ``step`` seconds at each reading."""
    readings = itertools.count()
    return replace(deps, clock=lambda: moment + timedelta(seconds=step * next(readings)))


def add_job(
    deps: Deps,
    created: datetime,
    *,
    backend: Backend = Backend.CELERY,
    max_attempts: int = 3,
    report_type: ReportType = ReportType.DUMMY,
) -> ReportJob:
    job = ReportJob.new(
        report_type=report_type,
        params=parse_params(report_type, {}),
        max_attempts=max_attempts,
        now=created,
    ).with_backend(backend)
    deps.repo.add(job)
    return job


def finished_job(deps: Deps, created: datetime) -> ReportJob:
    """A completed job with its report and its package on disk, as of ``created``."""
    job = add_job(deps, created)
    then = at(deps, created + timedelta(seconds=5), step=1.0)
    assert run_report(deps=then, job_id=job.id).kind == "completed"
    postprocess_report(deps=then, job_id=job.id)
    done = deps.repo.get(job.id)
    assert done is not None
    assert done.artifact is not None
    assert done.document is not None
    return done


def files_of(deps: Deps, job: ReportJob) -> list[Path]:
    return [deps.store.local_path(a) for a in (job.artifact, job.document) if a is not None]


@pytest.fixture(scope="module")
def container(backend_env: dict[str, str]) -> Iterator[bootstrap.Container]:
    built = bootstrap.build(settings_from(backend_env, dispatch_backend="celery"))
    yield built
    built.close()


@pytest.fixture(scope="module")
def kit(container: bootstrap.Container) -> Iterator[Housekeeping]:
    yield container.housekeeping
    # Leave no 2020 job unfinished behind: other tests read queue status from this ledger.
    for job in container.deps.repo.unfinished():
        if job.created_at.year == 2020:
            container.deps.repo.transition(job.id, JobStatus.CANCELLED, now=datetime.now(UTC))


def _ops(kit: Housekeeping) -> SqlHousekeepingRepository:
    assert isinstance(kit.ops, SqlHousekeepingRepository)
    return kit.ops


def test_cleanup_deletes_old_jobs_and_their_files_once_per_slot(
    container: bootstrap.Container, kit: Housekeeping
) -> None:
    deps = container.deps
    old = [finished_job(deps, T0 - timedelta(days=9)) for _ in range(3)]
    young = finished_job(deps, T0 - timedelta(days=2))
    # Old but unfinished: not the cleanup's business (inline: not Beat recovery's either).
    waiting = add_job(deps, T0 - timedelta(days=9), backend=Backend.INLINE)
    old_files = [p for job in old for p in files_of(deps, job)]
    assert len(old_files) == 6
    assert all(p.exists() for p in old_files)

    outcome = cleanup_expired(deps=at(deps, T0), kit=kit)
    assert outcome.ran
    assert outcome.result["deleted"] == 3
    assert outcome.result["files"] == 6
    assert all(deps.repo.get(job.id) is None for job in old)
    assert not any(p.exists() for p in old_files)
    assert not any(p.parent.exists() for p in old_files)  # the job folders too
    assert deps.repo.get(young.id) is not None
    assert all(p.exists() for p in files_of(deps, young))
    assert deps.repo.get(waiting.id) is not None

    late = finished_job(deps, T0 - timedelta(days=10))
    again = cleanup_expired(deps=at(deps, T0 + timedelta(minutes=20)), kit=kit)
    assert not again.ran  # same hourly slot: a second Beat's run does nothing
    assert deps.repo.get(late.id) is not None
    runs = _ops(kit).runs(CLEANUP)
    hour = [(slot, status) for slot, status, _ in runs if T0 <= slot < T0 + timedelta(hours=1)]
    assert hour == [(T0, "done")]  # (other tests of this ledger run cleanups on other days)

    next_hour = cleanup_expired(deps=at(deps, T0 + timedelta(hours=1)), kit=kit)
    assert next_hour.ran
    assert next_hour.result["deleted"] == 1
    assert deps.repo.get(late.id) is None


def test_two_beats_at_once_run_a_slot_once(
    container: bootstrap.Container, kit: Housekeeping
) -> None:
    moment = T0 + timedelta(days=1)
    outcomes: list[bool] = []
    barrier = threading.Barrier(4)

    def beat() -> None:
        barrier.wait()
        outcomes.append(cleanup_expired(deps=at(container.deps, moment), kit=kit).ran)

    threads = [threading.Thread(target=beat) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == [False, False, False, True]


def test_recovery_redispatches_once_and_handles_runs_with_a_stale_heartbeat(
    container: bootstrap.Container,
    kit: Housekeeping,
    backend_env: dict[str, str],
    celery_session_worker: WorkerProcess,
) -> None:
    deps = container.deps
    moment = T0 + timedelta(days=2)
    # A job whose message went to queues nobody consumes: it stays queued after recovery.
    nobody = f"nobody{secrets.token_hex(2)}-"
    lost = bootstrap.build(
        settings_from(backend_env, dispatch_backend="celery", queue_prefix=nobody)
    )
    try:
        stranded = add_job(deps, moment - timedelta(hours=2))
        deps.repo.transition(stranded.id, JobStatus.QUEUED, now=moment - timedelta(hours=2))
        first = recover_stuck(deps=at(lost.deps, moment), kit=kit)
        assert first.result["redispatched"] == 1
    finally:
        lost.close()
        delete_redis_keys(nobody)

    waiting = add_job(deps, moment - timedelta(hours=1))  # its message was lost: still pending
    later = moment + timedelta(minutes=1)
    timeout = deps.policy.heartbeat_timeout
    silent = later - timedelta(seconds=timeout + 5)  # the last heartbeat: stale
    overdue = _running_since(deps, silent, max_attempts=3)
    hopeless = _running_since(deps, silent, max_attempts=1)
    # Started hours ago, past any time limit, but its heartbeat is fresh: its worker lives.
    recent = _running_since(deps, moment - timedelta(hours=3), max_attempts=3)
    fresh = later - timedelta(seconds=timeout / 2)
    assert deps.repo.record_progress(
        recent, progress=50, stage="x", now=fresh, worker="celery@gone:1"
    )

    outcome = recover_stuck(deps=at(deps, later), kit=kit)
    assert outcome.ran
    assert outcome.result == {"redispatched": 1, "requeued": 1, "failed": 1}
    assert not recover_stuck(deps=at(deps, later + timedelta(seconds=30)), kit=kit).ran

    assert wait_for(deps.repo, waiting.id, timeout=30).status is JobStatus.COMPLETED
    rerun = wait_for(deps.repo, overdue, timeout=30)
    assert rerun.status is JobStatus.COMPLETED
    assert rerun.attempts == 2
    failed = deps.repo.get(hopeless)
    assert failed is not None
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert failed.error.code == WORKER_LOST
    still = deps.repo.get(recent)
    assert still is not None
    assert still.status is JobStatus.RUNNING

    # Re-dispatched once: a later run leaves the stranded job alone.
    third = recover_stuck(deps=at(deps, later + timedelta(minutes=1)), kit=kit)
    assert third.result["redispatched"] == 0
    current = deps.repo.get(stranded.id)
    assert current is not None
    assert current.status is JobStatus.QUEUED


def _running_since(deps: Deps, started: datetime, *, max_attempts: int) -> UUID:
    job = add_job(deps, started - timedelta(seconds=1), max_attempts=max_attempts)
    claimed = deps.repo.transition(job.id, JobStatus.RUNNING, now=started, worker="celery@gone:1")
    assert claimed is not None
    assert claimed.attempts == 1
    return job.id


def test_daily_figures_are_stored_and_served(
    container: bootstrap.Container, kit: Housekeeping, tmp_path: Path
) -> None:
    deps = container.deps
    day = date(2020, 1, 13)  # Paris: 2020-01-12T23:00Z .. 2020-01-13T23:00Z
    start = datetime(2020, 1, 12, 23, 0, tzinfo=UTC)
    for offset in (1, 2, 3):
        finished_job(deps, start + timedelta(hours=offset))
    failed = add_job(deps, start + timedelta(hours=4), backend=Backend.RQ)
    deps.repo.transition(failed.id, JobStatus.RUNNING, now=start + timedelta(hours=4))
    deps.repo.transition(failed.id, JobStatus.FAILED, now=start + timedelta(hours=4, seconds=30))
    add_job(deps, start - timedelta(minutes=1))  # the day before, in Paris
    midnight = datetime(2020, 1, 13, 23, 0, 20, tzinfo=UTC)  # 00:00:20 in Paris

    outcome = compute_daily_stats(deps=at(deps, midnight), kit=kit)
    assert outcome.ran
    assert outcome.result == {"day": "2020-01-13", "total": 4}
    assert not compute_daily_stats(deps=at(deps, midnight), kit=kit).ran

    with (
        running(tmp_path / "api", container.settings.ledger.database_url) as live,
        live.client() as client,
    ):
        response = client.get(f"/api/v1/reports/stats/daily?day={day}")
        missing = client.get("/api/v1/reports/stats/daily?day=2019-01-01")
    assert response.status_code == 200, response.text
    figures = response.json()["figures"]
    assert figures["total"] == 4
    assert figures["completed"] == 3
    assert figures["failed"] == 1
    assert figures["failure_rate"] == 0.25
    assert figures["p95_seconds"] >= figures["p50_seconds"] > 0
    counts = {(c["report_type"], c["status"], c["backend"]): c["count"] for c in figures["counts"]}
    assert counts == {("dummy", "completed", "celery"): 3, ("dummy", "failed", "rq"): 1}
    assert missing.status_code == 404
    assert missing.json()["error"] == "STATS_NOT_FOUND"


def clear_of_slot_boundaries(margin: float = 3.0) -> None:
    """Return more than ``margin`` seconds before the next minute (and hour) boundary, so
    that two deliveries of a task sent now fall in one slot."""
    left = 60 - datetime.now(UTC).second - datetime.now(UTC).microsecond / 1e6
    if left < margin:
        time.sleep(left + 0.2)


def test_system_tasks_run_on_a_real_worker(
    own: tuple[dict[str, str], bootstrap.Container], work_dir: Path
) -> None:
    """Health, recovery and cleanup sent twice each, as two Beats would, to a real worker:
    each runs once in its slot (the second delivery is skipped) and does its work."""
    env, container = own
    deps, kit = container.deps, container.housekeeping
    ops = _ops(kit)
    now = datetime.now(UTC)
    retention = timedelta(days=container.settings.operations.retention_days)
    expired = finished_job(deps, now - retention - timedelta(days=2))
    young = finished_job(deps, now - retention + timedelta(days=1))
    expired_files = files_of(deps, expired)
    assert len(expired_files) == 2
    assert all(p.exists() for p in expired_files)
    queued_after = timedelta(seconds=container.settings.operations.recovery_queued_after)
    lost_message = add_job(deps, now - queued_after - timedelta(minutes=5))  # never dispatched
    silent = now - timedelta(seconds=deps.policy.heartbeat_timeout + 30)
    lost_worker = _running_since(deps, silent, max_attempts=3)

    for worker in celery_worker(env, work_dir, queues="celery,reports", concurrency=2):
        clear_of_slot_boundaries()
        app = celery_app(settings_from(env))
        try:
            for name in (HEALTH, RECOVER, CLEANUP) * 2:
                app.send_task(name)
        finally:
            app.close()

        def settled(logs: str) -> bool:
            return all(
                logs.count(f"housekeeping.done task={n} ")
                + logs.count(f"housekeeping.skipped task={n} ")
                == 2
                for n in (HEALTH, RECOVER, CLEANUP)
            ) and all(
                (j := deps.repo.get(i)) is not None and j.status.terminal
                for i in (lost_message.id, lost_worker)
            )

        deadline = time.monotonic() + 45
        while not settled(worker.logs()):
            if time.monotonic() > deadline:
                state = [deps.repo.get(i) for i in (lost_message.id, lost_worker)]
                pytest.fail(f"housekeeping not done in 45 s: {state}\n{worker.logs()[-4000:]}")
            time.sleep(0.1)
        logs = worker.logs()

        for name in (HEALTH, RECOVER, CLEANUP):  # one run, one skipped delivery
            runs = ops.runs(name)
            assert [status for _, status, _ in runs] == ["done"], (name, runs)
            assert logs.count(f"housekeeping.skipped task={name} ") == 1, name

        [(_, _, health)] = ops.runs(HEALTH)
        assert health is not None
        assert health["healthy"] is True
        assert {c["name"] for c in health["components"]} == {
            "database",
            "storage",
            "broker.celery",
            "broker.rq",
        }

        [(_, _, recovered)] = ops.runs(RECOVER)
        assert recovered == {"redispatched": 1, "requeued": 1, "failed": 0}
        redispatched = wait_for(deps.repo, lost_message.id, timeout=1)
        assert (redispatched.status, redispatched.attempts) == (JobStatus.COMPLETED, 1)
        assert len(event_lines(logs, "report_job.redispatched", lost_message.id)) == 1
        rerun = wait_for(deps.repo, lost_worker, timeout=1)
        assert (rerun.status, rerun.attempts) == (JobStatus.COMPLETED, 2)
        assert rerun.worker != "celery@gone:1"

        [(_, _, cleaned)] = ops.runs(CLEANUP)
        assert cleaned is not None
        assert (cleaned["deleted"], cleaned["files"], cleaned["kept"]) == (1, 2, 0)
        assert deps.repo.get(expired.id) is None
        assert not any(p.exists() for p in expired_files)
        assert not any(p.parent.exists() for p in expired_files)
        assert deps.repo.get(young.id) is not None
        assert all(p.exists() for p in files_of(deps, young))
