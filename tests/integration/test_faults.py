"""Fault injection with real processes: workers stopped mid-render, a broker gone at enqueue,
PostgreSQL restarted under running jobs, a Redis visibility timeout shorter than a render.

Every test owns its queue prefix (and, where it stops a dependency, its own Redis server or
PostgreSQL cluster), so the session's workers and other runs never see its jobs. Whatever
happens, the ledger must end terminal and each job must have run to completion once: one
``report_job.started`` per recorded attempt, one artifact file, one ``completed``.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import httpx
import pytest
from app import bootstrap
from app.db.migrations import upgrade
from app.domain.jobs import ReportJob
from app.domain.queues import ReportType
from app.domain.states import JobStatus
from app.services.enqueue import enqueue_report
from app.services.housekeeping import RECOVER

from tests.conftest import fresh_pg_database
from tests.e2e.server import LiveServer
from tests.integration.ops import (
    all_jobs,
    clean_env,
    ledger,
    periodic_runs,
    start_api,
    stop_api,
    throwaway_postgres,
    throwaway_redis,
    wait_until,
)
from tests.integration.workers import (
    REDIS_URL,
    WorkerProcess,
    assert_completed_once,
    delete_redis_keys,
    event_lines,
    parent_pid,
    rq_scheduler_pid,
    running_with_progress,
    send_task,
    settings_from,
    start_celery_worker,
    start_rq_worker,
    wait_for,
)

API = "/api/v1/reports"


def fault_env(**extra: str) -> dict[str, str]:
    """Settings shared by the API and the workers of one test: fast heartbeats and retries."""
    settings = {
        "ENVIRONMENT": "test",
        "QUEUE_PREFIX": f"f{secrets.token_hex(3)}-",
        "PROGRESS_INTERVAL": "0.25",
        "HEARTBEAT_TIMEOUT": "3",
        "RETRY_BACKOFF_BASE": "0.2",
        "RETRY_BACKOFF_MAX": "2",
        "AVAILABILITY_CACHE_SECONDS": "1",
        "BROKER_TIMEOUT": "0.3",
        "HEALTH_TIMEOUT": "0.5",
        "CANCEL_GRACE_SECONDS": "1",
        "METRICS_PORT": "0",
        "RATE_LIMIT_REQUESTS": "100000",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "INFO",
    }
    return clean_env(**{**settings, **extra})


@pytest.fixture
def env(backend_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The session's database and Redis, on queues of this test's own."""
    prefix = f"f{secrets.token_hex(3)}-"
    yield {
        **backend_env,
        "QUEUE_PREFIX": prefix,
        "HEARTBEAT_TIMEOUT": "3",
        "METRICS_PORT": "0",
    }
    delete_redis_keys(prefix)


@pytest.fixture
def fresh_db() -> Iterator[str]:
    """A migrated database of this test's own: every row in it is the test's."""
    with fresh_pg_database("faults") as url:
        upgrade(url)
        yield url


# --------------------------------------------------------------------------- 1. SIGTERM

#: How long a SIGTERMed worker may take to exit, and its render to be requeued. The README
#: says 1-2 s (measured: about 1 s); 5 s holds on a loaded 2-core machine, and stays far
#: below the render's length, so a warm shutdown that waited for the job cannot pass.
STOP_BOUND = 5.0
#: The render's length: long enough to outlast the second worker's start-up, comfortably.
RENDER_SECONDS = 12


def stop_mid_render(env: dict[str, str], log_dir: Path, backend: str) -> None:
    """SIGTERM the worker's main process while it renders: the render stops at its next
    checkpoint and the job goes back to its queue, the worker exits 0 within
    ``STOP_BOUND``, and the other worker (started while the first one rendered) completes
    the job once: ``attempts=2``, one artifact."""

    def start() -> WorkerProcess:
        if backend == "celery":
            return start_celery_worker(env, log_dir, queues="reports")
        return start_rq_worker(env, log_dir, "reports")

    container = bootstrap.build(settings_from(env, dispatch_backend=backend))
    first = start()
    workers = [first]
    try:
        deps = container.deps
        params = {"processing_time": RENDER_SECONDS, "seed": 5}
        job = enqueue_report(deps=deps, report_type=ReportType.DUMMY, params=params).job
        running = wait_for(deps.repo, job.id, running_with_progress, timeout=20)
        assert first.process is not None
        assert running.worker is not None
        assert parent_pid(int(running.worker.rsplit(":", 1)[1])) == first.process.pid
        if backend == "rq":  # the first worker runs the queue's scheduler: it stops with it
            rq_scheduler_pid(env, first)
        second = start()
        workers.append(second)
        still = deps.repo.get(job.id)
        assert still is not None
        assert (still.status, still.worker) == (JobStatus.RUNNING, running.worker), still
        assert still.progress < 100, still

        signalled = time.monotonic()
        first.process.send_signal(signal.SIGTERM)

        def requeued() -> bool:  # no longer running under the first worker's child
            row = deps.repo.get(job.id)
            assert row is not None
            return row.status is not JobStatus.RUNNING or row.worker != running.worker

        requeued_in = wait_until(requeued, timeout=STOP_BOUND)
        with contextlib.suppress(subprocess.TimeoutExpired):
            first.process.wait(timeout=STOP_BOUND - (time.monotonic() - signalled))
        exited_in = time.monotonic() - signalled
        first.stop()  # SIGKILL if it is still there, so that the assertions can tell
        assert first.process.returncode == 0, (first.process.returncode, first.logs()[-3000:])
        assert exited_in <= STOP_BOUND, exited_in
        # The render stopped at a checkpoint and its job went back to the queue: the first
        # worker started it once and never completed it.
        assert len(event_lines(first.logs(), "report_job.run.interrupted", job.id)) == 1
        assert len(event_lines(first.logs(), "report_job.started", job.id)) == 1
        assert not event_lines(first.logs(), "report_job.completed", job.id)

        final = wait_for(deps.repo, job.id, timeout=30)
        assert_completed_once(final, container.settings.artifacts, *workers, attempts=2)
        assert final.worker != running.worker
        assert len(event_lines(second.logs(), "report_job.started", job.id)) == 1
        assert len(event_lines(second.logs(), "report_job.completed", job.id)) == 1
        print(
            f"{backend}: SIGTERM to requeued {requeued_in:.2f}s, to exit {exited_in:.2f}s; "
            f"{final.attempts=}"
        )
    finally:
        for worker in workers:
            worker.stop()
        container.close()


@pytest.mark.timeout(90)
def test_sigterm_to_celery_worker_mid_render_requeues_it_to_another_worker(
    env: dict[str, str], log_dir: Path
) -> None:
    stop_mid_render(env, log_dir, "celery")


@pytest.mark.timeout(90)
def test_sigterm_to_rq_worker_mid_render_requeues_it_to_another_worker(
    env: dict[str, str], log_dir: Path
) -> None:
    stop_mid_render(env, log_dir, "rq")


# --------------------------------------------------------------------------- 2. broker gone


def celery_workers_seen(client: httpx.Client) -> bool:
    """Whether the API's queue status shows a Celery worker on the reports queue."""
    rows = client.get(f"{API}/queues/status").json()["queues"]
    return any(r["queue"] == "reports" and r["backend"] == "celery" and r["workers"] for r in rows)


def post_dummy(client: httpx.Client, **params: object) -> httpx.Response:
    return client.post(f"{API}/dummy", params={k: str(v) for k, v in params.items()})


@pytest.mark.timeout(90)
def test_broker_stopped_at_enqueue_answers_fast_then_recovery_dispatches_once(
    fresh_db: str, work_dir: Path
) -> None:
    with throwaway_redis() as broker:
        env = fault_env(
            DATABASE_URL=fresh_db,
            DATA_DIR=str(work_dir / "data"),
            REDIS_URL=broker.url,
            CELERY_BROKER_URL=broker.url,
            DISPATCH_BACKEND="auto",
            INLINE_FALLBACK="false",
            RECOVERY_QUEUED_AFTER="1",
        )
        artifacts = settings_from(env).artifacts
        worker = start_celery_worker(env, work_dir, concurrency=1)
        api: LiveServer | None = None
        try:
            api = start_api(env, work_dir / "api.log")
            with api.client() as client, ledger(fresh_db) as repo:
                # The API routes to Celery once its probes have seen the worker (a slow first
                # probe would send the first job to RQ, whose broker answers but no worker runs).
                wait_until(lambda: celery_workers_seen(client), timeout=20)
                # The only worker process renders one job; three more wait in Redis.
                busy = UUID(post_dummy(client, processing_time=3).json()["id"])
                wait_for(repo, busy, running_with_progress, timeout=20)
                waiting = []
                for seed in range(3):
                    response = post_dummy(client, seed=seed)
                    assert response.status_code == 200, response.text
                    waiting.append(UUID(response.json()["id"]))
                broker.stop()  # no persistence: the waiting messages are gone with it
                known = {j.id for j in all_jobs(repo)}

                # Celery and RQ share the stopped Redis and INLINE_FALLBACK is off: no backend
                # can take a job (router.py, step 4), so each enqueue answers 503
                # BACKEND_UNAVAILABLE, fast, whether the router already knows the broker is
                # gone (no row) or learns it at publish (the row is failed before the answer).
                answers = []
                for seed in range(3):
                    started = time.monotonic()
                    response = post_dummy(client, seed=10 + seed)
                    elapsed = time.monotonic() - started
                    answers.append((response.status_code, elapsed, response.text))
                    assert elapsed < 1.5, answers
                    assert response.status_code == 503, answers
                    assert response.json()["error"] == "BACKEND_UNAVAILABLE", answers
                # Nothing waits behind a 503: a refused enqueue left no row or a failed one.
                behind = [j for j in all_jobs(repo) if j.id not in known]
                assert len(behind) <= len(answers), behind
                for job in behind:
                    assert job.status is JobStatus.FAILED, behind
                    assert job.error is not None, job
                    assert job.error.code == "BACKEND_UNAVAILABLE", job
                statuses = {j.id: j.status for j in all_jobs(repo)}
                assert JobStatus.PENDING not in statuses.values(), statuses

                broker.start()
                wait_for(repo, busy, timeout=20)
                lost = [repo.get(job_id) for job_id in waiting]  # messages gone: nothing runs
                assert [j.status if j else None for j in lost] == [JobStatus.QUEUED] * len(lost)
                time.sleep(1.0)  # older than RECOVERY_QUEUED_AFTER
                send_task(settings_from(env), RECOVER)
                finals = [wait_for(repo, job_id, timeout=30) for job_id in waiting]
                for final in finals:
                    assert_completed_once(final, artifacts, worker, attempts=1)
                    assert len(event_lines(worker.logs(), "report_job.redispatched", final.id)) == 1
                # Beat firing again (or a duplicate delivery) dispatches nothing twice.
                send_task(settings_from(env), RECOVER)
                wait_until(lambda: worker.logs().count(f"{RECOVER}[") >= 4, 15)  # 2x received, done
                for final in finals:
                    assert len(event_lines(worker.logs(), "report_job.redispatched", final.id)) == 1
                    assert len(event_lines(worker.logs(), "report_job.started", final.id)) == 1
                busy_final = repo.get(busy)
                assert busy_final is not None
                assert_completed_once(busy_final, artifacts, worker, attempts=1)
                # A 503 leaves no row (the router refused before writing) or a failed one
                # (the publish failed after the commit), never a pending one.
                refused = [j for j in all_jobs(repo) if j.status is JobStatus.FAILED]
                assert len(refused) <= sum(1 for a in answers if a[0] == 503)
                assert {j.error.code for j in refused if j.error} <= {"BACKEND_UNAVAILABLE"}
                # Recovery took back only the lost messages' jobs: the refused stay failed.
                assert {j.id for j in refused} == {j.id for j in behind}, refused
                print(
                    f"enqueue with the broker down: {[(a[0], round(a[1], 3)) for a in answers]}, "
                    f"{len(behind)} failed row(s) behind them"
                )
        finally:
            if api is not None:
                stop_api(api)
            worker.stop()


# --------------------------------------------------------------------------- 3. PostgreSQL


def ready_status(api: LiveServer) -> int:
    return httpx.get(api.url + "/health/ready", timeout=3).status_code


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("backend", "beat"),
    [
        pytest.param("rq", False, id="rq-workers"),
        pytest.param("celery", False, id="celery-workers"),
        pytest.param("celery", True, id="celery-with-beat-recovery"),
    ],
)
def test_postgres_restarted_under_running_jobs_every_job_ends_terminal(
    backend: str, beat: bool, work_dir: Path
) -> None:
    """Stop the ledger's own cluster (fast) for 3 s while jobs render, then start it again:
    readiness says 503 meanwhile; afterwards every job ends terminal, completed once, by
    the workers alone, or (``beat``) once Beat's recovery task has run after the outage.

    With ``beat``, recovery must have acted: its run is recorded (``periodic_runs``, done,
    once) and its record adds up with the ledger: every attempt after a job's first is
    either a worker's reclaim of the stale row (``report_job.run.reclaimed``) or one of the
    jobs recovery put back in the queue (``requeued``); none failed. Which of the two takes
    a job back depends on timing; that the sum holds does not."""
    with throwaway_postgres() as pg:
        prefix = f"p{secrets.token_hex(3)}-"
        env = fault_env(
            DATABASE_URL=pg.url,
            DATA_DIR=str(work_dir / "data"),
            REDIS_URL=REDIS_URL,
            CELERY_BROKER_URL=REDIS_URL,
            QUEUE_PREFIX=prefix,
            DISPATCH_BACKEND=backend,
            # The production backoff (RQ's retry budget is ~7-14 s of it), fast heartbeats.
            RETRY_BACKOFF_BASE="2",
            RETRY_BACKOFF_MAX="10",
            RECOVERY_QUEUED_AFTER="1",
        )
        upgrade(pg.url)
        workers: list[WorkerProcess] = []
        api: LiveServer | None = None
        try:
            if backend == "celery":
                workers.append(start_celery_worker(env, work_dir, concurrency=2))
            else:
                workers.extend(start_rq_worker(env, work_dir) for _ in range(2))
            api = start_api(env, work_dir / "api.log")
            with api.client() as client:
                ids = [
                    UUID(post_dummy(client, processing_time=3, seed=s).json()["id"])
                    for s in range(3)
                ]
            with ledger(pg.url) as repo:

                def rendering() -> int:
                    jobs = (repo.get(i) for i in ids)
                    return sum(1 for j in jobs if j is not None and running_with_progress(j))

                wait_until(lambda: rendering() >= 2, timeout=20)
            pg.stop("fast")
            try:
                assert wait_until(lambda: ready_status(api) == 503, timeout=3) < 3
                time.sleep(3)
            finally:
                pg.start()
            wait_until(lambda: ready_status(api) == 200, timeout=15)
            if beat:  # its next run, once the lost heartbeats are stale (HEARTBEAT_TIMEOUT)
                time.sleep(1)
                send_task(settings_from(env), RECOVER)
            with ledger(pg.url) as repo:
                deadline = time.monotonic() + 20
                jobs: list[ReportJob] = []
                while time.monotonic() < deadline:
                    jobs = [j for j in all_jobs(repo) if j.id in ids]
                    if len(jobs) == len(ids) and all(j.status.terminal for j in jobs):
                        break
                    time.sleep(0.2)
            summary = {str(j.id): (j.status.value, j.attempts, j.error) for j in jobs}
            assert sorted(j.id for j in jobs) == sorted(ids), summary  # a row for every job
            assert all(j.status is JobStatus.COMPLETED for j in jobs), summary
            artifacts = settings_from(env).artifacts
            for job in jobs:
                assert_completed_once(job, artifacts, *workers)
            if beat:

                def recovered() -> bool:
                    return [status for _, status, _ in periodic_runs(pg.url, RECOVER)] == ["done"]

                wait_until(recovered, timeout=15)
                [(_, _, result)] = periodic_runs(pg.url, RECOVER)
                logs = "\n".join(w.logs() for w in workers)
                reclaimed = sum(
                    len(event_lines(logs, "report_job.run.reclaimed", j.id)) for j in jobs
                )
                assert result is not None, summary
                assert result["failed"] == 0, (result, summary)
                retaken = reclaimed + result["requeued"]
                assert sum(j.attempts - 1 for j in jobs) == retaken, (result, reclaimed, summary)
                assert logs.count(f"housekeeping.done task={RECOVER} ") == 1, logs[-3000:]
                print(f"recovery after the outage: {result}; {reclaimed} reclaimed by workers")
        finally:
            if api is not None:
                stop_api(api)
            for worker in workers:
                worker.stop()
            delete_redis_keys(prefix)


# --------------------------------------------------------------------------- 4. visibility


@pytest.mark.timeout(90)
def test_redelivery_after_the_visibility_timeout_is_refused_by_the_ledger_claim(
    env: dict[str, str], log_dir: Path
) -> None:
    """A message unacked longer than the visibility timeout goes back to the queue when a
    worker starts polling; the second delivery must find the job claimed and do nothing.

    The workers pass ``check_visibility_timeout`` (2 s visibility > 1.5 s limits), but the
    publisher keeps the default hard limits and stamps them on every message: the render
    may run longer than the workers' visibility timeout (a realistic drift between the API
    and the workers' settings; each process checks only its own).
    """
    limits = json.dumps(dict.fromkeys((t.value for t in ReportType), 1.5))
    worker_env = {
        **env,
        "CELERY_VISIBILITY_TIMEOUT": "2",
        "REPORT_TIME_LIMITS": limits,
        "RETRY_BACKOFF_MAX": "1",
    }
    container = bootstrap.build(settings_from(env, dispatch_backend="celery"))
    workers = [start_celery_worker(worker_env, log_dir, queues="reports", concurrency=1)]
    try:
        deps = container.deps
        job = enqueue_report(
            deps=deps, report_type=ReportType.DUMMY, params={"processing_time": 10, "seed": 9}
        ).job
        running = wait_for(deps.repo, job.id, running_with_progress, timeout=20)
        assert running.started_at is not None
        time.sleep(2.5)  # the message, unacked, is now older than the visibility timeout
        workers.append(start_celery_worker(worker_env, log_dir, queues="reports", concurrency=1))
        second = workers[1]

        def refusals(worker: WorkerProcess) -> list[str]:
            return event_lines(worker.logs(), "report_job.run.skipped", job.id)

        wait_until(lambda: refusals(second), 15)
        still = deps.repo.get(job.id)
        assert still is not None
        assert still.status is JobStatus.RUNNING
        assert still.worker == running.worker  # the first attempt was never taken over
        final = wait_for(deps.repo, job.id, timeout=30)
        assert f"reports.run_report[{job.id}] received" in second.logs()
        assert "status=running" in refusals(second)[0]
        assert not event_lines(second.logs(), "report_job.started", job.id)
        # Its next look, once the job is done, finds it completed and stops there.
        wait_until(lambda: "status=completed" in " ".join(refusals(second)), 15)
        assert_completed_once(final, container.settings.artifacts, *workers, attempts=1)
    finally:
        for worker in workers:
            worker.stop()
        container.close()
