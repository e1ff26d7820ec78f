"""Keys, ownership, roles, rate limit and Idempotency-Key against a live API on PostgreSQL."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import fresh_pg_database
from tests.e2e.server import ROOT, LiveServer, create_key, running

DUMMY = "/api/v1/reports/dummy"
FAST = {"processing_time": 0}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The default budget (100 enqueues per 60 s per key) and authentication on."""
    data_dir = tmp_path_factory.mktemp("secured")
    with (
        fresh_pg_database("reports_secured") as url,
        running(data_dir, url, RATE_LIMIT_REQUESTS="100") as live,
    ):
        yield live


@pytest.fixture(scope="module")
def alice(api: LiveServer) -> str:
    return api.create_key("alice")


@pytest.fixture(scope="module")
def bob(api: LiveServer) -> str:
    return api.create_key("bob")


def enqueue(client: httpx.Client, **headers: str) -> httpx.Response:
    return client.post(DUMMY, json=FAST, headers=headers)


@pytest.mark.parametrize("key", [None, "", "nonsense", "rk_000000000000_wrong"])
def test_missing_or_wrong_key_is_401_and_writes_nothing(api: LiveServer, key: str | None) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as anonymous:
        headers = {"X-API-Key": key} if key is not None else {}
        before = api.client().get("/api/v1/reports/jobs", params={"limit": 100}).json()
        answer = anonymous.post(DUMMY, json=FAST, headers=headers)
        listed = anonymous.get("/api/v1/reports/jobs", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"] in ("UNAUTHORIZED", "INVALID_API_KEY")
    assert "X-API-Key" in answer.json()["message"] or "unknown" in answer.json()["message"]
    assert answer.headers["www-authenticate"].startswith("ApiKey")
    assert listed.status_code == 401
    after = api.client().get("/api/v1/reports/jobs", params={"limit": 100}).json()
    assert after["items"] == before["items"] or after["items"][0]["id"] == before["items"][0]["id"]


def test_another_owners_job_is_404_everywhere(api: LiveServer, alice: str, bob: str) -> None:
    with api.client(api_key=alice) as as_alice, api.client(api_key=bob) as as_bob:
        job = enqueue(as_alice).json()
        path = f"/api/v1/reports/jobs/{job['id']}"
        assert as_alice.get(path).status_code == 200
        for answer in (
            as_bob.get(path),
            as_bob.delete(path),
            as_bob.get(f"{path}/download"),
        ):
            assert answer.status_code == 404, answer.text
            assert answer.json()["error"] == "JOB_NOT_FOUND"
        bobs = as_bob.get("/api/v1/reports/jobs", params={"limit": 100}).json()["items"]
        assert job["id"] not in {j["id"] for j in bobs}
        alices = as_alice.get("/api/v1/reports/jobs", params={"limit": 100}).json()["items"]
        assert job["id"] in {j["id"] for j in alices}
        assert {j["id"] for j in alices}.isdisjoint({j["id"] for j in bobs})
    with api.client() as operator:  # operators see and may cancel every owner's jobs
        assert operator.get(path).status_code == 200


def test_submitter_on_operator_routes_is_403(api: LiveServer, alice: str) -> None:
    with api.client(api_key=alice) as as_alice, api.client() as operator:
        for route in ("/api/v1/reports/queues/status", "/api/v1/reports/stats/daily"):
            refused = as_alice.get(route)
            assert refused.status_code == 403, route
            assert refused.json()["error"] == "FORBIDDEN"
        assert operator.get("/api/v1/reports/queues/status").status_code == 200


def test_health_and_metrics_stay_open(api: LiveServer) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as anonymous:
        assert anonymous.get("/health/live").status_code == 200
        assert anonymous.get("/health/ready").status_code == 200
        assert anonymous.get("/metrics").status_code == 200


def test_same_idempotency_key_makes_one_job(api: LiveServer, alice: str, bob: str) -> None:
    key = {"Idempotency-Key": "invoice-2026-11-29-001"}
    with api.client(api_key=alice) as as_alice, api.client(api_key=bob) as as_bob:
        first = enqueue(as_alice, **key)
        again = as_alice.post(DUMMY, params=FAST, headers=key)  # same request, as a query
        other = as_alice.post(DUMMY, json={"processing_time": 1}, headers=key)
        bobs = enqueue(as_bob, **key)  # keys are per owner
    assert (first.status_code, first.headers["idempotent-replayed"]) == (200, "false")
    assert (again.status_code, again.headers["idempotent-replayed"]) == (200, "true")
    assert again.json()["id"] == first.json()["id"]
    assert other.status_code == 409
    assert other.json()["error"] == "IDEMPOTENCY_KEY_REUSED"
    assert (bobs.status_code, bobs.headers["idempotent-replayed"]) == (200, "false")
    assert bobs.json()["id"] != first.json()["id"]


def test_concurrent_requests_with_one_key_make_one_job(api: LiveServer, alice: str) -> None:
    key = {"Idempotency-Key": "concurrent-9f2c"}

    def send(_: int) -> httpx.Response:
        with api.client(api_key=alice) as client:
            return client.post(
                "/api/v1/reports/heavy", json={"report_type": "pdf", "pages": 1}, headers=key
            )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert sorted(a.headers["idempotent-replayed"] for a in answers) == ["false"] + ["true"] * 7
    assert len({a.json()["id"] for a in answers}) == 1


def test_bad_idempotency_key_is_422(api: LiveServer, alice: str) -> None:
    with api.client(api_key=alice) as as_alice:
        answer = enqueue(as_alice, **{"Idempotency-Key": "x" * 129})
    assert answer.status_code == 422
    assert answer.json()["error"] == "VALIDATION_ERROR"


def test_101st_enqueue_in_a_minute_is_429(api: LiveServer) -> None:
    """A bucket of 100 refilled at 100/60 s: a burst gets 100 (+ what refilled meanwhile)."""
    key = api.create_key("carol")
    with api.client(api_key=key) as as_carol, ThreadPoolExecutor(10) as pool:
        started = time.monotonic()
        answers = list(pool.map(lambda _: enqueue(as_carol), range(120)))
        elapsed = time.monotonic() - started
        # Reads draw on the same budget (three: a token may have refilled since the burst).
        reads = [as_carol.get("/api/v1/reports/jobs").status_code for _ in range(3)]
    codes = [a.status_code for a in answers]
    accepted = codes.count(200)
    assert codes.count(429) == 120 - accepted
    assert 100 <= accepted <= 100 + math.ceil(elapsed * 100 / 60), (accepted, elapsed)
    # One of the burst's own refusals: a request sent after it could find a refilled token.
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert 429 in reads, reads
    with api.client() as operator:  # another key has its own budget
        assert enqueue(operator).status_code == 200


def test_revoked_key_is_401(api: LiveServer) -> None:
    key = api.create_key("dave")
    key_id = key.split("_")[1]
    with api.client(api_key=key) as as_dave:
        assert as_dave.get("/api/v1/reports/jobs").status_code == 200
        listing = manage(api, "api-key", "list")
        assert key_id in listing
        assert "dave" in listing
        assert key not in listing
        assert f"revoked key {key_id}" in manage(api, "api-key", "revoke", key_id)
        assert as_dave.get("/api/v1/reports/jobs").status_code == 401
    again = subprocess.run(
        [sys.executable, "manage.py", "api-key", "revoke", key_id],
        cwd=ROOT,
        env=api.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1
    assert "API_KEY_NOT_FOUND" in again.stdout


def test_key_is_stored_hashed(api: LiveServer) -> None:
    import sqlalchemy as sa

    key = create_key(api.env, "erin", "submitter")
    engine = sa.create_engine(api.database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT key_id, secret_hash FROM api_keys")).all()
    finally:
        engine.dispose()
    assert rows
    assert all(key not in str(row) for row in rows)
    assert key.split("_")[1] in {row[0] for row in rows}


def manage(api: LiveServer, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=api.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_auth_can_be_off_only_in_development(tmp_path: Path) -> None:
    with fresh_pg_database("reports_devmode") as url:
        _refused_outside_development_then_open(tmp_path, url)


def _refused_outside_development_then_open(tmp_path: Path, pg_database_url: str) -> None:
    refused = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", "1"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "ENVIRONMENT": "production",
            "AUTH_ENABLED": "false",
            "DATABASE_URL": pg_database_url,
            "DATA_DIR": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "AUTH_ENABLED=false is allowed only with ENVIRONMENT=development" in refused.stderr
    with running(tmp_path, pg_database_url, ENVIRONMENT="development") as dev:
        assert dev.api_key is None
        with httpx.Client(base_url=dev.url, timeout=10) as anonymous:
            assert enqueue(anonymous).status_code == 200
        assert "api.auth_disabled" in dev.logs()
