"""The API contract as a consumer sees it: the live ``/openapi.json`` is valid OpenAPI, and a
client generated from it with openapi-python-client enqueues, polls, lists, downloads and
cancels against the real server."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from app.reports import MEDIA_TYPES
from openapi_spec_validator import validate
from pypdf import PdfReader

from tests.e2e.server import TERMINAL, LiveServer

GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture
def document(server: LiveServer) -> dict[str, Any]:
    response = httpx.get(server.url + "/openapi.json", timeout=10)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def generated(document: dict[str, Any], tmp_path: Path) -> ModuleType:
    """A client package generated from the live document (binary report types as bytes)."""
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(document))
    config = tmp_path / "config.json"
    binary = {m: "application/octet-stream" for m in MEDIA_TYPES if m != "application/json"}
    config.write_text(json.dumps({"content_type_overrides": binary, "post_hooks": []}))
    package = f"reports_client_{tmp_path.name.replace('-', '_')}"
    command = ["generate", "--path", str(spec), "--config", str(config), "--meta", "none"]
    done = subprocess.run(
        [str(GENERATOR), *command, "--output-path", str(tmp_path / package)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Unable to parse" not in done.stdout + done.stderr, done.stdout + done.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        return importlib.import_module(package)
    finally:
        sys.path.remove(str(tmp_path))


def test_the_document_is_valid_openapi_with_unique_readable_operation_ids(
    document: dict[str, Any],
) -> None:
    validate(document)  # raises on any violation, a repeated operationId included
    ids = [op["operationId"] for path in document["paths"].values() for op in path.values()]
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    assert {"enqueue_heavy", "download_report", "cancel_report_job"} <= set(ids)
    download = document["paths"]["/api/v1/reports/jobs/{job_id}/download"]["get"]
    assert set(download["responses"]["200"]["content"]) == set(MEDIA_TYPES)
    for path in document["paths"].values():
        for op in path.values():
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert "content" in answer, (op["operationId"], status)


def test_a_generated_client_drives_a_job_from_enqueue_to_download_and_cancel(
    server: LiveServer, generated: ModuleType
) -> None:
    def api(name: str) -> Any:
        return importlib.import_module(f"{generated.__name__}.api.reports.{name}")

    models = importlib.import_module(f"{generated.__name__}.models")
    client = generated.AuthenticatedClient(
        base_url=server.url,
        token=server.api_key or "",
        prefix="",
        auth_header_name="X-API-Key",
        raise_on_unexpected_status=True,
    )
    with client:
        body = models.ReportRequest(report_type=models.ReportType.PDF, pages=3)
        job = api("enqueue_heavy").sync(client=client, body=body)
        assert isinstance(job, models.JobOut), job

        deadline = time.monotonic() + 30
        while (job := api("get_report_job").sync(client=client, job_id=job.id)).status not in {
            models.JobStatus(s) for s in TERMINAL
        }:
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job.status == models.JobStatus.COMPLETED

        listed = api("list_report_jobs").sync(client=client, report_type=models.ReportType.PDF)
        assert job.id in [j.id for j in listed.items]

        file = api("download_report").sync(client=client, job_id=job.id)
        payload = file.payload.read()
        assert hashlib.sha256(payload).hexdigest() == job.artifact.sha256
        assert len(PdfReader(io.BytesIO(payload)).pages) == 3

        head = api("head_report").sync_detailed(client=client, job_id=job.id)
        assert (head.status_code, head.content) == (200, b"")
        assert int(head.headers["content-length"]) == len(payload)

        slow = models.ReportRequest(report_type=models.ReportType.PDF, processing_time=60)
        running = api("enqueue_heavy").sync(client=client, body=slow)
        cancelled = api("cancel_report_job").sync(client=client, job_id=running.id)
        assert cancelled.status == models.JobStatus.CANCELLED

        missing = api("get_report_job").sync(client=client, job_id=uuid.UUID(int=1))
        assert isinstance(missing, models.ErrorBody)
        assert missing.error == "JOB_NOT_FOUND"
