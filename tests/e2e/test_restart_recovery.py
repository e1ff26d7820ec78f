"""Jobs a killed API process left behind are re-run by the next one, never left stuck."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.e2e.server import running, stop, wait_for

API = "/api/v1/reports"


def test_killed_api_leaves_nothing_stuck(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reports.db'}"
    with running(tmp_path, url, INLINE_WORKERS="1") as first, first.client() as client:
        interrupted = client.post(f"{API}/heavy?report_type=pdf&pages=3&processing_time=30")
        waiting = client.post(f"{API}/dummy")
        interrupted_id, waiting_id = interrupted.json()["id"], waiting.json()["id"]
        wait_for(client, interrupted_id, {"running"}, timeout=15)
        assert wait_for(client, waiting_id, {"queued"}, timeout=5)["status"] == "queued"
        stop(first, signal.SIGKILL)  # no shutdown hook runs

    with running(tmp_path, url, INLINE_WORKERS="1") as second, second.client() as client:
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
        job_id = client.post(f"{API}/heavy?report_type=pdf&pages=2&processing_time=3").json()["id"]
        wait_for(client, job_id, {"running"}, timeout=15)
    # SIGTERM: the pool stops, the running job is put back to "queued" at its next checkpoint.
    with running(tmp_path, url, INLINE_WORKERS="1") as second, second.client() as client:
        done = wait_for(client, job_id, timeout=30)
        assert (done["status"], done["attempts"]) == ("completed", 2)
