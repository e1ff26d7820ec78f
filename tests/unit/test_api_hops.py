"""Thread-pool hops per request: one for an enqueue, one more only when a key is not cached.

Every hop FastAPI or a route makes goes through ``anyio.to_thread.run_sync``; the tests
count the calls while the real app (SQLite ledger, inline backend, no Redis) answers.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from app.core.config import Settings
from app.domain.auth import Role
from app.domain.jobs import utcnow
from app.main import create_app
from app.services.auth import create_api_key
from fastapi.testclient import TestClient

DUMMY = "/api/v1/reports/dummy"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Hops:
    """Counts ``anyio.to_thread.run_sync`` calls (every thread-pool hop)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = anyio.to_thread.run_sync

        async def counted(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await real(func, *args, **kwargs)

        monkeypatch.setattr(anyio.to_thread, "run_sync", counted)

    def during(self, call: Callable[[], Any]) -> tuple[Any, int]:
        self.count = 0
        result = call()
        return result, self.count


def app_client(sqlite_url: str, tmp_path: Path, **overrides: Any) -> TestClient:
    settings = Settings(
        database_url=sqlite_url,
        data_dir=tmp_path,
        dispatch_backend="inline",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # the limiter keeps local buckets
        **overrides,
    )
    return TestClient(create_app(settings))


@pytest.fixture
def secured(sqlite_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """API keys on, cached for a minute."""
    with app_client(sqlite_url, tmp_path, environment="test", auth_cache_seconds=60) as client:
        repo = client.app.state.container.api_keys  # type: ignore[attr-defined]
        _, plain = create_api_key(repo, owner="hops", role=Role.SUBMITTER, now=utcnow())
        yield client, {"X-API-Key": plain}


def test_an_enqueue_with_a_cached_key_makes_one_hop(
    secured: tuple[TestClient, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, key = secured
    hops = Hops(monkeypatch)
    first, first_hops = hops.during(lambda: client.post(DUMMY, headers=key))
    assert first.status_code == 200, first.text
    assert first_hops == 2, "a key not cached yet: the ledger look-up, then the enqueue"
    for _ in range(3):
        answer, count = hops.during(lambda: client.post(DUMMY, headers=key))
        assert answer.status_code == 200
        assert count == 1
    job_id = first.json()["id"]
    answer, count = hops.during(lambda: client.get(f"/api/v1/reports/jobs/{job_id}", headers=key))
    assert answer.status_code == 200
    assert count == 1, "reads too: the route's blocking part, and FastAPI adds none"


def test_refusals_before_the_ledger_make_no_hop(
    secured: tuple[TestClient, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, key = secured
    client.post(DUMMY, headers=key)  # cache the key
    hops = Hops(monkeypatch)
    forged = {"X-API-Key": key["X-API-Key"][:-1] + ("A" if key["X-API-Key"][-1] != "A" else "B")}
    for headers, status, code in [
        ({}, 401, "UNAUTHORIZED"),
        ({"X-API-Key": "nonsense"}, 401, "INVALID_API_KEY"),
        (forged, 401, "INVALID_API_KEY"),
    ]:
        answer, count = hops.during(lambda h=headers: client.post(DUMMY, headers=h))
        assert (answer.status_code, answer.json()["error"], count) == (status, code, 0)
        assert answer.headers["www-authenticate"].startswith("ApiKey")
    answer, count = hops.during(lambda: client.post(f"{DUMMY}?seed=abc", headers=key))
    assert (answer.status_code, answer.json()["error"], count) == (422, "VALIDATION_ERROR", 0)


def test_development_enqueue_makes_one_hop(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with app_client(sqlite_url, tmp_path, environment="development") as client:
        hops = Hops(monkeypatch)
        for _ in range(3):
            answer, count = hops.during(lambda: client.post(DUMMY))
            assert answer.status_code == 200, answer.text
            assert count == 1


def test_the_rate_limit_still_answers_429_with_retry_after(sqlite_url: str, tmp_path: Path) -> None:
    with app_client(
        sqlite_url, tmp_path, environment="development", rate_limit_requests=2
    ) as client:
        codes = [client.post(DUMMY).status_code for _ in range(3)]
        refused = client.post(DUMMY)
    assert codes == [200, 200, 429]
    assert refused.json()["error"] == "RATE_LIMITED"
    assert int(refused.headers["retry-after"]) >= 1


def test_the_openapi_security_scheme_is_unchanged(sqlite_url: str, tmp_path: Path) -> None:
    with app_client(sqlite_url, tmp_path, environment="test") as client:
        spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes == {
        "APIKeyHeader": {
            "type": "apiKey",
            "description": schemes["APIKeyHeader"]["description"],
            "in": "header",
            "name": "X-API-Key",
        }
    }
    for path, method in [
        ("/api/v1/reports/dummy", "post"),
        ("/api/v1/reports/heavy", "post"),
        ("/api/v1/reports/jobs", "get"),
        ("/api/v1/reports/jobs/{job_id}", "delete"),
        ("/api/v1/reports/queues/status", "get"),
        ("/api/v1/reports/stats/daily", "get"),
    ]:
        assert spec["paths"][path][method]["security"] == [{"APIKeyHeader": []}], path
    dummy = spec["paths"]["/api/v1/reports/dummy"]["post"]
    names = [p["name"] for p in dummy["parameters"]]
    assert names == [
        "processing_time",
        "seed",
        "simulate_failures",
        "callback_url",
        "recipients",
        "attach",
        "Idempotency-Key",
    ]


def test_an_enqueue_answers_200_and_a_replay_says_so_in_its_header(
    sqlite_url: str, tmp_path: Path
) -> None:
    with app_client(sqlite_url, tmp_path, environment="development") as client:
        key = {"Idempotency-Key": "spec-200"}
        first, again = client.post(DUMMY, headers=key), client.post(DUMMY, headers=key)
    assert (first.status_code, first.headers["idempotent-replayed"]) == (200, "false")
    assert (again.status_code, again.headers["idempotent-replayed"]) == (200, "true")
    assert again.json()["id"] == first.json()["id"]
