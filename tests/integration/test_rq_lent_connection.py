"""An RQ worker lends its work horses one ledger connection (``cli.rq_worker.LentConnection``).

- Jobs one after another open no new PostgreSQL session each: the database's own session
  count stays flat while a worker runs ten jobs.
- A horse killed in the middle of a statement leaves the connection busy: the worker
  closes it, and the next job runs at once on a new session, its first attempt clean.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from app import bootstrap, workers
from app.cli.rq_worker import LentConnection
from app.db.session import make_engine
from app.dispatch.rq_dispatcher import rq_queue
from app.domain.jobs import ReportJob
from app.domain.queues import Queue, ReportType
from app.domain.states import JobStatus
from app.services.enqueue import enqueue_report
from sqlalchemy.engine import make_url

from tests.conftest import ADMIN_URL
from tests.integration.ops import wait_until
from tests.integration.workers import (
    WorkerProcess,
    event_lines,
    own_ledger,
    settings_from,
    start_rq_worker,
    wait_for,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def platform(work_dir: Path) -> Iterator[tuple[bootstrap.Container, WorkerProcess, str]]:
    """A ledger of its own, one RQ worker on it, and the publisher's container."""
    with own_ledger(work_dir, "lent") as env:
        container = bootstrap.build(settings_from(env, dispatch_backend="rq"))
        worker = start_rq_worker(env, work_dir, "reports")
        try:
            yield container, worker, env["DATABASE_URL"]
        finally:
            worker.stop()
            container.close()


def sessions(url: str) -> int:
    """Sessions PostgreSQL has started in ``url``'s database (pg_stat_database)."""
    parsed = make_url(url)
    with psycopg.connect(
        f"host={parsed.host} port={parsed.port} user={parsed.username} dbname=postgres"
    ) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", (parsed.database,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def in_pg_sleep(url: str) -> bool:
    """Whether a session of ``url``'s database is running ``pg_sleep`` (pg_stat_activity)."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = %s AND state = 'active' AND query ILIKE %s"
            " AND pid <> pg_backend_pid()",
            (make_url(url).database, "%pg_sleep(%"),
        ).fetchone()
    return row is not None and int(row[0]) > 0


def dummy(container: bootstrap.Container) -> ReportJob:
    return enqueue_report(
        deps=container.deps, report_type=ReportType.DUMMY, params={"processing_time": 0}
    ).job


def test_jobs_in_a_row_share_one_session(
    platform: tuple[bootstrap.Container, WorkerProcess, str],
) -> None:
    container, _, url = platform
    repo = container.deps.repo
    first = wait_for(repo, dummy(container).id, timeout=30)  # every connection is open now
    assert first.status is JobStatus.COMPLETED
    before = sessions(url)
    jobs = [dummy(container) for _ in range(10)]
    done = [wait_for(repo, job.id, timeout=30) for job in jobs]
    assert {(j.status, j.attempts) for j in done} == {(JobStatus.COMPLETED, 1)}
    # Statistics reach pg_stat_database when a session ends or within a second.
    time.sleep(1.2)
    assert sessions(url) - before <= 2  # one new session a job would be 10


def test_a_horse_killed_in_a_statement_does_not_pass_its_session_on(
    platform: tuple[bootstrap.Container, WorkerProcess, str], work_dir: Path
) -> None:
    container, worker, url = platform
    pid_file = work_dir / "horse.pid"
    queue = rq_queue(container.rq_connection, container.settings.brokers, Queue.REPORTS)
    queue.enqueue(
        "tests.integration.rq_probe_jobs.sleep_in_ledger", 10.0, str(pid_file), job_timeout=60
    )
    wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", 20)
    # Killed only once PostgreSQL runs its statement: a horse killed before it would leave
    # the session idle, and the test would pass whether or not the worker closes it.
    wait_until(lambda: in_pg_sleep(url), 10)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)

    started = time.monotonic()
    job = wait_for(container.deps.repo, dummy(container).id, timeout=30)
    assert (job.status, job.attempts, job.error) == (JobStatus.COMPLETED, 1, None)
    # Not after the killed statement's 10 s: a session of its own, at once.
    assert time.monotonic() - started < 5.0
    assert not event_lines(worker.logs(), "report_job.deferred", job.id)


def test_a_ledger_that_refuses_connections_never_stops_the_worker() -> None:
    """The pool raises the driver's own error when it cannot connect: the worker lends
    nothing (the horse connects, or defers its job, itself) and goes on."""
    engine = make_engine("postgresql://postgres@127.0.0.1:1/nowhere")  # nothing listens
    loan = LentConnection(engine)
    workers.lend_to_next_child(object())
    try:
        loan.lend()
        assert workers._lent is None
        loan.settle()
    finally:
        engine.dispose()
