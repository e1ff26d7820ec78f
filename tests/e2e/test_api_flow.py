"""Enqueue → run → download → open, through a real uvicorn process, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import time
from datetime import datetime

import httpx
import openpyxl
from pypdf import PdfReader

from tests.e2e.server import TERMINAL, LiveServer, wait_for

API = "/api/v1/reports"


def test_pdf_query_form_completes_and_downloads_with_its_page_count(client: httpx.Client) -> None:
    response = client.post(f"{API}/heavy?report_type=pdf&pages=7&processing_time=0.5")
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["report_type"] == "pdf"
    assert job["status"] in {"queued", "running", "completed"}
    assert (job["backend"], job["queue"], job["priority"]) == ("inline", "reports", 5)
    assert job["params"] == {"pages": 7, "processing_time": 0.5, "seed": 0}
    assert job["error"] is None
    assert job["artifact"] is None

    done = wait_for(client, job["id"])
    assert done["status"] == "completed", done
    assert (done["progress"], done["attempts"]) == (100, 1)
    assert done["started_at"] >= done["created_at"]
    assert done["finished_at"] >= done["started_at"]

    download = client.get(f"{API}/jobs/{job['id']}/download")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/pdf"
    assert f'filename="pdf-{job["id"]}.pdf"' in download.headers["content-disposition"]
    artifact = done["artifact"]
    assert artifact["size_bytes"] == len(download.content)
    assert artifact["sha256"] == hashlib.sha256(download.content).hexdigest()
    assert len(PdfReader(io.BytesIO(download.content)).pages) == 7


def test_excel_body_form_gives_a_workbook(client: httpx.Client) -> None:
    response = client.post(
        f"{API}/heavy", json={"report_type": "excel", "rows": 300, "sheets": 2, "seed": 4}
    )
    assert response.status_code == 200, response.text
    done = wait_for(client, response.json()["id"])
    assert done["status"] == "completed", done
    content = client.get(f"{API}/jobs/{done['id']}/download").content
    workbook = openpyxl.load_workbook(io.BytesIO(content))
    assert len(workbook.sheetnames) == 3  # summary + 2 data sheets


def test_analysis_report_completes(client: httpx.Client) -> None:
    response = client.post(f"{API}/heavy?report_type=analysis&rows=500")
    done = wait_for(client, response.json()["id"])
    assert done["status"] == "completed", done
    content = client.get(f"{API}/jobs/{done['id']}/download").content
    assert len(PdfReader(io.BytesIO(content)).pages) >= 1


def test_rq_era_dummy_route_keeps_working(client: httpx.Client) -> None:
    response = client.post(f"{API}/dummy")
    assert response.status_code == 200, response.text
    done = wait_for(client, response.json()["id"])
    assert (done["report_type"], done["status"]) == ("dummy", "completed")
    assert (
        client.get(f"{API}/jobs/{done['id']}/download")
        .headers["content-type"]
        .startswith("application/json")
    )


def test_retry_then_success_records_every_attempt(client: httpx.Client) -> None:
    job = client.post(f"{API}/dummy?simulate_failures=2").json()
    done = wait_for(client, job["id"])
    assert (done["status"], done["attempts"], done["error"]) == ("completed", 3, None)


def test_always_failing_job_ends_failed_with_its_code(client: httpx.Client) -> None:
    job = client.post(f"{API}/dummy", json={"simulate_failures": 5}).json()
    done = wait_for(client, job["id"])
    assert (done["status"], done["attempts"]) == ("failed", 4)  # MAX_ATTEMPTS's default
    assert done["error"]["code"] == "SIMULATED_FAILURE"
    assert done["artifact"] is None


def test_list_is_newest_first_with_keyset_pages_and_filters(client: httpx.Client) -> None:
    created = [client.post(f"{API}/dummy?seed={i}").json()["id"] for i in range(5)]
    for job_id in created:
        wait_for(client, job_id)

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2, "report_type": "dummy"}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"{API}/jobs", params=params).json()
        assert len(page["items"]) <= 2
        assert all(item["report_type"] == "dummy" for item in page["items"])
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    positions = [seen.index(job_id) for job_id in created]
    assert positions == sorted(positions, reverse=True)  # newest first

    completed = client.get(f"{API}/jobs", params={"status": "completed", "limit": 100}).json()
    assert all(item["status"] == "completed" for item in completed["items"])
    by_backend = client.get(f"{API}/jobs", params={"backend": "celery"}).json()
    assert by_backend == {"items": [], "next": None}


def test_cancel_queued_job_never_runs_and_running_job_stops_within_2s(
    client: httpx.Client, server: LiveServer
) -> None:
    long_jobs = [
        client.post(f"{API}/heavy?report_type=pdf&pages=500&processing_time=60").json()["id"],
        client.post(f"{API}/heavy?report_type=excel&rows=50000&processing_time=60").json()["id"],
    ]
    for job_id in long_jobs:  # both inline workers are now busy
        wait_for(client, job_id, {"running"}, timeout=20)
    queued = client.post(f"{API}/dummy").json()["id"]
    assert wait_for(client, queued, {"queued"}, timeout=5)["status"] == "queued"

    response = client.delete(f"{API}/jobs/{queued}")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"

    cancelled_at = [
        datetime.fromisoformat(client.delete(f"{API}/jobs/{job_id}").json()["finished_at"])
        for job_id in long_jobs
    ]
    # Both workers stop at their next checkpoint: two probes, each holding a thread for
    # 3 s, both start on the freed threads (which then have discarded their scratch files).
    probes = [client.post(f"{API}/dummy?processing_time=3").json()["id"] for _ in long_jobs]
    for probe in probes:
        running = wait_for(client, probe, {"running", "completed"}, timeout=10)
        started = datetime.fromisoformat(running["started_at"])
        assert (started - max(cancelled_at)).total_seconds() < 2.0

    never_ran = client.get(f"{API}/jobs/{queued}").json()
    assert (never_ran["status"], never_ran["attempts"], never_ran["started_at"]) == (
        "cancelled",
        0,
        None,
    )
    for job_id in long_jobs:
        body = client.get(f"{API}/jobs/{job_id}").json()
        assert (body["status"], body["artifact"]) == ("cancelled", None)
        assert body["progress"] < 100
        assert not (server.data_dir / "artifacts" / job_id).exists()
    leftovers = [p for p in (server.data_dir / "artifacts").rglob("*") if p.is_file()]
    assert not [p for p in leftovers if any(j in str(p) for j in long_jobs)]
    for probe in probes:  # the pool is idle again for the next test
        assert wait_for(client, probe, timeout=10)["status"] == "completed"


def test_progress_and_stage_are_visible_while_running(client: httpx.Client) -> None:
    # Long enough that a loaded machine still samples it running; cancelled once seen.
    job_id = client.post(f"{API}/heavy?report_type=pdf&pages=30&processing_time=20").json()["id"]
    seen: set[tuple[int, str]] = set()
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        body = client.get(f"{API}/jobs/{job_id}").json()
        if body["status"] == "running":
            seen.add((body["progress"], body["stage"]))
        partial = sorted({p for p, _ in seen if 0 < p < 100})
        if len(partial) >= 3 or body["status"] in TERMINAL:
            break
        time.sleep(0.1)
    client.delete(f"{API}/jobs/{job_id}")
    assert len(partial) >= 3, seen  # progress moves while it runs, not only at the end
    assert any(stage.startswith("page ") for _, stage in seen)


def test_download_answers_head_and_range(client: httpx.Client) -> None:
    job_id = client.post(f"{API}/heavy?report_type=pdf&pages=3").json()["id"]
    done = wait_for(client, job_id)
    url = f"{API}/jobs/{job_id}/download"
    head = client.head(url)
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == done["artifact"]["size_bytes"]
    assert head.headers["accept-ranges"] == "bytes"
    part = client.get(url, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206
    assert part.content == client.get(url).content[:100]
    assert part.content.startswith(b"%PDF-")


def test_queue_status_shows_the_inline_pool(client: httpx.Client) -> None:
    body = client.get(f"{API}/queues/status").json()
    rows = [q for q in body["queues"] if (q["queue"], q["backend"]) == ("reports", "inline")]
    assert rows == [
        {"queue": "reports", "backend": "inline", "waiting": 0, "running": 0, "workers": 2}
    ]
    assert body["generated_at"]


def test_request_id_is_echoed_or_generated(client: httpx.Client) -> None:
    given = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    generated = client.get("/health/live").headers["x-request-id"]
    assert len(generated) == 32


def test_openapi_documents_every_route_with_models(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        (f"{API}/dummy", "post"),
        (f"{API}/heavy", "post"),
        (f"{API}/jobs", "get"),
        (f"{API}/jobs/{{job_id}}", "get"),
        (f"{API}/jobs/{{job_id}}", "delete"),
        (f"{API}/jobs/{{job_id}}/download", "get"),
        (f"{API}/queues/status", "get"),
    ]:
        assert method in paths[path], path
    heavy = paths[f"{API}/heavy"]["post"]["responses"]
    assert heavy["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobOut")
    assert heavy["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
