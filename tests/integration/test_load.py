"""Load: 1,000 enqueues from 50 concurrent clients through a live API, split over Celery
and RQ, each run exactly once.

The API routes by job id (``CELERY_TRAFFIC_PERCENT=50``) to a Celery worker and two RQ
workers on queues of this test's own, on a database of its own, so every row counted is
this run's. Figures (wall times, split) are printed; ``pytest -rP`` shows them.

A second test bursts 500 enqueues at a Celery-only platform (RQ off, the phase-3 target),
where no other backend can hide a Celery availability probe that gives up under load.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from app.db.migrations import upgrade
from app.db.repository import SqlJobRepository
from app.domain.jobs import ReportJob
from app.domain.queues import Backend
from app.domain.states import JobStatus

from tests.conftest import fresh_pg_database
from tests.e2e.server import LiveServer
from tests.integration.ops import all_jobs, clean_env, ledger, start_api, stop_api
from tests.integration.workers import (
    REDIS_URL,
    WorkerProcess,
    artifact_files,
    delete_redis_keys,
    settings_from,
    start_celery_worker,
    start_rq_worker,
)

JOBS = 1000
CLIENTS = 50


def enqueue_all(api: LiveServer, jobs: int = JOBS) -> list[tuple[int, str, str | None]]:
    """``jobs`` POSTs spread over ``CLIENTS`` threads, each with its own client."""

    def client_run(n: int) -> list[tuple[int, str, str | None]]:
        answers = []
        with api.client(timeout=30) as client:
            for i in range(n):
                response = client.post("/api/v1/reports/dummy", params={"seed": str(i)})
                body = response.json()
                answers.append(
                    (response.status_code, body.get("id", body.get("error")), body.get("backend"))
                )
        return answers

    shares = [jobs // CLIENTS + (1 if c < jobs % CLIENTS else 0) for c in range(CLIENTS)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        return [answer for batch in pool.map(client_run, shares) for answer in batch]


@dataclass
class Platform:
    api: LiveServer
    database_url: str
    env: dict[str, str]
    workers: list[WorkerProcess]

    def logs(self) -> str:
        return "\n".join(w.logs() for w in self.workers)


@contextmanager
def platform(work_dir: Path, *, rq_workers: int, **settings: str) -> Iterator[Platform]:
    """A database of its own, a Celery worker (2 processes), ``rq_workers`` RQ workers and an
    API in auto mode with no inline fallback, all on queues of their own."""
    prefix = f"l{secrets.token_hex(3)}-"
    with fresh_pg_database("load") as database_url:
        upgrade(database_url)
        defaults = {
            "DATABASE_URL": database_url,
            "DATA_DIR": str(work_dir / "data"),
            "REDIS_URL": REDIS_URL,
            "CELERY_BROKER_URL": REDIS_URL,
            "QUEUE_PREFIX": prefix,
            "ENVIRONMENT": "test",
            "DISPATCH_BACKEND": "auto",
            "INLINE_FALLBACK": "false",
            "RATE_LIMIT_REQUESTS": "100000",
            "DB_POOL_SIZE": "10",
            "AVAILABILITY_CACHE_SECONDS": "1",
            "PROGRESS_INTERVAL": "0.25",
            "METRICS_PORT": "0",
            "LOG_FORMAT": "text",
            "LOG_LEVEL": "INFO",
        }
        env = clean_env(**{**defaults, **settings})
        workers: list[WorkerProcess] = []
        api: LiveServer | None = None
        try:
            workers.append(start_celery_worker(env, work_dir, concurrency=2))
            workers.extend(start_rq_worker(env, work_dir) for _ in range(rq_workers))
            api = start_api(env, work_dir / "api.log")
            yield Platform(api, database_url, env, workers)
        finally:
            if api is not None:
                stop_api(api)
            for worker in workers:
                worker.stop()
            delete_redis_keys(prefix)


def drain(repo: SqlJobRepository, timeout: float) -> int:
    """Wait until no job is unfinished; returns how many still are at the deadline."""
    deadline = time.monotonic() + timeout
    waiting = -1
    while time.monotonic() < deadline:
        waiting = sum(c.count for c in repo.status_counts())
        if waiting == 0:
            break
        time.sleep(0.5)
    return waiting


def assert_each_ran_once(
    p: Platform, answers: list[tuple[int, str, str | None]]
) -> list[ReportJob]:
    """Every answered id has one row, completed on its first attempt, with one artifact
    file, and exactly one ``report_job.started`` in the workers' logs."""
    with ledger(p.database_url) as repo:
        jobs = all_jobs(repo)
    assert len(jobs) == len(answers)
    assert {str(j.id) for j in jobs} == {job_id for _, job_id, _ in answers}
    assert Counter(j.status for j in jobs) == {JobStatus.COMPLETED: len(answers)}
    assert Counter(j.attempts for j in jobs) == {1: len(answers)}
    artifacts = settings_from(p.env).artifacts
    for job in jobs:
        assert job.artifact is not None
        assert artifact_files(artifacts, job.id) == [artifacts / job.artifact.key]
    assert len([d for d in artifacts.iterdir() if d.name != ".tmp"]) == len(answers)
    runs = Counter(
        line.split("job_id=", 1)[1].split()[0]
        for line in p.logs().splitlines()
        if " report_job.started " in line
    )
    assert len(runs) == len(answers), len(runs)
    assert set(runs.values()) == {1}, runs.most_common(3)
    return jobs


@pytest.mark.timeout(150)
def test_a_thousand_concurrent_enqueues_run_exactly_once_across_backends(
    work_dir: Path,
) -> None:
    with platform(work_dir, rq_workers=2, CELERY_TRAFFIC_PERCENT="50") as p:
        started = time.monotonic()
        answers = enqueue_all(p.api)
        enqueued_s = time.monotonic() - started
        statuses = Counter(status for status, _, _ in answers)
        assert statuses == {200: JOBS}, statuses
        with ledger(p.database_url) as repo:
            waiting = drain(repo, timeout=110)
        drained_s = time.monotonic() - started
        assert waiting == 0, f"{waiting} jobs unfinished after {drained_s:.0f}s"
        jobs = assert_each_ran_once(p, answers)

        split = Counter(j.backend.value if j.backend else "none" for j in jobs)
        assert split["celery"] > 0, split
        assert split["rq"] > 0, split
        assert split["celery"] + split["rq"] == JOBS, split
        fallbacks = p.api.logs().count("report_job.dispatch.fallback")
        print(
            f"load: {JOBS} enqueues by {CLIENTS} clients in {enqueued_s:.1f}s "
            f"({JOBS / enqueued_s:.0f}/s); all completed after {drained_s:.1f}s "
            f"({JOBS / drained_s:.0f}/s); split {dict(split)}; {fallbacks} fallbacks"
        )


@pytest.mark.timeout(90)
def test_a_burst_on_a_celery_only_platform_is_never_refused(work_dir: Path) -> None:
    """Phase 3 (RQ off): 500 enqueues from 50 clients, the broker and its worker healthy."""
    with platform(
        work_dir,
        rq_workers=0,
        RQ_ENABLED="false",
        # Probe often: each probe samples the producer pool, so a short burst shows it.
        AVAILABILITY_CACHE_SECONDS="0.2",
        BROKER_TIMEOUT="0.2",
    ) as p:
        answers = enqueue_all(p.api, 500)
        statuses = Counter(
            (status, detail if status != 200 else None) for status, detail, _ in answers
        )
        assert statuses == {(200, None): 500}, statuses
        with ledger(p.database_url) as repo:
            assert drain(repo, timeout=60) == 0
        jobs = assert_each_ran_once(p, answers)
        assert {j.backend for j in jobs} == {Backend.CELERY}
