"""Circuits seen from outside: a real API process lists them in ``/health`` and exports
``report_circuit_state`` on ``GET /metrics`` (multiprocess mode, as `make run` starts it).

- RQ broker: a Redis of the test's own answers probes but refuses every enqueue (its
  ``rq:queues`` key is poisoned with the wrong type), so two enqueues open ``broker.rq``.
- Callbacks: an inline API calls back a real local server answering 503; after two failed
  calls the host's circuit opens and the remaining attempts never reach the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import redis
from app.domain.jobs import NotifyStatus

from tests.conftest import fresh_pg_database
from tests.e2e.server import LiveServer, running
from tests.integration.ops import (
    clean_env,
    ledger,
    migrate,
    scrape,
    start_api,
    stop_api,
    throwaway_redis,
    value,
    wait_until,
)
from tests.unit.test_circuits import hook_server

pytestmark = pytest.mark.timeout(180)


def _health(server: LiveServer) -> dict[str, Any]:
    response = httpx.get(server.url + "/health", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _circuit(server: LiveServer, name: str) -> tuple[float, float]:
    samples = scrape(server.url + "/metrics")
    return (
        value(samples, "report_circuit_state", circuit=name),
        value(samples, "report_circuit_opened_total", circuit=name),
    )


@pytest.fixture(scope="module")
def rq_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("circuits-rq")
    with fresh_pg_database("circuits_rq") as url, throwaway_redis() as broker:
        # Probes (PING, worker sets, LLEN) still answer; every enqueue's SADD fails.
        redis.Redis.from_url(broker.url).set("rq:queues", "poisoned")
        env = clean_env(
            DATABASE_URL=url,
            DATA_DIR=str(data),
            REDIS_URL=broker.url,
            CELERY_BROKER_URL=broker.url,
            ENVIRONMENT="test",
            DISPATCH_BACKEND="rq",
            CIRCUIT_FAILURES="2",
            CIRCUIT_RESET_SECONDS="300",
            BROKER_TIMEOUT="0.5",
            RATE_LIMIT_REQUESTS="1000000",
            LOG_FORMAT="json",
        )
        migrate(env)
        server = start_api(env, data / "api.log", "--grace", "2")
        try:
            yield server
        finally:
            stop_api(server)


def test_failed_publishes_open_the_broker_circuit_in_health_and_metrics(
    rq_api: LiveServer,
) -> None:
    before = _health(rq_api)
    assert before["circuits"] == {"broker.rq": "closed"}
    assert before["status"] == "ok"
    assert _circuit(rq_api, "broker.rq") == (0, 0)

    with rq_api.client() as client:
        for _ in range(2):  # the broker takes the probe but refuses the job
            refused = client.post("/api/v1/reports/dummy")
            assert refused.status_code == 503, refused.text
        third = client.post("/api/v1/reports/dummy")
    assert third.status_code == 503
    assert "circuit open" in third.text

    after = _health(rq_api)
    assert after["circuits"] == {"broker.rq": "open"}
    assert after["status"] == "degraded"  # every component answers: the circuit alone
    assert all(c["status"] == "up" for c in after["components"].values())
    assert httpx.get(rq_api.url + "/health/ready", timeout=10).status_code == 200
    assert _circuit(rq_api, "broker.rq") == (2, 1)


def test_an_open_callback_circuit_spares_the_host_and_shows_in_health(tmp_path: Path) -> None:
    with (
        fresh_pg_database("circuits_cb") as url,
        hook_server(503) as hooks,
        running(
            tmp_path,
            url,
            CALLBACK_ALLOWED_HOSTS="127.0.0.1",
            CIRCUIT_FAILURES="2",
            CIRCUIT_RESET_SECONDS="300",
            CALLBACK_MAX_ATTEMPTS="4",
        ) as server,
    ):
        assert _health(server)["circuits"] == {}
        with server.client() as client:
            created = client.post("/api/v1/reports/dummy", params={"callback_url": hooks.url})
        assert created.status_code == 200, created.text
        job_id = UUID(created.json()["id"])
        with ledger(url) as repo:

            def notified() -> bool:
                job = repo.get(job_id)
                return (
                    job is not None
                    and job.notification is not None
                    and (job.notification.status is NotifyStatus.FAILED)
                )

            wait_until(notified, 30, interval=0.1)
            job = repo.get(job_id)
        assert job is not None
        assert job.notification is not None
        assert job.notification.attempts == 4
        assert "circuit" in (job.notification.error or "")
        assert len(hooks.received) == 2  # attempts 3 and 4 never reached the host

        body = _health(server)
        assert body["circuits"] == {"callback.127.0.0.1": "open"}
        assert body["status"] == "degraded"
        assert _circuit(server, "callback.127.0.0.1") == (2, 1)
