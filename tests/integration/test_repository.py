"""The SQL repository on the embedded SQLite default and on real PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from app.db import session
from app.db.models import ReportJobRow
from app.db.repository import SqlJobRepository
from app.db.session import make_engine
from app.domain.errors import IdempotencyKeyTaken, LedgerUnavailable
from app.domain.jobs import Artifact, JobError, ReportJob, utcnow
from app.domain.ledger import JobFilter
from app.domain.params import PdfParams
from app.domain.queues import Backend, ReportType
from app.domain.states import JobStatus
from sqlalchemy import Engine, text, update
from sqlalchemy.exc import IntegrityError


@pytest.fixture
def repo(db_url: str) -> Iterator[SqlJobRepository]:
    engine = make_engine(db_url, pool_size=10)
    yield SqlJobRepository(engine)
    engine.dispose()


def _job(owner: str, **changes: object) -> ReportJob:
    job = ReportJob.new(
        report_type=ReportType.PDF,
        params=PdfParams(pages=2),
        max_attempts=3,
        now=utcnow(),
        owner=owner,
    ).with_backend(Backend.INLINE)
    return replace(job, **changes)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field_and_utc(repo: SqlJobRepository) -> None:
    job = _job(f"o-{uuid.uuid4()}", idempotency_key="k1")
    repo.add(job)
    loaded = repo.get(job.id)
    assert loaded == job
    assert loaded is not None
    assert loaded.created_at.utcoffset() == timedelta(0)


def test_claim_is_conditional_and_counts_the_attempt(repo: SqlJobRepository) -> None:
    job = _job("claim")
    repo.add(job)
    claimed = repo.transition(job.id, JobStatus.RUNNING, now=utcnow(), worker="w1")
    assert claimed is not None
    assert (claimed.status, claimed.attempts, claimed.worker) == (JobStatus.RUNNING, 1, "w1")
    assert claimed.queued_at is not None  # claimed before "queued" was recorded
    assert repo.transition(job.id, JobStatus.RUNNING, now=utcnow(), worker="w2") is None
    assert claimed == repo.get(job.id)  # the row a write returns reads as a select's does


def test_times_come_back_in_utc_whatever_the_session_zone(pg_url: str) -> None:
    """A session in another zone (a server's ``TimeZone``) still yields UTC times, from a
    select and from the row a write returns alike."""
    paris = "options=-c%20timezone%3DEurope%2FParis"
    engine = make_engine(f"{pg_url}{'&' if '?' in pg_url else '?'}{paris}")
    repo = SqlJobRepository(engine)
    try:
        job = _job("zone")
        repo.add(job)
        claimed = repo.transition(job.id, JobStatus.RUNNING, now=utcnow(), worker="w")
        assert claimed is not None
        for read in (claimed, repo.get(job.id)):
            assert read is not None
            times = [read.created_at, read.updated_at, read.started_at, read.queued_at]
            assert [t.tzinfo if t else None for t in times] == [UTC] * 4
    finally:
        engine.dispose()


def test_a_taken_idempotency_key_or_id_is_refused_with_its_own_error(
    repo: SqlJobRepository,
) -> None:
    first = _job(f"k-{uuid.uuid4()}", idempotency_key="same")
    repo.add(first)
    with pytest.raises(IdempotencyKeyTaken) as taken:
        repo.add(_job(first.owner or "", idempotency_key="same"))
    assert taken.value.earlier == first
    with pytest.raises(IntegrityError):
        repo.add(replace(_job("other"), id=first.id))


def test_only_one_of_many_concurrent_claims_wins(repo: SqlJobRepository) -> None:
    job = _job("race")
    repo.add(job)
    assert repo.transition(job.id, JobStatus.QUEUED, now=utcnow()) is not None
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda i: repo.transition(job.id, JobStatus.RUNNING, now=utcnow(), worker=f"w{i}"),
                range(8),
            )
        )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    stored = repo.get(job.id)
    assert stored is not None
    assert stored.attempts == 1
    assert stored.worker == winners[0].worker


def test_completion_records_artifact_and_finish_time(repo: SqlJobRepository) -> None:
    job = _job("done")
    repo.add(job)
    repo.transition(job.id, JobStatus.RUNNING, now=utcnow())
    artifact = Artifact(f"{job.id}/r.pdf", "r.pdf", "application/pdf", 1234, "ab" * 32)
    done = repo.transition(job.id, JobStatus.COMPLETED, now=utcnow(), artifact=artifact)
    assert done is not None
    assert (done.artifact, done.progress, done.stage) == (artifact, 100, "done")
    assert done.finished_at is not None
    assert repo.transition(job.id, JobStatus.CANCELLED, now=utcnow()) is None


def test_progress_only_while_running(repo: SqlJobRepository) -> None:
    job = _job("progress")
    repo.add(job)
    assert not repo.record_progress(job.id, progress=10, stage="x", now=utcnow())
    repo.transition(job.id, JobStatus.RUNNING, now=utcnow())
    assert repo.record_progress(job.id, progress=42, stage="page 21", now=utcnow())
    stored = repo.get(job.id)
    assert stored is not None
    assert (stored.progress, stored.stage) == (42, "page 21")
    repo.transition(job.id, JobStatus.CANCELLED, now=utcnow())
    assert not repo.record_progress(job.id, progress=50, stage="x", now=utcnow())


def test_failure_keeps_the_error(repo: SqlJobRepository) -> None:
    job = _job("fail")
    repo.add(job)
    repo.transition(job.id, JobStatus.RUNNING, now=utcnow())
    failed = repo.transition(
        job.id, JobStatus.FAILED, now=utcnow(), error=JobError("BOOM", "it broke")
    )
    assert failed is not None
    assert failed.error == JobError("BOOM", "it broke")


def test_keyset_pages_cover_everything_once_newest_first(repo: SqlJobRepository) -> None:
    owner = f"page-{uuid.uuid4()}"
    base = utcnow()
    jobs = [_job(owner, created_at=base + timedelta(seconds=i // 2)) for i in range(25)]
    for job in jobs:
        repo.add(job)
    seen: list[ReportJob] = []
    after = None
    pages = 0
    while True:
        page = repo.list_jobs(JobFilter(owner=owner), limit=7, after=after)
        seen.extend(page.items)
        pages += 1
        if page.next is None:
            break
        after = page.next
    assert pages == 4
    assert len(seen) == 25
    assert {j.id for j in seen} == {j.id for j in jobs}
    keys = [(j.created_at, j.id) for j in seen]
    assert keys == sorted(keys, reverse=True)


def test_filters_combine(repo: SqlJobRepository) -> None:
    owner = f"filter-{uuid.uuid4()}"
    a, b = _job(owner), _job(owner)
    repo.add(a)
    repo.add(b)
    repo.transition(b.id, JobStatus.CANCELLED, now=utcnow())
    page = repo.list_jobs(JobFilter(owner=owner, status=JobStatus.CANCELLED), limit=10, after=None)
    assert [j.id for j in page.items] == [b.id]
    none = repo.list_jobs(
        JobFilter(owner=owner, report_type=ReportType.EXCEL), limit=10, after=None
    )
    assert none.items == []


def test_status_counts_and_unfinished(repo: SqlJobRepository) -> None:
    owner = f"count-{uuid.uuid4()}"
    before = {(c.backend, c.status): c.count for c in repo.status_counts()}
    jobs = [_job(owner) for _ in range(3)]
    for job in jobs:
        repo.add(job)
    repo.transition(jobs[0].id, JobStatus.RUNNING, now=utcnow())
    repo.transition(jobs[1].id, JobStatus.CANCELLED, now=utcnow())
    after = {(c.backend, c.status): c.count for c in repo.status_counts()}
    running = (Backend.INLINE, JobStatus.RUNNING)
    pending = (Backend.INLINE, JobStatus.PENDING)
    assert after[running] - before.get(running, 0) == 1
    assert after[pending] - before.get(pending, 0) == 1
    unfinished = {j.id for j in repo.unfinished(backend=Backend.INLINE)}
    assert {jobs[0].id, jobs[2].id} <= unfinished
    assert jobs[1].id not in unfinished


def test_the_database_refuses_an_unknown_status(db_url: str) -> None:
    engine = make_engine(db_url)
    repo = SqlJobRepository(engine)
    job = _job("check")
    repo.add(job)  # a row of its own: the CHECK fires whatever else the table holds
    lost = update(ReportJobRow).where(ReportJobRow.id == job.id).values(status="lost")
    with pytest.raises(Exception, match=r"(?i)check"), engine.begin() as conn:
        conn.execute(lost)
    assert repo.get(job.id) == job
    engine.dispose()


def test_claim_takes_a_running_job_only_when_its_heartbeat_is_stale(
    repo: SqlJobRepository,
) -> None:
    job = _job("heartbeat")
    repo.add(job)
    started = utcnow() - timedelta(seconds=60)
    assert repo.transition(job.id, JobStatus.RUNNING, now=started, worker="w-old") is not None

    def reclaim(stale_before: datetime | None) -> ReportJob | None:
        return repo.transition(
            job.id,
            JobStatus.RUNNING,
            now=utcnow(),
            expected=frozenset(),
            stale_before=stale_before,
            worker="w-new",
        )

    assert reclaim(None) is None
    assert reclaim(started - timedelta(seconds=1)) is None  # heartbeat newer: fresh
    assert repo.record_progress(job.id, progress=5, stage="p", now=started, worker="w-old")
    stale = started + timedelta(seconds=1)
    taken = reclaim(stale)
    assert taken is not None
    assert (taken.status, taken.attempts, taken.worker) == (JobStatus.RUNNING, 2, "w-new")
    # The new heartbeat is fresh: nobody else takes it, and the old worker is refused.
    assert reclaim(stale) is None
    assert not repo.record_progress(job.id, progress=9, stage="p", now=utcnow(), worker="w-old")
    assert repo.record_progress(job.id, progress=9, stage="p", now=utcnow(), worker="w-new")
    lost = repo.transition(
        job.id,
        JobStatus.FAILED,
        now=utcnow(),
        expected=frozenset(),
        stale_before=utcnow() + timedelta(seconds=1),
        error=JobError("WORKER_LOST", "gone"),
    )
    assert lost is not None
    assert lost.status is JobStatus.FAILED


def test_leaving_running_requires_the_worker_still_named(repo: SqlJobRepository) -> None:
    job = _job("worker-check")
    repo.add(job)
    started = utcnow() - timedelta(seconds=60)
    assert repo.transition(job.id, JobStatus.RUNNING, now=started, worker="w-old") is not None
    taken = repo.transition(
        job.id,
        JobStatus.RUNNING,
        now=utcnow(),
        expected=frozenset(),
        stale_before=started + timedelta(seconds=1),
        worker="w-new",
    )
    assert taken is not None
    running = frozenset({JobStatus.RUNNING})
    artifact = Artifact(f"{job.id}/1/r.pdf", "r.pdf", "application/pdf", 1, "cd" * 32)
    # The row still says running: only the worker condition refuses the former worker.
    for target in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.RETRYING, JobStatus.QUEUED):
        refused = repo.transition(
            job.id,
            target,
            now=utcnow(),
            expected=running,
            expected_worker="w-old",
            artifact=artifact if target is JobStatus.COMPLETED else None,
            error=JobError("BOOM", "late") if target is not JobStatus.COMPLETED else None,
        )
        assert refused is None, target
    unchanged = repo.get(job.id)
    assert unchanged is not None
    assert unchanged == taken
    # Nor does a stale heartbeat let the former worker in through ``stale_before``.
    assert (
        repo.transition(
            job.id,
            JobStatus.FAILED,
            now=utcnow(),
            expected=frozenset(),
            stale_before=utcnow() + timedelta(seconds=1),
            expected_worker="w-old",
        )
        is None
    )
    mine = replace(artifact, key=f"{job.id}/2/r.pdf")
    done = repo.transition(
        job.id,
        JobStatus.COMPLETED,
        now=utcnow(),
        expected=running,
        expected_worker="w-new",
        artifact=mine,
    )
    assert done is not None
    assert (done.status, done.worker, done.attempts, done.artifact) == (
        JobStatus.COMPLETED,
        "w-new",
        2,
        mine,
    )


def test_only_the_named_worker_of_many_completes(repo: SqlJobRepository) -> None:
    job = _job("worker-race")
    repo.add(job)
    assert repo.transition(job.id, JobStatus.RUNNING, now=utcnow(), worker="w3") is not None
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda i: repo.transition(
                    job.id,
                    JobStatus.COMPLETED,
                    now=utcnow(),
                    expected=frozenset({JobStatus.RUNNING}),
                    expected_worker=f"w{i}",
                ),
                range(8),
            )
        )
    assert [r is not None for r in results] == [i == 3 for i in range(8)]


def test_warm_up_touches_no_job(repo: SqlJobRepository) -> None:
    job = _job(f"warm-{uuid.uuid4()}", worker="-")
    repo.add(job)
    running = repo.transition(job.id, JobStatus.RUNNING, now=utcnow(), worker="-")
    repo.warm_up()
    assert repo.get(job.id) == running


def _kill_connections(engine: Engine, url: str, count: int = 1) -> None:
    """Terminate the server side of ``count`` pooled connections of ``engine``, as a
    restart would; they go back to the pool just used, as a busy worker's would."""
    with ExitStack() as held:
        conns = [held.enter_context(engine.connect()) for _ in range(count)]
        pids = [conn.execute(text("SELECT pg_backend_pid()")).scalar_one() for conn in conns]
    admin = make_engine(url, pool_size=1)
    with admin.connect() as conn:
        for pid in pids:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()


def _claim_nobody(repo: SqlJobRepository) -> None:
    """A claim of no job: a transition, which runs on the driver's cursor (app.db.driver)."""
    assert repo.transition(uuid.uuid4(), JobStatus.RUNNING, now=utcnow(), worker="w") is None


@pytest.mark.parametrize(
    "call",
    [SqlJobRepository.ping, _claim_nobody],
    ids=["through-sqlalchemy", "on-the-driver"],
)
def test_a_connection_idle_past_the_ping_delay_is_checked_first(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, call: Callable[[SqlJobRepository], None]
) -> None:
    """Idle connections are pinged and replaced; one used a moment ago is not (cost: one
    LedgerUnavailable, then the pool has replaced every connection of before)."""
    monkeypatch.setattr(session, "PING_AFTER_IDLE_SECONDS", 0.3)
    engine = make_engine(pg_url, pool_size=2, max_overflow=0)
    repo = SqlJobRepository(engine)
    try:
        _kill_connections(engine, pg_url, 2)
        time.sleep(0.4)
        call(repo)  # idle: pinged, found dead, replaced before use
        _kill_connections(engine, pg_url, 2)
        with pytest.raises(LedgerUnavailable):
            call(repo)  # used just now: not pinged
        call(repo)  # the other one, as old, was replaced too
    finally:
        engine.dispose()


def test_a_driver_call_leaves_its_connection_transactional(pg_url: str) -> None:
    """The hot path runs its statement in autocommit, then hands the connection back as the
    pool lent it: the next user's transaction still rolls back."""
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    repo = SqlJobRepository(engine)
    job = _job(f"tx-{uuid.uuid4()}")
    repo.add(job)
    try:
        _claim_nobody(repo)
        with engine.connect() as conn:
            conn.execute(text("DELETE FROM report_jobs WHERE id = :id"), {"id": job.id})
            conn.rollback()
        assert repo.get(job.id) is not None
    finally:
        engine.dispose()


def test_only_the_claim_and_heartbeats_skip_the_wal_flush_wait(pg_url: str) -> None:
    """On PostgreSQL, a commit that waits for the WAL flush waits ``commit_delay`` more
    (100 ms here); one that does not wait, the claim and the heartbeat, skips it. The
    insert and every outcome keep waiting: a client may have seen them."""
    slow_flush = "options=-c%20commit_delay%3D100000%20-c%20commit_siblings%3D0"
    engine = make_engine(f"{pg_url}{'&' if '?' in pg_url else '?'}{slow_flush}")
    repo = SqlJobRepository(engine)
    timings: dict[str, list[float]] = {}

    def timed(name: str, written: Callable[[], object]) -> None:
        start = time.perf_counter()
        assert written(), name
        timings.setdefault(name, []).append((time.perf_counter() - start) * 1000)

    def one_job() -> None:
        job, now = _job("flush"), utcnow()
        timed("insert", lambda: repo.add(job) is None)
        timed("claim", lambda: repo.transition(job.id, RUNNING, now=now, worker="w"))
        timed("heartbeat", lambda: repo.record_progress(job.id, progress=5, stage="s", now=now))
        timed("outcome", lambda: repo.transition(job.id, FAILED, now=now, error=_BOOM))

    try:
        for _ in range(3):
            one_job()
    finally:
        engine.dispose()
    fastest = {name: min(values) for name, values in timings.items()}
    for waits_not in ("claim", "heartbeat"):
        assert fastest[waits_not] < 50, timings
    for waits in ("insert", "outcome"):
        assert fastest[waits] >= 100, timings


RUNNING, FAILED, _BOOM = JobStatus.RUNNING, JobStatus.FAILED, JobError("BOOM", "it broke")
