"""Bad input gets a 4xx with a stable code, never a 500, and writes nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from app.db.models import ReportJobRow
from app.db.session import make_engine
from sqlalchemy import func, select

from tests.e2e.server import LiveServer, wait_for

API = "/api/v1/reports"
UNKNOWN = str(uuid.uuid4())

CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    ("POST", f"{API}/heavy?report_type=word", {}, 422, "VALIDATION_ERROR"),
    ("POST", f"{API}/heavy", {}, 422, "INVALID_REPORT_TYPE"),
    ("POST", f"{API}/heavy?report_type=dummy", {}, 422, "INVALID_REPORT_TYPE"),
    ("POST", f"{API}/heavy?report_type=pdf&pages=-1", {}, 422, "INVALID_PARAMS"),
    ("POST", f"{API}/heavy?report_type=pdf&pages=0", {}, 422, "INVALID_PARAMS"),
    ("POST", f"{API}/heavy?report_type=pdf&pages={10**9}", {}, 422, "INVALID_PARAMS"),
    ("POST", f"{API}/heavy?report_type=pdf&pages={10**40}", {}, 422, "INVALID_PARAMS"),
    ("POST", f"{API}/heavy?report_type=pdf&pages=lots", {}, 422, "VALIDATION_ERROR"),
    ("POST", f"{API}/heavy?report_type=pdf&rows=10", {}, 422, "INVALID_PARAMS"),
    ("POST", f"{API}/heavy?report_type=excel&rows=2000000", {}, 422, "INVALID_PARAMS"),
    ("POST", f"{API}/heavy?report_type=pdf&processing_time=1e9", {}, 422, "INVALID_PARAMS"),
    ("POST", f"{API}/heavy?report_type=pdf&processing_time=nan", {}, 422, "INVALID_PARAMS"),
    (
        "POST",
        f"{API}/heavy",
        {"json": {"report_type": "pdf", "pages": "x"}},
        422,
        "VALIDATION_ERROR",
    ),
    (
        "POST",
        f"{API}/heavy",
        {"json": {"report_type": "pdf", "colour": 1}},
        422,
        "VALIDATION_ERROR",
    ),
    (
        "POST",
        f"{API}/heavy",
        {
            "content": b'{"report_type": "pdf", "processing_time": 1e400}',
            "headers": {"content-type": "application/json"},
        },
        422,
        "VALIDATION_ERROR",
    ),
    ("POST", f"{API}/heavy", {"json": [1, 2]}, 422, "VALIDATION_ERROR"),
    (
        "POST",
        f"{API}/heavy",
        {"content": b'{"report_type": "pdf",', "headers": {"content-type": "application/json"}},
        400,
        "MALFORMED_JSON",
    ),
    ("POST", f"{API}/heavy?pages=3", {"json": {"report_type": "pdf"}}, 422, "AMBIGUOUS_PARAMS"),
    ("POST", f"{API}/dummy", {"json": {"report_type": "pdf"}}, 422, "INVALID_REPORT_TYPE"),
    ("POST", f"{API}/dummy?simulate_failures=9", {}, 422, "INVALID_PARAMS"),
    ("GET", f"{API}/jobs/not-a-uuid", {}, 422, "VALIDATION_ERROR"),
    ("GET", f"{API}/jobs/{UNKNOWN}", {}, 404, "JOB_NOT_FOUND"),
    ("DELETE", f"{API}/jobs/{UNKNOWN}", {}, 404, "JOB_NOT_FOUND"),
    ("DELETE", f"{API}/jobs/42", {}, 422, "VALIDATION_ERROR"),
    ("GET", f"{API}/jobs/{UNKNOWN}/download", {}, 404, "JOB_NOT_FOUND"),
    ("GET", f"{API}/jobs?limit=0", {}, 422, "VALIDATION_ERROR"),
    ("GET", f"{API}/jobs?limit=101", {}, 422, "VALIDATION_ERROR"),
    ("GET", f"{API}/jobs?status=lost", {}, 422, "VALIDATION_ERROR"),
    ("GET", f"{API}/jobs?cursor=bm9wZQ", {}, 422, "INVALID_CURSOR"),
    ("GET", f"{API}/jobs?cursor=%%%", {}, 422, "INVALID_CURSOR"),
    ("GET", "/api/v1/nothing-here", {}, 404, "NOT_FOUND"),
    ("PUT", f"{API}/jobs", {}, 405, "METHOD_NOT_ALLOWED"),
]


def _rows(server: LiveServer) -> int:
    engine = make_engine(server.database_url)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(ReportJobRow)).scalar_one()
    engine.dispose()
    return int(count)


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), CASES)
def test_bad_request_answers_its_code_and_writes_nothing(
    client: httpx.Client,
    server: LiveServer,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    before = _rows(server)
    response = client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert body["message"]
    assert body["timestamp"]
    assert _rows(server) == before


def test_method_not_allowed_lists_every_method_of_the_path(client: httpx.Client) -> None:
    response = client.request("OPTIONS", f"{API}/jobs/{UNKNOWN}")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET"
    assert response.json()["error"] == "METHOD_NOT_ALLOWED"


def test_cancel_twice_and_download_before_completion_are_conflicts(
    client: httpx.Client,
) -> None:
    job = client.post(f"{API}/heavy?report_type=pdf&pages=5&processing_time=30").json()
    early = client.get(f"{API}/jobs/{job['id']}/download")
    assert (early.status_code, early.json()["error"]) == (409, "JOB_NOT_COMPLETED")
    assert client.delete(f"{API}/jobs/{job['id']}").status_code == 200
    again = client.delete(f"{API}/jobs/{job['id']}")
    assert (again.status_code, again.json()["error"]) == (409, "JOB_ALREADY_FINISHED")
    assert "already cancelled" in again.json()["message"]
    assert wait_for(client, job["id"])["status"] == "cancelled"
