"""SIGTERM to the API: readiness flips at once, a download in flight still completes."""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import running, wait_for


@pytest.mark.timeout(120)
def test_sigterm_lets_an_inflight_download_finish(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'reports.db'}"
    with running(tmp_path, url, SHUTDOWN_DRAIN_SECONDS="2") as server, server.client() as client:
        job = client.post(
            "/api/v1/reports/heavy", json={"report_type": "excel", "rows": 60000, "sheets": 2}
        ).json()
        done = wait_for(client, job["id"], timeout=90)
        assert done["status"] == "completed", done
        digest = hashlib.sha256()
        size = 0
        path = f"/api/v1/reports/jobs/{job['id']}/download"
        with client.stream("GET", path) as download:
            chunks = download.iter_bytes(chunk_size=16384)
            first = next(chunks)
            digest.update(first)
            size += len(first)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            ready = httpx.get(f"{server.url}/health/ready", timeout=3)
            for chunk in chunks:  # the rest, slowly, after the signal
                digest.update(chunk)
                size += len(chunk)
                time.sleep(0.001)
        assert ready.status_code == 503
        assert ready.json() == {"status": "draining"}
        assert size == done["artifact"]["size_bytes"] > 16384
        assert digest.hexdigest() == done["artifact"]["sha256"]
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
