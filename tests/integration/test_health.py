"""Probes against a live API whose PostgreSQL and Redis belong to this test.

The test stops and restarts its own PostgreSQL cluster and Redis server (never the
machine's shared ones) and watches ``/health/ready`` follow within 2 s while
``/health/live`` keeps answering; then it stops the API and checks the drain.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import LiveServer
from tests.integration.ops import (
    PgCluster,
    RedisServer,
    clean_env,
    migrate,
    start_api,
    stop_api,
    throwaway_postgres,
    throwaway_redis,
    wait_until,
)
from tests.integration.workers import ROOT

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def deps() -> Iterator[tuple[PgCluster, RedisServer]]:
    with throwaway_postgres() as pg, throwaway_redis() as redis_server:
        yield pg, redis_server


def _start(deps: tuple[PgCluster, RedisServer], data: Path) -> LiveServer:
    pg, redis_server = deps
    env = clean_env(
        DATABASE_URL=pg.url,
        DATA_DIR=str(data),
        REDIS_URL=redis_server.url,
        CELERY_BROKER_URL=redis_server.url,
        QUEUE_PREFIX="health-",
        ENVIRONMENT="test",
        DISPATCH_BACKEND="auto",
        INLINE_FALLBACK="false",
        HEALTH_TIMEOUT="0.5",
        BROKER_TIMEOUT="0.3",
        AVAILABILITY_CACHE_SECONDS="1",
        SHUTDOWN_DRAIN_SECONDS="2",
        LOG_FORMAT="json",
    )
    migrate(env)
    return start_api(env, data / "api.log", "--grace", "5")


@pytest.fixture(scope="module")
def api(
    deps: tuple[PgCluster, RedisServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    server = _start(deps, tmp_path_factory.mktemp("health-api"))
    yield server
    stop_api(server)


@pytest.fixture
def api_to_stop(deps: tuple[PgCluster, RedisServer], tmp_path: Path) -> Iterator[LiveServer]:
    """An API of the test's own: stopping it leaves the module's API to the other tests."""
    server = _start(deps, tmp_path)
    yield server
    if server.process.poll() is None:
        stop_api(server)


def _status(server: LiveServer, path: str) -> int:
    return httpx.get(server.url + path, timeout=3).status_code


def _turns(server: LiveServer, status: int, timeout: float) -> float:
    return wait_until(lambda: _status(server, "/health/ready") == status, timeout)


def test_probes_answer_when_everything_is_up(api: LiveServer) -> None:
    assert _status(api, "/health/live") == 200
    ready = httpx.get(api.url + "/health/ready", timeout=3)
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["components"]) == {"database", "storage", "broker.celery", "broker.rq"}
    startup = httpx.get(api.url + "/health/startup", timeout=3).json()
    assert startup["status"] == "ok"
    assert startup["schema"] == "at head"
    summary = httpx.get(api.url + "/health", timeout=5).json()
    assert summary["status"] == "ok"
    for component in summary["components"].values():
        assert component["status"] == "up"
        assert component["latency_ms"] >= 0
    assert {w["backend"] for w in summary["workers"]} == {"celery", "rq"}


def test_ready_follows_postgres_within_two_seconds(
    api: LiveServer, deps: tuple[PgCluster, RedisServer]
) -> None:
    pg, _ = deps
    pg.stop()
    try:
        assert _turns(api, 503, 2.0) < 2.0
        assert _status(api, "/health/live") == 200
        body = httpx.get(api.url + "/health", timeout=5)
        assert body.status_code == 503
        assert body.json()["components"]["database"]["status"] == "down"
        with api.client() as client:  # no 500: a stable code, and nothing half-written
            refused = client.post("/api/v1/reports/dummy")
            listed = client.get("/api/v1/reports/jobs")
        assert (refused.status_code, refused.json()["error"]) == (503, "LEDGER_UNAVAILABLE")
        assert (listed.status_code, listed.json()["error"]) == (503, "LEDGER_UNAVAILABLE")
    finally:
        pg.start()
    _turns(api, 200, 15)
    assert _status(api, "/health/live") == 200


def test_ready_follows_the_broker_within_two_seconds(
    api: LiveServer, deps: tuple[PgCluster, RedisServer]
) -> None:
    _, redis_server = deps
    redis_server.stop()
    try:
        assert _turns(api, 503, 2.0) < 2.0
        assert _status(api, "/health/live") == 200
        components = httpx.get(api.url + "/health/ready", timeout=3).json()["components"]
        assert components["database"]["status"] == "up"
        assert components["broker.rq"]["status"] == "down"
        summary = httpx.get(api.url + "/health", timeout=5).json()
        assert summary["status"] == "degraded"
    finally:
        redis_server.start()
    _turns(api, 200, 15)


def test_startup_probe_checks_the_schema_is_at_head(
    api: LiveServer, deps: tuple[PgCluster, RedisServer]
) -> None:
    pg, _ = deps

    def alembic(*args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), *args],
            cwd=ROOT,
            env=clean_env(DATABASE_URL=pg.url),
            check=True,
            capture_output=True,
            timeout=60,
        )

    alembic("downgrade", "-1")
    try:
        response = httpx.get(api.url + "/health/startup", timeout=3)
        assert response.status_code == 503
        assert "migrate" in response.json()["schema"]
    finally:
        alembic("upgrade", "head")
    assert _status(api, "/health/startup") == 200


def test_sigterm_drains_first_then_stops(api_to_stop: LiveServer) -> None:
    api = api_to_stop
    api.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    # "at once": within half the 2 s drain, however late the loop runs the handler
    assert _turns(api, 503, 1.0) < 1.0
    ready = httpx.get(api.url + "/health/ready", timeout=3)
    assert ready.json() == {"status": "draining"}
    # The drain serves as usual (the balancer is still noticing): an enqueue is accepted,
    # and the connection it came on is closed after the answer.
    with api.client() as client:
        served = client.post("/api/v1/reports/dummy", json={})
    assert served.status_code == 200, served.text
    assert served.json()["status"] == "queued"
    assert served.headers["connection"] == "close"
    assert _status(api, "/health/live") == 200
    assert api.process.wait(timeout=20) == 0
    assert time.monotonic() - started >= 1.5  # it kept answering for the drain period
    assert "api.draining" in Path(api.log_path).read_text()
