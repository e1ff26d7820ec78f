"""The SQL ledger and the unit tests' fake apply the same state machine, write for write.

Both get the same calls; after each, the snapshots must be equal (the fake applies the
domain's ``enter``, the SQL repository its own UPDATE built from the same ``ENTRIES``).
A drift in either — a column one sets and the other forgets, a condition one checks and
the other does not — fails here.

The attempt timeline is built once, by the domain's ``log_attempts``; the SQL repository
writes it within the same UPDATE, in each dialect's JSON functions
(``app.db.transitions.logged_attempts``). The snapshots compared include it, and the
scenarios end an attempt in every way it can end (the last test checks that they do), so
each branch of the SQL timeline is checked against the domain's, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from app.db.repository import SqlJobRepository
from app.db.session import make_engine
from app.domain.jobs import Artifact, JobError, ReportJob, utcnow
from app.domain.ledger import JobFilter, JobRepository
from app.domain.params import PdfParams
from app.domain.queues import Backend, ReportType
from app.domain.states import LOST, JobStatus, enter

from tests.unit.fakes import MemoryRepository

Step = Callable[[JobRepository, uuid.UUID, datetime], ReportJob | None]
_RUNNING = frozenset({JobStatus.RUNNING})
_NONE: frozenset[JobStatus] = frozenset()
ARTIFACT = Artifact("k/1/r.pdf", "r.pdf", "application/pdf", 10, "ab" * 32)
BOOM = JobError("BOOM", "it broke")
GONE = JobError("WORKER_LOST", "its worker was lost")


def claim(worker: str) -> Step:
    return lambda r, i, t: r.transition(i, JobStatus.RUNNING, now=t, worker=worker)


def leave(target: JobStatus, worker: str, **written: Any) -> Step:
    """``worker`` moves its running job to ``target`` (fenced: only while it is its own)."""
    return lambda r, i, t: r.transition(
        i,
        target,
        now=t,
        expected=_RUNNING,
        expected_worker=worker,
        **written,
    )


def take_back(target: JobStatus, worker: str, error: JobError) -> Step:
    """Recovery moves ``worker``'s run, stale by now, to ``target`` with ``error``."""
    return lambda r, i, t: r.transition(
        i, target, now=t, expected=_NONE, stale_before=t, expected_worker=worker, error=error
    )


def progress(worker: str) -> Step:
    return lambda r, i, t: _progress(r, i, t, worker)


#: Each scenario: the calls in order, on a job inserted "queued" at t0; step i runs at
#: t0 + i minutes. A None result (refused) must be refused by both.
SCENARIOS: dict[str, list[Step]] = {
    "claim, progress, complete": [
        claim("w1"),
        progress("w1"),
        leave(JobStatus.COMPLETED, "w1", artifact=ARTIFACT),
        lambda r, i, t: r.transition(i, JobStatus.CANCELLED, now=t),  # finished: refused
    ],
    "retry, claim again, fail": [
        claim("w1"),
        leave(JobStatus.RETRYING, "w1", error=BOOM),
        claim("w2"),
        leave(JobStatus.FAILED, "w2", error=BOOM),
    ],
    "fencing refuses the former worker": [
        claim("w1"),
        lambda r, i, t: r.transition(  # w1 stale: w2 reclaims
            i, JobStatus.RUNNING, now=t, expected=_NONE, stale_before=t, worker="w2"
        ),
        progress("w1"),
        leave(JobStatus.COMPLETED, "w1", artifact=ARTIFACT),
        leave(JobStatus.COMPLETED, "w2", artifact=ARTIFACT),
    ],
    "a fresh heartbeat is not reclaimed": [
        claim("w1"),
        lambda r, i, t: r.transition(
            i,
            JobStatus.RUNNING,
            now=t,
            expected=_NONE,
            stale_before=t - timedelta(hours=1),
            worker="w2",
        ),
    ],
    "requeue, then cancel": [
        claim("w1"),
        leave(JobStatus.QUEUED, "w1"),
        lambda r, i, t: r.transition(i, JobStatus.CANCELLED, now=t),
        claim("w1"),  # refused: cancelled
    ],
    "a stale run fails lost": [
        claim("w1"),
        take_back(JobStatus.FAILED, "w1", BOOM),
    ],
    "a stale run is requeued with its error, then runs again": [
        claim("w1"),
        take_back(JobStatus.QUEUED, "w1", GONE),
        claim("w2"),
        leave(JobStatus.COMPLETED, "w2", artifact=ARTIFACT),
    ],
    "a running job is cancelled": [
        claim("w1"),
        lambda r, i, t: r.transition(i, JobStatus.CANCELLED, now=t),
    ],
}


def _progress(
    repo: JobRepository, job_id: uuid.UUID, now: datetime, worker: str
) -> ReportJob | None:
    written = repo.record_progress(job_id, progress=40, stage="page 4", now=now, worker=worker)
    return repo.get(job_id) if written else None


@pytest.fixture
def sql(db_url: str) -> Iterator[SqlJobRepository]:
    engine = make_engine(db_url)
    yield SqlJobRepository(engine)
    engine.dispose()


def _queued(owner: str, now: datetime) -> ReportJob:
    job = ReportJob.new(
        report_type=ReportType.PDF, params=PdfParams(pages=2), max_attempts=3, now=now, owner=owner
    ).with_backend(Backend.CELERY)
    return enter(job, JobStatus.QUEUED, now=now)


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_sql_ledger_and_the_fake_agree(sql: SqlJobRepository, name: str) -> None:
    fake = MemoryRepository()
    t0 = utcnow().replace(microsecond=0)
    job = _queued(f"contract-{uuid.uuid4()}", t0)
    for repo in (sql, fake):
        repo.add(job)
    for minute, step in enumerate(SCENARIOS[name], start=1):
        now = t0 + timedelta(minutes=minute)
        got = [step(repo, job.id, now) for repo in (sql, fake)]
        assert (got[0] is None) == (got[1] is None), f"step {minute}: {got}"
        after = sql.get(job.id)
        assert after is not None
        assert after.attempt_log == fake.jobs[job.id].attempt_log, f"step {minute}: timeline"
        assert after == fake.get(job.id), f"step {minute}"


def test_the_scenarios_end_attempts_every_way() -> None:
    """Every way ``log_attempts`` ends an attempt (and starts one) occurs in a scenario."""
    outcomes: set[tuple[str | None, str | None]] = set()
    for steps in SCENARIOS.values():
        fake = MemoryRepository()
        t0 = utcnow()
        job = _queued("scenarios", t0)
        fake.add(job)
        for minute, step in enumerate(steps, start=1):
            step(fake, job.id, t0 + timedelta(minutes=minute))
        outcomes |= {(a.outcome, a.error_code) for a in fake.jobs[job.id].attempt_log}
    assert outcomes >= {
        (None, None),  # still running
        (LOST, None),  # reclaimed by another worker
        ("completed", None),
        ("retrying", "BOOM"),
        ("failed", "BOOM"),
        ("queued", None),
        ("queued", "WORKER_LOST"),
        ("cancelled", None),
    }


def test_list_filters_agree(sql: SqlJobRepository) -> None:
    fake = MemoryRepository()
    owner = f"contract-{uuid.uuid4()}"
    now = utcnow().replace(microsecond=0)
    jobs = [_queued(owner, now + timedelta(seconds=s)) for s in range(3)]
    jobs[1] = jobs[1].with_backend(Backend.RQ)
    jobs.append(_queued(f"other-{uuid.uuid4()}", now))
    for repo in (sql, fake):
        for job in jobs:
            repo.add(job)
    for where in (
        JobFilter(owner=owner),
        JobFilter(owner=owner, backend=Backend.RQ),
        JobFilter(owner=owner, status=JobStatus.QUEUED, report_type=ReportType.PDF),
    ):
        pages = [repo.list_jobs(where, limit=10, after=None).items for repo in (sql, fake)]
        assert [j.id for j in pages[0]] == [j.id for j in pages[1]]
