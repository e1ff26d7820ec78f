"""An API process stopped mid-job: gracefully (SIGTERM) it requeues its running job itself
and exits 0; crashed (SIGKILL) it leaves the job ``running``, and the next process's
start-up recovery runs it again. Either way nothing is left stuck."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from uuid import UUID

import pytest
from app.db.repository import SqlJobRepository
from app.db.session import make_engine
from app.domain.jobs import ReportJob
from app.domain.states import JobStatus

from tests.e2e.server import LiveServer, running, terminate, wait_for

API = "/api/v1/reports"
#: SIGTERM to exit: the drain (0 s outside production), uvicorn's shutdown, the inline pool
#: stopping its render at the next checkpoint (PROGRESS_INTERVAL 0.25 s). About 1 s here;
#: 10 s holds on a loaded 2-core machine and is far below the 30 s render it interrupts.
STOP_BOUND = 10.0


def ledger_row(url: str, job_id: str) -> ReportJob:
    """The job's row, read from the database itself (no API process is running)."""
    engine = make_engine(url)
    try:
        job = SqlJobRepository(engine).get(UUID(job_id))
    finally:
        engine.dispose()
    assert job is not None
    return job


def logged(server: LiveServer, event: str, job_id: str | None = None) -> list[dict[str, object]]:
    """The server's JSON log records of ``event`` (about ``job_id``, if given)."""
    records = []
    for line in server.logs().splitlines():
        if event in line and line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == event and job_id in (None, record.get("job_id")):
                records.append(record)
    return records


@pytest.mark.parametrize("backend", ["inline", "asyncio"])
def test_killed_api_leaves_nothing_stuck(tmp_path: Path, backend: str) -> None:
    """The same on the inline pool and on asyncio tasks (both in-process, one job at a
    time); sync has no job waiting behind another to leave (each runs in its request)."""
    url = f"sqlite:///{tmp_path / 'reports.db'}"
    one = {"INLINE_WORKERS": "1", "DISPATCH_BACKEND": backend}
    with running(tmp_path, url, **one) as first, first.client() as client:
        interrupted = client.post(f"{API}/heavy?report_type=pdf&pages=3&processing_time=30")
        waiting = client.post(f"{API}/dummy")
        interrupted_id, waiting_id = interrupted.json()["id"], waiting.json()["id"]
        wait_for(client, interrupted_id, {"running"}, timeout=15)
        assert wait_for(client, waiting_id, {"queued"}, timeout=5)["status"] == "queued"
        crashed = terminate(first, signal.SIGKILL)  # no shutdown hook runs
    assert (crashed.returncode, crashed.killed) == (-signal.SIGKILL, False), crashed
    # Nobody put the job back: it is still running under the dead process until a start-up.
    left = ledger_row(url, interrupted_id)
    assert (left.status, left.attempts) == (JobStatus.RUNNING, 1), left
    assert not logged(first, "report_job.run.interrupted", interrupted_id)
    assert ledger_row(url, waiting_id).status is JobStatus.QUEUED

    with running(tmp_path, url, **one) as second, second.client() as client:
        # The job whose process died runs again (attempt 2), oldest first...
        rerun = wait_for(client, interrupted_id, {"running"}, timeout=15)
        assert rerun["attempts"] == 2
        client.delete(f"{API}/jobs/{interrupted_id}")  # no need to wait 30 s of rendering
        assert wait_for(client, interrupted_id, timeout=10)["status"] == "cancelled"
        # ...and the job that was waiting is dispatched again and completes.
        waited = wait_for(client, waiting_id, timeout=30)
        assert (waited["status"], waited["attempts"]) == ("completed", 1)


def test_graceful_stop_requeues_running_job_for_the_next_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reports.db'}"
    with running(tmp_path, url, INLINE_WORKERS="1") as first, first.client() as client:
        path = f"{API}/heavy?report_type=pdf&pages=2&processing_time=30"
        job_id = client.post(path).json()["id"]
        before = wait_for(client, job_id, {"running"}, timeout=15)
        # SIGTERM: the pool stops, the running job is put back to "queued" at its next
        # checkpoint, by this process, which then exits 0.
        stopped = terminate(first, signal.SIGTERM, timeout=STOP_BOUND + 10)
    # Exited by itself with code 0, in time, after its shutdown ran to the end.
    assert stopped.graceful, (stopped, first.logs()[-3000:])
    assert stopped.seconds <= STOP_BOUND, stopped
    assert logged(first, "Application shutdown complete.")
    requeued = ledger_row(url, job_id)  # before any other process touches the ledger
    assert (requeued.status, requeued.attempts) == (JobStatus.QUEUED, 1), requeued
    assert requeued.artifact is None
    assert len(logged(first, "report_job.run.interrupted", job_id)) == 1
    assert before["attempts"] == 1
    print(f"SIGTERM to exit: {stopped.seconds:.2f}s")

    with running(tmp_path, url, INLINE_WORKERS="1") as second, second.client() as client:
        # The requeued job runs again; no need to wait 30 s of rendering to see it.
        rerun = wait_for(client, job_id, {"running"}, timeout=15)
        assert rerun["attempts"] == 2
        client.delete(f"{API}/jobs/{job_id}")
        assert wait_for(client, job_id, timeout=10)["status"] == "cancelled"
