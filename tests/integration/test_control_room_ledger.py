"""The traffic dial's and the console's SQL repositories on SQLite and on PostgreSQL.

Each test gets a ledger of its own: the dial is one row that the session's shared ledger
routes by.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from app.db.api_keys import SqlApiKeyRepository
from app.db.console import SqlConsoleRepository
from app.db.migrations import upgrade
from app.db.repository import SqlJobRepository
from app.db.session import make_engine, make_sessions
from app.db.traffic import SqlTrafficRepository
from app.domain.auth import ApiKey, Role
from app.domain.console import ConsoleFilter, ConsoleSession
from app.domain.jobs import ReportJob, utcnow
from app.domain.params import PdfParams
from app.domain.queues import Backend, Queue, ReportType
from app.domain.states import JobStatus
from app.domain.traffic import ChangeKind, TrafficSplit
from sqlalchemy import Engine

from tests.conftest import fresh_pg_database


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'control.db'}"
        upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()
        return
    with fresh_pg_database("control_room") as url:
        upgrade(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()


def test_dial_seed_move_guard_and_history(engine: Engine) -> None:
    repo = SqlTrafficRepository(make_sessions(engine))
    now = utcnow()
    assert repo.current() is None
    seeded, created = repo.seed(TrafficSplit(10, {ReportType.PDF: 0}), now=now)
    again, created_again = repo.seed(TrafficSplit(90), now=now)
    assert (created, created_again) == (True, False)
    assert again == seeded
    assert seeded.split == TrafficSplit(10, {ReportType.PDF: 0})
    assert seeded.version == 1

    moved = repo.change(
        TrafficSplit(50),
        pinned=True,
        actor="alice",
        kind=ChangeKind.OPERATOR,
        reason="step",
        now=now + timedelta(seconds=1),
    )
    assert moved is not None
    state, change = moved
    assert (state.version, state.pinned, state.changed_by) == (2, True, "alice")
    assert state.healthy == seeded.split  # a move alone does not make it healthy
    assert (change.before, change.after, change.reason) == (seeded.split, TrafficSplit(50), "step")

    # A stale version is refused (another replica moved it): nothing written.
    stale = repo.change(
        TrafficSplit(0),
        pinned=False,
        actor="guard",
        kind=ChangeKind.ROLLBACK,
        reason="late",
        now=now,
        expected_version=1,
    )
    assert stale is None
    assert not repo.mark_healthy(TrafficSplit(50), version=1)
    assert repo.mark_healthy(TrafficSplit(50), version=2)
    current = repo.current()
    assert current is not None
    assert current.healthy == TrafficSplit(50)
    assert current.changed_at == now + timedelta(seconds=1)
    assert [c.kind for c in repo.history(limit=10)] == [ChangeKind.OPERATOR, ChangeKind.SEED]
    assert len(repo.history(limit=1)) == 1


def _job(owner: str, backend: Backend, status: JobStatus, minutes_ago: int) -> ReportJob:
    at = utcnow() - timedelta(minutes=minutes_ago)
    job = ReportJob.new(
        report_type=ReportType.PDF, params=PdfParams(pages=1), max_attempts=3, now=at, owner=owner
    ).with_backend(backend)
    return replace(job, status=status, queued_at=at, updated_at=at)


def test_window_and_console_queries(engine: Engine) -> None:
    jobs = SqlJobRepository(engine)
    rows = [
        _job("alice", Backend.CELERY, JobStatus.FAILED, 1),
        _job("alice", Backend.RQ, JobStatus.COMPLETED, 2),
        _job("bob", Backend.RQ, JobStatus.QUEUED, 3),
        _job("bob", Backend.INLINE, JobStatus.COMPLETED, 4),
        _job("bob", Backend.CELERY, JobStatus.COMPLETED, 120),
    ]
    for job in rows:
        jobs.add(job)
    traffic = SqlTrafficRepository(make_sessions(engine))
    window = traffic.window_jobs(utcnow() - timedelta(minutes=10), limit=100)
    assert [(j.backend, j.status) for j in window] == [
        (Backend.CELERY, JobStatus.FAILED),
        (Backend.RQ, JobStatus.COMPLETED),
        (Backend.RQ, JobStatus.QUEUED),
    ]  # newest first, brokered backends only, inside the window
    assert len(traffic.window_jobs(utcnow() - timedelta(minutes=10), limit=1)) == 1

    console = SqlConsoleRepository(engine, make_sessions(engine))
    since = utcnow() - timedelta(minutes=10)
    page = console.jobs(ConsoleFilter(owner="bob", since=since), limit=1, after=None)
    assert [j.id for j in page.items] == [rows[2].id]
    assert page.next is not None
    rest = console.jobs(ConsoleFilter(owner="bob", since=since), limit=5, after=page.next)
    assert [j.id for j in rest.items] == [rows[3].id]
    assert rest.next is None
    assert console.jobs(ConsoleFilter(queue=Queue.DOCUMENTS), limit=5, after=None).items == []
    old = ConsoleFilter(until=utcnow() - timedelta(minutes=60))
    assert [j.id for j in console.jobs(old, limit=5, after=None).items] == [rows[4].id]
    counts = console.count_by_status(ConsoleFilter(backend=Backend.RQ, status=JobStatus.QUEUED))
    assert counts[JobStatus.COMPLETED] == 1  # the status filter aside
    assert counts[JobStatus.QUEUED] == 1
    assert counts[JobStatus.RUNNING] == 0
    last = console.last_activity(Backend.RQ)
    assert last is not None
    assert abs((last - rows[1].updated_at).total_seconds()) < 1
    assert console.last_activity(Backend.INLINE) is not None
    # "Run again" links both ways: the new row names its origin, the origin finds it.
    again = replace(_job("alice", Backend.RQ, JobStatus.QUEUED, 0), rerun_of=rows[0].id)
    jobs.add(again)
    assert jobs.get(again.id).rerun_of == rows[0].id  # type: ignore[union-attr]
    reruns = console.jobs(ConsoleFilter(rerun_of=rows[0].id), limit=5, after=None).items
    assert [j.id for j in reruns] == [again.id]
    assert console.jobs(ConsoleFilter(rerun_of=rows[1].id), limit=5, after=None).items == []
    # The page's live progress: the listed jobs the caller may see, in one query.
    listed = ConsoleFilter(ids=frozenset({rows[0].id, rows[2].id, rows[3].id}), owner="bob")
    assert {j.id for j in console.jobs(listed, limit=5, after=None).items} == {
        rows[2].id,
        rows[3].id,
    }


def test_console_sessions(engine: Engine) -> None:
    console = SqlConsoleRepository(engine, make_sessions(engine))
    now = utcnow()
    session = ConsoleSession("h" * 64, "alice", Role.SUBMITTER, "k1", "c" * 32, now, now)
    console.add_session(session)
    assert console.find_session("h" * 64) == (session, False)  # key k1 is in no row
    console.touch_session("h" * 64, now=now + timedelta(minutes=5))
    found = console.find_session("h" * 64)
    assert found is not None
    assert found[0].last_seen == now + timedelta(minutes=5)
    assert console.delete_idle_sessions(now + timedelta(minutes=1)) == 0
    assert console.delete_idle_sessions(now + timedelta(minutes=6)) == 1
    assert console.find_session("h" * 64) is None
    console.add_session(session)
    console.delete_session("h" * 64)
    assert console.find_session("h" * 64) is None
    # The key's state comes with the session, in the same lookup.
    keys = SqlApiKeyRepository(make_sessions(engine))
    keys.add(ApiKey(key_id="k1", owner="alice", role=Role.SUBMITTER, created_at=now), "s" * 64)
    console.add_session(session)
    assert console.find_session("h" * 64) == (session, True)
    keys.revoke("k1", now=now)
    assert console.find_session("h" * 64) == (session, False)
