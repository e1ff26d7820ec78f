"""Backend selection through the real API: fallback when brokers die, inline where allowed,
503 where not, durable waiting when no worker runs, and the progressive traffic split.
Every enqueue is timed: a dead broker never costs a request more than ~1 s."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import pytest
from app.bootstrap import Container
from app.domain.auth import Role
from app.domain.jobs import utcnow
from app.domain.queues import ReportType
from app.main import create_app
from app.services.auth import create_api_key
from fastapi.testclient import TestClient

from tests.integration.workers import (
    DEAD_URL,
    CallbackReceiver,
    WorkerProcess,
    delete_redis_keys,
    settings_from,
    tarpit,
)

API = "/api/v1/reports"
MAX_ENQUEUE_SECONDS = 1.5


@contextmanager
def api(env: dict[str, str], **overrides: Any) -> Iterator[TestClient]:
    with TestClient(create_app(settings_from(env, **overrides))) as client:
        container = container_of(client)
        if container.settings.auth_required:
            _, key = create_api_key(
                container.api_keys, owner="router-tests", role=Role.OPERATOR, now=utcnow()
            )
            client.headers["X-API-Key"] = key
        yield client


def container_of(client: TestClient) -> Container:
    container: Container = client.app.state.container  # type: ignore[attr-defined]
    return container


def timed_post(client: TestClient, path: str, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    response = client.post(path, **kwargs)
    return response, time.monotonic() - started


def wait_done(client: TestClient, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"{API}/jobs/{job_id}").json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {body.get('status')}")


def statuses(client: TestClient) -> dict[tuple[str, str | None], dict[str, Any]]:
    rows = client.get(f"{API}/queues/status").json()["queues"]
    return {(r["queue"], r["backend"]): r for r in rows}


def test_dead_celery_broker_falls_back_to_rq(
    backend_env: dict[str, str], rq_session_worker: WorkerProcess
) -> None:
    with api(backend_env, celery_broker_url=DEAD_URL, environment="production") as client:
        for _ in range(3):
            response, took = timed_post(client, f"{API}/dummy")
            assert response.status_code == 200, response.text
            assert took < MAX_ENQUEUE_SECONDS
            assert response.json()["backend"] == "rq"
        assert wait_done(client, response.json()["id"])["status"] == "completed"
        counts = container_of(client).router.fallback_counts()
        assert counts[("celery", "rq", "broker unreachable")] >= 3
        rows = statuses(client)
        assert rows[("reports", "rq")]["workers"] == 1
        assert rows[("reports", "celery")]["workers"] == 0


@pytest.mark.parametrize(("environment", "expected"), [("development", 200), ("production", 503)])
def test_no_broker_at_all_runs_inline_in_development_and_503_in_production(
    backend_env: dict[str, str], environment: str, expected: int
) -> None:
    with api(
        backend_env, celery_broker_url=DEAD_URL, redis_url=DEAD_URL, environment=environment
    ) as client:
        response, took = timed_post(client, f"{API}/dummy", json={"seed": 1})
        assert took < MAX_ENQUEUE_SECONDS
        assert response.status_code == expected, response.text
        if expected == 200:
            assert response.json()["backend"] == "inline"
            assert wait_done(client, response.json()["id"])["status"] == "completed"
        else:
            assert response.json()["error"] == "BACKEND_UNAVAILABLE"
            assert "broker unreachable" in response.json()["message"]


@pytest.mark.parametrize(("environment", "expected"), [("development", 200), ("production", 503)])
def test_hung_brokers_never_hang_a_request(
    backend_env: dict[str, str], environment: str, expected: int
) -> None:
    """Brokers that accept connections and never answer: every enqueue still answers fast."""
    with (
        tarpit() as hung,
        api(backend_env, celery_broker_url=hung, redis_url=hung, environment=environment) as client,
    ):
        for _ in range(3):
            response, took = timed_post(client, f"{API}/dummy")
            assert took < MAX_ENQUEUE_SECONDS
            assert response.status_code == expected, response.text


@pytest.mark.parametrize(
    ("environment", "backend"), [("production", "celery"), ("development", "inline")]
)
def test_brokers_up_but_no_worker(
    backend_env: dict[str, str], environment: str, backend: str
) -> None:
    """Production: the job waits durably on the preferred broker and queue status shows the
    missing worker. Development (a newcomer's `make run`): it runs inline, never stuck."""
    prefix = f"n{secrets.token_hex(3)}-"  # queues nobody consumes
    try:
        with api(backend_env, queue_prefix=prefix, environment=environment) as client:
            response, took = timed_post(client, f"{API}/dummy")
            assert took < MAX_ENQUEUE_SECONDS
            assert response.status_code == 200, response.text
            job = response.json()
            assert job["backend"] == backend
            rows = statuses(client)
            assert rows[("reports", "celery")]["workers"] == 0
            assert rows[("reports", "rq")]["workers"] == 0
            if backend == "inline":
                assert wait_done(client, job["id"])["status"] == "completed"
            else:
                assert job["status"] == "queued"
                assert rows[("reports", "celery")]["waiting"] >= 1
                client.delete(f"{API}/jobs/{job['id']}")
    finally:
        delete_redis_keys(prefix)


def test_traffic_split_and_per_type_override_route_deterministically(
    backend_env: dict[str, str],
    celery_session_worker: WorkerProcess,
    rq_session_worker: WorkerProcess,
) -> None:
    with api(backend_env, environment="production") as client:
        # The session's ledger holds the dial (seeded by the first API): move it at run time.
        split = {"celery_percent": 50, "overrides": {"pdf": 100}, "reason": "router test"}
        moved = client.put("/api/v1/admin/traffic", json=split)
        assert moved.status_code == 200, moved.text
        try:
            _route_by_the_split(client)
        finally:
            back = {"celery_percent": 100, "overrides": {}, "reason": "router test done"}
            assert client.put("/api/v1/admin/traffic", json=back).status_code == 200


def _route_by_the_split(client: TestClient) -> None:
    """16 dummies split by job id, the pdf on Celery by its override, all completed."""
    policy = container_of(client).router.policy
    assert (policy.split.celery_percent, policy.split.share(ReportType.PDF)) == (50, 100)
    dummies = [client.post(f"{API}/dummy", json={"seed": i}).json() for i in range(16)]
    pdf = client.post(f"{API}/heavy", json={"report_type": "pdf", "pages": 1}).json()
    for job in dummies:
        share = policy.split.share(job["report_type"])
        expected = "celery" if UUID(job["id"]).int % 100 < share else "rq"
        assert job["backend"] == expected
    assert pdf["backend"] == "celery"
    assert {j["backend"] for j in dummies} == {"celery", "rq"}  # 16 ids: both sides
    for job in [*dummies, pdf]:
        assert wait_done(client, job["id"])["status"] == "completed"
    rows = statuses(client)
    assert rows[("reports", "celery")]["workers"] == 1
    assert rows[("reports", "rq")]["workers"] == 1


def test_phase_three_turns_rq_off(backend_env: dict[str, str]) -> None:
    with api(
        backend_env, rq_enabled=False, celery_broker_url=DEAD_URL, environment="production"
    ) as client:
        assert [b.backend.value for b in container_of(client).brokers] == ["celery"]
        response, took = timed_post(client, f"{API}/dummy")
        assert took < MAX_ENQUEUE_SECONDS
        assert response.status_code == 503


def test_callback_url_is_accepted_in_query_or_body_for_allowed_hosts_only(
    backend_env: dict[str, str], receiver: CallbackReceiver
) -> None:
    with api(backend_env, dispatch_backend="inline") as client:
        by_query = client.post(f"{API}/dummy", params={"callback_url": receiver.url})
        by_body = client.post(
            f"{API}/heavy", json={"report_type": "pdf", "pages": 1, "callback_url": receiver.url}
        )
        assert (by_query.status_code, by_body.status_code) == (200, 200)
        for response in (by_query, by_body):
            job_id = response.json()["id"]
            assert "callback_url" not in response.json()["params"]
            assert wait_done(client, job_id)["status"] == "completed"
        deadline = time.monotonic() + 10
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert {body["job"]["id"] for _, body, _ in receiver.received} == {
            by_query.json()["id"],
            by_body.json()["id"],
        }
        refused = client.post(f"{API}/dummy", params={"callback_url": "https://evil.example/x"})
        assert refused.status_code == 422
        assert refused.json()["error"] == "CALLBACK_NOT_ALLOWED"
