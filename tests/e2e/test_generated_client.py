"""The API contract as a consumer sees it: the live ``/openapi.json`` is valid OpenAPI, and a
client generated from it by openapi-python-client with no configuration at all (as a new user
would) enqueues every report type, polls, lists, downloads the files as bytes and cancels
against the real server."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
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
from app.reports.analysis import ANALYSIS_PAGES
from openapi_spec_validator import validate
from openpyxl import load_workbook
from pypdf import PdfReader

from tests.e2e.server import TERMINAL, LiveServer

BIN = Path(sys.executable).parent
GENERATOR = BIN / "openapi-python-client"
DOWNLOAD = "/api/v1/reports/jobs/{job_id}/download"
FILE = {"type": "string", "format": "binary"}


@pytest.fixture
def document(server: LiveServer) -> dict[str, Any]:
    response = httpx.get(server.url + "/openapi.json", timeout=10)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def generated(document: dict[str, Any], tmp_path: Path) -> ModuleType:
    """A client package generated from the live document with the generator's defaults.

    No ``--config``: no content-type override, and the default post hooks (``ruff``, found on
    ``PATH`` as in a developer's shell). Any warning of the generator fails the test.
    """
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(document))
    package = f"reports_client_{tmp_path.name.replace('-', '_')}"
    command = ["generate", "--path", str(spec), "--meta", "none"]
    done = subprocess.run(
        [str(GENERATOR), *command, "--output-path", str(tmp_path / package)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "warning" not in output.lower(), output
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
    download = document["paths"][DOWNLOAD]["get"]
    for status in ("200", "206"):
        content = download["responses"][status]["content"]
        # a client taking the first media type it knows reads bytes, never a JSON object
        assert list(content) == ["application/octet-stream", *MEDIA_TYPES], status
        for media, declared in content.items():
            schema = declared["schema"]
            assert schema == FILE or (media == "application/json" and schema["type"] == "object")
    for route in ("dummy", "heavy"):
        body = document["paths"][f"/api/v1/reports/{route}"]["post"]["requestBody"]
        assert not body.get("required", False), body
        assert body["content"] == {
            "application/json": {"schema": {"$ref": "#/components/schemas/ReportRequest"}}
        }
    for path in document["paths"].values():
        for op in path.values():
            for status, answer in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert "content" in answer, (op["operationId"], status)


def test_a_generated_client_drives_every_report_from_enqueue_to_download_and_cancel(
    server: LiveServer, generated: ModuleType
) -> None:
    def api(name: str) -> Any:
        return importlib.import_module(f"{generated.__name__}.api.reports.{name}")

    models = importlib.import_module(f"{generated.__name__}.models")
    file_type = importlib.import_module(f"{generated.__name__}.types").File
    client = generated.AuthenticatedClient(
        base_url=server.url,
        token=server.api_key or "",
        prefix="",
        auth_header_name="X-API-Key",
        raise_on_unexpected_status=True,
    )
    kinds = models.ReportType
    with client:
        enqueued = {  # two with query parameters alone (no body), two with a JSON body
            kinds.DUMMY: api("enqueue_dummy").sync(client=client, seed=5),
            kinds.EXCEL: api("enqueue_heavy").sync(
                client=client, report_type=kinds.EXCEL, rows=200, sheets=2
            ),
            kinds.PDF: api("enqueue_heavy").sync(
                client=client, body=models.ReportRequest(report_type=kinds.PDF, pages=3)
            ),
            kinds.ANALYSIS: api("enqueue_heavy").sync(
                client=client, body=models.ReportRequest(report_type=kinds.ANALYSIS, rows=100)
            ),
        }
        assert all(isinstance(j, models.JobOut) for j in enqueued.values()), enqueued

        files: dict[Any, bytes] = {}
        for kind, queued in enqueued.items():
            deadline = time.monotonic() + 60
            while (
                job := api("get_report_job").sync(client=client, job_id=queued.id)
            ).status not in {models.JobStatus(s) for s in TERMINAL}:
                assert time.monotonic() < deadline, job
                time.sleep(0.1)
            assert (job.report_type, job.status) == (kind, models.JobStatus.COMPLETED), job

            answer = api("download_report").sync_detailed(client=client, job_id=job.id)
            assert isinstance(answer.parsed, file_type), answer.parsed
            assert answer.headers["content-type"] == job.artifact.content_type  # truthful
            files[kind] = answer.parsed.payload.read()
            assert hashlib.sha256(files[kind]).hexdigest() == job.artifact.sha256, kind

        assert json.loads(files[kinds.DUMMY])["seed"] == 5
        assert len(PdfReader(io.BytesIO(files[kinds.PDF])).pages) == 3
        assert len(PdfReader(io.BytesIO(files[kinds.ANALYSIS])).pages) == ANALYSIS_PAGES
        workbook = load_workbook(io.BytesIO(files[kinds.EXCEL]), read_only=True)
        assert len(workbook.sheetnames) == 1 + 2  # the summary, then the data sheets
        workbook.close()

        listed = api("list_report_jobs").sync(client=client, report_type=kinds.PDF)
        assert enqueued[kinds.PDF].id in [j.id for j in listed.items]

        pdf = enqueued[kinds.PDF]
        head = api("head_report").sync_detailed(client=client, job_id=pdf.id)
        assert (head.status_code, head.content) == (200, b"")
        assert int(head.headers["content-length"]) == len(files[kinds.PDF])

        both = api("enqueue_heavy").sync(
            client=client, report_type=kinds.PDF, body=models.ReportRequest(report_type=kinds.PDF)
        )
        assert isinstance(both, models.ErrorBody)
        assert both.error == "AMBIGUOUS_PARAMS"

        slow = models.ReportRequest(report_type=kinds.PDF, processing_time=60)
        running = api("enqueue_heavy").sync(client=client, body=slow)
        cancelled = api("cancel_report_job").sync(client=client, job_id=running.id)
        assert cancelled.status == models.JobStatus.CANCELLED

        missing = api("get_report_job").sync(client=client, job_id=uuid.UUID(int=1))
        assert isinstance(missing, models.ErrorBody)
        assert missing.error == "JOB_NOT_FOUND"
