"""The composition root takes a test's fakes for any port: the API and its wiring run on
them, with no database, broker or Redis."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from app import bootstrap
from app.core.config import Settings
from app.domain.errors import Misconfigured
from app.domain.queues import Backend
from app.domain.states import JobStatus
from app.main import create_app
from app.storage.local import LocalArtifactStore
from fastapi.testclient import TestClient

from tests.unit.fakes import MemoryRepository, RecordingDispatcher


def settings(tmp_path: Path, **values: Any) -> Settings:
    with socket.socket() as sock:  # a port nothing listens on: the rate limit stays local
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="development",
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'never-created.db'}",
        redis_url=f"redis://127.0.0.1:{port}/0",
        **{"inline_fallback": False, **values},
    )


def test_the_api_runs_on_fakes_given_to_the_composition_root(tmp_path: Path) -> None:
    repo, dispatcher = MemoryRepository(), RecordingDispatcher(Backend.CELERY)
    app = create_app(settings(tmp_path), repo=repo, dispatcher=dispatcher)
    with TestClient(app) as client:
        created = client.post("/api/v1/reports/heavy", params={"report_type": "pdf", "pages": 2})
        assert created.status_code == 200, created.text
        job_id = UUID(created.json()["id"])
        assert dispatcher.dispatched == [job_id]
        stored = repo.get(job_id)
        assert stored is not None
        assert (stored.status, stored.backend) == (JobStatus.QUEUED, Backend.CELERY)
        shown = client.get(f"/api/v1/reports/jobs/{job_id}").json()
        assert (shown["status"], shown["backend"]) == ("queued", "celery")
        assert client.get("/health/ready").status_code == 200  # the fake ledger answers
    assert not (tmp_path / "never-created.db").exists()


def test_an_override_that_is_not_a_port_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not a port of Deps: ledger"):
        bootstrap.build(settings(tmp_path), ledger=MemoryRepository())


class _GoneStore(LocalArtifactStore):
    def ping(self) -> None:
        raise OSError("the store does not answer")


def test_ready_needs_the_store_even_where_jobs_may_run_inline(tmp_path: Path) -> None:
    dev = settings(tmp_path, inline_fallback=True)
    assert dev.inline_allowed
    app = create_app(dev, repo=MemoryRepository(), store=_GoneStore(tmp_path / "artifacts"))
    with TestClient(app) as client:
        ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["components"]["storage"]["status"] == "down"


def test_s3_storage_without_a_bucket_is_misconfigured(tmp_path: Path) -> None:
    s3 = settings(tmp_path, storage_backend="s3")
    with pytest.raises(Misconfigured, match="S3_BUCKET"):
        bootstrap.artifact_store(s3)
